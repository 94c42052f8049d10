"""`pairsift cluster` + `dedup semantic` on ground truth (docs/algorithms.md §1-§2, issue 4's bar:
recall and precision ≥ 0.95 at the default ε in the default model's visual space)."""

from __future__ import annotations

import json
import shutil
from collections import Counter

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pairsift import Workspace, cluster, dedup_fair, dedup_semantic, embed, ingest
from pairsift.synth import SynthConfig, make_corpus

# 15 distinct photos, each with byte copies and near-duplicates (JPEG q30, resize, crops,
# flip, brightness, border, WebP): every sample of one photo is one duplicate group.
CLEAN = SynthConfig(seed=5, originals=15, exact_duplicates=15, near_duplicates=120,
                    mismatched=0, rendered_text=0, corrupt=0, missing_captions=0,
                    missing_images=0)


@pytest.fixture(scope="module")
def dup_workspace(tmp_path_factory):
    root = tmp_path_factory.mktemp("dups")
    make_corpus(root / "corpus", CLEAN, layout="folder")
    ingest(root / "corpus" / "images", root / "ws", captions=root / "corpus" / "captions.csv",
           chunk_size=64, progress=False)
    embed(root / "ws", progress=False)
    truth = {r["key"]: r for r in pq.read_table(root / "corpus" / "truth.parquet").to_pylist()}
    return root / "ws", truth


@pytest.fixture
def ws_copy(dup_workspace, tmp_path):
    shutil.copytree(dup_workspace[0], tmp_path / "ws")
    return tmp_path / "ws", dup_workspace[1]


def _drops(ws_dir) -> list[tuple[str, str]]:
    ws = Workspace.open(ws_dir)
    keys = {r["uid"]: r["key"] for _, t in ws.iter_parts(["uid", "key"]) for r in t.to_pylist()}
    return [(keys[d["uid"]], keys[json.loads(d["evidence"])["of"]])
            for d in ws.decisions().to_pylist() if d["verdict"] == "drop"]


def _precision_recall(ws_dir, truth) -> tuple[float, float]:
    drops = _drops(ws_dir)
    true_drops = sum(truth[a]["group"] == truth[b]["group"] for a, b in drops)
    should_drop = sum(n - 1 for n in Counter(t["group"] for t in truth.values()).values())
    return true_drops / max(len(drops), 1), true_drops / should_drop


@pytest.mark.parametrize("k", [1, 3])
def test_eps_recall_and_precision(ws_copy, k):
    """On copies of distinct photos (no hard negatives) ε = 0.2 finds nearly every copy; the
    default ε (0.003, chosen for precision on hard negatives: bench_dedup_peers.py) finds
    fewer and never a wrong one."""
    ws_dir, truth = ws_copy
    cluster(ws_dir, k=k, progress=False)
    summary = dedup_semantic(ws_dir, eps=0.2, progress=False)
    precision, recall = _precision_recall(ws_dir, truth)
    assert precision >= 0.95 and recall >= 0.95, (precision, recall)
    summary = dedup_semantic(ws_dir, progress=False)
    assert summary.eps == pytest.approx(0.003)  # the default model's default ε
    precision, recall = _precision_recall(ws_dir, truth)
    assert precision == 1.0 and 0 < recall < 0.95, (precision, recall)


def test_keep_fraction_sweep_and_evidence(ws_copy):
    ws_dir, _ = ws_copy
    cluster(ws_dir, k=2, progress=False)
    summary = dedup_semantic(ws_dir, keep_fraction=0.5, progress=False)
    n = Workspace.open(ws_dir).num_samples()
    assert summary.kept >= 0.5 * n and summary.kept + summary.dropped == n
    fractions = [f for _, f in summary.sweep]
    assert fractions == sorted(fractions, reverse=True)  # larger ε keeps less
    ws = Workspace.open(ws_dir)
    scores = ws.signals("dedup-semantic")
    drop = next(d for d in ws.decisions().to_pylist() if d["verdict"] == "drop")
    evidence = json.loads(drop["evidence"])
    row = next(r for r in scores.to_pylist() if r["uid"] == drop["uid"])
    assert evidence["of"] == row["max_sim_uid"] != drop["uid"]
    assert evidence["similarity"] == pytest.approx(row["max_sim"], abs=1e-6)
    assert evidence["similarity"] > 1 - summary.eps


def test_redeciding_reuses_the_scores(ws_copy):
    """ε-independent scores are computed once (docs/algorithms.md §1.4); a new ε only re-decides."""
    ws_dir, _ = ws_copy
    cluster(ws_dir, k=2, progress=False)
    loose = dedup_semantic(ws_dir, eps=0.05, progress=False)
    ws = Workspace.open(ws_dir)
    batches = sorted((ws.root / "tasks" / "dedup-semantic").rglob("task-*.npz"))
    mtimes = [p.stat().st_mtime_ns for p in batches]
    strict = dedup_semantic(ws_dir, eps=0.3, progress=False)
    assert [p.stat().st_mtime_ns for p in batches] == mtimes
    assert strict.dropped >= loose.dropped


def test_rules_agree_on_clean_groups(ws_copy):
    """The keep rules of docs/algorithms.md §1.3 differ only on chains; on this data, little."""
    ws_dir, _ = ws_copy
    cluster(ws_dir, k=1, progress=False)
    counts = {rule: dedup_semantic(ws_dir, eps=0.2, rule=rule, progress=False).dropped
              for rule in ("semdedup_code", "greedy_kept", "components")}
    assert counts["components"] >= counts["greedy_kept"]
    assert counts["semdedup_code"] >= counts["greedy_kept"]


def test_semantic_before_cluster_says_what_to_run(ws_copy):
    from pairsift.workspace import WorkspaceError

    with pytest.raises(WorkspaceError, match="pairsift cluster"):
        dedup_semantic(ws_copy[0], progress=False)


def test_cluster_sizes_add_up(ws_copy):
    ws_dir, truth = ws_copy
    summary = cluster(ws_dir, target_size=50, progress=False)
    assert summary.k == round(len(truth) / 50)
    assert int(np.sum(summary.sizes)) == len(truth)


def _labels(truth: dict[str, dict], path, minority: set[str]) -> None:
    rows = [{"key": k, "subgroup": "B" if t["transform"] in minority else "A"}
            for k, t in truth.items()]
    pq.write_table(pa.Table.from_pylist(rows), path)


def test_fairdedup_same_prune_rate_more_minority_kept(ws_copy, tmp_path):
    """docs/algorithms.md §3.2 with an attribute column: the same neighbourhoods (so the same
    prune rate as SemDeDup's first-ranked choice), but the survivor is the least-represented
    subgroup's."""
    ws_dir, truth = ws_copy
    cluster(ws_dir, k=3, progress=False)
    _labels(truth, tmp_path / "labels.parquet", {"hflip", "brighten_30"})
    s = dedup_fair(ws_dir, labels=tmp_path / "labels.parquet", eps=0.2, progress=False)
    by_group = {r.group: r for r in s.retention}
    assert sum(r.samples for r in s.retention) == len(truth)
    assert sum(r.kept_fairdedup for r in s.retention) == s.kept
    assert sum(r.kept_semdedup for r in s.retention) == s.kept  # same prune rate
    assert by_group["B"].kept_fairdedup > by_group["B"].kept_semdedup
    ws = Workspace.open(ws_dir)
    signal = ws.signals("dedup-fair")
    assert set(signal.column("subgroup").to_pylist()) == {"A", "B"}  # report's fairness table
    drop = next(d for d in ws.decisions().to_pylist()
                if d["stage"] == "dedup-fair" and d["verdict"] == "drop")
    evidence = json.loads(drop["evidence"])
    assert evidence["of"] != drop["uid"] and evidence["subgroup"] in ("A", "B")


def test_fairdedup_text_prototypes_run(ws_copy):
    ws_dir, truth = ws_copy
    cluster(ws_dir, k=2, progress=False)
    s = dedup_fair(ws_dir, groups=["cat", "person"], progress=False)
    assert [r.group for r in s.retention] == ["cat", "person"]
    assert s.kept + s.dropped == len(truth)
    with pytest.raises(ValueError, match="--subgroups"):
        dedup_fair(ws_dir, progress=False)


def test_rank_by_clip_score_keeps_the_better_pair(ws_copy):
    """`--rank-by clip_score`: the earlier-ranked (kept-first) member has the higher score."""
    from pairsift import score

    ws_dir, _ = ws_copy
    score(ws_dir, progress=False)
    cluster(ws_dir, k=2, progress=False)
    assert dedup_semantic(ws_dir, rank_by="clip_score", progress=False).dropped > 0
    ws = Workspace.open(ws_dir)
    scores = dict(zip(*(ws.signals("score").column(c).to_pylist()
                        for c in ("uid", "clip_score")), strict=True))
    for d in ws.decisions().to_pylist():
        if d["stage"] == "dedup-semantic" and d["verdict"] == "drop":
            assert scores[json.loads(d["evidence"])["of"]] >= scores[d["uid"]]
