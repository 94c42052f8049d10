"""Ingest against hostile and odd input (issues 14 and 15): links out of the source, names
that are not UTF-8, special files, broken caption tables and parquet shards, huge captions.

Every test checks that the counts add up: readable + errors = samples in.
"""

from __future__ import annotations

import csv
import errno
import io
import json
import os
import signal
import tarfile
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image
from typer.testing import CliRunner

from pairsift import Workspace, ingest
from pairsift.cli import app
from pairsift.io.records import MAX_CAPTION_BYTES, text_path
from pairsift.io.sources import ImageBytesReader
from pairsift.io.tables import SourceError


@pytest.fixture(autouse=True)
def no_hang():
    """Fail, rather than hang, if a reader ever blocks (opening a FIFO)."""
    def timeout(*_):
        raise TimeoutError("ingest blocked")

    previous = signal.signal(signal.SIGALRM, timeout)
    signal.alarm(60)
    yield
    signal.alarm(0)
    signal.signal(signal.SIGALRM, previous)


def _jpeg(color=(200, 30, 30)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (32, 24), color).save(buf, "JPEG")
    return buf.getvalue()


def _rows(ws: Path) -> dict[str, dict]:
    return {r["key"]: r for _, t in Workspace.open(ws).iter_parts() for r in t.to_pylist()}


def _errors(ws: Path) -> list[dict]:
    return Workspace.open(ws).errors().to_pylist()


def _reasons(ws: Path) -> dict[str, str]:
    return {e["key"]: e["reason"] for e in _errors(ws)}


def _adds_up(summary, samples_in: int) -> None:
    assert summary.samples + sum(summary.errors.values()) == summary.total == samples_in


def _folder(tmp_path: Path, names: list[str]) -> Path:
    folder = tmp_path / "imgs"
    folder.mkdir()
    for i, name in enumerate(names):
        (folder / name).write_bytes(_jpeg((i * 40, 0, 0)))
    return folder


# -- 1. links that lead out of the source ---------------------------------------------------

def test_links_out_of_the_source_are_errors_never_read(tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.txt").write_text("root:x:0:0:secret")
    (outside / "photo.jpg").write_bytes(_jpeg())
    folder = _folder(tmp_path, ["a.jpg", "c.jpg"])
    (folder / "a.txt").symlink_to(outside / "secret.txt")  # the issue's /etc/passwd
    (folder / "b.jpg").symlink_to(outside / "photo.jpg")
    (folder / "c.txt").write_text("caption of c")
    (folder / "d.jpg").symlink_to(folder / "c.jpg")  # a link inside the source is fine
    summary = ingest(folder, tmp_path / "ws", progress=False)
    rows = _rows(tmp_path / "ws")
    assert set(rows) == {"c", "d"}
    assert _reasons(tmp_path / "ws") == {"a": "outside_source", "b": "outside_source"}
    assert not any("secret" in (r["caption"] or "") for r in rows.values())
    message = next(e["message"] for e in _errors(tmp_path / "ws") if e["key"] == "a")
    assert "a.txt" in message and "outside" in message
    _adds_up(summary, 4)


def test_caption_table_paths_out_of_the_source_are_errors(tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "e.jpg").write_bytes(_jpeg())
    folder = _folder(tmp_path, ["a.jpg"])
    table = tmp_path / "captions.csv"
    table.write_text(f"file,caption\na.jpg,red\n../outside/e.jpg,escape\n{outside}/e.jpg,abs\n")
    summary = ingest(folder, tmp_path / "ws", captions=table, progress=False)
    assert _rows(tmp_path / "ws")["a"]["caption"] == "red"
    assert _reasons(tmp_path / "ws") == {"../outside/e.jpg": "outside_source",
                                         f"{outside}/e.jpg": "outside_source"}
    _adds_up(summary, 3)


def test_caption_table_may_name_files_through_a_linked_folder(tmp_path):
    folder = tmp_path / "imgs"
    (folder / "2024").mkdir(parents=True)
    (folder / "2024" / "x.jpg").write_bytes(_jpeg())
    (folder / "latest").symlink_to(folder / "2024")  # listed, never entered
    table = tmp_path / "captions.csv"
    table.write_text(f"file,caption\nlatest/x.jpg,via the link\n{folder}/latest/x.jpg,again\n")
    summary = ingest(folder, tmp_path / "ws", captions=table, progress=False)
    assert _rows(tmp_path / "ws")["2024/x"]["caption"] == "via the link"
    assert _reasons(tmp_path / "ws") == {f"{folder}/latest/x.jpg": "duplicate_caption_row"}
    assert summary.ignored_files == 0  # a linked folder is no file
    _adds_up(summary, 1)


# -- 2. names that are not UTF-8, unreadable files, broken parquet shards -------------------

def test_names_that_are_not_utf8_are_kept_with_a_reversible_escape(tmp_path):
    folder = _folder(tmp_path, ["plain.jpg", "back\\slash.jpg"])
    raw = os.fsencode(folder) + b"/caf\xe9.jpg"
    with open(raw, "wb") as f:
        f.write(_jpeg((0, 0, 250)))
    with open(raw[:-4] + b".txt", "wb") as f:
        f.write(b"latin-1 name")
    summary = ingest(folder, tmp_path / "ws1", progress=False)
    rows = _rows(tmp_path / "ws1")
    assert set(rows) == {"plain", "back\\\\slash", "caf\\xe9"}
    odd = rows["caf\\xe9"]
    assert odd["caption"] == "latin-1 name"
    assert os.fsencode(text_path(odd["shard"])) == raw  # the escape is reversed exactly
    assert os.fsencode(text_path(rows["back\\\\slash"]["shard"])).endswith(b"/back\\slash.jpg")
    with ImageBytesReader() as reader:
        assert reader.read(odd) == _jpeg((0, 0, 250))
    ingest(folder, tmp_path / "ws2", progress=False)
    assert {k: r["uid"] for k, r in _rows(tmp_path / "ws2").items()} == {
        k: r["uid"] for k, r in rows.items()}
    _adds_up(summary, 3)


def test_source_folder_named_not_utf8(tmp_path):
    folder = os.fsencode(tmp_path) + b"/d\xe9"
    os.mkdir(folder)
    with open(folder + b"/a.jpg", "wb") as f:
        f.write(_jpeg())
    summary = ingest(os.fsdecode(folder), tmp_path / "ws", progress=False)
    assert [r["source"] for r in _rows(tmp_path / "ws").values()] == ["d\\xe9"]
    _adds_up(summary, 1)


def test_tar_member_names_that_are_not_utf8_are_kept(tmp_path):
    shard = tmp_path / "00000.tar"
    with tarfile.open(shard, "w", encoding="utf-8", errors="surrogateescape") as tf:
        for name, data in ((os.fsdecode(b"caf\xe9.jpg"), _jpeg()), ("b.jpg", _jpeg())):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    summary = ingest(shard, tmp_path / "ws", progress=False)
    assert set(_rows(tmp_path / "ws")) == {"caf\\xe9", "b"}
    _adds_up(summary, 2)


@pytest.mark.parametrize("code", [errno.EACCES, errno.EIO])
def test_unreadable_sidecar_is_an_error_row(tmp_path, monkeypatch, code):
    folder = _folder(tmp_path, ["a.jpg", "b.jpg"])
    (folder / "a.txt").write_text("caption of a")
    (folder / "b.txt").write_text("caption of b")
    real_open = os.open

    def failing_open(path, *args, **kwargs):  # root ignores chmod: fail the open instead
        if os.fspath(path).endswith("a.txt"):
            raise OSError(code, os.strerror(code), path)
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr(os, "open", failing_open)
    summary = ingest(folder, tmp_path / "ws", progress=False)
    assert _rows(tmp_path / "ws")["b"]["caption"] == "caption of b"
    [error] = _errors(tmp_path / "ws")
    assert (error["key"], error["reason"]) == ("a", "unreadable_file")
    assert error["message"].endswith(f"a.txt: {os.strerror(code)}")
    _adds_up(summary, 2)


def _pairs(path: Path, keys: list[str]) -> None:
    pq.write_table(pa.table({"key": keys, "jpg": [_jpeg() for _ in keys],
                             "caption": [f"caption {k}" for k in keys]}), path)


def test_broken_parquet_shard_does_not_stop_the_run(tmp_path):
    shards = tmp_path / "shards"
    shards.mkdir()
    _pairs(shards / "00000.parquet", ["a", "b"])
    (shards / "00001.parquet").write_bytes(os.urandom(4096))
    pq.write_table(pa.table({"url": ["http://x"], "text": ["no image column"]}),
                   shards / "00002.parquet")
    pq.write_table(pa.table({"key": ["c"], "jpg": [_jpeg()], "caption": [12]}),
                   shards / "00003.parquet")  # captions stored as numbers
    summary = ingest(shards, tmp_path / "ws", progress=False)
    rows = _rows(tmp_path / "ws")
    assert set(rows) == {"a", "b", "c"}
    assert rows["c"]["caption"] == "12"
    broken = {Path(e["shard"]).name: e["reason"] for e in _errors(tmp_path / "ws")}
    assert broken == {"00001.parquet": "broken_shard", "00002.parquet": "broken_shard"}
    assert summary.shard_errors == 2
    _adds_up(summary, 3)


def test_parquet_shards_named_not_utf8(tmp_path):
    """Arrow refuses str paths that are not UTF-8; good, broken and odd shards are all read."""
    shards = os.fsencode(tmp_path) + b"/shards"
    os.mkdir(shards)
    _pairs(tmp_path / "good.parquet", ["a"])
    pq.write_table(pa.table({"url": ["http://x"]}), tmp_path / "odd.parquet")
    (tmp_path / "broken.parquet").write_bytes(b"garbage")
    for name in ("good", "odd", "broken"):
        os.rename(tmp_path / f"{name}.parquet", shards + f"/{name}\xe9.parquet".encode("latin-1"))
    summary = ingest(os.fsdecode(shards), tmp_path / "ws", progress=False)
    [row] = _rows(tmp_path / "ws").values()
    with ImageBytesReader() as reader:
        assert reader.read(row) == _jpeg()
    assert {e["shard"].rsplit("/", 1)[1] for e in _errors(tmp_path / "ws")} == {
        "odd\\xe9.parquet", "broken\\xe9.parquet"}
    assert summary.shard_errors == 2
    _adds_up(summary, 1)


def test_parquet_shard_cut_short_keeps_the_rows_before(tmp_path):
    path = tmp_path / "pairs.parquet"
    pq.write_table(pa.table({"key": [f"{i}" for i in range(512)],
                             "jpg": [_jpeg() for _ in range(512)]}), path, row_group_size=256)
    meta = pq.ParquetFile(path).metadata.row_group(1).column(0)
    data = bytearray(path.read_bytes())
    start = meta.data_page_offset  # garble the second row group, keep the footer
    data[start:start + 64] = b"\xff" * 64
    path.write_bytes(bytes(data))
    summary = ingest(path, tmp_path / "ws", progress=False)
    assert summary.samples == 256 and summary.shard_errors == 1
    _adds_up(summary, 256)


# -- 3., 4., 5. caption tables: text as written, one bad byte, duplicates, NaN --------------

def _write_table(path: Path, rows: list[dict]) -> None:
    if path.suffix == ".jsonl":
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    else:
        with open(path, "w", newline="") as f:
            writer = csv.DictWriter(f, list(rows[0]), quoting=csv.QUOTE_ALL,
                                    delimiter="\t" if path.suffix == ".tsv" else ",")
            writer.writeheader()
            writer.writerows(rows)


@pytest.mark.parametrize("suffix", [".csv", ".tsv", ".jsonl"])
def test_captions_are_read_as_written(tmp_path, suffix):
    """R's write.csv and pandas' QUOTE_ALL quote the header too; numbers stay text."""
    folder = _folder(tmp_path, ["0012.jpg", "b.jpg", "c.jpg"])
    table = tmp_path / f"captions{suffix}"
    _write_table(table, [{"file": "0012.jpg", "caption": "0012"},
                         {"file": "b.jpg", "caption": "1e5"},
                         {"file": "c.jpg", "caption": "7"}])
    summary = ingest(folder, tmp_path / "ws", captions=table, progress=False)
    captions = {k: r["caption"] for k, r in _rows(tmp_path / "ws").items()}
    assert captions == {"0012": "0012", "b": "1e5", "c": "7"}
    _adds_up(summary, 3)


def test_json_numbers_keep_their_text(tmp_path):
    folder = _folder(tmp_path, ["a.jpg", "b.jpg"])
    table = tmp_path / "captions.jsonl"
    table.write_text('{"file": "a.jpg", "caption": 1e5}\n{"file": "b.jpg", "caption": 0.10}\n')
    ingest(folder, tmp_path / "ws", captions=table, progress=False)
    captions = {k: r["caption"] for k, r in _rows(tmp_path / "ws").items()}
    assert captions == {"a": "1e5", "b": "0.10"}


@pytest.mark.parametrize("suffix", [".csv", ".jsonl"])
def test_one_invalid_utf8_byte_flags_only_its_sample(tmp_path, suffix):
    folder = _folder(tmp_path, ["a.jpg", "b.jpg", "c.jpg"])
    table = tmp_path / f"captions{suffix}"
    if suffix == ".csv":
        table.write_bytes(b'"file","caption"\n"a.jpg","red"\n"b.jpg","caf\xe9"\n"c.jpg","blue"\n')
    else:
        table.write_bytes(b'{"file": "a.jpg", "caption": "red"}\n'
                          b'{"file": "b.jpg", "caption": "caf\xe9"}\n'
                          b'{"file": "c.jpg", "caption": "blue"}\n')
    summary = ingest(folder, tmp_path / "ws", captions=table, progress=False)
    rows = _rows(tmp_path / "ws")
    assert {k: (r["caption"], r["caption_issue"]) for k, r in rows.items()} == {
        "a": ("red", None), "b": ("caf\ufffd", "invalid_utf8"), "c": ("blue", None)}
    _adds_up(summary, 3)


@pytest.mark.parametrize("suffix", [".csv", ".jsonl"])
def test_duplicate_caption_rows_first_row_wins_and_is_recorded(tmp_path, suffix):
    folder = _folder(tmp_path, ["a.jpg", "b.jpg"])
    table = tmp_path / f"captions{suffix}"
    _write_table(table, [{"file": "a.jpg", "caption": "first"},
                         {"file": "b.jpg", "caption": "b"},
                         {"file": "./a.jpg", "caption": "second"}])
    summary = ingest(folder, tmp_path / "ws", captions=table, progress=False)
    rows = _rows(tmp_path / "ws")
    assert rows["a"]["caption"] == "first" and len(rows) == 2
    [error] = _errors(tmp_path / "ws")
    assert error["reason"] == "duplicate_caption_row"
    assert "row 3" in error["message"] and "row 1" in error["message"]
    assert summary.dropped == {"duplicate_caption_row": 1}
    _adds_up(summary, 2)


def test_null_nan_and_empty_captions_are_never_the_text_nan(tmp_path):
    folder = _folder(tmp_path, ["a.jpg", "b.jpg", "c.jpg"])
    tables = {
        "captions.csv": lambda p: p.write_text("file,caption\na.jpg,\nb.jpg,ok\nc.jpg,\"\"\n"),
        "captions.jsonl": lambda p: p.write_text('{"file": "a.jpg", "caption": null}\n'
                                                 '{"file": "b.jpg", "caption": "ok"}\n'
                                                 '{"file": "c.jpg", "caption": NaN}\n'),
        "captions.parquet": lambda p: pq.write_table(pa.table({
            "file": ["a.jpg", "b.jpg", "c.jpg"],
            "caption": pa.array([float("nan"), 1.5, None])}), p),
    }
    for name, write in tables.items():
        write(tmp_path / name)
        ingest(folder, tmp_path / f"ws-{name}", captions=tmp_path / name, progress=False)
        rows = _rows(tmp_path / f"ws-{name}")
        for key in ("a", "c"):
            assert rows[key]["caption"] in (None, ""), name
            assert rows[key]["caption_issue"] in ("missing_caption", "empty_caption"), name
        assert rows["b"]["caption"] in ("ok", "1.5")


def test_broken_csv_row_is_recorded_and_the_rest_read(tmp_path):
    folder = _folder(tmp_path, ["a.jpg", "b.jpg"])
    table = tmp_path / "captions.csv"
    table.write_text("file,caption\na.jpg,red\nb.jpg,blue,extra field\n")
    summary = ingest(folder, tmp_path / "ws", captions=table, progress=False)
    rows = _rows(tmp_path / "ws")
    assert rows["a"]["caption"] == "red"
    assert rows["b"]["caption_issue"] == "missing_caption"
    assert [e["reason"] for e in _errors(tmp_path / "ws")] == ["bad_caption_row"]
    assert summary.dropped == {"bad_caption_row": 1}
    _adds_up(summary, 2)


def test_json_array_caption_table_names_the_fix(tmp_path):
    folder = _folder(tmp_path, ["a.jpg"])
    table = tmp_path / "captions.json"
    table.write_text(json.dumps([{"file": "a.jpg", "caption": "red"}], indent=1))
    with pytest.raises(SourceError, match=r"captions\.json: .*must be JSON Lines"):
        ingest(folder, tmp_path / "ws", captions=table, progress=False)


# -- 6. everything that looks like a sample is read or an error -----------------------------

def test_special_files_named_like_images_are_errors(tmp_path):
    folder = _folder(tmp_path, ["good.jpg", "y.jpg"])
    os.mkfifo(folder / "fifo.jpg")
    os.mkfifo(folder / "y.txt")  # a sidecar that would block
    (folder / "loop.jpg").symlink_to(folder / "loop.jpg")
    (folder / "dangling.jpg").symlink_to(folder / "nothing.jpg")
    (folder / "dir.jpg").mkdir()
    (folder / "dir.jpg" / "inner.png").write_bytes(_jpeg())
    (folder / "dir.jpg" / "up").symlink_to(folder)  # a loop of folders: not entered
    summary = ingest(folder, tmp_path / "ws", progress=False)
    assert set(_rows(tmp_path / "ws")) == {"good", "dir.jpg/inner"}
    assert _reasons(tmp_path / "ws") == {"fifo": "not_a_file", "y": "not_a_file",
                                         "loop": "not_a_file", "dangling": "not_a_file",
                                         "dir": "not_a_file"}
    _adds_up(summary, 7)


def test_unlistable_directory_is_recorded(tmp_path, monkeypatch):
    folder = _folder(tmp_path, ["a.jpg"])
    (folder / "locked").mkdir()
    (folder / "locked" / "b.jpg").write_bytes(_jpeg())
    real_scandir = os.scandir

    def failing_scandir(path="."):
        if os.fspath(path).endswith("locked"):
            raise PermissionError(errno.EACCES, "Permission denied", path)
        return real_scandir(path)

    monkeypatch.setattr(os, "scandir", failing_scandir)
    summary = ingest(folder, tmp_path / "ws", progress=False)
    [error] = _errors(tmp_path / "ws")
    assert (error["key"], error["reason"]) == ("locked", "unreadable_dir")
    assert summary.shard_errors == 1
    _adds_up(summary, 1)


# -- 7. caption size cap ---------------------------------------------------------------------

def test_huge_caption_is_cut_at_a_character_boundary(tmp_path):
    folder = _folder(tmp_path, ["a.jpg", "b.jpg"])
    (folder / "a.txt").write_text("é" * 100_000)  # 200 kB of 2-byte characters
    (folder / "b.txt").write_text("x" * (MAX_CAPTION_BYTES - 1) + "€")  # cut inside the €
    ingest(folder, tmp_path / "ws", progress=False)
    rows = _rows(tmp_path / "ws")
    assert rows["a"]["caption"] == "é" * (MAX_CAPTION_BYTES // 2)
    assert rows["b"]["caption"] == "x" * (MAX_CAPTION_BYTES - 1)
    assert {r["caption_issue"] for r in rows.values()} == {"caption_truncated"}


def test_huge_caption_in_a_table_or_tar_is_cut(tmp_path):
    folder = _folder(tmp_path, ["a.jpg"])
    table = tmp_path / "captions.csv"
    table.write_text("file,caption\na.jpg," + "w" * 100_000 + "\n")
    ingest(folder, tmp_path / "ws1", captions=table, progress=False)
    row = _rows(tmp_path / "ws1")["a"]
    assert (len(row["caption"]), row["caption_issue"]) == (MAX_CAPTION_BYTES, "caption_truncated")
    shard = tmp_path / "00000.tar"
    with tarfile.open(shard, "w") as tf:
        for name, data in (("a.jpg", _jpeg()), ("a.txt", b"t" * 100_000)):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    ingest(shard, tmp_path / "ws2", progress=False)
    row = _rows(tmp_path / "ws2")["a"]
    assert (len(row["caption"]), row["caption_issue"]) == (MAX_CAPTION_BYTES, "caption_truncated")


# -- 8. error messages name the file and are the same in every run ---------------------------

def test_errors_are_identical_between_runs_and_name_the_file(tmp_path):
    folder = _folder(tmp_path, ["good.jpg"])
    (folder / "junk.jpg").write_bytes(b"not an image at all")
    (folder / "cut.jpg").write_bytes(_jpeg()[:200])
    os.mkfifo(folder / "fifo.png")
    (folder / "out.jpg").symlink_to("/etc/hostname")
    ingest(folder, tmp_path / "ws1", progress=False)
    ingest(folder, tmp_path / "ws2", progress=False)
    first, second = (Workspace.open(tmp_path / w).errors() for w in ("ws1", "ws2"))
    assert first.equals(second) and first.num_rows == 4
    for error in first.to_pylist():
        assert "0x" not in error["message"]
        assert f"{error['key']}." in error["message"]  # the file, not a buffer


# -- 9. counts add up ------------------------------------------------------------------------

def _add(tf: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tf.addfile(info, io.BytesIO(data))


def test_repeated_member_is_dropped_not_counted_as_a_sample(tmp_path):
    shard = tmp_path / "00000.tar"
    with tarfile.open(shard, "w") as tf:
        _add(tf, "a.jpg", _jpeg())
        _add(tf, "a.txt", b"first")
        _add(tf, "a.txt", b"second")
        _add(tf, "b.txt", b"no image")
    summary = ingest(shard, tmp_path / "ws", progress=False)
    assert _rows(tmp_path / "ws")["a"]["caption"] == "first"
    assert summary.dropped == {"duplicate_member": 1}
    assert summary.errors == {"missing_image": 1}
    _adds_up(summary, 2)


def test_shard_that_cannot_be_opened_is_one_shard_error(tmp_path):
    shards = tmp_path / "shards"
    shards.mkdir()
    with tarfile.open(shards / "00000.tar", "w") as tf:
        _add(tf, "x.jpg", _jpeg())
    (shards / "00001.tar").mkdir()
    summary = ingest(shards, tmp_path / "ws", progress=False)
    assert [(Path(e["shard"]).name, e["reason"]) for e in _errors(tmp_path / "ws")] == [
        ("00001.tar", "broken_shard")]
    assert summary.shard_errors == 1
    _adds_up(summary, 1)


def test_shard_errors_are_counted_as_shards(tmp_path):
    shards = tmp_path / "shards"
    shards.mkdir()
    with tarfile.open(shards / "00000.tar", "w") as tf:
        for i in range(3):
            _add(tf, f"{i}.jpg", _jpeg())
    with tarfile.open(shards / "00000.tar") as tf:
        second = tf.getmember("1.jpg")
    data = (shards / "00000.tar").read_bytes()
    (shards / "00000.tar").write_bytes(data[:second.offset_data + 100])  # cut inside "1.jpg"
    (shards / "00001.tar").write_bytes(b"not a tar" * 100)
    with tarfile.open(shards / "00002.tar", "w") as tf:
        _add(tf, "x.jpg", _jpeg())
    (shards / "00002.parquet").write_bytes(b"garbled img2dataset status file")
    summary = ingest(shards, tmp_path / "ws", progress=False)
    assert set(_rows(tmp_path / "ws")) == {"0", "x"}
    assert summary.errors == {"truncated": 1}
    assert summary.shard_errors == 3  # 00000.tar cut short, 00001.tar, 00002.parquet
    _adds_up(summary, 3)
    result = CliRunner().invoke(app, ["ingest", str(shards), "-w", str(tmp_path / "ws2"), "-q"])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert any("samples in" in line and line.rstrip(" │").endswith(" 3") for line in lines)
    assert any("shard errors" in line and line.rstrip(" │").endswith(" 3") for line in lines)
