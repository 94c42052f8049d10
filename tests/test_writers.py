"""Export formats: DataComp uids (docs/algorithms.md §5.2), WebDataset shards, open_clip CSV."""

import csv
import io
import json
import re
import tarfile
from pathlib import Path
from urllib.parse import unquote

import numpy as np
import pytest

from pairsift.io.writers import (
    ExportSample,
    uid_pairs,
    webdataset_key,
    write_datacomp_uids,
    write_webdataset,
)


def test_uid_pair_matches_spec_example():
    """docs/algorithms.md §5.2: 139e4a9b22a614771f06c700a8ebe150 ->
    (1413649363202610295, 2235693070683988304)."""
    pairs = uid_pairs(["139e4a9b22a614771f06c700a8ebe150"])
    assert pairs.dtype == np.dtype("u8,u8")
    assert tuple(pairs[0]) == (1413649363202610295, 2235693070683988304)


def test_uid_file_sorted_and_loadable(tmp_path):
    uids = ["f" * 32, "0" * 31 + "1", "0" * 16 + "f" * 16, "1" + "0" * 31]
    out = tmp_path / "subset.npy"
    assert write_datacomp_uids(uids, out) == 4
    loaded = np.load(out, mmap_mode="r")
    assert loaded.dtype == np.dtype("u8,u8")
    as_ints = [int(f0) << 64 | int(f1) for f0, f1 in loaded.tolist()]
    assert as_ints == sorted(int(u, 16) for u in uids)
    # the resharder's lookup: searchsorted on the structured array finds each uid once
    probe = uid_pairs(["1" + "0" * 31])
    assert np.searchsorted(loaded, probe[0], "right") - np.searchsorted(loaded, probe[0]) == 1


def _sample(uid: str, key: str, data: bytes) -> ExportSample:
    return ExportSample(uid=uid, key=key, caption="a cat", image=data, format="JPEG",
                        meta={"uid": uid, "clip_score": 0.3})


def test_webdataset_copies_bytes_and_dedups_keys(tmp_path):
    samples = [_sample("a" * 32, "k1", b"\xff\xd8one"), _sample("b" * 32, "k1", b"\xff\xd8two"),
               _sample("c" * 32, "dotted.key", b"\xff\xd8three")]
    sizes = write_webdataset(samples, tmp_path, shard_size=2)
    assert sizes == {"00000.tar": 2, "00001.tar": 1}
    assert json.loads((tmp_path / "sizes.json").read_text()) == sizes
    with tarfile.open(tmp_path / "00000.tar") as tf:
        names = tf.getnames()
        assert sorted(names) == sorted(["k1.jpg", "k1.txt", "k1.json", f"{'b' * 32}.jpg",
                                        f"{'b' * 32}.txt", f"{'b' * 32}.json"])
        assert tf.extractfile("k1.jpg").read() == b"\xff\xd8one"  # original bytes
        assert json.loads(tf.extractfile("k1.json").read())["clip_score"] == 0.3
    with tarfile.open(tmp_path / "00001.tar") as tf:
        assert "dotted%2Ekey.jpg" in tf.getnames()  # a dot would split a WebDataset key


@pytest.mark.parametrize("key", ["a.b.c", "/abs/x", "../up", "100%", "tab\tnew\nline",
                                 "back\\slash", "\x85c1", "ünï.cödé", "%2E", "plain-key_1"])
def test_webdataset_key_is_one_stem_and_reversible(key):
    encoded = webdataset_key(key)
    assert unquote(encoded) == key
    assert not re.search(r"[./\\\x00-\x1f\x7f-\x9f]", encoded)


def test_webdataset_key_leaves_ordinary_keys_alone():
    assert webdataset_key("000012345") == "000012345"
    assert webdataset_key("ünï-cödé_1") == "ünï-cödé_1"


def test_openclip_csv_is_tab_separated(tmp_path):
    from pairsift.io.writers import write_openclip_csv

    s = _sample("a" * 32, "k", b"\xff\xd8x")
    s.caption = 'tab\there "quoted"'
    out = tmp_path / "train.csv"
    assert write_openclip_csv([s], out, tmp_path / "images") == (1, {})
    rows = list(csv.DictReader(io.StringIO(out.read_text()), delimiter="\t"))
    assert rows[0]["title"] == 'tab here "quoted"'
    assert Path(rows[0]["filepath"]).read_bytes() == b"\xff\xd8x"


def test_openclip_csv_keeps_each_title_on_one_line(tmp_path):
    from pairsift.io.writers import write_openclip_csv

    s = _sample("a" * 32, "k", b"\xff\xd8x")
    s.caption = "one\r\ntwo\rthree\u2028four\x85five"
    out = tmp_path / "train.csv"
    write_openclip_csv([s], out, tmp_path / "images")
    lines = out.read_text(encoding="utf-8").splitlines()
    assert len(lines) == 2 and lines[1].endswith("\tone  two three four five")
