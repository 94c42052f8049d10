"""k-means clustering and SemDeDup over the workspace's embeddings (docs/algorithms.md §1–§2).

``cluster`` trains faiss k-means on a sample and assigns every part (a map stage).
``dedup_semantic`` scores every sample once — its max cosine to an earlier-ranked member of
its cluster, ε-independent — in checkpointed batches of clusters run in parallel, then decides
for any ε or target keep-fraction in seconds.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from ..engine.local import default_threads, ordered_map, progress_bar, run_signal_stage
from ..models import default_dedup_eps, model_slug
from ..stages.cluster import KMeansModel, cluster_members, fit_kmeans
from ..stages.semdedup import (
    DEFAULT_BLOCK,
    eps_for_keep_fraction,
    eps_sweep,
    remove_mask,
    semdedup_cluster,
)
from ..workspace import (
    Workspace,
    WorkspaceError,
    atomic_write,
    config_hash,
    write_array,
    write_table,
)
from .decisions import decision_table
from .score import current_model

CLUSTER = "cluster"
SEMDEDUP = "semdedup"
SWEEP_EPS = (0.001, 0.005, 0.01, 0.02, 0.03, 0.05, 0.07, 0.1, 0.15, 0.2, 0.3)
CLUSTER_BATCHES = 64  # checkpoints per semdedup run: a kill loses at most one batch


@dataclass
class ClusterSummary:
    k: int
    space: str
    sizes: np.ndarray


@dataclass
class SemanticSummary:
    eps: float
    kept: int
    dropped: int
    sweep: list[tuple[float, float]] = field(default_factory=list)


def image_space(ws: Workspace, model: str) -> str:
    """The visual space when the model has one (image-image similarity), else the joint one."""
    return "visual" if ws.manifest["models"][model_slug(model)].get("visual_dim") else "image"


def cluster(workspace: str | Path, *, k: int | None = None, target_size: int = 1000,
            pca_dim: int | None = None, spherical: bool = True, niter: int = 100,
            seed: int = 1234, device: str = "cpu", progress: bool = True) -> ClusterSummary:
    """Cluster the image embeddings: cluster id and cosine distance to the centroid per sample.

    ``k`` defaults to about ``target_size`` samples per cluster.
    """
    ws = Workspace.open(workspace)
    model = current_model(ws)
    slug, space = model_slug(model), image_space(ws, model)
    rows = ws.embedding_rows(slug, space)
    k = k or max(1, round(len(rows) / target_size))
    config = {"model": model, "space": space, "k": k, "pca_dim": pca_dim,
              "spherical": spherical, "niter": niter, "seed": seed}
    kmeans = _kmeans(ws, config, rows, device)

    def compute(part: int, table: pa.Table, advance) -> tuple[pa.Table, list[dict]]:
        labels, dist = kmeans.assign(ws.embeddings(slug, space, part), device=device)
        advance(table.num_rows)
        return pa.table({"uid": table.column("uid"), "cluster": labels,
                         "dist_to_centroid": dist}), []

    run_signal_stage(ws, CLUSTER, config, compute, columns=["uid"], progress=progress)
    labels = ws.signals(CLUSTER, ["cluster"]).column("cluster").to_numpy()
    return ClusterSummary(k, space, np.bincount(labels, minlength=k))


def _kmeans(ws: Workspace, config: dict, rows, device: str) -> KMeansModel:
    """Train once per config; the centroids are saved so a resumed run assigns with them."""
    path = ws.root / "signals" / CLUSTER / config_hash(config) / "kmeans.npz"
    if path.exists():
        return KMeansModel.from_arrays(np.load(path))
    model = fit_kmeans(rows, config["k"], spherical=config["spherical"], niter=config["niter"],
                       seed=config["seed"], pca_dim=config["pca_dim"])

    def save(tmp: Path) -> None:
        with open(tmp, "wb") as f:
            np.savez(f, **model.to_arrays())

    atomic_write(path, save)
    return model


def cluster_table(ws: Workspace) -> tuple[list[str], np.ndarray, np.ndarray]:
    if ws.current_run(CLUSTER) is None:
        raise WorkspaceError(f"{ws.root}: no clusters yet; run `pairsift cluster` first")
    uids = [u for _, t in ws.iter_parts(["uid"]) for u in t.column("uid").to_pylist()]
    table = ws.signals(CLUSTER, ["cluster", "dist_to_centroid"])
    return (uids, table.column("cluster").to_numpy(),
            table.column("dist_to_centroid").to_numpy().astype(np.float32))


def _rank_key(ws: Workspace, rank_by: str | None) -> np.ndarray | None:
    """A signal column to rank by (largest first), e.g. ``clip_score`` keeps the best pair."""
    if rank_by is None:
        return None
    first = ws.part_ids()[0]
    stage = next((s for s in ws.signal_stages() if rank_by in
                  pq.read_schema(ws.signal_path(s, ws.current_run(s), first)).names), None)
    if stage is None:
        raise WorkspaceError(f"no signal column {rank_by!r}; signals: {ws.signal_stages()}")
    values = ws.signals(stage, [rank_by]).column(rank_by).to_numpy(zero_copy_only=False)
    return np.nan_to_num(values.astype(np.float32), nan=-np.inf)


def _score_batches(run_dir: Path, members: dict[int, np.ndarray], rows,
                   dist: np.ndarray, key: np.ndarray | None, options: dict,
                   threads: int, advance: Callable[[int], None]) -> Iterator[np.ndarray]:
    """Score clusters batch by batch; each finished batch is saved and never redone."""
    batches = [[c for c in members if c % CLUSTER_BATCHES == b] for b in range(CLUSTER_BATCHES)]

    def score(cluster_ids: list[int]) -> np.ndarray:
        out = []
        for c in cluster_ids:
            idx = members[c]
            result = semdedup_cluster(rows[idx], dist[idx], idx, key=None if key is None
                                      else key[idx], **options)
            out.append(np.stack([idx, result.max_sim, result.max_id]).T)
        return np.concatenate(out) if out else np.zeros((0, 3))

    def run(b: int) -> np.ndarray:
        path = run_dir / f"batch-{b:03d}.npy"
        if path.exists():
            return np.load(path)
        result = score(batches[b])
        write_array(path, result)
        return result

    for result in ordered_map(run, range(CLUSTER_BATCHES), threads, window=threads):
        advance(len(result))
        yield result


def dedup_semantic(
    workspace: str | Path,
    *,
    eps: float | None = None,
    keep_fraction: float | None = None,
    order: str = "hard",
    tie_break: str = "meta",
    rank_by: str | None = None,
    rule: str = "semdedup_code",
    strict: bool = True,
    block: int = DEFAULT_BLOCK,
    device: str = "cpu",
    threads: int | None = None,
    progress: bool = True,
) -> SemanticSummary:
    """SemDeDup: drop samples within cosine ``1 − eps`` of an earlier-ranked cluster member.

    Give ``eps`` or ``keep_fraction`` (ε set from stored scores, docs/algorithms.md §1.4); with
    neither, ε is the model's default (``models.default_dedup_eps``).
    ``order`` ranks each cluster (``hard``: farthest from the centroid first, as SemDeDup);
    ``tie_break`` orders equal distances (exact copies): ``meta`` is Meta's stable sort in
    dataset order (``hard`` keeps the first copy), ``id`` NeMo Curator's (distance, id) sort;
    ``rank_by`` ranks by a signal column instead (largest first, e.g. ``clip_score``).
    """
    if eps is not None and keep_fraction is not None:
        raise ValueError("give eps or keep_fraction, not both")
    ws = Workspace.open(workspace)
    uids, labels, dist = cluster_table(ws)
    model = current_model(ws)
    if eps is None and keep_fraction is None:
        eps = default_dedup_eps(model)
    space = ws.run_config(CLUSTER)["space"]
    options = {"order": order, "tie_break": tie_break, "block": block, "device": device}
    config = {"model": model, "space": space, "clusters": ws.current_run(CLUSTER),
              "rank_by": rank_by, **options}
    run = ws.start_run(SEMDEDUP, config)
    run_dir = ws.root / "signals" / SEMDEDUP / run
    members = cluster_members(labels)
    rows = ws.embedding_rows(model_slug(model), space)
    key = _rank_key(ws, rank_by)
    max_sim = np.zeros(len(uids), np.float32)
    max_row = np.arange(len(uids))
    with progress_bar("semdedup", len(uids), enabled=progress) as advance:
        for batch in _score_batches(run_dir, members, rows, dist, key, options,
                                    threads or default_threads(), advance):
            idx = batch[:, 0].astype(np.int64)
            max_sim[idx] = batch[:, 1]
            max_row[idx] = batch[:, 2].astype(np.int64)
    _write_scores(ws, run, uids, labels, max_sim, max_row)
    if keep_fraction is not None:
        eps, _ = eps_for_keep_fraction(max_sim, keep_fraction, strict=strict)
    remove = _removal(ws, rule, eps, strict, max_sim, members, rows, dist, key, options)
    sweep = list(zip(SWEEP_EPS, eps_sweep(max_sim, SWEEP_EPS, strict=strict).tolist(),
                     strict=True))
    decision_config = {**config, "eps": eps, "rule": rule, "strict": strict}
    ws.write_decisions(SEMDEDUP, decision_table(
        SEMDEDUP, uids, remove, "semantic_duplicate_of",
        lambda i: {"of": uids[max_row[i]], "similarity": round(float(max_sim[i]), 6),
                   "eps": eps, "cluster": int(labels[i])}, decision_config))
    dropped = int(remove.sum())
    ws.finish_run(SEMDEDUP, run, {"eps": eps, "rule": rule, "dropped": dropped,
                                  "sweep": sweep})
    return SemanticSummary(eps, len(uids) - dropped, dropped, sweep)


def _write_scores(ws: Workspace, run: str, uids: list[str], labels: np.ndarray,
                  max_sim: np.ndarray, max_row: np.ndarray) -> None:
    """The ε-independent scores as a per-part signal, aligned with the parts."""
    start = 0
    for part in ws.part_ids():
        n = ws.manifest["parts"][str(part)]["rows"]
        sl = slice(start, start + n)
        write_table(ws.signal_path(SEMDEDUP, run, part), pa.table({
            "uid": uids[sl], "max_sim": max_sim[sl],
            "max_sim_uid": [uids[r] for r in max_row[sl]]}))
        start += n


def _removal(ws: Workspace, rule: str, eps: float, strict: bool, max_sim: np.ndarray,
             members: dict[int, np.ndarray], rows, dist: np.ndarray, key, options) -> np.ndarray:
    """The removal mask; rules other than SemDeDup's own need one more pass per cluster."""
    if rule == "semdedup_code":
        return remove_mask(max_sim, eps, strict=strict)
    remove = np.zeros(len(max_sim), bool)
    for idx in members.values():
        result = semdedup_cluster(rows[idx], dist[idx], idx, eps, rule=rule, strict=strict,
                                  key=None if key is None else key[idx], **options)
        remove[idx] = result.remove
    return remove
