"""FairDeDup over the workspace (docs/algorithms.md §3): SemDeDup's duplicates, a fairer survivor.

Subgroups come from text prompts (prototypes in the model's joint space) or from a labels
table (an attribute column). The signal ``fairdedup`` records each sample's subgroup and
neighbourhood, so the report's fairness table picks it up; the summary compares per-subgroup
retention with SemDeDup's choice on the same neighbourhoods, i.e. at the same prune rate.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa

from ..engine.local import progress_bar
from ..io.tables import SourceError, pick_column, read_table
from ..models import default_dedup_eps, load_encoder, model_slug
from ..stages.cluster import cluster_members
from ..stages.fairdedup import DEFAULT_TEMPLATES, fairdedup_cluster, text_prototypes
from ..stages.semdedup import DEFAULT_BLOCK, rank_cluster
from ..workspace import Workspace, write_table
from .decisions import decision_table
from .score import current_model
from .semantic import CLUSTER, cluster_table

FAIRDEDUP = "fairdedup"


@dataclass
class Retention:
    group: str
    samples: int
    kept_semdedup: int
    kept_fairdedup: int


@dataclass
class FairSummary:
    eps: float
    kept: int
    dropped: int
    retention: list[Retention]


def read_labels(ws: Workspace, path: str | Path, column: str) -> list[str | None]:
    """One label per sample (None: unlabelled) from a table keyed by ``uid`` or ``key``."""
    path = Path(path)
    table = read_table(path)
    label_col = pick_column(table, column, (), "label", path)
    key_col = pick_column(table, None, ("uid", "key"), "uid or key", path)
    mapping = dict(zip(table.column(key_col).to_pylist(), table.column(label_col).to_pylist(),
                       strict=True))
    rows = [r for _, t in ws.iter_parts(["uid", "key"]) for r in t.to_pylist()]
    labels = [mapping.get(r[key_col]) for r in rows]
    if not any(label is not None for label in labels):
        raise SourceError(f"{path}: no {key_col} in the table matches a sample of {ws.root}")
    return [None if label is None else str(label) for label in labels]


def dedup_fair(
    workspace: str | Path,
    *,
    groups: list[str] | None = None,
    templates: list[str] | None = None,
    labels: str | Path | None = None,
    label_column: str = "subgroup",
    eps: float | None = None,
    dynamic: bool = False,
    relevance_gate: float | None = None,
    order: str = "hard",
    block: int = DEFAULT_BLOCK,
    device: str = "cpu",
    progress: bool = True,
) -> FairSummary:
    """Drop semantic duplicates, keeping the member closest to the cluster's least-represented
    subgroup. Give ``groups`` (names for prompt templates) or ``labels`` (a table)."""
    if (groups is None) == (labels is None):
        raise ValueError("give subgroups as --groups (text prompts) or --labels (a table)")
    ws = Workspace.open(workspace)
    uids, clusters, dist = cluster_table(ws)
    model = current_model(ws)
    eps = default_dedup_eps(model) if eps is None else eps
    space = ws.run_config(CLUSTER)["space"]
    slug = model_slug(model)
    rows, joint = ws.embedding_rows(slug, space), ws.embedding_rows(slug, "image")
    if groups is not None:
        names = list(groups)
        encoder = load_encoder(model, device)
        prototypes = text_prototypes(encoder.encode_texts, names,
                                     tuple(templates or DEFAULT_TEMPLATES))
        label_ids = None
    else:
        raw = read_labels(ws, labels, label_column)
        names = sorted({label for label in raw if label is not None})
        index = {name: i for i, name in enumerate(names)}
        label_ids = np.array([-1 if v is None else index[v] for v in raw])
        prototypes = None
    config = {"model": model, "space": space, "clusters": ws.current_run(CLUSTER), "eps": eps,
              "groups": names, "templates": templates, "labels": str(labels) if labels else None,
              "dynamic": dynamic, "relevance_gate": relevance_gate, "order": order}
    run = ws.start_run(FAIRDEDUP, config)
    n = len(uids)
    remove, seed_row = np.zeros(n, bool), np.arange(n)
    subgroup, because = np.full(n, -1), np.full(n, -1)
    with progress_bar("fairdedup", n, enabled=progress) as advance:
        for idx in cluster_members(clusters).values():
            ranked = idx[rank_cluster(dist[idx], idx, order)]
            result = fairdedup_cluster(
                rows[ranked], eps, prototypes,
                labels=None if label_ids is None else label_ids[ranked],
                prototype_space=joint[ranked] if prototypes is not None and space != "image"
                else None,
                dynamic=dynamic, relevance_gate=relevance_gate, block=block, device=device)
            remove[ranked] = result.remove
            seed_row[ranked] = ranked[result.neighbourhood]
            subgroup[ranked] = result.group_of_max_prototype
            because[ranked] = result.kept_because
            advance(len(idx))
    kept_of = _survivors(seed_row, remove)
    _write(ws, run, uids, names, subgroup, seed_row, because, remove, kept_of, eps, config)
    retention = _retention(names, subgroup, remove, seed_row)
    dropped = int(remove.sum())
    ws.finish_run(FAIRDEDUP, run, {"eps": eps, "dropped": dropped,
                                   "retention": [vars(r) for r in retention]})
    return FairSummary(eps, n - dropped, dropped, retention)


def _survivors(seed_row: np.ndarray, remove: np.ndarray) -> np.ndarray:
    """For each sample, the row its neighbourhood kept."""
    kept_rows = np.flatnonzero(~remove)
    by_seed = dict(zip(seed_row[kept_rows].tolist(), kept_rows.tolist(), strict=True))
    return np.array([by_seed[s] for s in seed_row.tolist()])


def _write(ws: Workspace, run: str, uids: list[str], names: list[str], subgroup: np.ndarray,
           seed_row: np.ndarray, because: np.ndarray, remove: np.ndarray, kept_of: np.ndarray,
           eps: float, config: dict) -> None:
    def name_of(g: int) -> str | None:
        return names[g] if g >= 0 else None

    label = [name_of(g) for g in subgroup]
    start = 0
    for part in ws.part_ids():
        sl = slice(start, start + ws.manifest["parts"][str(part)]["rows"])
        write_table(ws.signal_path(FAIRDEDUP, run, part), pa.table({
            "uid": uids[sl], "subgroup": pa.array(label[sl], pa.string()),
            "neighbourhood": [uids[s] for s in seed_row[sl]],
            "kept_for_group": pa.array([name_of(g) for g in because[sl]], pa.string())}))
        start = sl.stop
    ws.write_decisions(FAIRDEDUP, decision_table(
        FAIRDEDUP, uids, remove, "semantic_duplicate_of",
        lambda i: {"of": uids[kept_of[i]], "eps": eps, "kept_for_group": name_of(because[i]),
                   "subgroup": label[i]}, config))


def _retention(names: list[str], subgroup: np.ndarray, remove: np.ndarray,
               seed_row: np.ndarray) -> list[Retention]:
    """Kept per subgroup: FairDeDup vs SemDeDup's choice (each neighbourhood's first-ranked
    member) on the same neighbourhoods, hence the same prune rate."""
    semdedup_kept = seed_row == np.arange(len(seed_row))
    return [Retention(name, int(np.sum(subgroup == g)),
                      int(np.sum(semdedup_kept & (subgroup == g))),
                      int(np.sum(~remove & (subgroup == g)))) for g, name in enumerate(names)]
