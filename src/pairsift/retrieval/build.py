"""Which faiss index to build, building it part by part, and saving it in the workspace.

Layout under ``ws/index/<model>/<space>/``::

  meta.json                   choice, parts indexed, tuned nprobe and the recall it reached
  trained.faiss               the empty trained index (IVF centroids, SQ/PQ codebooks)
  parts/part-00000.faiss      one part's vectors, encoded with the trained index
  parts/part-00000.parquet    its id map: index position -> uid, workspace part and row
  calibration.json            match confidence, written by ``pairsift calibrate``

Each part is encoded into a file of its own, so adding a part never rewrites the others and a
killed build resumes at the part it was in; loading merges the parts in order, so position ``i``
of the merged index is row ``i`` of the concatenated id maps. Rows whose embedding is all zeros
(images that failed to decode at embed time) are not indexed.
"""

from __future__ import annotations

import json
import re
import shutil
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import faiss
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from ..errors import ConfigError
from ..workspace import Workspace, WorkspaceError, atomic_write, part_name, write_table

FLAT_MAX_ROWS = 50_000  # exact search stays under a few ms per query up to here
DEFAULT_MEMORY_BUDGET = 2 * 2**30  # bytes of vector codes the index may hold in memory
TRAIN_PER_LIST = 50  # k-means training points per IVF list (faiss warns below 39)
REBUILD_GROWTH = 4  # retrain IVF once the collection is this many times what it trained on
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]?i?b?)\s*$", re.IGNORECASE)
ID_SCHEMA = pa.schema([("uid", pa.string()), ("part", pa.int32()), ("row", pa.int64())])


@dataclass(frozen=True)
class IndexChoice:
    """An index family and its parameters; ``factory`` is faiss's name for it."""

    kind: str  # flat | ivf
    encoding: str  # Flat | SQfp16 | SQ8 | PQ<m>
    nlist: int = 0

    @property
    def factory(self) -> str:
        if self.kind == "flat":
            return "Flat"
        return f"IVF{self.nlist},{self.encoding}"

    @property
    def rerank(self) -> int:
        """Candidates fetched per hit for exact re-scoring: the coarser the codes, the more."""
        return {"Flat": 1, "SQfp16": 2, "SQ8": 4}.get(self.encoding, 32)

    @property
    def lossy(self) -> bool:
        """Lossy codes give approximate scores, so hits are re-scored with exact vectors."""
        return self.rerank > 1


def parse_bytes(value: int | str) -> int:
    """``2147483648``, ``"2GiB"``, ``"512MB"`` -> bytes (KiB = 1024, kB = 1000)."""
    if isinstance(value, int):
        return value
    match = _SIZE.match(value)
    if not match:
        raise ConfigError(f"cannot read {value!r} as a size; write e.g. 512MiB or 2GB")
    unit = match.group(2).lower().rstrip("b")
    base = 1024 if unit.endswith("i") else 1000
    return int(float(match.group(1)) * base ** " kmgt".index(unit[:1] or " "))


def bytes_per_vector(encoding: str, d: int) -> int:
    if encoding == "Flat":
        return 4 * d
    if encoding == "SQfp16":
        return 2 * d
    if encoding == "SQ8":
        return d
    return int(encoding.removeprefix("PQ"))


def choose_index(n: int, d: int, memory_budget: int = DEFAULT_MEMORY_BUDGET) -> IndexChoice:
    """Exact search while it is cheap; else IVF with about sqrt(n) lists and the most precise
    codes that fit ``memory_budget`` (float32, then float16, 8-bit, then the largest PQ)."""
    if n <= FLAT_MAX_ROWS and 4 * d * n <= memory_budget:
        return IndexChoice("flat", "Flat")
    nlist = int(np.clip(2 ** round(np.log2(max(np.sqrt(n), 1))), 64, 65_536))
    nlist = max(1, min(nlist, n // 39))  # k-means needs about 39 points per list
    for encoding in ("Flat", "SQfp16", "SQ8"):
        if bytes_per_vector(encoding, d) * n <= memory_budget:
            return IndexChoice("ivf", encoding, nlist)
    m = max((m for m in range(1, d // 2 + 1) if d % m == 0 and m * n <= memory_budget),
            default=0)
    if m == 0:
        raise ConfigError(f"a memory budget of {memory_budget:,} bytes cannot hold {n:,} vectors "
                         f"even at one byte each; raise the budget")
    return IndexChoice("ivf", f"PQ{m}", nlist)


def train(choice: IndexChoice, sample: np.ndarray) -> faiss.Index:
    """An empty index for inner product (cosine on unit vectors), trained on ``sample``."""
    index = faiss.index_factory(sample.shape[1], choice.factory, faiss.METRIC_INNER_PRODUCT)
    concrete = faiss.downcast_index(index)  # a view: ``index`` keeps owning the object
    if isinstance(concrete, faiss.IndexIVFPQ):
        concrete.do_polysemous_training = False  # slow training for a search mode not used
    if not index.is_trained:
        index.train(np.ascontiguousarray(sample, np.float32))
    return index


def encode(trained: faiss.Index, vectors: np.ndarray) -> faiss.Index:
    """A copy of the trained index holding ``vectors`` at positions 0..len-1."""
    index = faiss.clone_index(trained)
    index.add(np.ascontiguousarray(vectors, np.float32))
    return index


def merge(trained: faiss.Index, parts: Iterator[faiss.Index]) -> faiss.Index:
    """One index whose positions follow the parts in order (part indexes are consumed)."""
    merged = faiss.clone_index(trained)
    for part in parts:
        offset = 0 if isinstance(merged, faiss.IndexFlatCodes) else merged.ntotal
        merged.merge_from(part, offset)  # flat indexes number rows sequentially by themselves
    return merged


def unit_rows(array: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Float32 unit vectors of the non-zero rows, and those rows' numbers."""
    x = np.asarray(array, np.float32)
    norms = np.linalg.norm(x, axis=1)
    rows = np.flatnonzero(norms > 0)
    return x[rows] / norms[rows, None], rows


@dataclass
class LoadedIndex:
    """A merged index, its id map and its metadata."""

    index: faiss.Index
    ids: pa.Table  # uid, part, row; row i <-> index position i
    meta: dict[str, Any]

    @property
    def choice(self) -> IndexChoice:
        return IndexChoice(**self.meta["choice"])


class IndexStore:
    """The index directory of one model and space inside a workspace."""

    def __init__(self, ws: Workspace, slug: str, space: str):
        from ..spaces import resolve

        self.ws, self.slug, self.space = ws, slug, space
        self.root = ws.root / "index" / slug / resolve(ws, slug, space)[0]

    @property
    def meta_path(self) -> Path:
        return self.root / "meta.json"

    @property
    def calibration_path(self) -> Path:
        return self.root / "calibration.json"

    def part_paths(self, part: int) -> tuple[Path, Path]:
        base = self.root / "parts" / part_name(part)
        return base.with_suffix(".faiss"), base.with_suffix(".parquet")

    def exists(self) -> bool:
        return self.meta_path.exists()

    def read_meta(self) -> dict[str, Any] | None:
        return json.loads(self.meta_path.read_text()) if self.meta_path.exists() else None

    def write_meta(self, meta: dict[str, Any]) -> None:
        blob = json.dumps(meta, indent=1, sort_keys=True).encode()
        atomic_write(self.meta_path, lambda tmp: tmp.write_bytes(blob))

    def clear(self) -> None:
        """Remove the index files but keep the calibration, which does not depend on them."""
        self.meta_path.unlink(missing_ok=True)
        (self.root / "trained.faiss").unlink(missing_ok=True)
        shutil.rmtree(self.root / "parts", ignore_errors=True)

    def write_index(self, path: Path, index: faiss.Index) -> None:
        atomic_write(path, lambda tmp: faiss.write_index(index, str(tmp)))

    def write_trained(self, index: faiss.Index) -> None:
        self.write_index(self.root / "trained.faiss", index)

    def write_part(self, part: int, index: faiss.Index, ids: pa.Table) -> None:
        index_path, ids_path = self.part_paths(part)
        self.write_index(index_path, index)
        write_table(ids_path, ids.cast(ID_SCHEMA))

    def ids(self) -> pa.Table:
        """The id map alone (no index is read): uid, part and row of every position."""
        meta = self.read_meta()
        if meta is None:
            raise WorkspaceError(f"no {self.space!r} index for model {self.slug!r} in "
                                 f"{self.ws.root}: run `pairsift index` first")
        tables = [pq.read_table(self.part_paths(int(p))[1])
                  for p in sorted(int(p) for p in meta["parts"])]
        return pa.concat_tables(tables) if tables else ID_SCHEMA.empty_table()

    def load(self) -> LoadedIndex:
        ids = self.ids()
        meta = self.read_meta()
        parts = sorted(int(p) for p in meta["parts"])
        trained = faiss.read_index(str(self.root / "trained.faiss"))
        index = merge(trained, (faiss.read_index(str(self.part_paths(p)[0])) for p in parts))
        return LoadedIndex(index, ids, meta)

    def vectors(self, part: int) -> tuple[np.ndarray, np.ndarray]:
        """Unit vectors of one workspace part's non-zero rows, and their row numbers."""
        return unit_rows(self.ws.embeddings(self.slug, self.space, part))


class WorkspaceVectors:
    """Exact vectors of index positions, read from the workspace's float16 embeddings.

    Lossy indexes re-score their candidates with these, so the index itself can stay small.
    """

    def __init__(self, store: IndexStore, ids: pa.Table):
        self.store = store
        self.parts = ids.column("part").to_numpy()
        self.rows = ids.column("row").to_numpy()

    def __call__(self, positions: np.ndarray) -> np.ndarray:
        parts, rows = self.parts[positions], self.rows[positions]
        out: np.ndarray | None = None
        for part in np.unique(parts):
            array = self.store.ws.embeddings(self.store.slug, self.store.space, int(part))
            if out is None:
                out = np.zeros((len(positions), array.shape[1]), np.float32)
            out[parts == part] = array[rows[parts == part]]
        if out is None:
            return np.zeros((0, 0), np.float32)
        return out / np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-12)


def training_sample(store: IndexStore, parts: list[int], size: int,
                    rng: np.random.Generator) -> np.ndarray:
    """About ``size`` vectors drawn evenly from every part (one part in memory at a time)."""
    rows = {p: store.ws.part_rows(p) for p in parts}
    fraction = min(1.0, size / max(sum(rows.values()), 1))
    chunks = []
    for part in parts:
        vectors, _ = store.vectors(part)
        take = rng.random(len(vectors)) < fraction
        chunks.append(vectors[take])
    return np.concatenate(chunks) if chunks else np.zeros((0, 0), np.float32)


def needs_rebuild(meta: dict[str, Any] | None, choice: IndexChoice, n: int) -> bool:
    """A stored index is reused unless its family or codes changed or IVF outgrew its lists."""
    if meta is None:
        return False
    old = IndexChoice(**meta["choice"])
    if (old.kind, old.encoding) != (choice.kind, choice.encoding):
        return True
    return old.kind == "ivf" and n > REBUILD_GROWTH * meta["trained_for"]


@dataclass
class SpaceBuild:
    """What one ``build_space`` call did."""

    space: str
    factory: str
    vectors: int
    parts_added: int
    parts_skipped: int
    rebuilt: bool
    nprobe: int | None
    recall_at_10: float | None


def build_space(store: IndexStore, *, memory_budget: int = DEFAULT_MEMORY_BUDGET,
                rebuild: bool = False, advance: Callable[[int], None] = lambda n: None,
                seed: int = 0) -> SpaceBuild:
    """Index every workspace part not yet in the store (all of them when rebuilding)."""
    ws = store.ws
    parts = ws.part_ids()
    if not parts:
        raise WorkspaceError(f"{ws.root} has no parts: run `pairsift ingest` first")
    n = ws.num_samples()
    d = ws.embeddings(store.slug, store.space, parts[0]).shape[1]
    choice = choose_index(n, d, memory_budget)
    meta = store.read_meta()
    rebuilt = meta is not None and (rebuild or needs_rebuild(meta, choice, n))
    if meta is None or rebuilt:
        meta = _start(store, choice, parts, n, d, seed)
    trained = faiss.read_index(str(store.root / "trained.faiss"))
    todo = [p for p in parts if str(p) not in meta["parts"]]
    for part in todo:
        vectors, rows = store.vectors(part)
        uids = ws.read_part(part, ["uid"]).column("uid").take(pa.array(rows))
        ids = pa.table({"uid": uids, "part": pa.array(np.full(len(rows), part, np.int32)),
                        "row": pa.array(rows.astype(np.int64))})
        store.write_part(part, encode(trained, vectors), ids)
        meta["parts"][str(part)] = len(rows)
        store.write_meta(meta)
        advance(ws.part_rows(part))
    return SpaceBuild(store.space, IndexChoice(**meta["choice"]).factory,
                      sum(meta["parts"].values()), len(todo), len(parts) - len(todo), rebuilt,
                      meta["nprobe"], meta["recall_at_10"])


def _start(store: IndexStore, choice: IndexChoice, parts: list[int], n: int, d: int,
           seed: int) -> dict[str, Any]:
    """Clear the store, train the chosen index and write fresh metadata."""
    store.clear()
    sample = (training_sample(store, parts, TRAIN_PER_LIST * choice.nlist,
                              np.random.default_rng(seed))
              if choice.kind == "ivf" else np.zeros((0, d), np.float32))
    store.write_trained(train(choice, sample))
    meta = {"format": 1, "model": store.slug, "space": store.space, "dim": d,
            "choice": asdict(choice), "trained_for": n, "parts": {}, "nprobe": None,
            "recall_at_10": None}
    store.write_meta(meta)
    return meta
