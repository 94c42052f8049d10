"""Export of a workspace built from WebDataset shards (issues 14 and 15): parts with no readable
sample, re-exports over a previous export, captions a format cannot carry, and source keys that
are not safe as tar member names."""

from __future__ import annotations

import csv
import io
import json
import tarfile
from pathlib import Path
from urllib.parse import unquote

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import webdataset as wds
from PIL import Image
from workspaces import fake_run  # tests/workspaces.py

from pairsift import Workspace, export, ingest
from pairsift.io.writers import PANDAS_NA, uid_pairs
from pairsift.pipeline import export as export_module
from pairsift.pipeline.export import FORMATS, MARKER, ExportError

# key -> caption (None: the sample has no .txt). Keys a tar or a WebDataset reader would misread.
SAMPLES = {
    "plain": "a red square",
    "a.b.c": "dots in the key",
    "/abs/path": "an absolute member name",
    "../up": "a parent folder",
    "100%": "a percent sign",
    "no-caption": None,
    "blank": "   ",
    "na": "NA",
    "dropped": "a sample a decision drops",
}
OUTPUTS = {"webdataset": "wds", "parquet": "kept.parquet", "openclip-csv": "train.csv",
           "datacomp-uids": "subset.npy"}


def _jpeg(shade: int) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (24, 16), (shade, 40, 200 - shade)).save(buffer, "JPEG")
    return buffer.getvalue()


def _write_tar(path: Path, members: dict[str, bytes]) -> None:
    with tarfile.open(path, "w") as tf:
        for name, data in members.items():
            info = tarfile.TarInfo(name)  # the name as given: tarfile.add would strip a "/"
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))


def _shards(root: Path, samples: dict[str, str | None]) -> str:
    """img2dataset-like shards: one whose downloads all failed (an empty tar and its status
    parquet) between two that hold the samples."""
    root.mkdir()
    members = [{f"{key}.jpg": _jpeg(10 * i), **({f"{key}.txt": caption.encode()} if caption
                                                is not None else {})}
               for i, (key, caption) in enumerate(samples.items())]
    _write_tar(root / "00000.tar", {k: v for m in members[:-2] for k, v in m.items()})
    _write_tar(root / "00001.tar", {})
    status = {"key": ["000010000", "000010001"], "status": ["failed_to_download"] * 2,
              "error_message": ["HTTP 404", "timeout"]}
    pq.write_table(pa.table(status), root / "00001.parquet")
    _write_tar(root / "00002.tar", {k: v for m in members[-2:] for k, v in m.items()})
    return str(root / "{00000..00002}.tar")


def _add_signal(ws: Workspace) -> None:
    """A signal an empty part may have written as Arrow's null type."""
    fake_run(ws, "toy", {"v": 1}, signals=lambda part, rows: {
        "toy_score": [0.5] * rows.num_rows})


def _drop(ws: Workspace, keys: set[str], stage: str = "toy_filter") -> None:
    fake_run(ws, stage, {"keys": sorted(keys)}, reason="toy_reason", drops=lambda part, rows: {
        u: {} for u, k in zip(*(rows.column(c).to_pylist() for c in ("uid", "key")),
                              strict=True) if k in keys})


@pytest.fixture
def workspace(tmp_path) -> Path:
    """Nine samples in two shards around one whose downloads all failed, one dropped."""
    root = tmp_path / "ws"
    ingest(_shards(tmp_path / "shards", SAMPLES), root, name="shards", progress=False)
    ws = Workspace.open(root)
    _add_signal(ws)
    _drop(ws, {"dropped"})
    return root


def _kept(root: Path) -> dict[str, dict]:
    """The workspace's kept rows by uid (everything but the sample keyed "dropped")."""
    ws = Workspace.open(root)
    rows = [r for _, t in ws.iter_parts() for r in t.to_pylist()]
    return {r["uid"]: r for r in rows if r["key"] != "dropped"}


def _read_webdataset(folder: Path) -> list[dict]:
    urls = [str(p) for p in sorted(folder.glob("*.tar"))]
    return list(wds.WebDataset(urls, shardshuffle=False, empty_check=False))


# -- 1. parts with no readable sample ------------------------------------------------------
def test_workspace_has_an_empty_part_in_the_middle(workspace):
    ws = Workspace.open(workspace)
    rows = [ws.part_rows(p) for p in ws.part_ids()]
    assert rows == [7, 0, 2]
    assert pq.read_schema(ws.signal_path("toy", ws.current_run("toy"), 1)).field(
        "toy_score").type == pa.null()


@pytest.mark.parametrize("format", FORMATS)
def test_every_format_exports_past_an_empty_part(workspace, tmp_path, format):
    out = tmp_path / OUTPUTS[format]
    summary = export(workspace, out, format=format, shard_size=4)
    kept = _kept(workspace)
    assert summary.exported + sum(summary.left_out.values()) == len(kept)
    assert summary.dropped == 1
    if format == "parquet":
        table = pq.read_table(out)
        assert sorted(table.column("uid").to_pylist()) == sorted(kept)
        assert table.schema.field("toy_score").type == pa.float64()
    elif format == "datacomp-uids":
        assert np.array_equal(np.load(out), uid_pairs(kept))
    elif format == "webdataset":
        assert sorted(json.loads(s["json"])["uid"] for s in _read_webdataset(out)) == sorted(kept)


@pytest.mark.parametrize("format", FORMATS)
def test_every_format_exports_a_workspace_of_empty_parts(tmp_path, format):
    root = tmp_path / "ws"
    shards = tmp_path / "shards"
    shards.mkdir()
    _write_tar(shards / "00000.tar", {})
    _write_tar(shards / "00001.tar", {"k.jpg": b"\xff\xd8 not a jpeg"})
    ingest(str(shards / "{00000..00001}.tar"), root, progress=False)
    ws = Workspace.open(root)
    assert ws.num_samples() == 0 and len(ws.part_ids()) == 2
    _add_signal(ws)
    out = tmp_path / OUTPUTS[format]
    summary = export(root, out, format=format)
    assert (summary.exported, summary.dropped) == (0, 0)
    if format == "parquet":
        assert pq.read_table(out).num_rows == 0
    elif format == "datacomp-uids":
        assert np.load(out).shape == (0,) and np.load(out).dtype == np.dtype("u8,u8")
    elif format == "openclip-csv":
        assert out.read_text().splitlines() == ["filepath\ttitle"]
    else:
        assert _read_webdataset(out) == []
        assert json.loads((out / "sizes.json").read_text()) == {"00000.tar": 0}


# -- 2. re-exports replace the previous export whole ---------------------------------------
def test_reexport_leaves_no_stale_shard(workspace, tmp_path):
    out = tmp_path / "wds"
    export(workspace, out, shard_size=2)
    assert len(list(out.glob("*.tar"))) == 4
    _drop(Workspace.open(workspace), set(SAMPLES) - {"plain"})
    summary = export(workspace, out, shard_size=2)
    sizes = json.loads((out / "sizes.json").read_text())
    assert sorted(p.name for p in out.glob("*.tar")) == sorted(sizes) == ["00000.tar"]
    assert [unquote(s["__key__"]) for s in _read_webdataset(out)] == ["plain"]
    marker = json.loads((out / MARKER).read_text())
    assert marker["format"] == "webdataset" and marker["exported"] == summary.exported == 1
    assert marker["workspace"] == str(Workspace.open(workspace).root)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["shards", "wds", "ws"]  # no leftovers


def test_marker_digest_follows_the_decisions(workspace, tmp_path):
    export(workspace, tmp_path / "a")
    export(workspace, tmp_path / "b")
    _drop(Workspace.open(workspace), {"plain"}, stage="other_filter")
    export(workspace, tmp_path / "c")
    digest = {n: json.loads((tmp_path / n / MARKER).read_text())["decisions"] for n in "abc"}
    assert digest["a"] == digest["b"] != digest["c"]


def test_reexport_csv_removes_images_of_dropped_samples(workspace, tmp_path):
    out = tmp_path / "train.csv"
    export(workspace, out, format="openclip-csv")
    images = tmp_path / "train_images"
    assert len(list(images.glob("*.jpg"))) == 5
    _drop(Workspace.open(workspace), set(SAMPLES) - {"plain", "a.b.c"})
    assert export(workspace, out, format="openclip-csv").exported == 2
    with open(out, newline="", encoding="utf-8") as f:
        listed = sorted(r["filepath"] for r in csv.DictReader(f, delimiter="\t"))
    assert sorted(str(p) for p in images.glob("*.jpg")) == listed


@pytest.mark.parametrize("format", ["webdataset", "openclip-csv"])
def test_foreign_folder_is_refused_unless_overwrite(workspace, tmp_path, format):
    out = tmp_path / OUTPUTS[format]
    folder = out if format == "webdataset" else tmp_path / "train_images"
    folder.mkdir()
    (folder / "notes.txt").write_text("mine")
    with pytest.raises(ExportError, match="--overwrite"):
        export(workspace, out, format=format)
    assert [p.name for p in folder.iterdir()] == ["notes.txt"]
    assert not out.is_file()
    export(workspace, out, format=format, overwrite=True)
    assert not (folder / "notes.txt").exists() and (folder / MARKER).exists()


def test_export_of_another_format_is_refused(workspace, tmp_path):
    export(workspace, tmp_path / "train.csv", format="openclip-csv")  # writes train_images/
    with pytest.raises(ExportError, match="not a pairsift webdataset export"):
        export(workspace, tmp_path / "train_images")
    with pytest.raises(ExportError, match="is a folder"):
        export(workspace, tmp_path / "train_images", format="parquet")
    assert json.loads((tmp_path / "train_images" / MARKER).read_text())["format"] == "openclip-csv"


@pytest.mark.parametrize("format", FORMATS)
def test_export_creates_missing_folders(workspace, tmp_path, format):
    out = tmp_path / "new" / "folder" / OUTPUTS[format]
    assert export(workspace, out, format=format).exported > 0 and out.exists()


def test_workspace_is_never_an_export_target(workspace, tmp_path):
    for out in (workspace, tmp_path):
        with pytest.raises(ExportError, match="holds the workspace"):
            export(workspace, out, overwrite=True)
    assert Workspace.open(workspace).num_samples() == 9


@pytest.mark.parametrize("format", FORMATS)
def test_failed_export_leaves_the_previous_one_intact(workspace, tmp_path, format, monkeypatch):
    out = tmp_path / OUTPUTS[format]
    export(workspace, out, format=format, shard_size=2)

    def exports() -> dict[Path, bytes]:
        return {p: p.read_bytes() for p in tmp_path.rglob("*")
                if p.is_file() and not p.is_relative_to(workspace)}

    before = exports()
    real = export_module.kept_parts

    def failing(ws):
        yield next(real(ws))
        raise OSError("disk full")

    def failing_codes(ws):
        raise OSError("disk full")

    monkeypatch.setattr(export_module, "kept_parts", failing)
    monkeypatch.setattr(export_module, "kept_uid_codes", failing_codes)
    _drop(Workspace.open(workspace), {"plain"}, stage="other_filter")
    with pytest.raises(OSError, match="disk full"):
        export(workspace, out, format=format, shard_size=2)
    assert exports() == before


def test_killed_export_leftovers_are_not_exported(workspace, tmp_path):
    out = tmp_path / "wds"
    stale = tmp_path / ".wds.pairsift-tmp"
    stale.mkdir()
    (stale / "99999.tar").write_bytes(b"half written")
    export(workspace, out)
    assert sorted(p.name for p in out.iterdir()) == ["00000.tar", MARKER, "sizes.json"]
    assert not stale.exists()


# -- 3. captions a format cannot carry -----------------------------------------------------
def test_csv_never_writes_a_caption_open_clip_reads_as_nan(workspace, tmp_path):
    out = tmp_path / "train.csv"
    summary = export(workspace, out, format="openclip-csv")
    with open(out, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f, delimiter="\t"))
    assert not any(r["title"] in PANDAS_NA for r in rows)
    captions = {c for c in (SAMPLES[k] for k in SAMPLES if k != "dropped")}
    unreadable = {c for c in captions if c is None or c.strip() in PANDAS_NA}
    assert sorted(r["title"] for r in rows) == sorted(captions - unreadable)
    assert summary.left_out == {"caption_reads_as_nan": 3}  # no .txt, blank, "NA"
    assert summary.exported == 5 and summary.dropped == 1
    marker = json.loads((tmp_path / "train_images" / MARKER).read_text())
    assert marker["left_out"] == summary.left_out


def test_webdataset_and_parquet_keep_missing_captions_empty(workspace, tmp_path):
    export(workspace, tmp_path / "wds")
    texts = {unquote(s["__key__"]): s["txt"] for s in _read_webdataset(tmp_path / "wds")}
    assert texts["no-caption"] == texts["blank"] == b"" and texts["na"] == b"NA"
    export(workspace, tmp_path / "kept.parquet", format="parquet")
    table = pq.read_table(tmp_path / "kept.parquet", columns=["key", "caption"]).to_pylist()
    captions = {r["key"]: r["caption"] for r in table}
    assert captions["no-caption"] is None and captions["blank"] == "" and captions["na"] == "NA"


# -- 4. WebDataset keys ---------------------------------------------------------------------
def test_webdataset_keeps_every_key_reversibly_and_safely(workspace, tmp_path):
    export(workspace, tmp_path / "wds", shard_size=3)
    kept = _kept(workspace)
    samples = _read_webdataset(tmp_path / "wds")
    assert len(samples) == len(kept)
    for sample in samples:
        meta = json.loads(sample["json"])
        row = kept[meta["uid"]]
        assert unquote(sample["__key__"]) == meta["key"] == row["key"]
        assert sample["txt"].decode() == (row["caption"] or "")
        assert set(sample) >= {"jpg", "txt", "json"}
    for shard in (tmp_path / "wds").glob("*.tar"):
        with tarfile.open(shard) as tf:
            for name in tf.getnames():
                assert "/" not in name and name.count(".") == 1 and not name.startswith(".")


def test_cli_refuses_a_foreign_folder_in_one_line_and_overwrites_on_request(workspace,
                                                                           tmp_path):
    from typer.testing import CliRunner

    from pairsift.cli import app

    out = tmp_path / "train_images"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    args = ["export", str(tmp_path / "train.csv"), "-w", str(workspace), "-f", "openclip-csv"]
    refused = CliRunner().invoke(app, args)
    assert refused.exit_code == 2 and "--overwrite" in refused.output
    assert "Traceback" not in refused.output
    done = CliRunner().invoke(app, [*args, "--overwrite"])
    assert done.exit_code == 0, done.output
    assert "left out 3" in done.output and "caption_reads_as_nan" in done.output
