"""The Ray engine writes what the local engine writes (signals, decisions, embeddings, errors,
run ids), and a Ray run that stopped midway resumes to the same result. One local Ray cluster
(2 CPUs) serves the whole test session."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

import pairsift
from pairsift.engine.runner import executor, run_stage
from pairsift.errors import ConfigError
from pairsift.stage import PartOutput
from pairsift.stages.score import Score
from pairsift.synth import SynthConfig, make_corpus
from pairsift.synth.tiled import tiled_workspace
from pairsift.workspace import Workspace


@pytest.fixture(scope="session")
def ray_cluster():
    import ray

    ray.init(num_cpus=2, include_dashboard=False, logging_level="warning")
    # the stages defined below travel to the workers by value: tests/ is not on their path
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    yield ray
    ray.shutdown()


def outputs(root: Path, stage: str) -> tuple[str, pa.Table | None, pa.Table | None]:
    """A stage's current run, signals and decisions, as the workspace stores them."""
    ws = Workspace.open(root)
    signals = ws.signals(stage) if stage in ws.signal_stages() else None
    decisions = ws.stage_decisions(stage) if stage in ws.decision_stages() else None
    return ws.current_run(stage), signals, decisions


def assert_same_outputs(local: Path, ray: Path, stage: str) -> None:
    (run_a, signals_a, decisions_a), (run_b, signals_b, decisions_b) = (
        outputs(local, stage), outputs(ray, stage))
    assert run_a == run_b is not None
    assert signals_a is not None or decisions_a is not None
    for a, b in ((signals_a, signals_b), (decisions_a, decisions_b)):
        assert (a is None) == (b is None)
        if a is not None:
            assert_same_table(a, b)


def assert_same_table(a: pa.Table, b: pa.Table) -> None:
    """Equal schemas and values, NaN equal to NaN (Arrow's ``equals`` says it is not)."""
    assert a.schema == b.schema and a.num_rows == b.num_rows
    for name in a.column_names:
        np.testing.assert_equal(a.column(name).to_pylist(), b.column(name).to_pylist(),
                                err_msg=name)


def test_global_and_decide_stages_match_the_local_engine_on_a_tiled_corpus(ray_cluster,
                                                                           tmp_path):
    """3,000 samples in 6 parts: map (score), global (cluster: fit + assignment per part;
    SemDeDup: scoring per batch of clusters; exact dedup) and decide stages."""
    tiled_workspace(tmp_path / "local", 3_000, part_size=500, dim=32, clusters=30)
    shutil.copytree(tmp_path / "local", tmp_path / "ray")
    steps = [("score", {}), ("cluster", {"k": 6}), ("dedup-exact", {}),
             ("dedup-semantic", {"eps": 0.1}), ("filter-clip-score", {"keep_fraction": 0.5})]
    summaries = {}
    for engine in ("local", "ray"):
        for name, options in steps:
            function = getattr(pairsift, name.replace("-", "_"))
            summary = function(tmp_path / engine, engine=engine, progress=False, **options)
            assert not summary.cached
            summaries[engine, name] = summary
    for name, _ in steps:
        assert_same_outputs(tmp_path / "local", tmp_path / "ray", name)
        local, ray = summaries["local", name], summaries["ray", name]
        assert (local.kept, local.dropped, local.samples) == (ray.kept, ray.dropped, ray.samples)
    # counted from what the workers wrote, not from state only the driver would have seen
    np.testing.assert_array_equal(summaries["local", "cluster"].sizes,
                                  summaries["ray", "cluster"].sizes)
    assert summaries["ray", "cluster"].sizes.sum() == 3_000
    assert Workspace.open(tmp_path / "ray").stage_decisions("dedup-semantic").column(
        "verdict").to_pylist().count("drop") > 0  # the comparison covers real decisions


@pytest.fixture
def one_torch_thread():
    """Ray gives each actor one CPU, so torch runs one thread there. Float sums depend on how
    the work is split between threads, so the local reference runs with one thread too."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_embed_hashes_and_filters_match_the_local_engine_on_the_demo_corpus(
        ray_cluster, demo_corpus, one_torch_thread, tmp_path):
    """Embed (the model loaded once per actor), hashes (per-sample image work), then score,
    the clip-score filter, cluster and SemDeDup on what each engine embedded."""
    for engine in ("local", "ray"):
        pairsift.ingest(demo_corpus / "images", tmp_path / engine, name="demo", chunk_size=16,
                        captions=demo_corpus / "captions.csv", progress=False)
        summary = pairsift.embed(tmp_path / engine, engine=engine, progress=False)
        assert summary.parts_done == len(Workspace.open(tmp_path / engine).part_ids()) > 1
    local, ray = Workspace.open(tmp_path / "local"), Workspace.open(tmp_path / "ray")
    assert local.models() == ray.models()
    slug = next(iter(local.models()))
    for part in local.part_ids():
        for space in ("image", "text", "visual"):
            np.testing.assert_array_equal(local.embeddings(slug, space, part),
                                          ray.embeddings(slug, space, part))
    assert_same_table(local.errors("embed"), ray.errors("embed"))
    steps = [("hashes", {}), ("score", {}), ("filter-clip-score", {"keep_fraction": 0.7}),
             ("cluster", {"k": 3}), ("dedup-semantic", {"eps": 0.05})]
    for engine in ("local", "ray"):
        for name, options in steps:
            getattr(pairsift, name.replace("-", "_"))(tmp_path / engine, engine=engine,
                                                      progress=False, **options)
    for name, _ in steps:
        assert_same_outputs(tmp_path / "local", tmp_path / "ray", name)


def test_parrot_spot_on_ray_matches_the_local_engine(ray_cluster, tmp_path):
    """The OCR models load once per actor; words, boxes and CoTR are the local engine's."""
    config = SynthConfig(originals=2, exact_duplicates=0, near_duplicates=0, mismatched=0,
                         rendered_text=6, corrupt=0, missing_captions=0, missing_images=0)
    corpus = make_corpus(tmp_path / "corpus", config, layout="folder")
    for engine in ("local", "ray"):
        pairsift.ingest(corpus.source, tmp_path / engine, captions=corpus.captions,
                        name="synth", chunk_size=3, progress=False)
        pairsift.parrot_spot(tmp_path / engine, engine=engine, progress=False)
    assert_same_outputs(tmp_path / "local", tmp_path / "ray", "parrot-spot")
    texts = Workspace.open(tmp_path / "ray").signals("parrot-spot").column("ocr_text")
    assert sum(bool(words) for words in texts.to_pylist()) >= 3  # text was read, not skipped


# -- a run that stops midway -------------------------------------------------------------------
class FailingScore(Score):
    """The score stage, failing on one part while ``marker`` exists: a run that dies midway.
    Same name and options as ``score``, so the same run id: a later ``score`` resumes it."""

    marker: Path
    fail_on: int
    exit_worker = False  # kill the worker process (a lost node) instead of raising

    def assemble(self, part, results) -> PartOutput:
        if part.part == self.fail_on and self.marker.exists():
            if self.exit_worker:
                self.marker.unlink()
                import os

                os._exit(1)
            raise RuntimeError(f"stopped at part {part.part}")
        return super().assemble(part, results)


def failing_score(marker: Path, fail_on: int, exit_worker: bool = False) -> type[Score]:
    marker.touch()
    return type("FailingScoreAt", (FailingScore,), {"marker": marker, "fail_on": fail_on,
                                                    "exit_worker": exit_worker})


def test_a_ray_run_stopped_midway_resumes_to_the_same_result(ray_cluster, tmp_path):
    tiled_workspace(tmp_path / "local", 2_000, part_size=250, dim=16, clusters=10)
    shutil.copytree(tmp_path / "local", tmp_path / "ray")
    pairsift.score(tmp_path / "local", progress=False)
    parts = len(Workspace.open(tmp_path / "ray").part_ids())
    stage = failing_score(tmp_path / "fail", fail_on=parts - 1)()
    with pytest.raises(RuntimeError, match="stopped at part"):
        run_stage(stage, tmp_path / "ray", engine="ray", progress=False)
    ws = Workspace.open(tmp_path / "ray")
    assert ws.current_run("score") is None  # the run did not finish
    (tmp_path / "fail").unlink()
    summary = pairsift.score(tmp_path / "ray", engine="ray", progress=False)
    assert summary.parts_skipped >= 1 and summary.parts_skipped + summary.parts_done == parts
    assert_same_outputs(tmp_path / "local", tmp_path / "ray", "score")


def test_a_lost_worker_is_retried_by_ray(ray_cluster, tmp_path):
    """The worker process running one part dies; Ray runs the task again elsewhere."""
    tiled_workspace(tmp_path / "local", 1_000, part_size=250, dim=16, clusters=10)
    shutil.copytree(tmp_path / "local", tmp_path / "ray")
    pairsift.score(tmp_path / "local", progress=False)
    stage = failing_score(tmp_path / "die", fail_on=1, exit_worker=True)()
    summary = run_stage(stage, tmp_path / "ray", engine="ray", progress=False)
    assert not (tmp_path / "die").exists()  # a worker did die on part 1
    assert summary.parts_done == 4
    assert_same_outputs(tmp_path / "local", tmp_path / "ray", "score")


def test_a_recipe_runs_on_ray_as_it_runs_locally(ray_cluster, tmp_path):
    tiled_workspace(tmp_path / "local", 1_000, part_size=250, dim=16, clusters=10)
    shutil.copytree(tmp_path / "local", tmp_path / "ray")
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text("stages:\n  - score: {}\n  - filter-clip-score: {keep_fraction: 0.5}\n")
    for engine in ("local", "ray"):
        result = pairsift.run(recipe, tmp_path / engine, engine=engine, progress=False)
        assert [s.stage for s in result.summaries] == ["score", "filter-clip-score"]
    for name in ("score", "filter-clip-score"):
        assert_same_outputs(tmp_path / "local", tmp_path / "ray", name)
    with pytest.raises(ConfigError, match="options of --engine ray"):
        pairsift.run(recipe, tmp_path / "local", gpus_per_worker=1, progress=False)


# -- options -------------------------------------------------------------------------------------
def test_engine_options_are_checked(tmp_path):
    tiled_workspace(tmp_path / "ws", 100, part_size=50, dim=8, clusters=2)
    with pytest.raises(ConfigError, match="options of --engine ray"):
        pairsift.score(tmp_path / "ws", address="auto", progress=False)
    with pytest.raises(ConfigError, match="'engine' option"):
        pairsift.score(tmp_path / "ws", engine="spark", progress=False)
    assert Workspace.open(tmp_path / "ws").current_run("score") is None


def test_without_ray_installed_the_error_says_what_to_install(monkeypatch, tmp_path):
    import importlib.util

    tiled_workspace(tmp_path / "ws", 100, part_size=50, dim=8, clusters=2)
    find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "ray" else find_spec(name, *a))
    with pytest.raises(ConfigError, match=r"pairsift\[ray\]"):
        pairsift.score(tmp_path / "ws", engine="ray", progress=False)


def test_every_stage_command_and_run_take_the_engine_options():
    from typer.testing import CliRunner

    from pairsift.cli import app

    for command in (["score"], ["dedup", "semantic"], ["embed"], ["run"]):
        result = CliRunner().invoke(app, [*command, "--help"], env={"COLUMNS": "200"})
        assert result.exit_code == 0
        assert all(flag in result.output for flag in ("--engine", "--address",
                                                      "--gpus-per-worker")), command


def test_gpus_per_worker_needs_gpus_in_the_cluster(ray_cluster, tmp_path):
    tiled_workspace(tmp_path / "ws", 100, part_size=50, dim=8, clusters=2)
    assert executor("ray", gpus_per_worker=0.5).gpus_per_worker == 0.5
    with pytest.raises(ConfigError, match="GPUs"):
        pairsift.cluster(tmp_path / "ws", engine="ray", gpus_per_worker=1, k=2,
                         progress=False)

