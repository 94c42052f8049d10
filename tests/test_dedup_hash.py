"""`dedup exact` and `dedup perceptual` on the synthetic corpus's truth (docs/design.md §4)."""

from __future__ import annotations

import json
from collections import defaultdict

import pyarrow.parquet as pq

from pairsift import Workspace, dedup_exact, dedup_perceptual


def _truth_by_uid(ws: Workspace, corpus) -> dict[str, dict]:
    truth = {r["key"]: r for r in pq.read_table(corpus / "truth.parquet").to_pylist()}
    return {r["uid"]: truth[r["key"]] for _, t in ws.iter_parts(["uid", "key"])
            for r in t.to_pylist()}


def _verdicts(ws: Workspace, stage: str) -> dict[str, dict]:
    return {d["uid"]: d for d in ws.stage_decisions(stage).to_pylist()}


def _groups(truth: dict[str, dict], kinds: set[str], transforms: set[str] | None = None):
    """uid sets of duplicate groups: the original plus its copies of the given kinds."""
    groups = defaultdict(set)
    for uid, t in truth.items():
        if t["kind"] in kinds and (transforms is None or t["transform"] in transforms):
            groups[t["group"]].add(uid)
    originals = {t["group"]: u for u, t in truth.items() if t["kind"] == "original"}
    return [members | {originals[g]} for g, members in groups.items()]


def test_exact_dedup_keeps_one_per_byte_copy_group(workspace_copy, demo_corpus):
    summary = dedup_exact(workspace_copy, progress=False)
    ws = Workspace.open(workspace_copy)
    truth = _truth_by_uid(ws, demo_corpus)
    verdicts = _verdicts(ws, "dedup-exact")
    groups = _groups(truth, {"exact_duplicate"})
    assert groups
    for group in groups:
        kept = [u for u in group if verdicts[u]["verdict"] == "keep"]
        assert len(kept) == 1
        for uid in group - set(kept):
            evidence = json.loads(verdicts[uid]["evidence"])
            assert verdicts[uid]["reason"] == "exact_duplicate_of"
            assert evidence == {"of": kept[0], "match": "bytes"}
    in_groups = set().union(*groups)
    assert all(v["verdict"] == "keep" for u, v in verdicts.items() if u not in in_groups)
    assert summary.dropped == sum(len(g) - 1 for g in groups)


def test_perceptual_dedup_finds_reencodes_and_resizes(workspace_copy, demo_corpus):
    dedup_perceptual(workspace_copy, progress=False)
    ws = Workspace.open(workspace_copy)
    truth = _truth_by_uid(ws, demo_corpus)
    verdicts = _verdicts(ws, "dedup-perceptual")
    # pHash survives re-encoding and resizing; flips, crops and borders are semantic dedup's job
    groups = _groups(truth, {"exact_duplicate", "near_duplicate"},
                     {None, "jpeg_q30", "resize_60", "webp"})
    for group in groups:
        assert sum(verdicts[u]["verdict"] == "keep" for u in group) == 1, group
    dropped = [(u, json.loads(v["evidence"])) for u, v in verdicts.items()
               if v["verdict"] == "drop"]
    assert dropped
    for uid, evidence in dropped:  # precision: every match is a true copy of the same photo
        assert truth[uid]["group"] is not None
        assert truth[uid]["group"] == truth[evidence["of"]]["group"]
        assert evidence["phash_distance"] is None or 0 <= evidence["phash_distance"] <= 4


def test_hash_stage_resumes_and_reuses(workspace_copy):
    dedup_exact(workspace_copy, progress=False)
    ws = Workspace.open(workspace_copy)
    signal = ws.signal_path("hashes", ws.current_run("hashes"), ws.part_ids()[0])
    mtime = signal.stat().st_mtime_ns
    dedup_perceptual(workspace_copy, progress=False)  # reuses the hashes, does not redo them
    assert signal.stat().st_mtime_ns == mtime
