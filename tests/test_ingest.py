"""Ingest of folders, WebDataset shards and parquet: nothing crashes, nothing is lost.

docs/design.md §2 (uids), §3 (workspace), §7 (reliability); expectations from tests/data/README.md.
"""

from __future__ import annotations

import io
import json
import shutil
import tarfile
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from pairsift import Workspace, ingest
from pairsift.io.records import make_uid
from pairsift.io.tables import SourceError

PILLOW_ERRORS = {
    "truncated_jpeg.jpg": "truncated",
    "truncated_image.png": "truncated",
    "truncated_end_chunk.png": "truncated",
    "broken_data_stream.png": "corrupt",
    "broken.png": "unidentified",
    "zero_width.gif": "unidentified",
    "decompression_bomb.gif": "decompression_bomb",
}


def _errors(ws_dir: Path) -> dict[str, str]:
    errors = Workspace.open(ws_dir).errors()
    return dict(zip(errors.column("key").to_pylist(), errors.column("reason").to_pylist(),
                    strict=True))


def _rows(ws_dir: Path) -> list[dict]:
    return [r for _, t in Workspace.open(ws_dir).iter_parts() for r in t.to_pylist()]


def _jpeg(color=(200, 30, 30), size=(64, 48)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, color).save(buf, "JPEG")
    return buf.getvalue()


def _png(color=(30, 200, 30)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (40, 40), color).save(buf, "PNG")
    return buf.getvalue()


def test_folder_of_odd_images_every_file_accounted(shared_data, tmp_path):
    """Mixed good, truncated, corrupt, CMYK, 16-bit, paletted, animated, EXIF-rotated and
    decompression-bomb files: 0 crashes, readable ones in parts, others with their reason."""
    folder = tmp_path / "pillow"
    shutil.copytree(shared_data / "pillow", folder)
    files = sorted(p.name for p in folder.iterdir())
    summary = ingest(folder, tmp_path / "ws", progress=False)
    errors = _errors(tmp_path / "ws")
    assert errors == {Path(f).stem: reason for f, reason in PILLOW_ERRORS.items()}
    readable = {r["key"] for r in _rows(tmp_path / "ws")}
    assert readable == {Path(f).stem for f in files if f not in PILLOW_ERRORS}
    assert summary.total == len(files) == summary.samples + sum(summary.errors.values())
    rotated = next(r for r in _rows(tmp_path / "ws") if r["key"] == "hopper_orientation_6")
    raw = Image.open(folder / "hopper_orientation_6.jpg")
    assert (rotated["width"], rotated["height"]) == (raw.height, raw.width)


def test_folder_with_caption_table(shared_data, tmp_path):
    """Captions from a CSV; a row naming a missing file is an error; a file with no row has
    no caption (flagged, not dropped); the extension-mismatched PNG is detected as JPEG."""
    folder = tmp_path / "imgs"
    shutil.copytree(shared_data / "imagededup" / "formats_images", folder)
    table = tmp_path / "captions.csv"
    table.write_text('image,text\nukbench09380.png,"a photo, with a comma"\n'
                     "baboon.pgm,a baboon\nmissing.jpg,ghost\n")
    summary = ingest(folder, tmp_path / "ws", captions=table, image_column="image",
                     caption_column="text", progress=False)
    rows = {r["key"]: r for r in _rows(tmp_path / "ws")}
    # two images share the stem ukbench09380, so both keep their extension in the key
    assert rows["ukbench09380_png"]["caption"] == "a photo, with a comma"
    assert rows["ukbench09380_png"]["format"] == "JPEG"
    assert rows["ukbench09380_webp"]["caption"] is None
    assert rows["ukbench09380_webp"]["caption_issue"] == "missing_caption"
    assert rows["baboon"]["caption"] == "a baboon"
    assert _errors(tmp_path / "ws") == {"missing.jpg": "missing_image"}
    assert summary.total == 6


def test_caption_table_bad_column_names_the_file(tmp_path):
    (tmp_path / "imgs").mkdir()
    (tmp_path / "imgs" / "a.jpg").write_bytes(_jpeg())
    table = tmp_path / "t.csv"
    table.write_text("path,caption\na.jpg,x\n")
    with pytest.raises(SourceError, match=r"t\.csv.*no image column 'file'"):
        ingest(tmp_path / "imgs", tmp_path / "ws", captions=table, image_column="file",
               progress=False)


def _add(tf: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tf.addfile(info, io.BytesIO(data))


def _odd_shard(path: Path) -> None:
    """Members of one key apart, dots in keys, a duplicate member, a caption without image,
    an image without caption, a directory member, png/webp, invalid UTF-8, a json uid."""
    with tarfile.open(path, "w") as tf:
        d = tarfile.TarInfo("subdir")
        d.type = tarfile.DIRTYPE
        tf.addfile(d)
        _add(tf, "a.jpg", _jpeg())
        _add(tf, "b.v2.png", _png())
        _add(tf, "a.txt", b"caption of a")  # not adjacent to a.jpg
        _add(tf, "b.v2.txt", b"dotted key")
        _add(tf, "b.v2.txt", b"duplicate member")
        _add(tf, "c.txt", b"caption without image")
        _add(tf, "d.jpg", _jpeg((0, 0, 255)))  # image without caption
        buf = io.BytesIO()
        Image.new("RGB", (30, 30), "white").save(buf, "WEBP")
        _add(tf, "e.webp", buf.getvalue())
        _add(tf, "e.txt", b"caf\xe9 latin-1")  # invalid UTF-8
        _add(tf, "e.json", json.dumps({"uid": "AB" * 16}).encode())


def test_webdataset_shard_oddities(tmp_path):
    shard = tmp_path / "odd.tar"
    _odd_shard(shard)
    summary = ingest(shard, tmp_path / "ws", progress=False)
    rows = {r["key"]: r for r in _rows(tmp_path / "ws")}
    assert set(rows) == {"a", "b.v2", "d", "e"}
    assert rows["a"]["caption"] == "caption of a"
    assert rows["b.v2"]["caption"] == "dotted key"
    assert rows["d"]["caption_issue"] == "missing_caption"
    assert rows["e"]["caption"] == "caf\ufffd latin-1"
    assert rows["e"]["caption_issue"] == "invalid_utf8"
    assert rows["e"]["uid"] == "ab" * 16  # the source's own uid wins
    assert rows["a"]["uid"] == make_uid("odd", "odd.tar", "a")
    assert rows["b.v2"]["format"] == "PNG" and rows["e"]["format"] == "WEBP"
    assert _errors(tmp_path / "ws") == {"b.v2": "duplicate_member", "c": "missing_image"}
    with open(shard, "rb") as f:  # the row points at the original bytes
        f.seek(rows["a"]["offset"])
        assert f.read(rows["a"]["length"]) == _jpeg()
    assert summary.samples == 4


def test_truncated_and_broken_shards(tmp_path):
    """A shard cut inside its last member keeps what came before; garbage is a broken shard."""
    good = tmp_path / "full.tar"
    with tarfile.open(good, "w") as tf:
        for i in range(3):
            _add(tf, f"{i:03d}.jpg", _jpeg((i * 60, 0, 0), (200, 200)))
            _add(tf, f"{i:03d}.txt", f"sample {i}".encode())
    data = good.read_bytes()
    shards = tmp_path / "shards"
    shards.mkdir()
    with tarfile.open(good) as tf:
        last = tf.getmember("002.jpg")
    (shards / "00000.tar").write_bytes(data[: last.offset_data + last.size // 2])
    (shards / "00001.tar").write_bytes(b"this is not a tar file at all" * 40)
    summary = ingest(shards, tmp_path / "ws", progress=False)
    errors = Workspace.open(tmp_path / "ws").errors().to_pylist()
    reasons = sorted((Path(e["shard"]).name, e["key"], e["reason"]) for e in errors)
    assert ("00000.tar", "002", "truncated") in reasons
    assert any(name == "00001.tar" and r == "broken_shard" for name, _, r in reasons)
    assert sorted(r["key"] for r in _rows(tmp_path / "ws")) == ["000", "001"]
    assert summary.samples == 2


def test_img2dataset_failed_downloads_are_errors(tmp_path):
    shard = tmp_path / "00000.tar"
    with tarfile.open(shard, "w") as tf:
        _add(tf, "000000000.jpg", _jpeg())
        _add(tf, "000000000.txt", b"ok")
    pq.write_table(pa.table({
        "key": ["000000000", "000000001"], "status": ["success", "failed_to_download"],
        "error_message": [None, "HTTP Error 404: Not Found"]}), tmp_path / "00000.parquet")
    summary = ingest(f"{tmp_path}/{{00000..00000}}.tar", tmp_path / "ws", name="crawl",
                     progress=False)
    errors = Workspace.open(tmp_path / "ws").errors().to_pylist()
    assert [(e["key"], e["reason"]) for e in errors] == [("000000001", "download_failed")]
    assert "404" in errors[0]["message"]
    assert summary.samples == 1 and summary.total == 2


def test_parquet_with_image_bytes(tmp_path):
    path = tmp_path / "pairs.parquet"
    pq.write_table(pa.table({
        "key": ["x", "y", "z"],
        "image": [{"bytes": _jpeg(), "path": None}, {"bytes": b"junk", "path": None},
                  {"bytes": None, "path": None}],
        "caption": ["red", "junk", "none"]}), path)
    summary = ingest(path, tmp_path / "ws", progress=False)
    assert [r["key"] for r in _rows(tmp_path / "ws")] == ["x"]
    assert _errors(tmp_path / "ws") == {"y": "unidentified", "z": "missing_image"}
    assert summary.total == 3


def test_reingest_adds_nothing_and_uids_are_stable(tmp_path):
    shard = tmp_path / "odd.tar"
    _odd_shard(shard)
    ingest(shard, tmp_path / "ws1", progress=False)
    again = ingest(shard, tmp_path / "ws1", progress=False)
    assert again.skipped_sources == ["odd"]
    assert len(_rows(tmp_path / "ws1")) == 4
    ingest(shard, tmp_path / "ws2", progress=False)
    uids = [[r["uid"] for r in _rows(tmp_path / w)] for w in ("ws1", "ws2")]
    assert uids[0] == uids[1]


def test_same_uid_twice_is_an_error(tmp_path):
    shard = tmp_path / "odd.tar"
    _odd_shard(shard)
    ingest(shard, tmp_path / "ws", progress=False)
    summary = ingest(shard, tmp_path / "ws", name="copy", progress=False)
    # "e" carries the same source uid in both copies; the others get new derived uids
    assert summary.errors["duplicate_uid"] == 1


def test_same_name_for_another_source_is_refused(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "x.jpg").write_bytes(_jpeg())
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "y.jpg").write_bytes(_jpeg())
    ingest(tmp_path / "a", tmp_path / "ws", name="web", progress=False)
    with pytest.raises(SourceError, match="--name"):
        ingest(tmp_path / "b", tmp_path / "ws", name="web", progress=False)


def test_missing_source_names_the_path(tmp_path):
    with pytest.raises(SourceError, match="nope.tar"):
        ingest(tmp_path / "nope.tar", tmp_path / "ws", progress=False)
