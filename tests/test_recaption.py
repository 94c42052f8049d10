"""recaption (synthetic captions as a signal), mix (raw and synthetic captions mixed as Nguyen
et al. do), the chosen caption in every export, and the caption metrics."""

from __future__ import annotations

import csv
import json
import shutil
import tarfile
import time

import numpy as np
import pyarrow.parquet as pq
import pytest
from workspaces import fake_run  # tests/workspaces.py

import pairsift
from pairsift import Workspace, export
from pairsift.captionmetrics import SubsetStats, clip_s, trigram_hashes
from pairsift.errors import ConfigError
from pairsift.models.captioners import LABELS_VERSION
from pairsift.pipeline.export import ExportError
from pairsift.stages.mix import Mix
from pairsift.stages.recaption import space_of
from pairsift.synth.captions import names_photo


@pytest.fixture(scope="module")
def recaptioned(embedded_workspace, tmp_path_factory):
    """The demo workspace scored and recaptioned with ``labels`` (two captions per image)."""
    ws = tmp_path_factory.mktemp("recaptioned") / "ws"
    shutil.copytree(embedded_workspace, ws)
    pairsift.score(ws, progress=False)
    pairsift.recaption(ws, n=2, progress=False)
    return ws


@pytest.fixture
def ws_copy(recaptioned, tmp_path):
    target = tmp_path / "ws"
    shutil.copytree(recaptioned, target)
    return target


class LongCaptioner:
    """A captioner whose captions far exceed any text encoder's context, and which fails on
    images of one size."""

    name = "long"

    def __init__(self, fails_on=None):
        self.fails_on = fails_on

    def preprocess(self, image):
        if image.size == self.fails_on:
            raise RuntimeError("this captioner cannot read that image")
        return image.size

    def caption(self, pixels, decoding, spotted, seeds):
        return [["word " * 400] * decoding.n for _ in pixels]  # > 256 tokens


# -- metrics --------------------------------------------------------------------------------------
def test_unique_trigrams_tokenise_case_and_punctuation_away():
    # "a tabby cat", "tabby cat on", "cat on a", "on a mat"/"on a rug", "a mat!" has none extra
    assert len(trigram_hashes(["A tabby cat on a mat!", "a TABBY cat, on a rug"])) == 5
    assert len(trigram_hashes(["two words", None, ""])) == 0


def test_clip_s_is_two_and_a_half_times_the_positive_cosine():
    np.testing.assert_allclose(clip_s(np.array([0.3, -0.2, np.nan])), [0.75, 0.0, np.nan])


def test_subset_stats_merge_sources_counting_shared_trigrams_once():
    stats = SubsetStats()
    stats.add("raw", ["a tabby cat", "a red motorcycle"], np.array([1.0, np.nan]))
    stats.add("synthetic", ["a tabby cat"], np.array([2.0]))
    assert stats.stats("raw").unique_trigrams == 2 and stats.stats("raw").clip_s == 1.0
    merged = stats.merged(["raw", "synthetic"])
    assert (merged.captions, merged.unique_trigrams, merged.clip_s) == (3, 2, 1.5)
    assert merged.trigrams_per_1000 == pytest.approx(2000 / 3)


# -- mixing rules -----------------------------------------------------------------------------
S_R = np.array([0.9, 0.8, 0.3, 0.2, np.nan, 0.1], np.float32)
S_B = np.array([0.5, 0.1, 0.85, 0.1, 0.7, np.nan], np.float32)


def test_mix_rules():
    cut = Mix("raw_topk").threshold(S_R, S_B, 0.4)  # int(5 * 0.4) + 1 = 3rd largest raw
    assert cut == pytest.approx(0.3)
    raw, syn = Mix("raw_topk").pairs(S_R, S_B, cut)
    assert raw.tolist() == [1, 1, 1, 0, 0, 0] and not syn.any()
    raw, syn = Mix("raw_then_synthetic").pairs(S_R, S_B, cut)
    # the rest gets its synthetic caption; no synthetic caption: raw-only (kept as raw)
    assert raw.tolist() == [1, 1, 1, 0, 0, 1] and syn.tolist() == [0, 0, 0, 1, 1, 0]
    raw, syn = Mix("raw_then_synthetic", filter_synthetic=True).pairs(S_R, S_B, cut)
    assert raw.tolist() == [1, 1, 1, 0, 0, 0] and syn.tolist() == [0, 0, 0, 0, 1, 0]
    cut_b = Mix("synthetic_then_raw").threshold(S_R, S_B, 0.4)
    assert cut_b == pytest.approx(0.5)
    raw, syn = Mix("synthetic_then_raw", filter_raw=True).pairs(S_R, S_B, cut_b)
    assert syn.tolist() == [1, 0, 1, 0, 1, 0] and raw.tolist() == [0, 1, 0, 0, 0, 0]
    raw, syn = Mix("synthetic_only").pairs(S_R, S_B, cut_b)
    assert not raw.any() and syn.tolist() == [1, 0, 1, 0, 1, 0]
    cut_2n = Mix("both").threshold(S_R, S_B, 0.4)  # 10 scored pairs: the 5th largest
    assert cut_2n == pytest.approx(0.5)
    raw, syn = Mix("both").pairs(S_R, S_B, cut_2n)
    assert raw.tolist() == [1, 1, 0, 0, 0, 0] and syn.tolist() == [1, 0, 1, 0, 1, 0]


def test_mix_options_are_checked_first():
    with pytest.raises(ConfigError, match="raw_then_synthetic"):
        pairsift.mix("nowhere", strategy="raw_topk", filter_synthetic=True)
    with pytest.raises(ConfigError, match="strategy"):
        pairsift.mix("nowhere", strategy="best")
    with pytest.raises(ConfigError, match="greedy"):
        pairsift.recaption("nowhere", temperature=0, n=2)
    with pytest.raises(ConfigError, match="unknown captioner"):
        pairsift.recaption("nowhere", captioner="blip")


# -- recaption ------------------------------------------------------------------------------
def test_recaption_stores_captions_scores_embeddings_and_provenance(recaptioned):
    ws = Workspace.open(recaptioned)
    run = ws.current_run("recaption")
    model = ws.current_model()
    for part, rows in ws.iter_parts(["uid"]):
        signals = pq.read_table(ws.signal_path("recaption", run, part)).to_pylist()
        image = np.asarray(ws.embeddings(model, "image", part), np.float32)
        texts = ws.embeddings(model, space_of(run), part)
        assert texts.shape == (rows.num_rows, 2, image.shape[1])
        texts32 = np.asarray(texts, np.float32)
        expected = np.einsum("nd,nkd->nk", image, texts32) / (
            np.linalg.norm(image, axis=1)[:, None] * np.linalg.norm(texts32, axis=2))
        np.testing.assert_allclose([s["synthetic_scores"] for s in signals], expected,
                                   atol=2e-3)
        for s in signals:
            assert len(s["synthetic_captions"]) == 2
            assert all(c.startswith("a photo of ") for c in s["synthetic_captions"])
            best = int(np.argmax(s["synthetic_scores"]))
            assert s["synthetic_caption"] == s["synthetic_captions"][best]
            assert s["s_b"] == pytest.approx(s["synthetic_scores"][best])
            assert json.loads(s["caption_provenance"]) == {
                "captioner": "labels", "n": 2, "temperature": 0.75, "top_p": 0.9,
                "max_tokens": 30, "seed": 0}
    # labels' captioning scheme is an input: a new scheme is a new run, not the old captions
    assert ws.run_record("recaption")["inputs"]["labels_version"] == LABELS_VERSION
    # labels captions are the default encoder's own class prompts: scored far above raw ones
    s_b = ws.signals("recaption", ["s_b"]).column("s_b").to_numpy()
    s_r = ws.signals("score", ["clip_score"]).column("clip_score").to_numpy()
    assert np.nanmedian(s_b) > np.nanmedian(s_r)


def test_recaption_quotes_the_text_parrot_spot_read(ws_copy):
    before = Workspace.open(ws_copy).current_run("recaption")
    fake_run(Workspace.open(ws_copy), "parrot-spot", {}, signals=lambda part, rows: {
        "ocr_text": [["SALE", "50%"]] * rows.num_rows})
    summary = pairsift.recaption(ws_copy, n=2, progress=False)
    assert summary.run != before  # parrot-spot is one of its inputs now
    captions = Workspace.open(ws_copy).signals("recaption", ["synthetic_captions"])
    assert all(c.endswith("; the text reads 'SALE 50%'")
               for cs in captions.column("synthetic_captions").to_pylist() for c in cs)


def test_recaption_resumes_per_part_truncates_long_captions_and_isolates_failures(
        ws_copy, monkeypatch):
    ws = Workspace.open(ws_copy)
    sizes = [(r["width"], r["height"]) for _, t in ws.iter_parts(["width", "height"])
             for r in t.to_pylist()]
    bad = next(size for size in sizes if sizes.count(size) == 1)  # under 896 px: full size
    monkeypatch.setattr("pairsift.stages.recaption.load_captioner",
                        lambda name, device: LongCaptioner(fails_on=bad))
    first = pairsift.recaption(ws_copy, captioner="hf:any/blip", progress=False)
    assert first.failed == 1 and first.captioned == ws.num_samples() - 1
    assert "labels_version" not in Workspace.open(ws_copy).run_record("recaption")["inputs"]
    errors = Workspace.open(ws_copy).errors("recaption").to_pylist()
    assert [e["reason"] for e in errors] == ["stage_error"]
    s_b = Workspace.open(ws_copy).signals("recaption", ["s_b"]).column("s_b").to_numpy()
    assert np.isfinite(s_b).sum() == len(s_b) - 1  # embedded (cut to the context)
    run = first.run
    ws.signal_path("recaption", run, ws.part_ids()[1]).unlink()
    again = pairsift.recaption(ws_copy, captioner="hf:any/blip", progress=False)
    assert (again.run, again.parts_done, again.samples) == (
        run, 1, ws.part_rows(ws.part_ids()[1]))


def test_undo_recaption_removes_its_caption_embeddings(ws_copy):
    ws = Workspace.open(ws_copy)
    run, model = ws.current_run("recaption"), ws.current_model()
    kept = sorted(p.name for p in (ws_copy / "embeddings" / model).iterdir())
    assert space_of(run) in kept
    assert pairsift.undo(ws_copy, "recaption") == run
    left = sorted(p.name for p in (ws_copy / "embeddings" / model).iterdir())
    assert left == [s for s in kept if s != space_of(run)]


# -- mix ------------------------------------------------------------------------------------
def test_mix_decides_and_notes_replaced_captions(ws_copy):
    summary = pairsift.mix(ws_copy, strategy="raw_then_synthetic", top=0.5,
                           filter_synthetic=True, progress=False)
    ws = Workspace.open(ws_copy)
    decisions = ws.stage_decisions("mix").to_pylist()
    source = ws.signals("mix").column("caption_source").to_pylist()
    kept = [d["verdict"] == "keep" for d in decisions]
    assert summary.kept == sum(kept) and [s is not None for s in source] == kept
    replaced = [d for d, s in zip(decisions, source, strict=True) if s == "synthetic"]
    assert replaced and all(d["reason"] == "caption_replaced" for d in replaced)
    evidence = replaced[0]["evidence"] if isinstance(replaced[0]["evidence"], dict) else \
        json.loads(replaced[0]["evidence"])
    assert set(evidence) >= {"raw_caption", "synthetic_caption", "s_r", "s_b", "threshold"}
    assert evidence["s_b"] >= evidence["threshold"] > evidence["s_r"]
    assert {d["reason"] for d in decisions if d["verdict"] == "drop"} <= {
        "mix_below_threshold", "mix_no_score"}


def test_remixing_takes_seconds_and_never_recaptions(ws_copy, monkeypatch):
    def no_captioner(*args):
        raise AssertionError("mix must not caption again")

    monkeypatch.setattr("pairsift.stages.recaption.load_captioner", no_captioner)
    recaption_run = Workspace.open(ws_copy).current_run("recaption")
    start = time.perf_counter()
    for top in (0.3, 0.5, 0.7):
        for strategy in ("raw_topk", "both"):
            pairsift.mix(ws_copy, strategy=strategy, top=top, progress=False)
    compared = pairsift.mix(ws_copy, strategy="raw_topk", top=0.5, compare=True,
                            progress=False)
    assert time.perf_counter() - start < 30
    assert Workspace.open(ws_copy).current_run("recaption") == recaption_run
    rows = {r["strategy"]: r for r in compared.compare}
    assert rows["raw_topk"]["images"] == compared.kept
    assert rows["raw_topk"]["share_synthetic"] == 0 and rows["synthetic_only"][
        "share_synthetic"] == 1
    assert rows["both"]["pairs"] > rows["both"]["images"]


# -- export ---------------------------------------------------------------------------------
def test_every_export_carries_the_chosen_caption_and_its_source(ws_copy, tmp_path):
    pairsift.mix(ws_copy, strategy="raw_then_synthetic", top=0.5, progress=False)
    ws = Workspace.open(ws_copy)
    rows = [r for _, t in ws.iter_parts(["uid", "key", "caption"]) for r in t.to_pylist()]
    signals = ws.signals("recaption", ["synthetic_caption"]).column("synthetic_caption")
    chosen = {}
    for row, source, synthetic in zip(rows, ws.signals("mix").column(
            "caption_source").to_pylist(), signals.to_pylist(), strict=True):
        if source is not None:
            chosen[row["uid"]] = (source, row["caption"] if source == "raw" else synthetic,
                                  row["caption"])
    assert {s for s, _, _ in chosen.values()} == {"raw", "synthetic"}

    table = pq.read_table(export(ws_copy, tmp_path / "kept.parquet", format="parquet").out)
    assert {r["uid"]: (r["caption_source"], r["caption"], r["raw_caption"])
            for r in table.to_pylist()} == chosen

    out = export(ws_copy, tmp_path / "wds", format="webdataset").out
    seen = {}
    with tarfile.open(out / "00000.tar") as tar:
        members = {m.name: tar.extractfile(m).read() for m in tar.getmembers()}
    for name, data in members.items():
        if name.endswith(".json"):
            meta = json.loads(data)
            txt = members[name[:-5] + ".txt"].decode()
            seen[meta["uid"]] = (meta["caption_source"], txt, meta["raw_caption"])
            assert meta["synthetic_caption"] is not None
    assert seen == chosen

    summary = export(ws_copy, tmp_path / "train.csv", format="openclip-csv")
    with open(summary.out, newline="") as f:
        read = list(csv.DictReader(f, delimiter="\t"))
    assert len(read) == len(chosen)
    assert sorted((r["caption_source"], r["title"]) for r in read) == sorted(
        (s, c) for s, c, _ in chosen.values())

    with pytest.raises(ExportError, match="synthetic captions"):
        export(ws_copy, tmp_path / "subset.npy", format="datacomp-uids")


def test_both_exports_two_pairs_per_image_with_distinct_keys(ws_copy, tmp_path):
    pairsift.mix(ws_copy, strategy="both", top=0.5, progress=False)
    ws = Workspace.open(ws_copy)
    sources = ws.signals("mix").column("caption_source").to_pylist()
    n_both = sources.count("both")
    images = sum(s is not None for s in sources)
    assert n_both > 0
    table = pq.read_table(export(ws_copy, tmp_path / "kept.parquet", format="parquet").out)
    assert table.num_rows == images + n_both
    assert len(set(table.column("key").to_pylist())) == table.num_rows
    dropped = {d["uid"] for d in ws.stage_decisions("mix").to_pylist()
               if d["verdict"] == "drop"}
    assert not dropped & set(table.column("uid").to_pylist())
    wds = export(ws_copy, tmp_path / "wds", format="webdataset")
    assert (wds.exported, wds.dropped) == (images + n_both, len(dropped))


# -- what it must show ------------------------------------------------------------------------
def test_labels_rescue_mismatched_images_the_raw_filter_drops(ws_copy, demo_corpus):
    """On the synthetic corpus: raw_then_synthetic --top 0.5 --filter-synthetic keeps more
    images than raw_topk --top 0.5, and at least half of the images whose raw caption is
    mismatched are kept with a synthetic caption."""
    truth = {r["key"]: r for r in pq.read_table(demo_corpus / "truth.parquet").to_pylist()}
    ws = Workspace.open(ws_copy)
    keys = [k for _, t in ws.iter_parts(["key"]) for k in t.column("key").to_pylist()]

    def kept(**options):
        pairsift.mix(ws_copy, top=0.5, progress=False, **options)
        return Workspace.open(ws_copy).signals("mix").column("caption_source").to_pylist()

    raw_only = kept(strategy="raw_topk")
    mixed = kept(strategy="raw_then_synthetic", filter_synthetic=True)
    assert sum(s is not None for s in mixed) > sum(s is not None for s in raw_only)
    mismatched = [s for k, s in zip(keys, mixed, strict=True) if truth[k]["mismatched"]]
    assert len(mismatched) >= 4
    assert sum(s == "synthetic" for s in mismatched) >= len(mismatched) / 2
    # the truth's judge of a caption, as the benchmark uses it
    assert names_photo("a photo of a tabby cat", "chelsea")
    assert not names_photo(truth[keys[0]]["caption"], "no-such-photo")


# -- report ---------------------------------------------------------------------------------
def test_report_shows_caption_sources_and_the_replaced_captions_first(ws_copy,
                                                                       embedded_workspace,
                                                                       tmp_path):
    pairsift.mix(ws_copy, strategy="raw_then_synthetic", top=0.5, progress=False)
    html = pairsift.report(ws_copy, out=tmp_path / "r.html", max_thumbnails=100,
                           progress=False).read_text()
    section = html[html.index('<section id="captions">'):]
    section = section[:section.index("</section>")]
    assert "inflated by construction" in section  # labels is named as what it is
    assert "<td>raw</td>" in section and "<td>synthetic</td>" in section
    cards = section.split('<figure class="card pair')[1:]
    replaced = [c.startswith(" replaced") for c in cards]
    assert replaced[0] and not replaced[-1] and replaced == sorted(replaced, reverse=True)
    assert all("<b>raw</b>" in c and "<b>synthetic</b>" in c for c in cards)  # side by side
    plain = pairsift.report(embedded_workspace, out=tmp_path / "plain.html",
                            progress=False).read_text()
    assert 'id="captions"' not in plain


def test_cli_mix_compare_prints_every_strategy(ws_copy):
    from typer.testing import CliRunner

    from pairsift.cli import app

    result = CliRunner().invoke(app, ["mix", "-w", str(ws_copy), "--strategy", "raw_topk",
                                      "--top", "0.5", "--compare", "--quiet"],
                                env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    for strategy in ("raw_topk", "synthetic_only", "raw_then_synthetic (rest filtered)",
                     "synthetic_then_raw", "both", "mean CLIP-S"):
        assert strategy in result.output
    assert "mix raw_topk at top 0.5" in result.output
