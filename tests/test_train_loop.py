"""``pairsift train`` with open_clip_train on a pairsift export, and ``pairsift compare``.

The tiny model trains for a few steps only: its weights are barely trained, so these tests
exercise the code paths (provenance, loading by ``run:`` name, comparison), not model quality.
"""

from __future__ import annotations

import csv
import json
import shutil

import pytest
from typer.testing import CliRunner

import pairsift
from pairsift.cli import app
from pairsift.errors import ConfigError
from pairsift.models import load_encoder, model_slug
from pairsift.pipeline.compare import caption_stats
from pairsift.pipeline.export import decisions_digest
from pairsift.pipeline.train import _tar_samples, describe_export
from pairsift.stages.parrot_audit import WORDS
from pairsift.synth import SynthConfig, make_corpus
from pairsift.synth.evalset import make_eval_set
from pairsift.workspace import Workspace


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    root = tmp_path_factory.mktemp("loop")
    corpus = make_corpus(root / "corpus", SynthConfig(seed=3, n_samples=60))
    pairsift.ingest([str(corpus.source)], root / "ws", captions=corpus.captions, progress=False)
    pairsift.export(root / "ws", root / "train.csv", format="openclip-csv")
    pairsift.export(root / "ws", root / "wds", format="webdataset", shard_size=20)
    return root


@pytest.fixture(scope="module")
def trained(exported):
    result = CliRunner().invoke(app, ["train", str(exported / "train.csv"), "--out",
                                      str(exported / "run"), "--batch-size", "16"])
    assert result.exit_code == 0, result.output
    return exported / "run"


def test_train_records_the_export_and_its_decisions(trained, exported):
    record = json.loads((trained / "pairsift-train.json").read_text())
    assert record["arch"] == "pairsift-tiny" and record["steps"] == record["samples"] // 16
    assert (trained / record["checkpoint"]).is_file()
    provenance = record["export"]["provenance"]
    ws = Workspace.open(exported / "ws")
    assert provenance["workspace"] == str(ws.root)
    assert provenance["decisions"] == decisions_digest(ws)
    assert "--train-data" in record["trainer_args"]


def test_trained_model_loads_by_run_name_code_path(trained):
    encoder = load_encoder(f"run:{trained}")
    assert encoder.name.startswith("open_clip:pairsift-tiny/") and encoder.dim == 128
    assert encoder.encode_texts(["a tabby cat"]).shape == (1, 128)
    assert model_slug(f"run:{trained}").startswith("open_clip-pairsift-tiny-epoch_1-")


def test_run_name_of_a_folder_that_is_not_a_run(tmp_path):
    with pytest.raises(ConfigError, match="pairsift train"):
        load_encoder(f"run:{tmp_path}")


def test_train_refuses_to_overwrite_a_run(trained, exported):
    with pytest.raises(ConfigError, match="--overwrite"):
        pairsift.train(exported / "train.csv", trained)


def test_train_refuses_unknown_configs_and_tiny_exports(exported, tmp_path):
    with pytest.raises(ConfigError, match="model config"):
        pairsift.train(exported / "train.csv", tmp_path / "r", model_config="ViT-Q-99")
    with pytest.raises(ConfigError, match="fewer than one batch"):
        pairsift.train(exported / "train.csv", tmp_path / "r", batch_size=10_000)


def test_webdataset_exports_read_by_the_trainer(exported):
    info = describe_export(exported / "wds")
    assert info.dataset_type == "webdataset" and info.provenance["format"] == "webdataset"
    samples = list(_tar_samples([{"url": u} for u in info.train_data.split("::")]))
    assert len(samples) == info.samples
    assert all("txt" in s and {"jpg", "png", "webp"} & set(s) for s in samples)


def test_sample_count_is_the_one_the_export_recorded(exported, tmp_path):
    copy = tmp_path / "wds"
    shutil.copytree(exported / "wds", copy)
    marker = json.loads((copy / "pairsift-export.json").read_text())
    assert describe_export(copy).samples == marker["exported"] > 0
    (copy / "pairsift-export.json").write_text(json.dumps(marker | {"exported": 7}))
    assert describe_export(copy).samples == 7  # the record is what counts
    (copy / "pairsift-export.json").unlink()
    with pytest.raises(ConfigError, match="pairsift-export.json.*--format webdataset"):
        describe_export(copy).samples  # noqa: B018 (the property raises)


def test_a_csv_without_marker_counts_its_rows_as_open_clip_reads_them(tmp_path):
    csv_path = tmp_path / "hand.csv"
    csv_path.write_text('filepath\ttitle\na.jpg\t"two\nlines"\nb.jpg\tone line\n',
                        encoding="utf-8")
    assert describe_export(csv_path).samples == 2


def test_a_copied_csv_counts_the_same_without_its_images_folder(exported, tmp_path):
    shutil.copy(exported / "train.csv", tmp_path / "train.csv")  # without its images folder
    assert describe_export(tmp_path / "train.csv").samples == describe_export(
        exported / "train.csv").samples
    # reading the captions needs no marker
    assert caption_stats(tmp_path / "train.csv") == caption_stats(exported / "train.csv")


def test_caption_stats_count_trigrams_and_synthetic_captions(tmp_path):
    export = tmp_path / "mixed.csv"
    with export.open("w", newline="") as f:
        writer = csv.writer(f, delimiter="\t")
        writer.writerow(["filepath", "title", "caption_source"])
        writer.writerow(["a.jpg", "a red car on a road", "raw"])
        writer.writerow(["b.jpg", "A red car on grass", "synthetic"])
    # "a red car", "red car on", "car on a", "on a road", "car on grass"
    assert caption_stats(export) == (5, 1, 2)


def test_compare_two_runs(trained, exported, tmp_path):
    other = tmp_path / "other"
    shutil.copytree(trained, other)
    record = json.loads((other / "pairsift-train.json").read_text())
    record["export"]["path"] = str(exported / "wds")
    record["checkpoint"] = str(trained / record["checkpoint"])
    (other / "pairsift-train.json").write_text(json.dumps(record))
    eval_set = make_eval_set(tmp_path / "eval")
    pairsift.evaluate(eval_set.retrieval, task="retrieval", model=f"run:{trained}", out=trained)
    words = ["sale", "open", "summer", "fresh"]
    rows = pairsift.compare([trained, other], audit_words=words)
    assert [r.samples for r in rows] == [record["samples"]] * 2
    assert rows[0].unique_trigrams > 0 and rows[0].synthetic_share == 0.0
    assert "retrieval:datacomp_retrieval" in rows[0].metrics and not rows[1].metrics
    assert rows[0].sync_score == pytest.approx(rows[1].sync_score)  # same checkpoint
    assert json.loads((trained / "parrot-audit" / "parrot_audit.json").read_text())[
        "words"] == len(words)
    # the CLI audits with the default words: the saved four-word audit is not reused for them
    result = CliRunner().invoke(app, ["compare", str(trained), str(other), "--json"])
    assert result.exit_code == 0, result.output
    saved = json.loads((trained / "parrot-audit" / "parrot_audit.json").read_text())
    assert sorted(saved["asked"]) == sorted(set(WORDS))
    # the JSON is stdout; stderr may carry anything the session logs (a Ray worker's line)
    assert json.loads(result.stdout)[0]["sync_score"] == pytest.approx(saved["sync_score"])
