"""FairDeDup inside one cluster: same duplicates as SemDeDup, fairer choice of the survivor.

docs/algorithms.md §3 (Slyman et al., CVPR 2024). There is no official code; the rule is §3.2's:
walk the cluster, group each unvisited item with its unvisited near-duplicates, and keep the
member that looks most like the group (e.g. a perceived gender) the cluster represents least,
so pruning does not erase the minority further.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ..engine.views import Collection
from ..errors import SourceError
from ..io.tables import pick_column, read_table
from ..lazy import lazy
from ..params import Param
from ..stage import Decisions, PartOutput, fail, register
from ..uids import uid_strings
from .cluster import Device, unit_rows
from .semdedup import DEFAULT_BLOCK, ClusterDedup, _over, default_eps, threshold

torch = lazy("torch")  # imported on first use: the CLI starts without torch

DEFAULT_TEMPLATES = (
    "a photo of a {} person.",
    "a cropped photo of a {} person.",
    "a close-up photo of a {} person.",
    "a photo of one {} person.",
    "an image of a {} person.",
)
"""Prompt templates for group prototypes; the patent builds prototypes from such templates
(docs/algorithms.md §3.1). Exact wording in the paper is unconfirmed."""


def _mean_direction(E: np.ndarray | torch.Tensor) -> np.ndarray:
    """Normalise, average, normalise again: the centre direction of a set of embeddings."""
    return unit_rows(unit_rows(E).mean(0, keepdim=True))[0].numpy()


def text_prototypes(
    encode_texts: Callable[[list[str]], np.ndarray],
    groups: Mapping[str, Sequence[str]] | Sequence[str],
    templates: Sequence[str] = DEFAULT_TEMPLATES,
) -> np.ndarray:
    """(G, d) unit prototypes, one per group, from templated text embeddings.

    docs/algorithms.md §3.2 step 1.

    `groups` is a list of group names, or a mapping name → descriptive terms (several terms
    average out wording quirks). Rows follow the order of `groups`. `encode_texts` must be the
    text tower of the model that embedded the images, so both live in one space.
    """
    terms = groups.values() if isinstance(groups, Mapping) else [[g] for g in groups]
    rows = []
    for words in terms:
        texts = [tpl.format(w) for w in words for tpl in templates]
        if not texts:
            raise ValueError("every group needs at least one term and one template")
        rows.append(_mean_direction(np.asarray(encode_texts(texts))))
    return np.stack(rows).astype(np.float32)


def image_prototypes(
    embeddings_by_group: Mapping[str, np.ndarray] | Sequence[np.ndarray],
) -> np.ndarray:
    """(G, d) unit prototypes as the mean direction of example images of each group."""
    values = (
        embeddings_by_group.values()
        if isinstance(embeddings_by_group, Mapping)
        else embeddings_by_group
    )
    return np.stack([_mean_direction(np.asarray(E)) for E in values]).astype(np.float32)


@dataclass(frozen=True)
class FairDedupResult:
    """Per ranked item of one cluster."""

    remove: np.ndarray  # bool
    neighbourhood: np.ndarray  # int64: ranked index of the neighbourhood's first (seed) item
    kept_because: np.ndarray  # int64: group g* that chose the survivor; -1 if no fair choice
    group_of_max_prototype: np.ndarray  # int64: most similar group per item (or its label)
    representation: np.ndarray  # float64 (G,): cluster-level r_g (label mode: group shares)


def _neighbourhoods(
    x: torch.Tensor, walk: np.ndarray, t: np.float32, strict: bool, block: int
) -> Iterator[tuple[int, np.ndarray]]:
    """Seed i and members (ascending ranked indices) of N(i) = {i} ∪ {unvisited j: cos > t}.

    Seeds are taken in walk order: the next `block` unvisited items are compared with all
    unvisited rows in one product (≤ n×B); after processing them in order every one of them
    is visited, so there are at most ⌈n/B⌉ products.
    """
    visited = np.zeros(x.shape[0], dtype=bool)
    pos = 0
    while pos < len(walk):
        seeds = []
        while pos < len(walk) and len(seeds) < block:
            if not visited[walk[pos]]:
                seeds.append(walk[pos])
            pos += 1
        if not seeds:
            return
        rows = np.flatnonzero(~visited)
        rows_t = torch.as_tensor(rows, device=x.device)
        seeds_t = torch.as_tensor(np.array(seeds), device=x.device)
        near = _over(x[seeds_t] @ x[rows_t].T, t, strict).cpu().numpy()  # seeds × rows
        for q, i in enumerate(seeds):
            if visited[i]:
                continue
            members = rows[near[q]]
            members = np.union1d(members[~visited[members]], [i])
            visited[members] = True
            yield int(i), members


def _group_scores(
    x: torch.Tensor, prototypes: np.ndarray | None, labels: np.ndarray | None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-item group scores, most similar group, and which groups may be chosen as g*.

    Label mode scores are one-hot (unknown label −1 → all zeros), so "most similar to g*"
    becomes "labelled g*"; only groups present in the cluster can be g* there, since an
    absent group can never be kept.
    """
    if (prototypes is None) == (labels is None):
        raise ValueError("give exactly one of prototypes or labels")
    n = x.shape[0]
    if prototypes is not None:
        p = unit_rows(prototypes, x.device)
        scores = (x @ p.T).cpu().numpy()
        return scores, scores.argmax(1), np.ones(scores.shape[1], dtype=bool)
    labels = np.asarray(labels, dtype=np.int64)
    if labels.shape != (n,):
        raise ValueError("need one label per item")
    scores = np.zeros((n, max(int(labels.max(initial=-1)) + 1, 1)), dtype=np.float32)
    known = labels >= 0
    scores[np.flatnonzero(known), labels[known]] = 1.0
    return scores, labels, scores.any(0)


def fairdedup_cluster(
    X_ranked: np.ndarray | torch.Tensor,
    eps: float,
    prototypes: np.ndarray | None = None,
    *,
    labels: np.ndarray | None = None,
    prototype_space: np.ndarray | torch.Tensor | None = None,
    dynamic: bool = False,
    relevance_gate: float | None = None,
    order: Literal["ranked", "random"] = "ranked",
    seed: int = 1234,
    strict: bool = True,
    block: int = DEFAULT_BLOCK,
    device: Device = "cpu",
) -> FairDedupResult:
    """Remove near-duplicates, keeping in each neighbourhood the least-represented group.

    `X_ranked` is the cluster in SemDeDup's ranked order (earlier = preferred on ties).
    Representation `r_g` = mean cos(x, p_g) over the cluster, g* = argmin r_g (docs/algorithms.md
    §3.2 step 2); `dynamic=True` measures r_g over the items kept so far instead, updated after
    every keep (cluster-level r_g until something is kept). In each neighbourhood the member
    with the highest cos to p_{g*} survives (ties → earlier-ranked). With `relevance_gate=τ`,
    a neighbourhood whose best prototype similarity is ≤ τ (no person content) falls back to
    SemDeDup's choice, the earliest-ranked member. `labels` (group index per item, −1
    unknown) replaces prototypes by an attribute column; members without label g* → earliest.
    Neighbourhoods are seeded in ranked order, or a seeded random order.
    `prototype_space` gives the same items (same ranked rows) in the prototypes' space when
    that differs from `X_ranked`'s, e.g. duplicates found in an image-only space and text
    prototypes compared in the joint image-text space.
    """
    t = threshold(eps, strict)
    if labels is not None and relevance_gate is not None:
        raise ValueError("relevance_gate applies to prototypes, not labels")
    x = unit_rows(X_ranked, device)
    n = x.shape[0]
    x_groups = x if prototype_space is None else unit_rows(prototype_space, device)
    if x_groups.shape[0] != n:
        raise ValueError("prototype_space needs one row per item of X_ranked")
    scores, top_group, eligible = _group_scores(x_groups, prototypes, labels)
    r_cluster = scores.mean(0, dtype=np.float64) if n else np.zeros(scores.shape[1])
    if order not in ("ranked", "random"):
        raise ValueError(f"order must be 'ranked' or 'random', got {order!r}")
    walk = np.arange(n) if order == "ranked" else np.random.default_rng(seed).permutation(n)

    remove = np.ones(n, dtype=bool)
    neighbourhood = np.empty(n, dtype=np.int64)
    because = np.full(n, -1, dtype=np.int64)
    kept_sum = np.zeros(scores.shape[1])
    # every neighbourhood keeps exactly one item, so its index counts the items kept so far
    for kept_n, (seed_item, members) in enumerate(_neighbourhoods(x, walk, t, strict, block)):
        keep, g = members[0], -1
        if len(members) > 1:
            r = kept_sum / kept_n if dynamic and kept_n else r_cluster
            g = int(np.argmin(np.where(eligible, r, np.inf)))
            s = scores[members, g]
            relevant = s.max() > 0 if labels is not None else (
                relevance_gate is None or scores[members].max() > relevance_gate)
            if relevant:
                keep = members[int(np.argmax(s))]  # first maximum = earliest-ranked
            else:
                g = -1
        neighbourhood[members] = seed_item
        because[members] = g
        remove[keep] = False
        kept_sum += scores[keep]
    return FairDedupResult(remove, neighbourhood, because, top_group, r_cluster)


# -- stage --------------------------------------------------------------------------------------
@dataclass
class Retention:
    """Samples of a subgroup kept by SemDeDup's choice and by FairDeDup's, same neighbourhoods."""

    group: str
    samples: int
    kept_semdedup: int
    kept_fairdedup: int


@register
class DedupFair(ClusterDedup):
    """FairDeDup: SemDeDup's duplicates, keeping the member of the cluster's least-represented
    subgroup. Subgroups come from text prompts (``subgroups``) or a labels table (``labels``)."""

    name = "dedup-fair"
    params = (
        Param("subgroups", list, None, "Subgroup names for prompt prototypes, e.g. "
                                       "'man,woman'.", aliases=("groups",)),
        Param("templates", list, None, "Prompt templates with {} for a subgroup name."),
        Param("labels", Path, None, "Table with a uid or key column and a label column."),
        Param("label_column", str, "subgroup", "Label column of labels."),
        Param("eps", float, None, "Duplicate if cosine > 1 − eps (default: the model's).",
              low=0, high=1, closed="neither"),
        Param("dynamic", bool, False, "Measure representation over kept items."),
        Param("relevance_gate", float, None, "Fall back to SemDeDup's choice below this "
                                             "prototype similarity."),
        Param("order", str, "hard", "Ranking inside a cluster (as dedup-semantic).",
              choices=("hard", "easy", "random", "quality")),
        Param("block", int, DEFAULT_BLOCK, "Columns per similarity block.", low=1,
              runtime=True),
        Param("device", str, "cpu", "cpu | cuda", runtime=True),
        Param("threads", int, None, "Clusters processed in parallel.", low=1, runtime=True),
    )

    def check(self) -> None:
        if (self["subgroups"] is None) == (self["labels"] is None):
            fail("dedup-fair needs subgroups (--subgroups, text prompts) or labels (--labels, "
                 "a table), one of the two")

    def extra_inputs(self, ws: Any) -> dict[str, Any]:
        inputs = super().extra_inputs(ws)
        if self["labels"] is not None:
            path = Path(self["labels"])
            if not path.is_file():
                raise SourceError(f"{path}: no such labels table")
            inputs["labels"] = hashlib.sha256(path.read_bytes()).hexdigest()[:16]
        return inputs

    def plan(self, data: Collection) -> list[list[int]]:
        if self["subgroups"] is not None:
            from ..models import load_encoder

            self._names = list(self["subgroups"])
            encoder = load_encoder(data.model, self["device"])
            self._prototypes = text_prototypes(encoder.encode_texts, self._names,
                                               tuple(self["templates"] or DEFAULT_TEMPLATES))
            self._label_ids = None
        else:
            self._names, self._label_ids = _label_ids(data, Path(self["labels"]),
                                                      self["label_column"])
            self._prototypes = None
        return super().plan(data)

    def run_task(self, data: Collection, clusters: list[int]) -> dict[str, np.ndarray]:
        space = data.inputs["space"]
        rows, joint = data.embeddings(space), data.embeddings("image")
        eps = self["eps"] or default_eps(data.model)
        columns: dict[str, list[np.ndarray]] = {k: [] for k in ("row", "remove", "seed",
                                                                "subgroup", "because")}
        for c in clusters:
            ranked = self.ranked(data, self._members[c])
            text_space = self._prototypes is not None and space != "image"
            result = fairdedup_cluster(
                rows[ranked], eps, self._prototypes,
                labels=None if self._label_ids is None else self._label_ids[ranked],
                prototype_space=joint[ranked] if text_space else None,
                dynamic=self["dynamic"], relevance_gate=self["relevance_gate"],
                block=self["block"], device=self["device"])
            for name, values in (("row", ranked), ("remove", result.remove),
                                 ("seed", ranked[result.neighbourhood]),
                                 ("subgroup", result.group_of_max_prototype),
                                 ("because", result.kept_because)):
                columns[name].append(values)
        return {k: np.concatenate(v) for k, v in columns.items()}

    def combine(self, data: Collection, results: Any) -> dict[str, Any]:
        n = data.n
        state = {"remove": np.zeros(n, bool), "seed": np.arange(n),
                 "subgroup": np.full(n, -1, np.int32), "because": np.full(n, -1, np.int32)}
        for result in results:
            for name, values in state.items():
                values[result["row"]] = result[name]
        kept = np.flatnonzero(~state["remove"])
        kept_of_seed = np.full(n, -1, np.int64)
        kept_of_seed[state["seed"][kept]] = kept  # one survivor per neighbourhood
        state["kept_of"] = kept_of_seed[state["seed"]]
        state["eps"] = self["eps"] or default_eps(data.model)
        return state

    def part_output(self, data: Collection, state: dict[str, Any], part: int) -> PartOutput:
        rows = data.rows_of(part)
        codes = data.uid_codes()
        subgroup = self._name_of(state["subgroup"][rows])
        because = self._name_of(state["because"][rows])
        return PartOutput(
            signals=pa.table({"subgroup": subgroup,
                              "neighbourhood": uid_strings(codes[state["seed"][rows]]),
                              "kept_for_group": because}),
            decisions=Decisions(state["remove"][rows], self.reason, {
                "of": uid_strings(codes[state["kept_of"][rows]]), "eps": state["eps"],
                "kept_for_group": because, "subgroup": subgroup}))

    def _name_of(self, groups: np.ndarray) -> pa.Array:
        names = pa.array(self._names, pa.string())
        return names.take(pa.array(np.where(groups >= 0, groups, 0),
                                   mask=groups < 0, type=pa.int64()))

    def summarize(self, data: Collection, state: dict[str, Any]) -> dict[str, Any]:
        """Per subgroup retention: FairDeDup vs SemDeDup's choice (each neighbourhood's
        first-ranked member) on the same neighbourhoods, hence the same prune rate."""
        subgroup, remove = state["subgroup"], state["remove"]
        semdedup_kept = state["seed"] == np.arange(data.n)
        retention = [Retention(name, int(np.sum(subgroup == g)),
                               int(np.sum(semdedup_kept & (subgroup == g))),
                               int(np.sum(~remove & (subgroup == g))))
                     for g, name in enumerate(self._names)]
        return {"eps": state["eps"], "retention": retention, **self.counts(data)}


def _label_ids(data: Collection, path: Path, column: str) -> tuple[list[str], np.ndarray]:
    """Subgroup names and one label index per row (−1: unlabelled), by an Arrow join of the
    table's ``uid`` or ``key`` column with each part's."""
    table = read_table(path)
    label_col = pick_column(table, column, (), "label", path)
    key_col = pick_column(table, None, ("uid", "key"), "uid or key", path)
    keys = table.column(key_col).cast(pa.string())
    labels = table.column(label_col).cast(pa.string())
    names = sorted(pc.unique(labels.drop_null()).to_pylist())
    ids = pc.index_in(labels, pa.array(names, pa.string())).fill_null(-1)
    out = np.full(data.n, -1, np.int32)
    for part in data.parts:
        where = pc.index_in(data.ws.read_part(part, [key_col]).column(key_col), keys)
        found = ids.take(where.fill_null(0)).to_numpy(zero_copy_only=False)
        out[data.rows_of(part)] = np.where(where.is_valid().to_numpy(zero_copy_only=False),
                                           found, -1)
    if (out < 0).all():
        raise SourceError(f"{path}: no {key_col} in the table matches a sample of "
                          f"{data.ws.root}")
    return names, out
