"""Dedup quality on hard cases (issue 16): flipped and rotated copies found by `dedup
perceptual`; different text pages and different skies never reported as duplicates at the
defaults; the text guard and hash agreement of `dedup semantic`."""

from __future__ import annotations

import json
from collections import Counter

import numpy as np
import pyarrow.parquet as pq
import pytest
from PIL import Image
from workspaces import fake_run  # tests/workspaces.py

from pairsift import (
    Workspace,
    cluster,
    dedup_exact,
    dedup_perceptual,
    dedup_semantic,
    embed,
    ingest,
    undo,
)
from pairsift.engine.runner import bring_up_to_date
from pairsift.stages.hashdedup import image_hashes, perceptual_pairs
from pairsift.synth.dedup import DEDUP_TRANSFORMS, FAMILIES, make_dedup_corpus
from pairsift.synth.photos import PHOTOS_BY_STEM, photo_pixels

HARD = ("text_page", "sky", "sea", "snow")
TURNS = {"hflip": Image.Transpose.FLIP_LEFT_RIGHT, "vflip": Image.Transpose.FLIP_TOP_BOTTOM,
         "rot90": Image.Transpose.ROTATE_90, "rot180": Image.Transpose.ROTATE_180,
         "rot270": Image.Transpose.ROTATE_270}


def _pairs_of(images: list[Image.Image], dihedral: bool) -> set[tuple[int, int]]:
    hashes = [image_hashes(im) for im in images]
    variants = {} if not dihedral else {
        "phash_dihedral": np.array([h.phash_dihedral for h in hashes]),
        "dhash_dihedral": np.array([h.dhash_dihedral for h in hashes])}
    i, j, _ = perceptual_pairs(np.array([h.phash for h in hashes]),
                               np.array([h.dhash for h in hashes]), **variants)
    return set(zip(i.tolist(), j.tolist(), strict=True))


@pytest.mark.parametrize("turn", sorted(TURNS))
@pytest.mark.parametrize("stem", ["chelsea", "coffee", "astronaut"])
def test_flipped_and_rotated_copies_found_only_with_the_variants(stem, turn):
    original = photo_pixels(PHOTOS_BY_STEM[stem]).convert("RGB")
    turned = original.transpose(TURNS[turn])
    copy = turned.resize((turned.width * 3 // 5, turned.height * 3 // 5))  # and resized
    assert (0, 1) in _pairs_of([original, copy], dihedral=True)
    assert (0, 1) not in _pairs_of([original, copy], dihedral=False)


def test_dedup_corpus_truth(tmp_path):
    corpus = make_dedup_corpus(tmp_path / "c", seed=3, scale=0.2, families=HARD)
    rows = corpus.truth.to_pylist()
    originals = {r["key"] for r in rows if r["transform"] is None}
    assert {r["group"] for r in rows} == originals  # every copy names an original
    assert {r["family"] for r in rows} == set(HARD)
    assert {r["transform"] for r in rows} - {None} == set(DEDUP_TRANSFORMS)
    exact = [r for r in rows if r["transform"] == "exact"]
    files = {r["key"]: (corpus.images / r["file"]).read_bytes() for r in rows}
    assert exact and all(files[r["key"]] == files[r["group"]] for r in exact)
    again = make_dedup_corpus(tmp_path / "d", seed=3, scale=0.2, families=HARD)
    assert again.truth.equals(corpus.truth)
    with pytest.raises(ValueError, match="unknown families"):
        make_dedup_corpus(tmp_path / "e", families=("clouds",))
    assert set(FAMILIES) > set(HARD)


@pytest.fixture(scope="module")
def hard_workspace(tmp_path_factory):
    """Different text pages, skies, seas and snow fields, and copies of some of them."""
    root = tmp_path_factory.mktemp("hard")
    corpus = make_dedup_corpus(root / "corpus", seed=11, scale=0.3, families=HARD)
    ingest(corpus.images, root / "ws", captions=corpus.captions, progress=False)
    embed(root / "ws", progress=False)
    cluster(root / "ws", k=1, progress=False)
    truth = {r["key"]: r for r in pq.read_table(corpus.root / "truth.parquet").to_pylist()}
    return root / "ws", truth


@pytest.fixture
def hard_copy(hard_workspace, tmp_path):
    import shutil

    shutil.copytree(hard_workspace[0], tmp_path / "ws")
    return tmp_path / "ws", hard_workspace[1]


def _drops(ws_dir, stage: str) -> list[tuple[str, str]]:
    ws = Workspace.open(ws_dir)
    keys = {r["uid"]: r["key"] for _, t in ws.iter_parts(["uid", "key"]) for r in t.to_pylist()}
    return [(keys[d["uid"]], keys[json.loads(d["evidence"])["of"]])
            for d in ws.stage_decisions(stage).to_pylist() if d["verdict"] == "drop"]


def _wrong(drops, truth) -> Counter:
    return Counter(truth[a]["family"] for a, b in drops if truth[a]["group"] != truth[b]["group"])


def test_hard_negatives_never_duplicates_at_the_defaults(hard_copy):
    ws_dir, truth = hard_copy
    dedup_exact(ws_dir, progress=False)
    dedup_perceptual(ws_dir, progress=False)
    dedup_semantic(ws_dir, progress=False)
    drops = {s: _drops(ws_dir, s) for s in ("dedup-exact", "dedup-perceptual",
                                            "dedup-semantic")}
    assert all(not _wrong(d, truth) for d in drops.values()), {s: _wrong(d, truth)
                                                                for s, d in drops.items()}
    linked = {k for pair in drops["dedup-perceptual"] for k in pair}
    turned = [k for k, r in truth.items() if r["transform"] in TURNS]
    assert turned and all(k in linked for k in turned), [
        (truth[k]["family"], truth[k]["transform"]) for k in turned if k not in linked]


def test_text_guard_and_hash_agreement_remove_the_false_pairs(hard_copy):
    """At a loose ε the visual space pairs different text pages and skies; the text guard
    with hash agreement keeps every one of them, and still drops true copies."""
    ws_dir, truth = hard_copy
    dedup_semantic(ws_dir, eps=0.1, progress=False)
    loose = _wrong(_drops(ws_dir, "dedup-semantic"), truth)
    assert loose["text_page"] > 0 and sum(loose.values()) > loose["text_page"]
    dedup_semantic(ws_dir, eps=0.1, text_guard=True, progress=False)
    guarded = _wrong(_drops(ws_dir, "dedup-semantic"), truth)
    assert guarded["text_page"] == 0 and sum(guarded.values()) > 0  # skies still pair
    dedup_semantic(ws_dir, eps=0.1, text_guard=True, max_phash=16, progress=False)
    drops = _drops(ws_dir, "dedup-semantic")
    assert not _wrong(drops, truth) and drops


def test_recommended_recipe_keeps_hard_negatives_and_finds_copies(hard_copy):
    from importlib.resources import files

    from pairsift import run

    ws_dir, truth = hard_copy
    run(str(files("pairsift") / "recipes" / "dedup.yaml"), ws_dir, progress=False)
    drops = [d for s in ("dedup-exact", "dedup-perceptual", "dedup-semantic")
             for d in _drops(ws_dir, s)]
    assert not _wrong(drops, truth)
    copies = sum(r["transform"] is not None for r in truth.values())
    assert len(drops) >= copies / 2


@pytest.mark.parametrize("same_words", [False, True])
def test_text_guard_uses_parrot_spot_words_when_they_exist(hard_copy, same_words):
    """With parrot-spot's words (written directly here: each text page reads its own group
    name, or every page reads the same word), words decide, not the detector: different
    words are never duplicates; equal words leave the decision to the embedding."""
    ws_dir, truth = hard_copy

    def words(part, rows):
        return {"ocr_text": [["menu"] if same_words else [truth[k]["group"]]
                             if truth[k]["family"] == "text_page" else []
                             for k in rows.column("key").to_pylist()]}

    fake_run(Workspace.open(ws_dir), "parrot-spot", {}, signals=words)
    dedup_semantic(ws_dir, eps=0.1, text_guard=True, progress=False)
    wrong_pages = _wrong(_drops(ws_dir, "dedup-semantic"), truth)["text_page"]
    assert (wrong_pages > 0) == same_words
    ws = Workspace.open(ws_dir)  # the words decided every pair: the detector was not run
    assert ws.current_run("text-detect") is None
    assert "text-detect" not in ws.run_record("dedup-semantic")["inputs"]
    if not same_words:  # without the words, the guard needs the detector: brought up to date
        undo(ws_dir, "parrot-spot")
        bring_up_to_date(Workspace.open(ws_dir), ["dedup-semantic"], progress=False)
        ws = Workspace.open(ws_dir)
        assert ws.run_record("dedup-semantic")["inputs"]["text-detect"] == \
            ws.current_run("text-detect")


def test_going_back_to_earlier_options_makes_that_run_current(hard_copy):
    """A finished run with the same options and inputs is reused, and its decisions become
    the current ones again (it used to be reported as cached while the other run's decisions
    stayed in force)."""
    ws_dir, _ = hard_copy
    first = dedup_perceptual(ws_dir, progress=False)
    dedup_perceptual(ws_dir, max_phash=12, max_dhash=14, progress=False)
    again = dedup_perceptual(ws_dir, progress=False)
    ws = Workspace.open(ws_dir)
    assert again.cached and ws.current_run("dedup-perceptual") == first.run
    assert len(_drops(ws_dir, "dedup-perceptual")) == first.dropped
