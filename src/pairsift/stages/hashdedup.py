"""Exact and perceptual deduplication: pixel hashes, pHash/dHash, Hamming pairs, groups.

Decisions ``exact_duplicate_of`` and ``near_duplicate_of`` (docs/design.md §4). Costs grow with the
data, never N×N (§6): exact groups come from hashing, near pairs from an exact multi-index
Hamming search (faiss), groups from the sparse pair graph.

Hashes are 64-bit values stored as signed int64 (the two's complement of the uint64) so they
fit Arrow/Parquet int64 columns; ``format(value & (2**64 - 1), "016x")`` gives imagehash's hex.

Default thresholds, measured on 40 distinct images (tests/data's fixtures and scikit-image's
samples: 780 pairs) and variants of each (``tests/test_hashdedup.py``). pHash distances are
nearly always even (the median split gives every hash 32 ones), so 4 and 5 differ little.

- JPEG q30–q75, resize (60 %, 30 %, 128-px thumbnail), greyscale and the PNG/WebP copy of one
  photo: pHash ≤ 4 and dHash ≤ 6 for every image except a synthetic chessboard, whose tied
  DCT coefficients move pHash by 5–12 after re-encoding.
- Distinct photos: pHash ≥ 20, except two pairs with the same layout, at pHash 4: data-juicer's
  hard negative (plane vs boat, dHash 8) and a stereo pair (dHash 9). pHash alone cannot
  separate them from JPEG copies, so dHash vetoes: both hashes must be close.
- Flips and rotations by 90/180/270° move pHash by ≈ 32, so the hashes of the 7 other
  dihedral variants of every image (mirrored, rotated, transposed) are stored too (112 bytes a
  sample) and ``dedup perceptual`` matches an image's variants against the others' plain
  hashes (``dihedral``, on by default). On the dedup benchmark's tuning corpora
  (``benchmarks/bench_dedup_peers.py --seed 0`` and ``--seed 2``, hard negatives included)
  the same 4/6 thresholds stay at pair precision 1.0 with the variants and recall goes from
  0.26 to 0.59; 6/8 already merges 7 false pairs on each (snow fields, text pages), so the
  thresholds stay.
- Not found, by design: 5 % borders and 80-90 % crops (pHash 4–24), small rotations, large
  brightness changes. Semantic (embedding) dedup handles those.
"""

from __future__ import annotations

import hashlib
from collections.abc import Container, Iterable, Iterator, Sequence
from dataclasses import dataclass
from math import comb, expm1
from typing import Any

import faiss
import imagehash
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from PIL import Image
from scipy.sparse import coo_array
from scipy.sparse.csgraph import connected_components

from ..engine.views import Collection, PartData
from ..io.images import decode_image
from ..params import Param
from ..stage import Decisions, Dependencies, GlobalStage, MapStage, PartOutput, Sample, register
from ..uids import UID_DTYPE, uid_codes, uid_strings
from .keep import earlier_dedup, excluded, keep_rank

PHASH_MAX_DISTANCE: int = 4
DHASH_MAX_DISTANCE: int = 6
# The 7 non-identity maps of the square's symmetry group, in the order hashes store them.
DIHEDRAL = (Image.Transpose.FLIP_LEFT_RIGHT, Image.Transpose.FLIP_TOP_BOTTOM,
            Image.Transpose.ROTATE_90, Image.Transpose.ROTATE_180, Image.Transpose.ROTATE_270,
            Image.Transpose.TRANSPOSE, Image.Transpose.TRANSVERSE)

_BITS = 64
_VARIANTS = pa.list_(pa.int64(), len(DIHEDRAL))
_QUERY_BLOCK = 1 << 16  # queries per faiss call: bounds the memory of one result batch
# Per-query costs (ns, measured with faiss 1.15 on 2 CPU cores) of a hash probe, a non-empty
# bucket, a candidate and a flat comparison: they only choose among exact plans.
_PROBE_NS, _BUCKET_NS, _CANDIDATE_NS, _FLAT_NS = 90.0, 1000.0, 50.0, 0.4


@dataclass(frozen=True)
class ImageHashes:
    """Hashes of one decoded image; phash/dhash are signed int64 (see the module docstring)."""

    pixel_sha256: str
    phash: int
    dhash: int
    phash_dihedral: tuple[int, ...] = ()  # pHash of each DIHEDRAL variant of the image
    dhash_dihedral: tuple[int, ...] = ()


def image_hashes(image: Image.Image) -> ImageHashes:
    """Pixel sha256, pHash and dHash (hash_size 8) of an RGB image, e.g. ``decode_image().image``,
    and the pHash and dHash of its 7 flipped and rotated variants (``DIHEDRAL``).

    The pixel hash covers the size and the RGB bytes, so lossless re-encodings (PNG, BMP, the
    same JPEG bytes in another container) are exact duplicates. Pure function: thread-safe.
    """
    rgb = image if image.mode == "RGB" else image.convert("RGB")
    digest = hashlib.sha256(f"{rgb.width}x{rgb.height}:".encode())
    digest.update(rgb.tobytes())
    grey = rgb.convert("L")  # what imagehash hashes; transposing it is exact and cheap
    variants = [grey.transpose(t) for t in DIHEDRAL]
    return ImageHashes(
        pixel_sha256=digest.hexdigest(),
        phash=_to_int64(imagehash.phash(grey, hash_size=8)),
        dhash=_to_int64(imagehash.dhash(grey, hash_size=8)),
        phash_dihedral=tuple(_to_int64(imagehash.phash(v, hash_size=8)) for v in variants),
        dhash_dihedral=tuple(_to_int64(imagehash.dhash(v, hash_size=8)) for v in variants),
    )


def _to_int64(h: imagehash.ImageHash) -> int:
    """imagehash's bits (row-major, first bit most significant) as a signed 64-bit int."""
    return int.from_bytes(np.packbits(h.hash.ravel()).tobytes(), "big", signed=True)


def exact_duplicates(
    keys: Sequence[str] | pa.Array | pa.ChunkedArray | np.ndarray,
    priority: np.ndarray | None = None,
) -> np.ndarray:
    """Index of the kept member of each item's group of equal keys (its own index if kept).

    Rule: the kept member has the highest ``priority`` (e.g. CLIP score; NaN counts as
    lowest); ties, or no priority, go to the lowest index. ``keys`` are strings (hashed by
    Arrow) or a numpy array (e.g. 16-byte hash prefixes, grouped by one sort); int64 result.
    """
    if isinstance(keys, np.ndarray):
        groups = np.unique(keys, return_inverse=True)[1].astype(np.int64).reshape(-1)
    else:
        arr = keys if isinstance(keys, pa.Array | pa.ChunkedArray) else pa.array(keys,
                                                                                 pa.string())
        if arr.null_count:
            raise ValueError("keys must not contain nulls")
        groups = pc.index_in(arr, value_set=pc.unique(arr)).to_numpy().astype(np.int64)
    return _kept_per_group(groups, _priority_order(len(groups), priority))


def hamming_pairs(
    hashes: np.ndarray, max_distance: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """All pairs ``i < j`` of 64-bit hashes at Hamming distance ≤ ``max_distance``, exactly.

    Returns ``(i, j, distance)`` (int64, int64, int32), sorted by ``(i, j)``. faiss's
    ``IndexBinaryMultiHash`` splits the bits into ``nhash`` substrings and probes every
    substring value within ``nflip`` flips; with ``nhash·(nflip+1) > max_distance`` every pair
    in range agrees on some substring up to ``nflip`` bits (pigeonhole), so no pair is missed,
    and candidates are verified on all 64 bits. Cost: O(N·nhash·C(b, ≤nflip)·(1 + N/2^b)) probes
    and checks plus the output, b = 64 // nhash — near-linear while N ≪ 2^b (radius ≤ 4 uses
    b = 21–32). The cheapest plan is chosen per call; when none beats comparing with every
    code (large radius, small N), ``IndexBinaryFlat`` scans: O(N²) popcounts, no matrix. The
    output itself is quadratic in a group of identical hashes (e.g. blank images).
    """
    h = np.asarray(hashes)
    if h.ndim != 1 or h.dtype != np.int64:
        raise ValueError(f"hashes must be a 1-D int64 array, got {h.dtype} {h.shape}")
    if not 0 <= max_distance <= _BITS:
        raise ValueError(f"max_distance must be in [0, {_BITS}], got {max_distance}")
    n = len(h)
    if n < 2:
        return np.empty(0, np.int64), np.empty(0, np.int64), np.empty(0, np.int32)
    codes = _padded_codes(h)
    index = _binary_index(n, max_distance)
    index.add(codes[:n])
    parts = [
        _block_pairs(index, codes, start, min(start + _QUERY_BLOCK, n), max_distance)
        for start in range(0, n, _QUERY_BLOCK)
    ]
    i, j, d = (np.concatenate(p) for p in zip(*parts, strict=True))
    order = np.lexsort((j, i))
    return i[order], j[order], d[order]


def hamming_cross_pairs(
    query_sets: Iterable[np.ndarray], stored: np.ndarray, max_distance: int
) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """For each array of queries, all ``(q, s)`` with ``queries[q]`` within ``max_distance``
    of ``stored[s]`` (q == s included), exactly; one index over ``stored`` (the one
    ``hamming_pairs`` would use) serves every query set."""
    h = np.asarray(stored, np.int64)
    index = None
    for queries in query_sets:
        q = np.asarray(queries, np.int64)
        if len(q) == 0 or len(h) == 0:
            yield np.empty(0, np.int64), np.empty(0, np.int64), np.empty(0, np.int32)
            continue
        if index is None:
            index = _binary_index(len(h), max_distance)
            index.add(_padded_codes(h)[:len(h)])
        codes = _padded_codes(q)
        parts = [_block_pairs(index, codes, start, min(start + _QUERY_BLOCK, len(q)),
                              max_distance, upper_only=False)
                 for start in range(0, len(q), _QUERY_BLOCK)]
        yield tuple(np.concatenate(p) for p in zip(*parts, strict=True))


def _padded_codes(h: np.ndarray) -> np.ndarray:
    """Codes as (n+1, 8) bytes, the last row zero: faiss loads 8 bytes at each substring's
    offset, which runs past a 64-bit code; the padding keeps those loads inside our buffer."""
    buf = np.zeros(len(h) + 1, np.int64)
    buf[:-1] = h
    return buf.view(np.uint8).reshape(-1, 8)


def _binary_index(n: int, max_distance: int) -> faiss.IndexBinary:
    """The cheapest exact index for ``n`` codes and this radius (see ``_search_plan``)."""
    plan = _search_plan(n, max_distance)
    if plan is None:
        return faiss.IndexBinaryFlat(_BITS)
    nhash, nflip = plan
    index = faiss.IndexBinaryMultiHash(_BITS, nhash, _BITS // nhash)
    index.nflip = nflip
    return index


def _search_plan(n: int, radius: int) -> tuple[int, int] | None:
    """``(nhash, nflip)`` of the cheapest exact multi-hash plan, or None when a flat scan is
    cheaper. nflip = radius // nhash is the least that keeps the search exact; nhash ≥ 2
    because faiss cannot mask a 64-bit substring. Buckets are modelled as uniform."""
    best, best_cost = None, n * _FLAT_NS
    for nhash in range(2, min(_BITS, max(2, radius + 1)) + 1):
        b, nflip = _BITS // nhash, radius // nhash
        if nflip >= b:
            continue
        probes = nhash * sum(comb(b, k) for k in range(nflip + 1))
        fill = n / 2**b  # expected codes per bucket
        cost = probes * (_PROBE_NS + _BUCKET_NS * -expm1(-fill) + _CANDIDATE_NS * fill)
        if cost < best_cost:
            best, best_cost = (nhash, nflip), cost
    return best


def _block_pairs(
    index: faiss.IndexBinary, codes: np.ndarray, start: int, stop: int, max_distance: int,
    upper_only: bool = True,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Pairs (query, stored) for queries ``start:stop``; only query < stored if upper_only."""
    lims, dist, ids = index.range_search(codes[start:stop], max_distance + 1)  # strict "<"
    queries = np.repeat(np.arange(start, stop, dtype=np.int64), np.diff(lims).astype(np.int64))
    upper = queries < ids if upper_only else np.ones(len(ids), bool)
    return queries[upper], ids[upper].astype(np.int64), dist[upper].astype(np.int32)


def hamming_distance(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Element-wise Hamming distance (int32) of int64 hashes.

    Counts the bits of the uint64 pattern: ``np.bitwise_count`` and ``int.bit_count`` of a
    negative signed value count the bits of its absolute value instead.
    """
    diff = np.asarray(a, np.int64) ^ np.asarray(b, np.int64)
    return np.bitwise_count(diff.view(np.uint64)).astype(np.int32)


def perceptual_pairs(
    phash: np.ndarray,
    dhash: np.ndarray,
    max_phash: int = PHASH_MAX_DISTANCE,
    max_dhash: int = DHASH_MAX_DISTANCE,
    *,
    phash_dihedral: np.ndarray | None = None,
    dhash_dihedral: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Near-duplicate pairs: pHash within ``max_phash`` and dHash within ``max_dhash``.

    pHash finds the candidates (``hamming_pairs``); dHash vetoes pictures that share a
    layout but not their content (the hard negatives in the module docstring). With the
    variants' hashes (``(n, 7)`` arrays, ``DIHEDRAL`` order), a pair also matches when a
    variant of one image is close to the other image on both hashes: flips and rotations.
    Returns ``(i, j, phash_distance)`` like ``hamming_pairs``, the smallest distance of each
    pair over the variants.
    """
    d_hashes = np.asarray(dhash, np.int64)
    if d_hashes.shape != np.shape(phash):
        raise ValueError(f"phash and dhash differ in shape: {np.shape(phash)} {d_hashes.shape}")
    i, j, dist = hamming_pairs(phash, max_phash)
    close = hamming_distance(d_hashes[i], d_hashes[j]) <= max_dhash
    found = [(i[close], j[close], dist[close])]
    if phash_dihedral is not None:
        variants = (phash_dihedral[:, k] for k in range(len(DIHEDRAL)))
        for k, (q, t, d) in enumerate(hamming_cross_pairs(variants, phash, max_phash)):
            keep = (q != t) & (hamming_distance(dhash_dihedral[q, k], d_hashes[t]) <= max_dhash)
            found.append((np.minimum(q, t)[keep], np.maximum(q, t)[keep], d[keep]))
    return _closest_per_pair(*(np.concatenate(p) for p in zip(*found, strict=True)))


def _closest_per_pair(i: np.ndarray, j: np.ndarray, dist: np.ndarray
                      ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Each (i, j) once, with its smallest distance; sorted by (i, j)."""
    order = np.lexsort((dist, j, i))
    i, j, dist = i[order], j[order], dist[order]
    first = np.ones(len(i), bool)
    first[1:] = (i[1:] != i[:-1]) | (j[1:] != j[:-1])
    return i[first], j[first], dist[first].astype(np.int32)


def near_duplicates(
    n: int,
    pairs: tuple[np.ndarray, np.ndarray, np.ndarray],
    priority: np.ndarray | None = None,
    *,
    rank: np.ndarray | None = None,
    transitive: bool = True,
) -> tuple[np.ndarray, np.ndarray]:
    """Kept member (int64[n]) of each item and its Hamming distance to it (int32[n]).

    ``pairs`` is ``(i, j, distance)`` as from ``hamming_pairs``. Ranking as in
    ``exact_duplicates``: highest priority, then lowest index; or ``rank`` (0 best), a ranking
    made elsewhere. Kept items map to themselves with distance 0.

    - ``transitive=True``: groups are the connected components of the pair graph; each keeps
      its best-ranked member. The distance is reported when the item and its kept member form
      a pair, else −1 (linked only through others; ``hamming_distance`` gives it).
    - ``transitive=False`` (SemDeDup's rule): an item drops iff it pairs with a better-ranked
      item, and refers to the nearest such item (ties: best rank), which may itself be dropped.
      Chains keep more: in a–b–c with b ranked last, a and c both stay.
    """
    i, j, dist = _check_pairs(n, pairs)
    if rank is None:
        rank = _ranks(_priority_order(n, priority))
    if transitive:
        return _component_kept(n, i, j, dist, rank)
    return _better_neighbour_kept(n, i, j, dist, rank)


def _component_kept(
    n: int, i: np.ndarray, j: np.ndarray, dist: np.ndarray, rank: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Best-ranked member of each connected component; distance if a direct pair, else −1.

    Only the items in some pair form the graph (a few per cent of a collection), so the
    memory beyond the two results grows with the pairs, not with ``n``.
    """
    kept, distance = np.arange(n, dtype=np.int64), np.zeros(n, np.int32)
    if not len(i):
        return kept, distance
    nodes, ends = np.unique(np.concatenate([i, j]), return_inverse=True)
    graph = coo_array((np.ones(len(i), np.int8), (ends[:len(i)], ends[len(i):])),
                      shape=(len(nodes), len(nodes)))
    _, groups = connected_components(graph, directed=False)
    order = np.argsort(rank[nodes], kind="stable")
    kept[nodes] = nodes[_kept_per_group(groups.astype(np.int64), order)]
    distance[nodes] = np.where(kept[nodes] == nodes, 0, -1)
    for a, b in ((i, j), (j, i)):
        direct = kept[a] == b
        distance[a[direct]] = dist[direct]
    return kept, distance


def _better_neighbour_kept(
    n: int, i: np.ndarray, j: np.ndarray, dist: np.ndarray, rank: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Each item paired with a better-ranked one refers to the nearest (then best) of them."""
    i_better = rank[i] < rank[j]
    winner, loser = np.where(i_better, i, j), np.where(i_better, j, i)
    by_loser = np.lexsort((rank[winner], dist, loser))
    first = np.ones(len(by_loser), bool)
    first[1:] = loser[by_loser][1:] != loser[by_loser][:-1]
    chosen = by_loser[first]
    kept, distance = np.arange(n, dtype=np.int64), np.zeros(n, np.int32)
    kept[loser[chosen]] = winner[chosen]
    distance[loser[chosen]] = dist[chosen]
    return kept, distance


def _check_pairs(
    n: int, pairs: tuple[np.ndarray, np.ndarray, np.ndarray]
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    i, j, dist = (np.asarray(p, np.int64) for p in pairs)
    if not i.shape == j.shape == dist.shape or i.ndim != 1:
        raise ValueError("pairs must be three 1-D arrays of one length")
    if len(i) and (min(i.min(), j.min()) < 0 or max(i.max(), j.max()) >= n):
        raise ValueError(f"pair indices must be in [0, {n})")
    return i, j, dist.astype(np.int32)


def _priority_order(n: int, priority: np.ndarray | None) -> np.ndarray:
    """Item indices best first: highest priority (NaN lowest), then lowest index."""
    if priority is None:
        return np.arange(n, dtype=np.int64)
    p = np.asarray(priority, np.float64)
    if p.shape != (n,):
        raise ValueError(f"priority must have shape ({n},), got {p.shape}")
    return np.lexsort((np.arange(n), -np.where(np.isnan(p), -np.inf, p))).astype(np.int64)


def _ranks(order: np.ndarray) -> np.ndarray:
    rank = np.empty_like(order)
    rank[order] = np.arange(len(order))
    return rank


def _kept_per_group(groups: np.ndarray, order: np.ndarray) -> np.ndarray:
    """For each item, the best-ranked item of its group (``order`` lists items best first)."""
    if len(groups) == 0:
        return np.empty(0, np.int64)
    best = np.full(groups.max() + 1, len(groups), np.int64)
    np.minimum.at(best, groups, _ranks(order))
    return order[best[groups]]


# -- stages -------------------------------------------------------------------------------------
@register
class Hashes(MapStage):
    """Pixel sha256, pHash and dHash of every image (run by the hash dedup stages)."""

    name = "hashes"
    version = 2  # 2: the flipped and rotated variants' hashes
    needs_image = True
    per_sample = True
    auto = True
    params = (Param("threads", int, None, "Decode threads.", low=1, runtime=True),)

    def prepare(self, sample: Sample) -> ImageHashes:
        return image_hashes(decode_image(sample.data).image)

    def assemble(self, part: PartData, results: list[ImageHashes | None] | None) -> PartOutput:
        rows = results or []
        return PartOutput(signals=pa.table({
            "pixel_sha256": pa.array([h and h.pixel_sha256 for h in rows], pa.string()),
            "phash": pa.array([h and h.phash for h in rows], pa.int64()),
            "dhash": pa.array([h and h.dhash for h in rows], pa.int64()),
            "phash_dihedral": pa.array([h and list(h.phash_dihedral) for h in rows],
                                       _VARIANTS),
            "dhash_dihedral": pa.array([h and list(h.dhash_dihedral) for h in rows],
                                       _VARIANTS),
        }))


class _HashDedup(GlobalStage):
    """Shared by exact and perceptual dedup: ``combine`` returns the kept row of every row
    plus per-row evidence arrays; decisions follow per part."""

    requires = ("hashes",)

    def dependencies(self, present: Container[str] = ()) -> Dependencies:
        return self.requires, ("score", *earlier_dedup(self.name))

    def part_output(self, data: Collection, state: dict[str, np.ndarray],
                    part: int) -> PartOutput:
        rows = data.rows_of(part)
        kept = state["kept"][rows]
        evidence = {"of": uid_strings(data.uid_codes()[kept]), **self.evidence(state, rows)}
        own = np.arange(rows.start, rows.stop)
        return PartOutput(decisions=Decisions(kept != own, self.reason, evidence))

    def evidence(self, state: dict[str, np.ndarray], rows: slice) -> dict[str, Any]:
        return {}

    @staticmethod
    def kept_among(rank: np.ndarray, candidates: np.ndarray | None, group: Any) -> np.ndarray:
        """Kept row of every row: ``group(rows, rank)`` picks among the rows no earlier dedup
        stage dropped (``rows``: None for all of them; ``rank``: the keep-policy rank, computed
        before the hashes are read, which keeps the peak lower); the others keep
        themselves."""
        if candidates is None:
            return group(None, rank)
        kept = np.arange(len(rank), dtype=rank.dtype)
        kept[candidates] = candidates[group(candidates, rank[candidates])]
        return kept


def first_of_groups(keys: np.ndarray, rank: np.ndarray) -> np.ndarray:
    """Index of the best-ranked item with the same key, for each item: one sort, no hash table
    (16-byte keys, a 4-byte rank and a few index arrays are all it holds per item)."""
    by_key = np.lexsort((rank, keys["lo"], keys["hi"])).astype(rank.dtype)
    starts = np.ones(len(keys), bool)
    for word in ("hi", "lo"):
        ordered = keys[word][by_key]
        starts[1:] &= ordered[1:] == ordered[:-1]
    starts[1:] = ~starts[1:]  # a group starts where either word differs from the row before
    first = by_key[starts][np.cumsum(starts, dtype=rank.dtype) - 1]
    kept = np.empty(len(keys), rank.dtype)
    kept[by_key] = first
    return kept


def _sha_codes(hex_digests: pa.ChunkedArray | pa.Array) -> np.ndarray:
    """The first 128 bits of hex sha256 digests, as sortable 16-byte codes."""
    return uid_codes(pc.utf8_slice_codeunits(hex_digests, 0, 32))


@register
class DedupExact(_HashDedup):
    """Byte- and pixel-identical copies: keep the best copy of each group (one keep policy
    for every dedup stage: highest CLIP score, then most pixels, then lowest uid)."""

    name = "dedup-exact"
    reason = "exact_duplicate_of"
    params = (Param("threads", int, None, "Decode threads (hashing).", low=1, runtime=True),)

    def combine(self, data: Collection, results: Any) -> dict[str, np.ndarray]:
        """Pixel identity covers byte identity (equal bytes decode to equal pixels); an image
        that no longer decodes is grouped by its file's sha256 instead."""
        rank = keep_rank(data)
        keys = np.empty(data.n, UID_DTYPE)
        file_prefix = np.empty(data.n, np.uint32)  # 32 bits: enough to tell bytes from pixels
        for part in data.parts:
            rows = data.rows_of(part)
            pixels = data.part(part).signal("hashes", ["pixel_sha256"]).column("pixel_sha256")
            files = data.ws.read_part(part, ["sha256"]).column("sha256")
            keys[rows] = _sha_codes(pc.coalesce(pixels, files))
            file_prefix[rows] = _sha_codes(files)["hi"] >> np.uint64(32)
        skipped = excluded(data, self.name)
        candidates = np.flatnonzero(~skipped) if skipped.any() else None
        kept = self.kept_among(rank, candidates, lambda rows, rank: first_of_groups(
            keys if rows is None else keys[rows], rank))
        return {"kept": kept, "same_file": file_prefix == file_prefix[kept]}

    def evidence(self, state: dict[str, np.ndarray], rows: slice) -> dict[str, Any]:
        return {"match": np.where(state["same_file"][rows], "bytes", "pixels")}


@register
class DedupPerceptual(_HashDedup):
    """Re-encoded, resized, flipped and rotated copies by pHash + dHash; keep the best copy of
    each group."""

    name = "dedup-perceptual"
    reason = "near_duplicate_of"
    params = (
        Param("max_phash", int, PHASH_MAX_DISTANCE, "Max pHash Hamming distance.", low=0,
              high=_BITS),
        Param("max_dhash", int, DHASH_MAX_DISTANCE, "Max dHash Hamming distance (veto).",
              low=0, high=_BITS),
        Param("dihedral", bool, True, "Also match flipped and rotated (90/180/270°) copies."),
        Param("threads", int, None, "Decode threads (hashing).", low=1, runtime=True),
    )

    def combine(self, data: Collection, results: Any) -> dict[str, np.ndarray]:
        """Groups are connected components of the near-pair graph, found with an exact
        multi-index Hamming search (no N×N comparison)."""
        rank = keep_rank(data)
        h = read_hashes(data, dihedral=self["dihedral"])
        valid, phash, dhash = h.valid, h.phash, h.dhash
        taking_part = valid & ~excluded(data, self.name)
        candidates = None if taking_part.all() else np.flatnonzero(taking_part)
        distance = np.zeros(data.n, np.int32)

        def group(rows: np.ndarray | None, rank: np.ndarray) -> np.ndarray:
            sub = slice(None) if rows is None else rows
            variants = {} if h.phash_dihedral is None else {
                "phash_dihedral": h.phash_dihedral[sub], "dhash_dihedral": h.dhash_dihedral[sub]}
            pairs = perceptual_pairs(phash[sub], dhash[sub], self["max_phash"],
                                     self["max_dhash"], **variants)
            sub_kept, distance[sub] = near_duplicates(len(rank), pairs, rank=rank)
            return sub_kept

        kept = self.kept_among(rank, candidates, group)
        return {"kept": kept, "distance": distance}

    def evidence(self, state: dict[str, np.ndarray], rows: slice) -> dict[str, Any]:
        distance = state["distance"][rows]
        return {"phash_distance": np.where(distance < 0, np.nan, distance)}


@dataclass(frozen=True)
class CollectionHashes:
    """Every row's hashes (zero where the image did not decode: see ``valid``); the
    variants' are ``(n, 7)`` arrays, or None when not asked for."""

    valid: np.ndarray
    phash: np.ndarray
    dhash: np.ndarray
    phash_dihedral: np.ndarray | None
    dhash_dihedral: np.ndarray | None


def read_hashes(data: Collection, *, dihedral: bool) -> CollectionHashes:
    """The ``hashes`` signal of the whole collection: 16 bytes a row, 128 with the variants."""
    columns = ["phash", "dhash", *(["phash_dihedral", "dhash_dihedral"] if dihedral else [])]
    valid = np.zeros(data.n, bool)
    out = {c: np.zeros((data.n, len(DIHEDRAL)) if c.endswith("_dihedral") else data.n, np.int64)
           for c in columns}
    zeros = pa.scalar([0] * len(DIHEDRAL), _VARIANTS)
    for part in data.parts:
        table = data.part(part).signal("hashes", columns)
        rows = data.rows_of(part)
        valid[rows] = table.column("phash").is_valid().to_numpy(zero_copy_only=False)
        for c in columns:
            column = table.column(c)
            if c.endswith("_dihedral"):
                flat = pc.list_flatten(column.fill_null(zeros)).to_numpy()
                out[c][rows] = flat.reshape(-1, len(DIHEDRAL))
            else:
                out[c][rows] = column.fill_null(0).to_numpy()
    return CollectionHashes(valid, out["phash"], out["dhash"], out.get("phash_dihedral"),
                            out.get("dhash_dihedral"))


def dihedral_distance(h: CollectionHashes, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """pHash distance of rows ``a[k]`` and ``b[k]``, the smallest over flips and rotations
    of either one (int32)."""
    d = hamming_distance(h.phash[a], h.phash[b])
    for k in range(len(DIHEDRAL)):
        d = np.minimum(d, hamming_distance(h.phash_dihedral[a, k], h.phash[b]))
        d = np.minimum(d, hamming_distance(h.phash[a], h.phash_dihedral[b, k]))
    return d
