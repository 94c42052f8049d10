"""SemDeDup inside one cluster: rank, score against earlier-ranked members, apply a rule.

docs/algorithms.md §1 (Meta's code) and §2 (NeMo Curator). The score `M[j]` = max cosine of j to any
earlier-ranked member (floored at 0) does not depend on ε, so it is computed once and every ε
is a cheap comparison afterwards (§1.4). No n×n matrix is built: column blocks of B items need
only the rows ranked before them, `X[:e] @ X[s:e].T` (≤ n×B): for n ≫ B about half the FLOPs
of NeMo's `X @ X[s:e].T`.
"""

from __future__ import annotations

from collections.abc import Container, Iterator
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from .. import spaces
from ..engine.views import Collection
from ..errors import ConfigError, WorkspaceError
from ..lazy import lazy
from ..params import Param
from ..stage import Decisions, Dependencies, GlobalStage, PartOutput, fail, register
from ..uids import uid_strings
from .cluster import Device, cluster_members, float_tensor, unit_rows
from .hashdedup import dihedral_distance, read_hashes
from .keep import earlier_dedup, excluded, index_dtype, keep_rank
from .textguard import text_guard_input, text_guard_veto

torch = lazy("torch")  # imported on first use: the CLI starts without torch

Order = Literal["hard", "easy", "random"]
TieBreak = Literal["meta", "id"]
Rule = Literal["semdedup_code", "greedy_kept", "components"]
RULES = ("semdedup_code", "greedy_kept", "components")
DEFAULT_BLOCK = 1024
MIN_BLOCK = 128  # narrower products waste more in call overhead than they save in flops


def threshold(eps: float, strict: bool = True) -> np.float32:
    """The float32 cut `t` that float32 scores are compared with: `M > t` or `M >= t`.

    Each reference compares at its own precision. Meta's `M > 1 - eps` runs in torch, which
    rounds 1 − ε to float32, so strict uses float32(1 − ε). NeMo Curator filters the stored
    scores with pyarrow (`cosine_sim_score >= 1.0 - eps`), which promotes them to float64:
    `M >= 1 − ε` exactly. For float32 M that equals `M >= t` with t the smallest float32 not
    below 1 − ε, so both rules stay float32 comparisons (no float64 copy of a block).
    """
    if not 0.0 < float(eps) < 1.0:
        raise ValueError(f"eps must satisfy 0 < eps < 1, got {eps}")
    exact = 1.0 - float(eps)
    t = np.float32(exact)
    if not strict and float(t) < exact:
        t = np.nextafter(t, np.float32(np.inf))
    return t


def _over(values: np.ndarray | torch.Tensor, t: np.float32, strict: bool):
    """`values > t` (Meta, default) or `values >= t` (NeMo), docs/algorithms.md §2.3."""
    return values > float(t) if strict else values >= float(t)


def rank_cluster(
    dist: np.ndarray | None,
    ids: np.ndarray,
    order: Order = "hard",
    *,
    seed: int = 1234,
    key: np.ndarray | None = None,
    tie_break: TieBreak = "meta",
) -> np.ndarray:
    """Permutation (int64) listing the cluster's rows from first- to last-ranked.

    Earlier-ranked items are the ones kept. `hard` puts the farthest from the centroid first
    (SemDeDup's default `keep_hard=True`), `easy` the closest, `random` a seeded shuffle.
    `key` replaces `dist` as the sort column, so `hard` then means "largest key first"
    (e.g. `key=clip_score` keeps the best-aligned pair).

    Ties (e.g. exact copies) decide which copy survives. `tie_break="meta"` (default) is
    Meta's code: a stable sort by distance, descending, so tied rows keep the order they
    arrive in (the caller passes dataset order); `easy` reverses that whole list, ties
    included (§1.2 steps 3-4). `"id"` is NeMo's: sort by (distance, id) both descending for
    `hard`, both ascending for `easy` (§2.3), independent of the row order.
    """
    ids = np.asarray(ids)
    n = len(ids)
    if order == "random":
        return np.random.default_rng(seed).permutation(n).astype(np.int64)
    if order not in ("hard", "easy"):
        raise ValueError(f"order must be hard, easy or random, got {order!r}")
    value = np.asarray(key if key is not None else dist, dtype=np.float64)
    if value.shape != (n,) or np.isnan(value).any():
        raise ValueError("need one ranking value per id, none NaN (±inf ranks last/first)")
    if tie_break == "meta":
        hard = np.argsort(-value, kind="stable")
    elif tie_break == "id":
        hard = np.lexsort((ids, value))[::-1]
    else:
        raise ValueError(f"tie_break must be 'meta' or 'id', got {tie_break!r}")
    return (hard if order == "hard" else hard[::-1]).astype(np.int64)


def effective_block(n: int, block: int = DEFAULT_BLOCK) -> int:
    """Column block actually used for n rows: at most `block` (the memory cap), but about n/8
    (≥ 128) for small clusters so they also skip most of the lower triangle: k blocks cost
    (k+1)/2k of the full product's flops."""
    if block < 1:
        raise ValueError("block must be >= 1")
    return min(block, max(MIN_BLOCK, -(-n // 8)))


def max_similarity(
    X: np.ndarray | torch.Tensor, block: int = DEFAULT_BLOCK, device: Device = "cpu"
) -> tuple[np.ndarray, np.ndarray]:
    """For each ranked row j: the max cosine to an earlier row and that row's index.

    Equals column max/argmax of `triu(X Xᵀ, 1)` (docs/algorithms.md §1.2 step 5, §A.1): the zeroed
    triangle floors the score at 0, and when no earlier row has a positive similarity the
    argmax is j itself (row 0 → (0.0, 0)), like NeMo's `max_id = id` for singletons (§2.4).
    Rows must be L2-normalised and in ranked order. fp32 throughout; peak extra memory is one
    n×B float32 block (B = `effective_block(n, block)`).
    """
    x = float_tensor(X, device)
    n = x.shape[0]
    block = effective_block(n, block)
    max_sim = torch.zeros(n, dtype=torch.float32, device=device)
    max_idx = torch.zeros(n, dtype=torch.int64, device=device)
    for s in range(0, n, block):
        e = min(s + block, n)
        P = x[:e] @ x[s:e].T  # rows after the block can never be earlier-ranked
        P[s:e].triu_(1)  # row s+r is earlier than column s+c only when r < c
        max_sim[s:e], max_idx[s:e] = P.max(dim=0)
    return max_sim.cpu().numpy(), max_idx.cpu().numpy()


def _candidate_blocks(
    x: torch.Tensor, cols: np.ndarray, t: np.float32, strict: bool, block: int
) -> Iterator[tuple[np.ndarray, torch.Tensor]]:
    """Boolean blocks A[i, q] = (i ranked before cols[q]) and sim(i, cols[q]) over threshold."""
    for k in range(0, len(cols), block):
        c = cols[k : k + block]
        e = int(c[-1]) + 1
        ct = torch.as_tensor(c, device=x.device)
        A = _over(x[:e] @ x[ct].T, t, strict)
        A &= torch.arange(e, device=x.device)[:, None] < ct[None, :]
        yield c, A


def _greedy_kept(
    x: torch.Tensor, cols: np.ndarray, t: np.float32, strict: bool, block: int
) -> np.ndarray:
    """Drop j only if it is similar to an earlier item that was kept (docs/algorithms.md §1.3)."""
    kept = np.ones(x.shape[0], dtype=bool)
    for c, A in _candidate_blocks(x, cols, t, strict, block):
        known = torch.as_tensor(kept[: A.shape[0]], device=x.device).clone()
        known[torch.as_tensor(c, device=x.device)] = False  # this block's items: undecided
        hit = (A & known[:, None]).any(0).cpu().numpy()
        inner = A[torch.as_tensor(c, device=x.device)].cpu().numpy()  # candidate × candidate
        for q in range(len(c)):
            if hit[q] or (inner[:q, q] & kept[c[:q]]).any():
                kept[c[q]] = False
    return ~kept


def _compress(parent: np.ndarray) -> None:
    """Point every node straight at its root (pointer jumping, in place)."""
    while True:
        grand = parent[parent]
        if np.array_equal(grand, parent):
            return
        parent[:] = grand


def _union(parent: np.ndarray, a: np.ndarray, b: np.ndarray) -> None:
    """Merge the sets of each pair (a, b); the root is always the smallest (earliest) index."""
    while a.size:
        _compress(parent)
        ra, rb = parent[a], parent[b]
        diff = ra != rb
        a, b, ra, rb = a[diff], b[diff], ra[diff], rb[diff]
        np.minimum.at(parent, np.maximum(ra, rb), np.minimum(ra, rb))


def _components(
    x: torch.Tensor, cols: np.ndarray, t: np.float32, strict: bool, block: int
) -> np.ndarray:
    """Keep only the earliest-ranked member of each connected component: docs/algorithms.md §1.3."""
    parent = np.arange(x.shape[0])
    for c, A in _candidate_blocks(x, cols, t, strict, block):
        e = A.shape[0]
        _compress(parent[:e])
        roots, inv = np.unique(parent[:e], return_inverse=True)
        # one edge per (component, column) instead of one per (row, column): dense clusters
        # otherwise produce ~n×B edges per block
        by_root = torch.zeros((len(roots), len(c)), dtype=torch.float32, device=x.device)
        by_root.index_add_(0, torch.as_tensor(inv, device=x.device), A.to(torch.float32))
        r, q = (v.cpu().numpy() for v in torch.nonzero(by_root, as_tuple=True))
        _union(parent[:e], roots[r], c[q])
    _compress(parent)
    return parent != np.arange(len(parent))


def remove_mask(
    max_sim: np.ndarray,
    eps: float,
    *,
    rule: Rule = "semdedup_code",
    strict: bool = True,
    X: np.ndarray | torch.Tensor | None = None,
    block: int = DEFAULT_BLOCK,
    device: Device = "cpu",
) -> np.ndarray:
    """Which ranked items to drop at this ε.

    `semdedup_code` (default, reproduces the papers' numbers): drop j iff M[j] > 1−ε, whether
    or not the similar earlier item was dropped (docs/algorithms.md §1.2 step 6); `strict=False`:
    NeMo's `>=`. `greedy_kept`: drop j iff similar to an earlier item that was kept.
    `components`: keep the earliest member of each connected component of the thresholded
    graph. The last two need the ranked unit rows `X` and one blocked pass over the columns
    with M[j] over threshold (only those can have an earlier neighbour).
    """
    t = threshold(eps, strict)
    cand = np.asarray(_over(np.asarray(max_sim), t, strict))
    if rule == "semdedup_code":
        return cand
    if rule not in RULES:
        raise ValueError(f"rule must be one of {RULES}, got {rule!r}")
    if X is None or len(X) != len(cand):
        raise ValueError(f"rule {rule!r} needs the ranked embeddings X, one row per score")
    x = float_tensor(X, device)
    rule_fn = _greedy_kept if rule == "greedy_kept" else _components
    return rule_fn(x, np.flatnonzero(cand), t, strict, block)


def eps_sweep(max_sim: np.ndarray, eps_values, *, strict: bool = True) -> np.ndarray:
    """Kept fraction for each ε under `semdedup_code` (docs/algorithms.md §1.4), from scores only.

    Pass the scores of every item in the collection (singletons have M = 0).
    """
    m = np.sort(np.asarray(max_sim, dtype=np.float32))
    ts = np.array([threshold(e, strict) for e in np.atleast_1d(eps_values)], dtype=np.float32)
    kept = np.searchsorted(m, ts, side="right" if strict else "left")
    return kept / max(len(m), 1)


def eps_for_keep_fraction(
    max_sim: np.ndarray, keep_fraction: float, *, strict: bool = True
) -> tuple[float, float]:
    """ε that keeps at least `keep_fraction` of the items, and the fraction it really keeps.

    The threshold is the ⌈qN⌉-th smallest score (docs/algorithms.md §1.4); ties keep more.
    The threshold is clamped into [2⁻²⁰, 1 − 2⁻²⁴] so ε stays in (0, 1): exact duplicates
    (M = 1) are then always dropped, and the achieved fraction says so.
    """
    m = np.sort(np.asarray(max_sim, dtype=np.float32))
    if not 0.0 < keep_fraction <= 1.0 or len(m) == 0:
        raise ValueError("need 0 < keep_fraction <= 1 and at least one score")
    t = m[max(int(np.ceil(keep_fraction * len(m))) - 1, 0)]
    if not strict:  # kept = M < t: step to the next float so items equal to t stay
        t = np.nextafter(t, np.float32(np.inf))
    t = np.clip(t, np.float32(2.0**-20), np.float32(1 - 2.0**-24))
    eps = 1.0 - float(t)
    return eps, float(eps_sweep(m, [eps], strict=strict)[0])


@dataclass(frozen=True)
class SemDedupResult:
    """Per-cluster scores, aligned with the caller's rows (not the ranking)."""

    order: np.ndarray  # int64: ranked position -> caller row
    max_sim: np.ndarray  # float32: max cosine to an earlier-ranked member (0 if none)
    max_id: np.ndarray  # that member's id; the row's own id when none is similar
    remove: np.ndarray | None  # bool, only when eps was given


def semdedup_cluster(
    X: np.ndarray,
    dist: np.ndarray | None,
    ids: np.ndarray,
    eps: float | None = None,
    *,
    order: Order = "hard",
    tie_break: TieBreak = "meta",
    seed: int = 1234,
    key: np.ndarray | None = None,
    rule: Rule = "semdedup_code",
    strict: bool = True,
    block: int = DEFAULT_BLOCK,
    device: Device = "cpu",
) -> SemDedupResult:
    """Rank one cluster, score it, and (if `eps` is given) decide removals.

    `X` may be float16 and un-normalised; `dist` is the distance to the centroid used for
    ranking (see `rank_cluster`); `ids` must be unique within the cluster (SemDeDup asserts
    the same), since they name the kept duplicate in `max_id`.
    """
    ids = np.asarray(ids)
    if len(X) != len(ids) or len(np.unique(ids)) != len(ids):
        raise ValueError("need one unique id per embedding row")
    perm = rank_cluster(dist, ids, order, seed=seed, key=key, tie_break=tie_break)
    x = unit_rows(np.asarray(X)[perm], device)
    ms, mi = max_similarity(x, block, device)
    max_sim = np.empty_like(ms)
    max_sim[perm] = ms
    max_id = np.empty_like(ids)
    max_id[perm] = ids[perm[mi]]
    remove = None
    if eps is not None:
        removed = remove_mask(ms, eps, rule=rule, strict=strict, X=x, block=block, device=device)
        remove = np.empty(len(ids), dtype=bool)
        remove[perm] = removed
    return SemDedupResult(order=perm, max_sim=max_sim, max_id=max_id, remove=remove)


# -- stage --------------------------------------------------------------------------------------
SWEEP_EPS = (0.001, 0.005, 0.01, 0.02, 0.03, 0.05, 0.07, 0.1, 0.15, 0.2, 0.3)
CLUSTER_BATCHES = 64  # checkpointed tasks per run: a kill loses at most one batch
ORDERS = ("hard", "easy", "random", "quality")


def default_eps(model: str) -> float:
    from ..models import default_dedup_eps

    return default_dedup_eps(model)


class ClusterDedup(GlobalStage):
    """What SemDeDup and FairDeDup share: the clusters, which rows take part (an embedding,
    not dropped by an earlier dedup stage), and batches of clusters as tasks."""

    requires = ("cluster",)
    reads_embeddings = True
    reason = "semantic_duplicate_of"

    def dependencies(self, present: Container[str] = ()) -> Dependencies:
        quality = ("score",) if self.options.get("order") == "quality" else ()
        return self.requires, (*quality, *earlier_dedup(self.name))

    def extra_inputs(self, ws: Any) -> dict[str, Any]:
        return {"space": ws.run_record("cluster")["inputs"]["space"]}

    def plan(self, data: Collection) -> list[list[int]]:
        labels = data.values("cluster", "cluster", np.int32)
        self._taking_part = (labels >= 0) & ~excluded(data, self.name)
        rows = np.flatnonzero(self._taking_part).astype(index_dtype(data.n))
        self._members = {c: rows[idx] for c, idx in cluster_members(labels[rows]).items()}
        del rows
        batches = [[c for c in self._members if c % CLUSTER_BATCHES == b]
                   for b in range(CLUSTER_BATCHES)]
        return [b for b in batches if b]

    def ranked(self, data: Collection, idx: np.ndarray) -> np.ndarray:
        """The cluster's rows, first-ranked (preferred) first."""
        dist = data.values("cluster", "dist_to_centroid")
        key = self.rank_key(data)
        order, tie_break = self["order"], self.options.get("tie_break", "meta")
        if order == "quality":
            order = "hard"
        return idx[rank_cluster(dist[idx], idx, order,
                                key=None if key is None else key[idx], tie_break=tie_break)]

    def rank_key(self, data: Collection) -> np.ndarray | None:
        """Values ranked largest-first instead of the distance to the centroid."""
        if self["order"] == "quality":
            return data._cached("quality", lambda: -keep_rank(data).astype(np.float64))
        return None

    def counts(self, data: Collection) -> dict[str, int]:
        labels = data.values("cluster", "cluster", np.int32)
        return {"without_embedding": int((labels < 0).sum()),
                "excluded": int(((labels >= 0) & ~self._taking_part).sum())}


@register
class DedupSemantic(ClusterDedup):
    """SemDeDup: inside each cluster, drop a sample within cosine 1 − eps of an earlier-ranked
    member. Scores are ε-independent and stored, so another eps or keep fraction re-decides in
    seconds; prints the eps sweep (eps → kept fraction)."""

    name = "dedup-semantic"
    task_options = ("order", "rank_by", "tie_break")
    params = (
        Param("eps", float, None, "Drop if cosine > 1 − eps to an earlier-ranked member "
                                  "(default: the model's).", low=0, high=1, closed="neither"),
        Param("keep_fraction", float, None, "Choose eps to keep this fraction.", low=0, high=1,
              closed="right"),
        Param("order", str, "hard", "Ranking inside a cluster: hard (farthest from the "
                                    "centroid first, as SemDeDup), easy, random, or quality "
                                    "(the keep policy: CLIP score, pixels, uid).",
              choices=ORDERS),
        Param("rank_by", str, None, "Rank by a signal column instead (largest kept), e.g. "
                                    "clip_score."),
        Param("rule", str, "semdedup_code", "Which items of a duplicate group drop.",
              choices=RULES),
        Param("strict", bool, True, "'>' like Meta's code (--no-strict: '>=' like NeMo)."),
        Param("tie_break", str, "meta", "Ranking of exact copies: meta (Meta's stable sort, "
                                        "dataset order) or id (NeMo Curator's, by id).",
              choices=("meta", "id")),
        Param("max_phash", int, None, "Agreement: drop only if the matched sample's pHash, "
                                      "flips and rotations included, is within this distance.",
              low=0, high=64),
        Param("text_guard", bool, False, "Never drop a text image as a duplicate of another "
                                         "text image on the embedding alone (text-detect, "
                                         "or parrot-spot's words when it ran)."),
        Param("space", str, None, "The space to dedup in; `pairsift cluster --space` must "
                                  "have clustered it (default: the cluster's)."),
        Param("block", int, DEFAULT_BLOCK, "Columns per similarity block.", low=1,
              runtime=True),
        Param("device", str, "cpu", "cpu | cuda", runtime=True),
        Param("threads", int, None, "Clusters scored in parallel.", low=1, runtime=True),
    )

    def check(self) -> None:
        if self["eps"] is not None and self["keep_fraction"] is not None:
            fail("dedup-semantic takes eps or keep_fraction, not both")
        if self["rank_by"] is not None and self["order"] == "quality":
            fail("dedup-semantic: order 'quality' is a ranking of its own; drop rank_by")

    def dependencies(self, present: Container[str] = ()) -> Dependencies:
        required, optional = super().dependencies(present)
        hashes = ("hashes",) if self["max_phash"] is not None else ()
        text = (text_guard_input(present),) if self["text_guard"] else ()
        return (*required, *hashes, *text), optional

    def extra_inputs(self, ws: Any) -> dict[str, Any]:
        inputs = super().extra_inputs(ws)
        if self["space"] is not None and self["space"] != inputs["space"]:
            raise ConfigError(f"dedup semantic --space {self['space']}: the current clusters "
                              f"are in {inputs['space']!r}; run `pairsift cluster --space "
                              f"{self['space']}` first")
        if (spaces.parse(inputs["space"])[1] is not None and self["eps"] is None
                and self["keep_fraction"] is None):
            raise ConfigError(f"{inputs['space']!r} is a trained head's space, whose scores "
                              "have no measured default eps: give --eps or --keep-fraction")
        if self["rank_by"] is not None:
            inputs["rank_by"] = _signal_with(ws, self["rank_by"])
        return inputs

    def rank_key(self, data: Collection) -> np.ndarray | None:
        if self["rank_by"] is None:
            return super().rank_key(data)
        (stage, _), = data.inputs["rank_by"].items()
        values = data.values(stage, self["rank_by"])
        return np.nan_to_num(values, nan=-np.inf)

    def run_task(self, data: Collection, clusters: list[int]) -> dict[str, np.ndarray]:
        rows = data.embeddings(data.inputs["space"])
        out = []
        for c in clusters:
            ranked = self.ranked(data, self._members[c])
            ms, mi = max_similarity(unit_rows(rows[ranked], self["device"]), self["block"],
                                    self["device"])
            out.append(np.stack([ranked, ms, ranked[mi]]).T)
        table = np.concatenate(out)
        return {"row": table[:, 0].astype(np.int64), "max_sim": table[:, 1].astype(np.float32),
                "max_row": table[:, 2].astype(np.int64)}

    def combine(self, data: Collection, results: Any) -> dict[str, Any]:
        max_sim = np.zeros(data.n, np.float32)
        max_row = np.arange(data.n, dtype=index_dtype(data.n))
        for result in results:
            max_sim[result["row"]] = result["max_sim"]
            max_row[result["row"]] = result["max_row"]
        eps = self["eps"]
        if self["keep_fraction"] is not None:
            eps, _ = eps_for_keep_fraction(max_sim, self["keep_fraction"], strict=self["strict"])
        elif eps is None:
            eps = default_eps(data.model)
        remove = self._removal(data, max_sim, eps)
        return {"max_sim": max_sim, "max_row": max_row, "eps": eps,
                "remove": self._confirmed(data, remove, max_row)}

    def _confirmed(self, data: Collection, remove: np.ndarray,
                   max_row: np.ndarray) -> np.ndarray:
        """``remove`` less the drops whose pair (the sample, the one it matched) fails
        agreement with the hashes or the text guard: a sample is a duplicate of what it
        matched, so only that pair is checked, never the rest of its chain."""
        if (self["max_phash"] is None and not self["text_guard"]) or not remove.any():
            return remove
        ok = np.ones(data.n, bool)
        rows = np.flatnonzero(remove)
        of = max_row[rows].astype(np.int64)
        if self["max_phash"] is not None:
            h = read_hashes(data, dihedral=True)
            close = dihedral_distance(h, rows, of) <= self["max_phash"]
            ok[rows[~(close & h.valid[rows] & h.valid[of])]] = False
        if self["text_guard"]:
            ok[rows[text_guard_veto(data, rows, of)]] = False
        return remove & ok

    def _removal(self, data: Collection, max_sim: np.ndarray, eps: float) -> np.ndarray:
        """SemDeDup's own rule reads the scores; the others need one more pass per cluster."""
        if self["rule"] == "semdedup_code":
            return remove_mask(max_sim, eps, strict=self["strict"])
        rows = data.embeddings(data.inputs["space"])
        remove = np.zeros(data.n, bool)
        for idx in self._members.values():
            ranked = self.ranked(data, idx)
            remove[ranked] = remove_mask(max_sim[ranked], eps, rule=self["rule"],
                                         strict=self["strict"], X=unit_rows(rows[ranked]),
                                         block=self["block"], device=self["device"])
        return remove

    def part_output(self, data: Collection, state: dict[str, Any], part: int) -> PartOutput:
        rows = data.rows_of(part)
        of = uid_strings(data.uid_codes()[state["max_row"][rows]])
        max_sim = state["max_sim"][rows]
        labels = data.values("cluster", "cluster", np.int32)[rows]
        return PartOutput(
            signals=pa.table({"max_sim": max_sim, "max_sim_uid": of}),
            decisions=Decisions(state["remove"][rows], self.reason, {
                "of": of, "similarity": max_sim, "eps": state["eps"], "cluster": labels}))

    def summarize(self, data: Collection, state: dict[str, Any]) -> dict[str, Any]:
        kept = eps_sweep(state["max_sim"], SWEEP_EPS, strict=self["strict"]).tolist()
        return {"eps": state["eps"], "rule": self["rule"],
                "sweep": list(zip(SWEEP_EPS, kept, strict=True)), **self.counts(data)}


def _signal_with(ws: Any, column: str) -> dict[str, str]:
    """{stage: run} of the current signal stage that has ``column``."""
    first = ws.part_ids()[0]
    for stage in ws.signal_stages():
        path = ws.signal_path(stage, ws.current_run(stage), first)
        if path.exists() and column in pq.read_schema(path).names:
            return {stage: ws.current_run(stage)}
    raise WorkspaceError(f"no signal column {column!r} to rank by; signal stages: "
                         f"{ws.signal_stages()}")
