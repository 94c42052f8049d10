"""DataComp's basic filter: language ID (offline), caption length, image size and shape."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from PIL import Image

import pairsift
from pairsift import Workspace
from pairsift.errors import ConfigError
from pairsift.models.language import LANGID, load_identifier
from pairsift.stages.basicfilter import basic_filter_reasons

CAPTIONS = Path(__file__).resolve().parent / "data" / "languages" / "captions.tsv"


def multilingual() -> list[dict[str, str]]:
    with open(CAPTIONS, encoding="utf-8") as f:
        return list(csv.DictReader(f, delimiter="\t"))


def accuracy_by_language(identifier, per_language: int = 5) -> dict[str, float]:
    rows = [r for i, r in enumerate(multilingual()) if i % 5 < per_language]
    found, _ = identifier.identify([r["text"] for r in rows])
    right, total = Counter(), Counter()
    for row, language in zip(rows, found, strict=True):
        total[row["language"]] += 1
        right[row["language"]] += language == row["language"]
    return {lang: right[lang] / total[lang] for lang in total}


def test_language_id_of_20_languages():
    accuracy = accuracy_by_language(load_identifier())
    assert len(accuracy) == 20
    assert np.mean(list(accuracy.values())) >= 0.9
    assert accuracy["en"] == 1.0


def test_langid_backend():
    """langid.py is slow (tens of captions a second here): two sentences per language."""
    identifier = load_identifier(LANGID)
    accuracy = accuracy_by_language(identifier, per_language=2)
    assert np.mean(list(accuracy.values())) >= 0.9
    _, scores = identifier.identify(["A brown dog is running on the beach."])
    assert 0.5 < scores[0] <= 1.0  # normalised probabilities, not log-odds


def test_bundled_model_loads_without_network(tmp_path):
    """The default model is a file inside an installed package: with every socket refused
    and the hubs told to stay offline, it still loads and identifies."""
    script = (
        "import socket\n"
        "def refuse(*a, **k): raise OSError('network use')\n"
        "socket.socket.connect = refuse\n"
        "socket.create_connection = refuse\n"
        "socket.getaddrinfo = refuse\n"
        "from pairsift.models.language import load_identifier\n"
        "print(load_identifier().identify(['a brown dog runs on the beach'])[0][0])\n")
    env = os.environ | {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
                        "FTLANG_CACHE": str(tmp_path / "cache"), "HOME": str(tmp_path)}
    out = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True,
                         text=True, check=True)
    assert out.stdout.strip() == "en"
    assert not (tmp_path / "cache").exists()  # nothing was downloaded or cached


def reasons(**overrides):
    row = {"language": "en", "language_score": 0.9, "n_words": 3, "n_chars": 6,
           "width": 200, "height": 200} | overrides
    arrays = {k: np.array([v], object if k == "language" else None)
              for k, v in row.items()}
    return basic_filter_reasons(**arrays)[0]


def test_datacomp_comparisons_at_the_edges():
    """DataComp keeps words > 2, characters > 5, min side >= 200, max/min <= 3.0."""
    assert reasons() == ""
    assert reasons(n_words=2) == "caption_few_words"
    assert reasons(n_chars=5) == "caption_few_chars"
    assert reasons(width=199) == "image_too_small"
    assert reasons(width=600, height=200) == ""  # aspect exactly 3.0 is kept
    assert reasons(width=601, height=200) == "aspect_ratio"
    assert reasons(language="de") == "wrong_language"
    assert reasons(language=None, n_words=0, n_chars=0) == "caption_missing"
    assert reasons(language_score=0.0) == ""  # DataComp has no probability threshold


def test_first_failing_check_is_the_reason():
    assert reasons(language="fr", n_words=1, width=10) == "wrong_language"
    assert reasons(n_words=1, width=10) == "caption_few_words"
    assert reasons(width=10, height=1000) == "image_too_small"


@pytest.fixture(scope="module")
def multilingual_workspace(tmp_path_factory) -> Path:
    """The multilingual captions as a folder corpus; English image sizes vary so that each
    image rule drops one of them."""
    root = tmp_path_factory.mktemp("multilingual")
    images = root / "images"
    images.mkdir()
    sizes = {0: (150, 300), 1: (700, 200)}  # too small; too wide (3.5)
    with open(root / "captions.csv", "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["file", "caption"])
        for i, row in enumerate(multilingual()):
            Image.new("RGB", sizes.get(i, (256, 224)), (i, 80, 160)).save(
                images / f"{i:03d}.png")
            writer.writerow([f"{i:03d}.png", row["text"]])
        Image.new("RGB", (256, 256)).save(images / "short.png")
        writer.writerow(["short.png", "a cat"])  # English, 2 words
    ws = root / "ws"
    pairsift.ingest(images, ws, captions=root / "captions.csv", chunk_size=40, progress=False)
    return ws


def decisions(ws: Path, stage: str) -> dict[str, tuple[str, str]]:
    w = Workspace.open(ws)
    out = {}
    for part in w.part_ids():
        keys = w.read_part(part, ["uid", "key"]).to_pydict()
        table = w.part_decisions(part, stage, ["uid", "verdict", "reason"]).to_pydict()
        key_of = dict(zip(keys["uid"], keys["key"], strict=True))
        for uid, verdict, reason in zip(table["uid"], table["verdict"], table["reason"],
                                        strict=True):
            out[key_of[uid]] = (verdict, reason)
    return out


def test_filter_basic_keeps_english_and_drops_the_rest_with_reasons(multilingual_workspace):
    summary = pairsift.filter_basic(multilingual_workspace, progress=False)
    verdicts = decisions(multilingual_workspace, "filter-basic")
    languages = {f"{i:03d}": r["language"] for i, r in enumerate(multilingual())}
    assert verdicts["000"] == ("drop", "image_too_small")
    assert verdicts["001"] == ("drop", "aspect_ratio")
    assert verdicts["short"] == ("drop", "caption_few_words")
    assert all(verdicts[k] == ("keep", "") for k in ("002", "003", "004"))
    foreign = [verdicts[k] for k, lang in languages.items() if lang != "en"]
    assert all(v == ("drop", "wrong_language") for v in foreign)
    assert summary.kept == 3 and summary.by_reason["wrong_language"] == 95


def test_signals_are_stored_and_thresholds_redecide_without_lid(multilingual_workspace):
    pairsift.filter_basic(multilingual_workspace, progress=False)
    w = Workspace.open(multilingual_workspace)
    run = w.current_run("language")
    table = pq.read_table(w.signal_path("language", run, w.part_ids()[0]))
    assert table.column_names == ["uid", "language", "language_score", "n_words", "n_chars"]
    again = pairsift.filter_basic(multilingual_workspace, min_side=100, max_aspect=4.0,
                                  progress=False)
    assert Workspace.open(multilingual_workspace).current_run("language") == run
    assert again.kept == 5
    anything = pairsift.filter_basic(multilingual_workspace, language="any", min_side=100,
                                     max_aspect=4.0, progress=False)
    # str.split, as DataComp counts words: Chinese and Japanese captions are one "word"
    assert anything.kept == 90
    assert anything.by_reason == {"caption_few_words": 11}


@pytest.mark.parametrize("options", [{"min_words": -1}, {"max_aspect": 0.5},
                                     {"min_language_score": 2.0}])
def test_bad_options_are_refused(multilingual_workspace, options):
    with pytest.raises(ConfigError):
        pairsift.filter_basic(multilingual_workspace, progress=False, **options)


def test_unknown_language_model_is_refused():
    with pytest.raises(ConfigError, match="lid.176.bin"):
        pairsift.language("/nowhere", lid_model="/no/such/lid.176.bin")
