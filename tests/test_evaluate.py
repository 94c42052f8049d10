"""``pairsift evaluate`` on the held-out synthetic evaluation set, with the default model."""

from __future__ import annotations

import csv
import hashlib
import json

import pytest
from typer.testing import CliRunner

import pairsift
from pairsift.cli import app
from pairsift.errors import ConfigError
from pairsift.evaluation.data import concept_prompts
from pairsift.synth import SynthConfig, make_corpus
from pairsift.synth.evalset import EvalSetConfig, make_eval_set

SUBGROUPS = {"chelsea": "animal", "astronaut": "person", "camera": "person",
             "coffee": "object", "rocket": "object"}


@pytest.fixture(scope="module")
def eval_set(tmp_path_factory):
    return make_eval_set(tmp_path_factory.mktemp("eval"),
                         EvalSetConfig(per_class=3, subgroups=SUBGROUPS))


def test_eval_set_is_held_out_from_training_corpora(eval_set, tmp_path):
    corpus = make_corpus(tmp_path / "corpus", SynthConfig(seed=0, n_samples=200))
    train_images = set(corpus.truth.column("sha256").to_pylist())
    train_captions = set(corpus.truth.column("caption").to_pylist())
    rows = list(csv.DictReader(eval_set.retrieval.open()))
    assert len(rows) == 2 * 3 * 14  # two captions per image, three images per croppable photo
    for row in rows:
        digest = hashlib.sha256((eval_set.root / row["image"]).read_bytes()).hexdigest()
        assert digest not in train_images
        assert row["caption"] not in train_captions


@pytest.mark.slow
def test_zeroshot_with_the_default_model_beats_chance(eval_set, tmp_path):
    r = pairsift.evaluate(eval_set.classes, task="zeroshot", classnames=eval_set.classnames,
                          out=tmp_path)
    assert r.samples == 42 and r.details["templates"] == 80
    assert r.metrics["acc1"] > 3 / 14  # chance is 1/14
    saved = json.loads((tmp_path / "evaluation-zeroshot.json").read_text())
    assert saved["metrics"] == r.metrics and saved["model"] == "default"


@pytest.mark.slow
def test_retrieval_with_the_default_model(eval_set):
    r = pairsift.evaluate(eval_set.retrieval, task="retrieval")
    assert r.details["captions"] == 2 * r.samples
    # 3 crops per photo: a caption's best image is of its photo far more often than chance
    assert r.metrics["image_retrieval_recall@5"] > 5 / 42 * 2
    assert r.metrics["datacomp_retrieval"] == pytest.approx(
        0.5 * (r.metrics["image_retrieval_recall@1"] + r.metrics["text_retrieval_recall@1"]))


@pytest.mark.slow
def test_fairness_cli_writes_json(eval_set, tmp_path):
    out = tmp_path / "fair.json"
    result = CliRunner().invoke(app, ["evaluate", str(eval_set.labels), "--task", "fairness",
                                      "-k", "5", "--out", str(out)])
    assert result.exit_code == 0, result.output
    saved = json.loads(out.read_text())
    assert saved["details"]["labels"] == ["animal", "object", "person"]
    assert saved["details"]["prompts"] == len(concept_prompts()) == 11 * 29
    assert saved["metrics"]["max_skew@5"] >= 0 >= saved["metrics"]["min_skew@5"]
    assert saved["metrics"]["ndkl"] > 0


@pytest.mark.slow
def test_fidelity_is_higher_for_the_same_subject(eval_set, tmp_path):
    generated = tmp_path / "generated.csv"
    with generated.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["image", "prompt"])
        for i in range(2):
            writer.writerow([eval_set.classes / "chelsea" / f"{i:03d}.png", "a photo of sks cat"])

    def fidelity(references: str) -> dict:
        return pairsift.evaluate(generated, task="fidelity", identifier="sks",
                                 references=eval_set.classes / references).metrics

    same, other = fidelity("chelsea"), fidelity("coffee")
    assert set(same) == {"visual_i[default]", "clip_i", "clip_t"}  # not called DINO
    assert same["clip_i"] > other["clip_i"]
    assert same["visual_i[default]"] > other["visual_i[default]"]
    assert same["clip_t"] == pytest.approx(other["clip_t"])  # prompts only


def test_fidelity_needs_references(eval_set):
    with pytest.raises(ConfigError, match="--references"):
        pairsift.evaluate(eval_set.retrieval, task="fidelity")


def test_unknown_task(eval_set):
    with pytest.raises(ConfigError, match="zeroshot"):
        pairsift.evaluate(eval_set.classes, task="captioning")


def test_clip_benchmark_absent_is_a_clear_error(monkeypatch, tmp_path):
    monkeypatch.setattr("shutil.which", lambda name: None)
    result = CliRunner().invoke(app, ["clip-benchmark", "cifar10", "--dataset-root",
                                      str(tmp_path), "--model", "open_clip:RN50/openai"])
    assert result.exit_code == 2
    assert "pip install clip_benchmark" in result.output


def test_eval_set_cli(tmp_path):
    result = CliRunner().invoke(app, ["eval-set", str(tmp_path / "ev"), "--per-class", "1"])
    assert result.exit_code == 0, result.output
    assert len(list((tmp_path / "ev" / "classes").glob("*/*.png"))) == 14
    again = CliRunner().invoke(app, ["eval-set", str(tmp_path / "ev")])
    assert again.exit_code == 2 and "not empty" in again.output
