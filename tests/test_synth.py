"""The synthetic corpus: its files are what its truth table says they are."""

from __future__ import annotations

import csv
import doctest
import hashlib
import io
import json
import re
import tarfile
from collections import Counter
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from PIL import Image, UnidentifiedImageError

import pairsift.synth
from pairsift.io.images import ImageDecodeError, probe_image
from pairsift.io.sources import open_source
from pairsift.synth import (
    LAYOUTS,
    PHOTOS,
    TRANSFORMS,
    VOCABULARY,
    SynthConfig,
    make_corpus,
    tokens,
)
from pairsift.synth.dedup import make_dedup_corpus
from pairsift.synth.photos import PHOTO_DIR
from pairsift.synth.plan import make_plan
from pairsift.synth.render import render


@pytest.fixture(scope="module")
def corpora(tmp_path_factory) -> dict:
    """One default corpus per layout (uids on), built once for the read-only tests."""
    config = SynthConfig(with_uids=True)
    return {layout: make_corpus(tmp_path_factory.mktemp(layout), config, layout=layout)
            for layout in LAYOUTS}


def _tree(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes()
            for p in sorted(root.rglob("*")) if p.is_file()}


def _image_bytes(corpus) -> dict[str, bytes]:
    """Stored image bytes by truth name, read back with tarfile / pyarrow / plain files."""
    if corpus.layout == "folder":
        return {p.name: p.read_bytes() for p in (corpus.root / "images").iterdir()}
    keys = {r["key"]: r["name"] for r in corpus.rows()}
    if corpus.layout == "parquet":
        rows = pq.read_table(corpus.source).to_pylist()
        return {keys[r["key"]]: r["image"] for r in rows if r["image"] is not None}
    out = {}
    for shard in sorted(corpus.root.glob("*.tar")):
        with tarfile.open(shard) as tar:
            for member in tar:
                key, ext = member.name.rsplit(".", 1)
                if ext not in ("txt", "json"):
                    out[keys[key]] = tar.extractfile(member).read()
    return out


def test_docstring_example_runs():
    assert doctest.testmod(pairsift.synth).failed == 0


@pytest.mark.parametrize("layout", LAYOUTS)
def test_same_seed_same_bytes(tmp_path, layout):
    a = make_corpus(tmp_path / "a", SynthConfig(seed=3), layout=layout)
    b = make_corpus(tmp_path / "b", SynthConfig(seed=3), layout=layout)
    assert _tree(a.root) == _tree(b.root)
    assert a.truth.equals(b.truth)


def test_other_seed_other_corpus():
    def boxes(seed: int) -> list:
        return [(s.kind, s.photo.stem, s.box) for s in make_plan(SynthConfig(seed=seed))]

    assert boxes(3) != boxes(4)


def test_counts_by_kind_match_the_config(tmp_path):
    config = SynthConfig(originals=5, exact_duplicates=2, near_duplicates=3, mismatched=1,
                         rendered_text=3, corrupt=0, missing_captions=0, missing_images=1)
    corpus = make_corpus(tmp_path / "small", config)
    assert Counter(corpus.truth.column("kind").to_pylist()) == {
        k: v for k, v in config.counts().items() if v}
    scaled = SynthConfig(n_samples=300, max_side=96)
    counts = scaled.counts()
    assert sum(counts.values()) == 300 and counts["original"] > len(PHOTOS)
    assert Counter(s.kind for s in make_plan(scaled)) == counts


def test_scaled_originals_are_crops_of_the_photos():
    specs = make_plan(SynthConfig(n_samples=200, max_side=96))
    crops = [s for s in specs if s.kind == "original" and not s.full]
    assert len(crops) > 0
    for spec in crops:
        w, h = Image.open(PHOTO_DIR / spec.photo.file).size
        x0, y0, x1, y1 = spec.box
        assert 0 <= x0 < x1 <= w and 0 <= y0 < y1 <= h
        assert max(spec.size) <= 96 and spec.caption == spec.photo.short


@pytest.mark.parametrize("layout", LAYOUTS)
def test_stored_bytes_match_truth(corpora, layout):
    """Every stored image hashes to its truth sha256; only exact duplicates share bytes."""
    corpus = corpora[layout]
    stored = _image_bytes(corpus)
    rows = corpus.rows()
    assert set(stored) == {r["name"] for r in rows if r["kind"] != "missing_image"}
    for r in rows:
        if r["name"] in stored:
            assert hashlib.sha256(stored[r["name"]]).hexdigest() == r["sha256"]
    by_name = {r["name"]: r for r in rows}
    for dup in corpus.rows("exact_duplicate"):
        original = by_name[dup["group"]]
        assert original["kind"] == "original" and original["group"] == original["name"]
        assert stored[dup["name"]] == stored[original["name"]]
    usable = [r for r in rows if r["sha256"] and not r["expected_error"]]
    shared = Counter(r["sha256"] for r in usable)
    for r in usable:
        copies = shared[r["sha256"]] - 1
        assert copies == 0 or r["group"] is not None, r["name"]
    assert sum(shared.values()) - len(shared) == corpus.count("exact_duplicate")


def test_originals_are_the_packaged_files(corpora):
    """The default corpus has each photo once, verbatim, with its full caption."""
    stored = _image_bytes(corpora["folder"])
    originals = corpora["folder"].rows("original")
    photos = {p.stem: p for p in PHOTOS}
    assert sorted(r["photo"] for r in originals) == sorted(photos)
    for r in originals:
        photo = photos[r["photo"]]
        assert stored[r["name"]] == (PHOTO_DIR / photo.file).read_bytes()
        assert r["caption"] == r["true_caption"] == photo.caption


def test_near_duplicates_are_transforms_of_their_original(corpora):
    corpus = corpora["folder"]
    by_name = {r["name"]: r for r in corpus.rows()}
    near = corpus.rows("near_duplicate")
    assert {r["transform"] for r in near} == set(TRANSFORMS)
    for r in near:
        original = by_name[r["group"]]
        assert original["kind"] == "original" and r["photo"] == original["photo"]
        assert r["caption"] == original["caption"]
        with Image.open(corpus.root / "images" / r["name"]) as im:
            im.load()
            assert im.size == (r["width"], r["height"])
        w, h = original["width"], original["height"]
        params = json.loads(r["transform_params"])
        if r["transform"] == "resize_60":
            assert (r["width"], r["height"]) == (round(w * 0.6), round(h * 0.6))
        elif r["transform"] in ("center_crop_90", "random_crop"):
            assert r["width"] * r["height"] >= 0.8 * w * h
        elif r["transform"] == "border":
            assert r["width"] == w + 2 * params["pixels"]
        elif r["transform"] == "webp":
            assert r["format"] == "webp"
        else:
            assert (r["width"], r["height"]) == (w, h)


def test_corrupt_files_fail_pillow_for_the_stated_reason(corpora):
    corpus = corpora["folder"]
    rows = corpus.rows("corrupt")
    assert {r["expected_error"] for r in rows} == {"truncated", "unidentified", "empty",
                                                   "corrupt"}
    for r in rows:
        data = (corpus.root / "images" / r["name"]).read_bytes()
        reason = r["expected_error"]
        if reason in ("empty", "unidentified"):
            assert (len(data) == 0) == (reason == "empty")
            with pytest.raises(UnidentifiedImageError):
                Image.open(io.BytesIO(data))
        else:
            im = Image.open(io.BytesIO(data))  # the header is fine; the pixels are not
            with pytest.raises(OSError, match="truncated" if reason == "truncated"
                               else "broken data stream"):
                im.load()
        with pytest.raises(ImageDecodeError) as failure:
            probe_image(data)
        assert failure.value.reason == reason


def test_every_other_image_decodes(corpora):
    for corpus in corpora.values():
        stored = _image_bytes(corpus)
        for r in corpus.rows():
            if r["name"] in stored and not r["expected_error"]:
                decoded = probe_image(stored[r["name"]])
                assert (decoded.width, decoded.height) == (r["width"], r["height"])


def test_folder_layout_has_a_caption_table_with_gaps(corpora):
    corpus = corpora["folder"]
    with open(corpus.captions, newline="", encoding="utf-8") as f:
        table = {row["file"]: row for row in csv.DictReader(f)}
    files = {p.name for p in corpus.source.iterdir()}
    for r in corpus.rows():
        if r["kind"] == "missing_image":
            assert r["name"] in table and r["name"] not in files
            assert r["expected_error"] == "missing_image" and r["container"] is None
        elif r["kind"] == "missing_caption":
            assert r["name"] in files and r["name"] not in table
            assert r["caption"] is None and r["caption_issue"] == "missing_caption"
        else:
            assert table[r["name"]]["caption"] == r["caption"]
            assert table[r["name"]]["uid"] == r["uid"]


def test_webdataset_is_img2dataset_shaped(corpora):
    corpus = corpora["webdataset"]
    truth = {r["key"]: r for r in corpus.rows()}
    shards = sorted(corpus.root.glob("*.tar"))
    assert [s.name for s in shards] == ["00000.tar", "00001.tar"]
    failed_total = 0
    for shard in shards:
        with tarfile.open(shard) as tar:
            members = {m.name: tar.extractfile(m).read() for m in tar}
        member_keys = {name.rsplit(".", 1)[0] for name in members}
        status = pq.read_table(shard.with_suffix(".parquet"))
        assert status.column_names[:8] == ["url", "key", "caption", "status", "error_message",
                                           "width", "height", "sha256"]
        assert status.num_rows <= 32
        for row in status.to_pylist():
            key = row["key"]
            assert re.fullmatch(rf"{shard.stem}\d{{4}}", key)
            if row["status"] == "failed_to_download":
                failed_total += 1
                assert row["error_message"] and key not in member_keys
                assert truth[key]["expected_error"] == "download_failed"
                continue
            meta = json.loads(members[f"{key}.json"])
            assert {k: meta[k] for k in ("key", "caption", "status", "sha256", "uid")} == {
                "key": key, "caption": truth[key]["caption"], "status": "success",
                "sha256": truth[key]["sha256"], "uid": truth[key]["uid"]}
            assert re.fullmatch(r"[0-9a-f]{32}", meta["uid"])
            caption = members.get(f"{key}.txt")
            assert (caption.decode() if caption else None) == truth[key]["caption"]
        stats = json.loads(shard.with_name(f"{shard.stem}_stats.json").read_text())
        assert stats["count"] == status.num_rows
        assert stats["successes"] == len(member_keys)
    assert failed_total == corpus.count("missing_image") > 0


def test_parquet_layout_holds_bytes_and_nulls(corpora):
    corpus = corpora["parquet"]
    table = pq.read_table(corpus.source)
    assert table.column_names == ["key", "caption", "image", "uid"]
    truth = {r["key"]: r for r in corpus.rows()}
    for row in table.to_pylist():
        r = truth[row["key"]]
        assert (row["image"] is None) == (r["kind"] == "missing_image")
        assert row["caption"] == r["caption"] and row["uid"] == r["uid"]


@pytest.mark.parametrize("layout", LAYOUTS)
def test_pairsift_readers_agree_with_the_truth(corpora, layout):
    corpus = corpora[layout]
    source = open_source(str(corpus.source), kind=layout, captions=corpus.captions)
    got = {item.key: item for unit in source.units for item in unit.read()}
    truth = {r["key"]: r for r in corpus.rows()}
    assert set(got) == set(truth)
    for key, item in got.items():
        if hasattr(item, "reason"):
            assert item.reason == truth[key]["expected_error"]
        else:
            assert item.caption == truth[key]["caption"]
            assert item.caption_issue == truth[key]["caption_issue"]


def test_rendered_text_truth_matches_what_was_drawn(corpora):
    corpus = corpora["folder"]
    specs = {s.name: s for s in make_plan(SynthConfig(with_uids=True))}
    rows = corpus.rows("rendered_text")
    assert Counter(r["text_role"] for r in rows) == {"parrot": 3, "drawn_only": 3,
                                                     "mentioned_only": 3}
    for r in rows:
        caption, drawn = set(tokens(r["caption"])), set(tokens(" ".join(r["drawn_words"])))
        assert set(r["parrot_words"]) == caption & drawn
        assert set(r["mentioned_words"]) <= set(VOCABULARY)
        if r["text_role"] == "parrot":
            assert r["parrot_words"] and set(r["parrot_words"]) <= set(r["mentioned_words"])
        elif r["text_role"] == "drawn_only":
            assert r["drawn_words"] and not r["mentioned_words"]
        else:
            assert not r["drawn_words"] and r["mentioned_words"] and not r["text_boxes"]
        assert len(r["text_boxes"]) == len(r["drawn_words"])
        if r["drawn_words"]:
            _assert_words_inside_boxes(corpus.root / "images" / r["name"], specs[r["name"]],
                                       r["text_boxes"])


def _assert_words_inside_boxes(path: Path, spec, boxes: list[list[int]]) -> None:
    """The drawing changed pixels inside every word box (and the boxes fit the image)."""
    spec.text = None
    plain = np.asarray(Image.open(io.BytesIO(render(spec).data)).convert("RGB"), dtype=int)
    with Image.open(path) as im:
        drawn = np.asarray(im.convert("RGB"), dtype=int)
    changed = np.abs(drawn - plain).sum(axis=2) > 96
    for x0, y0, x1, y1 in boxes:
        assert 0 <= x0 < x1 <= drawn.shape[1] and 0 <= y0 < y1 <= drawn.shape[0]
        assert changed[y0:y1, x0:x1].mean() > 0.05


def test_overlay_words_never_occur_in_photo_captions():
    caption_words = {w for p in PHOTOS for text in (p.caption, p.short) for w in tokens(text)}
    assert not caption_words & set(VOCABULARY)


def test_mismatched_captions_describe_another_photo(corpora):
    captions = {p.caption: p.stem for p in PHOTOS}
    for r in corpora["folder"].rows("mismatched"):
        assert r["mismatched"] and captions[r["caption"]] != r["photo"]
    assert not any(r["mismatched"] for r in corpora["folder"].rows("original"))


def test_subgroups_follow_the_photo(tmp_path):
    corpus = make_corpus(tmp_path, SynthConfig(subgroups={"chelsea": "a", "coffee": "b"}),
                         layout="parquet")
    rows = corpus.rows()
    for r in rows:
        assert r["subgroup"] == {"chelsea": "a", "coffee": "b"}.get(r["photo"])
    near = [r for r in rows if r["group"] and r["photo"] == "chelsea"]
    assert near and {r["subgroup"] for r in near} == {"a"}


@pytest.mark.parametrize("bad", [
    {"near_duplicates": -1}, {"transforms": ("sepia",)}, {"shard_size": 20_000},
    {"originals": 0}, {"subgroups": {"dog": "a"}},
])
def test_bad_configs_are_refused(tmp_path, bad):
    with pytest.raises(ValueError):
        make_corpus(tmp_path, SynthConfig(**bad))


def test_layout_and_target_are_checked(tmp_path):
    with pytest.raises(ValueError, match="layout"):
        make_corpus(tmp_path / "x", layout="zip")
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "old.tar").write_bytes(b"")
    with pytest.raises(ValueError, match="not empty"):
        make_corpus(tmp_path / "full")
    with pytest.raises(ValueError, match="not empty"):
        make_dedup_corpus(tmp_path / "full")
