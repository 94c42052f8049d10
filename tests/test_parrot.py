"""Parrot captions (docs/algorithms.md §4): CoTR and friends, then the stage scored against the
synthetic corpus's truth, the filters, RSA/RSC and the encoder audit."""

from __future__ import annotations

import json
import math
import textwrap

import numpy as np
import pyarrow as pa
import pytest
from PIL import Image, ImageDraw, ImageFont
from typer.testing import CliRunner
from workspaces import fake_run  # tests/workspaces.py

from pairsift import (
    Workspace,
    filter_parrot,
    filter_simple_fix,
    filter_text_dominated,
    ingest,
    parrot_audit,
    parrot_rates,
    parrot_relative,
    parrot_spot,
)
from pairsift.cli import app
from pairsift.models import load_encoder
from pairsift.models.ocr import Spotted, load_spotter
from pairsift.stages.parrot import (
    area_boxes,
    co_embedded,
    cotr,
    group_rates,
    parrot_drop,
    random_boxes,
    relative_scores,
    simple_fix_keep,
    spot_image,
    text_area,
)
from pairsift.stages.parrot_audit import STYLES, sync_scores
from pairsift.synth import SynthConfig, make_corpus, tokens

SPOT, RELATIVE = "parrot-spot", "parrot-relative"
PARROT_FILTER, TEXT_FILTER, SIMPLE_FIX_FILTER = ("filter-parrot", "filter-text-dominated",
                                                "filter-simple-fix")

# -- the algorithms --------------------------------------------------------------------------


def test_cotr_is_share_of_caption_words_shown():
    """docs/algorithms.md §4.2: C = set(tok(caption)), E = set(tok(ocr)); |C ∩ E| / |C|."""
    value, words = cotr("Summer SALE: a tabby cat, summer!", ["SUMMER", "sale", "50%"])
    assert words == ["summer", "sale"]
    assert value == pytest.approx(2 / 5)  # {summer, sale, a, tabby, cat}


def test_cotr_iou_mode_and_edge_cases():
    value, _ = cotr("summer sale", ["SUMMER", "NOW", "ON"], mode="iou")
    assert value == pytest.approx(1 / 4)  # {summer} / {summer, sale, now, on}
    assert math.isnan(cotr("", ["SALE"])[0])  # no caption: undefined
    assert math.isnan(cotr(None, ["SALE"])[0])
    assert cotr("summer sale", []) == (0.0, [])  # no text: 0
    with pytest.raises(ValueError, match="iou"):
        cotr("a", ["a"], mode="dice")


def test_function_words_do_not_make_a_parrot():
    """Shared "on"/"the" is chance, not parroting; the literal rule counts them."""
    caption = "a cat on the sofa"
    ocr = ["Fig. 22. Another experiment on the same subject."]
    assert cotr(caption, ocr) == (0.0, [])
    assert cotr(caption, ocr, stopwords=frozenset()) == (pytest.approx(2 / 5), ["on", "the"])


def test_no_stopwords_is_the_literal_rule_one_letter_words_included():
    """docs/algorithms.md §4.2 literally: every caption token counts, "Plan B"'s "b" and
    "5 stars"'s "5"."""
    assert cotr("Plan B", ["PLAN B"], stopwords=frozenset()) == (1.0, ["plan", "b"])
    assert cotr("5 stars hotel", ["5 STARS"], stopwords=frozenset())[1] == ["5", "stars"]
    assert cotr("Plan B", ["PLAN B"]) == (0.5, ["plan"])  # default: lone glyphs match by chance


@pytest.mark.parametrize(("sign", "caption", "words"), [
    ("JUST DO IT", "Just do it", ["just"]),
    ("LOOK UP", "Look up!", ["look", "up"]),
    ("WAY OUT", "way out", ["way", "out"]),
])
def test_words_that_mean_something_on_a_sign_make_a_parrot(sign, caption, words):
    """A sign's words read by rapidocr: "just", "up", "out" are not function words."""
    image = Image.new("RGB", (400, 160), "white")
    ImageDraw.Draw(image).text((20, 50), sign, font=ImageFont.load_default(size=48), fill="black")
    spotted, _ = spot_image(image, load_spotter("rapidocr"), None)
    value, matched = cotr(caption, [s.text for s in spotted])
    assert matched == words
    assert parrot_drop(np.array([value]))[0]


def test_sign_words_run_together_match():
    """OCR that drops the space: a run-together token splits only into matchable words."""
    assert list(co_embedded("look up", ["LOOKUP"])) == ["look", "up"]
    assert list(co_embedded("way out", ["WAYOUT"])) == ["way", "out"]


def test_ocr_words_run_together_still_match():
    """OCR drops spaces ("FREELIMITED"): a token made wholly of caption words matches them."""
    assert co_embedded("holiday free limited", ["HOLIDAY", "FREELIMITED"]) == {
        "holiday": "holiday", "free": "freelimited", "limited": "freelimited"}
    assert co_embedded("free cat", ["FREEDOM"]) == {}  # a prefix is not a match


def test_fuzzy_matching_is_opt_in():
    assert cotr("vintage market", ["VINTAGF"])[0] == 0.0
    assert cotr("vintage market", ["VINTAGF"], fuzzy=0.2) == (0.5, ["vintage"])


def test_text_area_counts_overlaps_once():
    assert text_area([(0, 0, 10, 10), (5, 0, 15, 10)], 20, 10) == pytest.approx(0.75)
    assert text_area([], 20, 10) == 0.0


def test_text_area_counts_only_confidently_read_words():
    """Issue 15 item 9: OCR read an espresso cup as "8" (0.81) in a box over the whole photo,
    so `text-dominated` dropped it."""
    whole, small, other = (0, 0, 400, 300), (10, 10, 60, 30), (100, 100, 130, 130)
    assert area_boxes([Spotted("8", whole, 0.81)], 400, 300) == []
    assert area_boxes([Spotted("C", whole, 0.96)], 400, 300) == []  # large: near-certain only
    assert area_boxes([Spotted("SALE", whole, 0.999)], 400, 300) == [whole]
    assert area_boxes([Spotted("open", small, 0.93), Spotted("0", other, 0.7)], 400, 300) == [
        small]


def test_random_boxes_have_the_same_sizes_and_avoid_text():
    text = [(10, 10, 60, 30), (10, 40, 40, 60)]
    rng = np.random.default_rng(0)
    boxes = random_boxes(text, 200, 150, rng)
    assert [(b[2] - b[0], b[3] - b[1]) for b in boxes] == [(50, 20), (30, 20)]
    assert all(0 <= b[0] < b[2] <= 200 and 0 <= b[1] < b[3] <= 150 for b in boxes)
    assert text_area(boxes + text, 200, 150) == pytest.approx(2 * text_area(text, 200, 150))
    assert boxes == random_boxes(text, 200, 150, np.random.default_rng(0))


def test_relative_scores_guard_non_positive_s0():
    out = relative_scores(np.array([0.5, 0.0, -0.1]), np.array([0.25, 0.1, 0.1]),
                          np.array([0.4, 0.1, 0.1]), np.array([0.5, 0.1, 0.1]))
    assert out["rsa"][0] == pytest.approx(0.5) and out["rsc"][0] == pytest.approx(0.8)
    assert out["rs_rand"][0] == pytest.approx(1.0)
    assert np.isnan(out["rsa"][1:]).all()
    assert out["rsa_diff"][0] == pytest.approx(0.25)


def test_filters_rules():
    assert parrot_drop(np.array([0.0, 0.2, np.nan]), 0.0).tolist() == [False, True, False]
    assert parrot_drop(np.array([0.2, 0.5]), 0.3).tolist() == [False, True]
    keep = simple_fix_keep(np.array([0, 0, 1, 0]), np.array([0.31, 0.3, 0.9, np.nan]), 0.3)
    assert keep.tolist() == [True, False, False, False]  # strict >, text or no score: out


def test_group_rates():
    rows = group_rates(["a", "a", "b", None], np.array([2, 0, 1, 0]),
                       np.array([0.5, 0.0, 0.0, np.nan]))
    a = rows[0]
    assert (a["group"], a["samples"], a["with_text"], a["parrot"]) == ("a", 2, 1, 1)
    assert a["parrot_of_text"] == 1.0 and a["mean_cotr"] == pytest.approx(0.25)
    assert rows[1]["group"] == "b" and rows[1]["parrot_rate"] == 0.0
    assert rows[2]["group"] is None and math.isnan(rows[2]["mean_cotr"])


# -- the stage on the synthetic corpus -------------------------------------------------------

CONFIG = SynthConfig(originals=3, exact_duplicates=0, near_duplicates=0, mismatched=0,
                     rendered_text=30, corrupt=0, missing_captions=0, missing_images=0)


@pytest.fixture(scope="module")
def spotted(tmp_path_factory):
    """A corpus of 30 rendered-text samples (+3 photos), ingested and spotted once."""
    root = tmp_path_factory.mktemp("parrot")
    corpus = make_corpus(root / "corpus", CONFIG, layout="folder")
    ws = root / "ws"
    ingest(corpus.source, ws, captions=corpus.captions, name="synth", progress=False)
    summary = parrot_spot(ws, progress=False)
    return ws, corpus, summary


def _with_truth(ws, corpus) -> list[dict]:
    w = Workspace.open(ws)
    keys = {r["uid"]: r["key"] for _, t in w.iter_parts(["uid", "key"]) for r in t.to_pylist()}
    truth = {r["key"]: r for r in corpus.truth.to_pylist()}
    return [{**truth[keys[s["uid"]]], **s} for s in w.signals(SPOT).to_pylist()]


def test_parrot_detection_f1_and_cotr_against_truth(spotted):
    """Issue 5's bar: parrot F1 >= 0.9; CoTR within 0.05 of the truth on >= 90% of parrots."""
    ws, corpus, _ = spotted
    rows = _with_truth(ws, corpus)
    truth = np.array([r["text_role"] == "parrot" for r in rows])
    pred = parrot_drop(np.array([r["cotr"] for r in rows], np.float64))
    tp = int((truth & pred).sum())
    f1 = 2 * tp / (2 * tp + int((pred & ~truth).sum()) + int((truth & ~pred).sum()))
    parrots = [r for r in rows if r["text_role"] == "parrot"]
    true_cotr = np.array([len(r["parrot_words"]) / len(set(tokens(r["caption"])))
                          for r in parrots])
    close = np.abs(true_cotr - np.array([r["cotr"] for r in parrots])) <= 0.05
    assert len(parrots) >= 8
    assert f1 >= 0.9, f"parrot F1 {f1:.3f}"
    assert close.mean() >= 0.9, f"CoTR within 0.05 on {close.mean():.0%} of parrots"


def test_has_text_pass_never_skips_drawn_text(spotted):
    ws, corpus, summary = spotted
    rows = _with_truth(ws, corpus)
    assert all(r["text_probe"] for r in rows if r["drawn_words"])
    assert summary.skipped_by_probe == sum(r["text_probe"] is False for r in rows)
    assert summary.skipped_by_probe > 0  # the pass does save work on text-free images
    assert all(r["ocr_text"] == [] for r in rows if r["text_probe"] is False)


def test_signal_columns_are_consistent(spotted):
    ws, corpus, summary = spotted
    for r in _with_truth(ws, corpus):
        n = len(r["ocr_text"])
        assert len(r["ocr_boxes"]) == len(r["ocr_conf"]) == len(r["ocr_co_emb"]) == n
        assert all(0 <= x0 < x1 <= r["width"] and 0 <= y0 < y1 <= r["height"]
                   for x0, y0, x1, y1 in r["ocr_boxes"])
        assert (sum(r["ocr_co_emb"]) > 0) == bool(r["co_emb_words"]) == (r["cotr"] > 0)
        words = [Spotted(t, tuple(b), c)
                 for t, b, c in zip(r["ocr_text"], r["ocr_boxes"], r["ocr_conf"], strict=True)]
        confident = text_area(area_boxes(words, r["width"], r["height"]), r["width"], r["height"])
        assert r["text_area"] == pytest.approx(confident, abs=1e-6)
        assert 0 <= r["text_area"] <= text_area(r["ocr_boxes"], r["width"], r["height"]) + 1e-6
    assert summary.samples == corpus.truth.num_rows
    assert parrot_spot(ws, progress=False).parts_done == 0  # same config: nothing redone


def test_filters_write_decisions_with_words(spotted):
    ws, corpus, summary = spotted
    s = filter_parrot(ws, progress=False)
    assert (s.stage, s.dropped) == (PARROT_FILTER, summary.parrot)
    rows = {r["uid"]: r for r in _with_truth(ws, corpus)}
    decisions = Workspace.open(ws).stage_decisions(PARROT_FILTER).to_pylist()
    for d in decisions:
        row = rows[d["uid"]]
        if d["verdict"] == "drop":
            evidence = json.loads(d["evidence"])
            assert d["reason"] == "parrot_caption" and evidence["words"] == row["co_emb_words"]
            assert set(evidence["words"]) <= set(tokens(" ".join(row["drawn_words"])))
    assert filter_parrot(ws, threshold=0.99, progress=False).dropped < s.dropped  # no OCR
    t = filter_text_dominated(ws, threshold=0.02, progress=False)
    dropped = [d for d in Workspace.open(ws).stage_decisions(TEXT_FILTER).to_pylist()
               if d["verdict"] == "drop"]
    assert t.dropped == len(dropped) > 0
    assert all(d["reason"] == "text_dominated" and json.loads(d["evidence"])["text_area"] > 0.02
               for d in dropped)


def test_rates_by_source(spotted):
    ws, corpus, summary = spotted
    (row,) = parrot_rates(ws, by="source")
    assert (row["group"], row["samples"], row["parrot"]) == ("synth", summary.samples,
                                                             summary.parrot)
    assert row["with_text"] == summary.with_text
    with pytest.raises(ValueError, match="cluster"):
        parrot_rates(ws, by="photo")


def _fixed_clip_scores(ws) -> dict[str, float]:
    """A finished ``score`` run with known values (the score stage has its own tests)."""
    scores = {}

    def signals(part, rows):
        values = [0.2 + 0.01 * (len(scores) + i) for i in range(rows.num_rows)]
        scores.update(zip(rows.column("uid").to_pylist(), values, strict=True))
        return {"clip_score": pa.array(values, pa.float32())}

    fake_run(Workspace.open(ws), "score", {}, signals=signals, inputs={"model": "default"})
    return scores


def test_simple_fix_keeps_only_text_free_high_scores(spotted):
    ws, corpus, _ = spotted
    clip = _fixed_clip_scores(ws)
    s = filter_simple_fix(ws, threshold=0.3, progress=False)
    rows = {r["uid"]: r for r in _with_truth(ws, corpus)}
    decisions = Workspace.open(ws).stage_decisions(SIMPLE_FIX_FILTER).to_pylist()
    for d in decisions:
        row = rows[d["uid"]]
        assert (d["verdict"] == "keep") == (not row["ocr_text"] and clip[d["uid"]] > 0.3 + 1e-6)
        if d["verdict"] == "drop":
            assert d["reason"] == "simple_fix"
            assert json.loads(d["evidence"])["words"] == row["ocr_text"]
    assert s.kept > 0 and s.kept + s.dropped == len(rows)


@pytest.fixture(scope="module")
def small_spotted(tmp_path_factory):
    """Six rendered-text samples (two of each role), for the model-heavy relative scores."""
    root = tmp_path_factory.mktemp("parrot-small")
    config = SynthConfig(seed=1, originals=1, exact_duplicates=0, near_duplicates=0,
                         mismatched=0, rendered_text=6, corrupt=0, missing_captions=0,
                         missing_images=0)
    corpus = make_corpus(root / "corpus", config, layout="folder")
    ingest(corpus.source, root / "ws", captions=corpus.captions, progress=False)
    parrot_spot(root / "ws", progress=False)
    return root / "ws", corpus


def test_relative_scores_after_text_removal(small_spotted):
    """Real default encoder: S0 and three inpainted variants, RSA/RSC (docs/algorithms.md §4.3)."""
    ws, corpus = small_spotted
    summary = parrot_relative(ws, progress=False)
    rel = {r["uid"]: r for r in Workspace.open(ws).signals(RELATIVE).to_pylist()}
    rows = _with_truth(ws, corpus)
    assert any(r["co_emb_words"] for r in rows)
    for row in rows:
        r = rel[row["uid"]]
        if not row["ocr_text"]:
            assert math.isnan(r["s0"]) and math.isnan(r["rsa"])
            continue
        assert all(-1 <= r[k] <= 1 for k in ("s0", "s_all", "s_co", "s_rand"))
        assert r["rsa_diff"] == pytest.approx(r["s0"] - r["s_all"], abs=1e-5)
        if r["s0"] > 0:
            assert r["rsa"] == pytest.approx(r["s_all"] / r["s0"], rel=1e-4)
            assert r["rsc"] == pytest.approx(r["s_co"] / r["s0"], rel=1e-4)
        assert (r["s_co"] == r["s0"]) == (not row["co_emb_words"])  # nothing co-embedded
    assert summary.scored == sum(bool(r["ocr_text"]) for r in rows) > 0
    assert not math.isnan(summary.mean_rsa + summary.mean_rsc + summary.mean_rs_rand)


def _font(px: int) -> ImageFont.FreeTypeFont:
    try:
        return ImageFont.truetype("DejaVuSans.ttf", px)
    except OSError:
        return ImageFont.load_default(size=px)


def _text_page() -> Image.Image:
    """A page of printed text: about 60% of it under word boxes."""
    text = "the quick brown fox jumps over the lazy dog while five wizards box near the market "
    image = Image.new("RGB", (400, 500), "white")
    draw = ImageDraw.Draw(image)
    for i, line in enumerate(textwrap.wrap(text * 8, 26)[:18]):
        draw.text((10, 6 + i * 27), line, font=_font(24), fill="black")
    return image


def _poster() -> Image.Image:
    """One huge word: about 70% of the image."""
    image = Image.new("RGB", (480, 320), (200, 30, 40))
    ImageDraw.Draw(image).text((240, 160), "SALE", font=_font(180), fill="white", anchor="mm")
    return image


def test_text_dominated_drops_text_heavy_images_and_no_photo_of_the_demo(workspace_copy,
                                                                         tmp_path):
    """Issue 15 item 9: on the README walkthrough `text-dominated` dropped three text-free
    photos (horse, espresso), whose shapes OCR read unsurely as "T" and "8"."""
    heavy = tmp_path / "heavy"
    heavy.mkdir()
    _text_page().save(heavy / "page.png")
    _poster().save(heavy / "poster.png")
    (tmp_path / "heavy.csv").write_text("file,caption\npage.png,a page\nposter.png,a poster\n")
    ingest(heavy, workspace_copy, captions=tmp_path / "heavy.csv", name="heavy", progress=False)
    parrot_spot(workspace_copy, progress=False)
    filter_text_dominated(workspace_copy, progress=False)
    ws = Workspace.open(workspace_copy)
    keys = {r["uid"]: r["key"] for _, t in ws.iter_parts(["uid", "key"]) for r in t.to_pylist()}
    dropped = {keys[d["uid"]] for d in ws.stage_decisions(TEXT_FILTER).to_pylist()
               if d["verdict"] == "drop"}
    assert dropped == {"page", "poster"}  # none of the demo corpus: its drawn text is small


def test_printed_text_that_the_caption_does_not_repeat(shared_data, tmp_path):
    """NeMo-Curator's sample: a printed figure legend, a caption about a wine bottle."""
    ws = tmp_path / "ws"
    ingest(str(shared_data / "nemo-curator" / "00000.tar"), ws, progress=False)
    parrot_spot(ws, progress=False)
    (row,) = Workspace.open(ws).signals(SPOT).to_pylist()
    assert {"another", "experiment"} <= set(tokens(" ".join(row["ocr_text"])))
    assert row["text_probe"] and row["cotr"] == 0.0 and row["co_emb_words"] == []


def test_spotting_survives_extreme_aspect_ratios(tmp_path):
    """A 4000×10 rule or a 10×4000 border made rapidocr raise and `parrot spot` stop."""
    folder = tmp_path / "images"
    folder.mkdir()
    Image.new("RGB", (4000, 10), "gray").save(folder / "rule.png")
    Image.new("RGB", (10, 4000), "gray").save(folder / "border.png")
    banner = Image.new("RGB", (4000, 60), "white")
    ImageDraw.Draw(banner).text((1500, 10), "SUMMER SALE", fill="black",
                                font=ImageFont.load_default(size=40))
    banner.save(folder / "banner.png")
    (folder / "banner.txt").write_text("summer sale banner")
    ingest(folder, tmp_path / "ws", progress=False)
    summary = parrot_spot(tmp_path / "ws", progress=False)
    assert (summary.samples, summary.with_text, summary.parrot) == (3, 1, 1)


def test_encoder_audit_writes_number_and_plot(tmp_path):
    words = ["dog", "cat", "pizza", "guitar", "sunset", "wedding"]
    result = parrot_audit(model="default", out=tmp_path, words=words, progress=False)
    summary = json.loads((tmp_path / "parrot_audit.json").read_text())
    assert (tmp_path / "parrot_audit.png").stat().st_size > 1000
    assert result.matched.shape == result.mismatched.shape == (len(words), 4)
    assert summary["sync_score"] == pytest.approx(result.sync_score)
    assert -1 <= summary["sync_score"] <= 1 and set(summary["styles"]) == {
        "white/black", "black/white", "gray/white", "gray/black"}
    assert summary["gap"] == pytest.approx(result.sync_score - result.baseline)


def test_encoder_audit_reports_progress_per_image():
    """Issue 15 item 9: `parrot audit` printed nothing for 73 s."""
    done = []
    words = ["dog", "cat", "dog", "pizza", "x" * 40]  # a duplicate, and a word too wide to draw
    result = sync_scores(load_encoder("default"), words, batch_size=2, advance=done.append)
    assert result.skipped == ["x" * 40]
    assert sum(done) == 4 * len(STYLES) and done.count(2) >= 4  # every batch of 2 reported


def test_audit_command_shows_a_progress_bar_unless_quiet(tmp_path):
    words = tmp_path / "words.txt"
    words.write_text("dog\ncat\npizza\n")
    command = ["parrot", "audit", "--words", str(words), "--out", str(tmp_path / "audit")]
    shown = CliRunner().invoke(app, command)
    quiet = CliRunner().invoke(app, [*command, "-q"])
    assert shown.exit_code == quiet.exit_code == 0, shown.output + quiet.output
    assert "parrot audit" in shown.output and "12/12" in shown.output  # 3 words x 4 styles
    assert "12/12" not in quiet.output and "Sync. Score" in quiet.output
