"""The spine end to end on the synthetic corpus with the real default model:
embed -> score -> filter -> explain -> export (docs/design.md §3-§4, docs/algorithms.md §5)."""

from __future__ import annotations

import csv
import json
import tarfile
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from pairsift import Workspace, explain, export, filter_clip_score, score
from pairsift.io.writers import uid_pairs
from pairsift.workspace import WorkspaceError


def _truth(corpus) -> dict[str, dict]:
    """Ground truth keyed like the workspace: file name without extension."""
    rows = pq.read_table(corpus / "truth.parquet").to_pylist()
    return {r["name"].rsplit(".", 1)[0]: r for r in rows}


def test_embeddings_are_float16_aligned_and_memory_mapped(embedded_workspace):
    ws = Workspace.open(embedded_workspace)
    assert len(ws.part_ids()) > 1  # chunk_size=16 gives several parts
    for part in ws.part_ids():
        captions = ws.read_part(part, ["caption"]).column("caption").to_pylist()
        has_caption = np.array([bool(c) for c in captions])
        for space, dim in (("image", 384), ("text", 384), ("visual", 1280)):
            emb = ws.embeddings("default", space, part)
            assert isinstance(emb, np.memmap)
            assert emb.dtype == np.float16 and emb.shape == (len(captions), dim)
            norms = np.linalg.norm(emb.astype(np.float32), axis=1)
            expected = has_caption.astype(np.float32) if space == "text" else 1.0
            assert np.allclose(norms, expected, atol=2e-3)  # no caption: a zero row


def test_mismatched_captions_score_lower(embedded_workspace, demo_corpus):
    score(embedded_workspace)
    truth = _truth(demo_corpus)
    ws = Workspace.open(embedded_workspace)
    keys = [k for _, t in ws.iter_parts(["key"]) for k in t.column("key").to_pylist()]
    scores = ws.signals("score").column("clip_score").to_numpy()
    by_kind = {True: [], False: []}
    for key, s in zip(keys, scores, strict=True):
        if key in truth and not np.isnan(s):
            by_kind[bool(truth[key]["mismatched"])].append(s)
    assert by_kind[True] and by_kind[False]
    assert np.median(by_kind[True]) < np.median(by_kind[False])


def test_filter_explain_and_export(workspace_copy, tmp_path):
    score(workspace_copy)
    summary = filter_clip_score(workspace_copy, keep_fraction=0.5)
    ws = Workspace.open(workspace_copy)
    n = ws.num_samples()
    assert summary.kept >= int(n * 0.5) + 1 and summary.kept + summary.dropped == n

    decisions = ws.decisions().to_pylist()
    dropped = next(d for d in decisions if d["verdict"] == "drop")
    report = explain(workspace_copy, dropped["uid"])
    assert report["verdict"] == "drop"
    assert report["decisions"][0]["reason"] in ("clip_score_below", "clip_score_missing")
    assert "clip_score" in report["signals"]["score"]
    assert report["sample"]["uid"] == dropped["uid"]

    uids = export(workspace_copy, tmp_path / "subset.npy", format="datacomp-uids")
    kept = sorted(d["uid"] for d in decisions if d["verdict"] == "keep")
    assert uids.exported == len(kept)
    assert np.array_equal(np.load(tmp_path / "subset.npy"), uid_pairs(kept))

    wds = export(workspace_copy, tmp_path / "wds", format="webdataset", shard_size=7)
    assert wds.exported == len(kept)
    rows = {r["uid"]: r for _, t in ws.iter_parts() for r in t.to_pylist()}
    shards = sorted((tmp_path / "wds").glob("*.tar"))
    seen = 0
    for shard in shards:
        with tarfile.open(shard) as tf:
            for member in tf.getmembers():
                if member.name.endswith(".json"):
                    meta = json.loads(tf.extractfile(member).read())
                    row = rows[meta["uid"]]
                    stem = member.name[: -len(".json")]
                    image = next(m for m in tf.getnames()
                                 if m.startswith(stem + ".") and not m.endswith((".json", ".txt")))
                    with open(row["shard"], "rb") as f:
                        f.seek(row["offset"])
                        assert tf.extractfile(image).read() == f.read(row["length"])
                    assert "clip_score" in meta
                    seen += 1
    assert seen == len(kept)

    csv_out = export(workspace_copy, tmp_path / "train.csv", format="openclip-csv")
    with open(tmp_path / "train.csv", newline="") as f:
        table = list(csv.DictReader(f, delimiter="\t"))
    assert csv_out.exported == len(table) == len(kept)
    assert all(Path(r["filepath"]).stat().st_size > 0 for r in table)

    pq_out = export(workspace_copy, tmp_path / "kept.parquet", format="parquet")
    kept_table = pq.read_table(tmp_path / "kept.parquet")
    assert pq_out.exported == kept_table.num_rows == len(kept)
    assert "clip_score" in kept_table.column_names


def test_refilter_replaces_decisions_in_place(workspace_copy):
    score(workspace_copy)
    loose = filter_clip_score(workspace_copy, threshold=-1.0)
    strict = filter_clip_score(workspace_copy, keep_fraction=0.2)
    assert loose.dropped <= strict.dropped
    ws = Workspace.open(workspace_copy)
    assert ws.decisions().num_rows == ws.num_samples()


def test_explain_unknown_uid(embedded_workspace):
    with pytest.raises(WorkspaceError, match="not in"):
        explain(embedded_workspace, "0" * 32)


def test_score_before_embed_says_what_to_run(tmp_path, demo_corpus):
    from pairsift import ingest

    ingest(demo_corpus / "images", tmp_path / "ws", captions=demo_corpus / "captions.csv",
           progress=False)
    with pytest.raises(WorkspaceError, match="pairsift embed"):
        score(tmp_path / "ws")
