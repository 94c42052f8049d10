"""The Stage core (issue 10): options checked before anything is written, a run becomes current
only when it finishes, one lock per stage, stale inputs recomputed, per-sample failures as
error rows, and the registry as the single source of commands, functions and recipe keys."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time

import pyarrow as pa
import pytest
from typer.testing import CliRunner

import pairsift
from pairsift import Workspace
from pairsift.cli import app
from pairsift.engine.runner import run_stage
from pairsift.errors import ConfigError, WorkspaceBusyError
from pairsift.params import Param, validate
from pairsift.stage import MapStage, PartOutput, get_stage, python_name, stage_names


# -- options -------------------------------------------------------------------------------
def test_unknown_option_names_the_closest_and_all_options():
    with pytest.raises(ConfigError, match=r"no option 'ordr' \(did you mean 'order'\?\)"):
        get_stage("dedup-semantic")(ordr="hard")


@pytest.mark.parametrize(("options", "message"), [
    ({"order": "bogus"}, r"'order' option of dedup-semantic must be one of 'hard'"),
    ({"eps": 1.5}, r"'eps' option of dedup-semantic must be a number in \(0, 1\)"),
    ({"eps": "0.1"}, r"must be a number in \(0, 1\); got '0.1'"),
    ({"block": True}, r"'block' option .* must be an integer"),
    ({"eps": 0.1, "keep_fraction": 0.5}, "eps or keep_fraction, not both"),
])
def test_bad_values_are_refused_at_construction(options, message):
    with pytest.raises(ConfigError, match=message):
        get_stage("dedup-semantic")(**options)


def test_former_option_names_still_work_and_say_what_replaced_them():
    with pytest.warns(FutureWarning, match="'top' is now called 'keep_fraction'"):
        stage = get_stage("filter-clip-score")(top=0.3)
    assert stage["keep_fraction"] == 0.3
    assert validate("x", (Param("a", list),), {"a": "p, q"}) == {"a": ["p", "q"]}


def test_registry_names_commands_functions_and_recipe_keys():
    for name in stage_names():
        assert callable(getattr(pairsift, python_name(name))), name
    help_text = CliRunner().invoke(app, ["dedup", "--help"]).output
    assert "semantic" in help_text and "fair" in help_text
    options = CliRunner().invoke(app, ["dedup", "semantic", "--help"]).output
    for flag in ("--eps", "--keep-fraction", "--order", "--tie-break", "--threads", "--quiet"):
        assert flag in options


def test_bad_option_writes_nothing_and_keeps_the_current_run(workspace_copy):
    pairsift.cluster(workspace_copy, k=2, progress=False)
    pairsift.dedup_semantic(workspace_copy, eps=0.1, progress=False)
    manifest = (workspace_copy / "pairsift.json").read_bytes()
    result = CliRunner().invoke(app, ["dedup", "semantic", "-w", str(workspace_copy),
                                      "--order", "bogus"])
    assert result.exit_code == 2 and "must be one of" in result.output
    assert (workspace_copy / "pairsift.json").read_bytes() == manifest
    ws = Workspace.open(workspace_copy)
    assert ws.run_record("dedup-semantic")["config"]["eps"] == 0.1


def test_a_failed_run_never_becomes_current(workspace_copy):
    pairsift.cluster(workspace_copy, k=2, progress=False)
    pairsift.dedup_semantic(workspace_copy, eps=0.1, progress=False)
    before = Workspace.open(workspace_copy).current_run("dedup-semantic")
    with pytest.raises(pairsift.errors.WorkspaceError, match="rank by"):
        pairsift.dedup_semantic(workspace_copy, rank_by="no_such_column", progress=False)
    ws = Workspace.open(workspace_copy)
    assert ws.current_run("dedup-semantic") == before


# -- locks and concurrent processes ---------------------------------------------------------
def test_a_second_run_of_a_stage_refuses_and_names_the_first(workspace_copy):
    ws = Workspace.open(workspace_copy)
    with ws.lock("score", "score"), pytest.raises(WorkspaceBusyError,
                                                   match=r"another `pairsift score` \(pid"):
        pairsift.score(workspace_copy, progress=False)


def _extra_source(tmp_path, demo_corpus, name: str, copies: int):
    folder = tmp_path / name
    folder.mkdir()
    originals = sorted((demo_corpus / "images").glob("*.png"))[:copies]
    lines = ["file,caption"]
    for i, path in enumerate(originals):
        shutil.copy(path, folder / f"copy{i}.png")
        lines.append(f"copy{i}.png,a copy")
    (folder / "captions.csv").write_text("\n".join(lines) + "\n")
    return folder


def test_ingest_while_embed_runs_loses_nothing(tmp_path, demo_corpus):
    ws_dir = tmp_path / "ws"
    pairsift.ingest(demo_corpus / "images", ws_dir, captions=demo_corpus / "captions.csv",
                    name="demo", chunk_size=16, progress=False)
    embed = subprocess.Popen([sys.executable, "-m", "pairsift.cli", "embed", "-w", str(ws_dir),
                              "-q"], stderr=subprocess.PIPE)
    ws = Workspace.open(ws_dir)
    deadline = time.monotonic() + 120
    while ws.run_record("embed", None) is None and time.monotonic() < deadline:
        time.sleep(0.1)  # the embed run is recorded once its lock is held
        ws.refresh()
    extra = _extra_source(tmp_path, demo_corpus, "extra", 3)
    pairsift.ingest(extra, ws_dir, captions=extra / "captions.csv", name="extra",
                    progress=False)
    assert embed.wait(timeout=600) == 0, embed.stderr.read().decode()[-2000:]
    ws.refresh()
    assert set(ws.sources()) == {"demo", "extra"}
    assert ws.num_samples() == 51 + 3
    assert ws.current_run("embed") is not None
    again = pairsift.embed(ws_dir, progress=False)  # only the new part is left to embed
    assert (again.parts_done, again.samples) == (1, 3)


# -- stale inputs ---------------------------------------------------------------------------
def test_new_samples_are_scored_after_more_data_arrives(workspace_copy, tmp_path, demo_corpus):
    pairsift.cluster(workspace_copy, target_size=20, progress=False)
    first = pairsift.dedup_semantic(workspace_copy, eps=0.05, progress=False)
    extra = _extra_source(tmp_path, demo_corpus, "copies", 8)
    pairsift.ingest(extra, workspace_copy, captions=extra / "captions.csv", name="copies",
                    progress=False)
    pairsift.embed(workspace_copy, progress=False)
    again = pairsift.dedup_semantic(workspace_copy, eps=0.05, progress=False)
    ws = Workspace.open(workspace_copy)
    assert again.run != first.run and not again.cached
    assert ws.run_record("cluster")["inputs"]["parts"] == ws.parts_fingerprint()
    assert again.dropped >= first.dropped + 8  # each byte-identical copy (or its original)
    new_part = max(ws.part_ids())
    assert ws.part_decisions(new_part, "dedup-semantic").num_rows == 8


# -- per-sample failures --------------------------------------------------------------------
class _Flaky(MapStage):
    """A stage whose model fails on one caption: the engine must isolate it."""

    name = "test-flaky"
    columns = ("caption",)
    per_sample = True
    batch = 4

    def prepare(self, sample):
        return sample.row["caption"] or ""

    def process(self, items):
        if any("hubble" in c for c in items):
            raise RuntimeError("the model choked")
        return [len(c) for c in items]

    def assemble(self, part, results):
        return PartOutput(signals=pa.table({"n": pa.array(results or [], pa.int64())}))


def test_one_failing_sample_becomes_an_error_row(workspace_copy):
    summary = run_stage(_Flaky(), workspace_copy, progress=False)
    ws = Workspace.open(workspace_copy)
    errors = ws.errors("test-flaky").to_pylist()
    captions = {r["uid"]: r["caption"] for _, t in ws.iter_parts(["uid", "caption"])
                for r in t.to_pylist()}
    failed = {e["uid"] for e in errors}
    assert failed == {u for u, c in captions.items() if c and "hubble" in c}
    assert all(e["reason"] == "stage_error" and "choked" in e["message"] for e in errors)
    assert summary.failed == len(failed) > 0
    values = ws.signals("test-flaky")
    by_uid = dict(zip(values.column("uid").to_pylist(), values.column("n").to_pylist(),
                      strict=True))
    assert all((by_uid[u] is None) == (u in failed) for u in by_uid)


def test_a_deleted_image_is_an_error_and_left_out_downstream(tmp_path, demo_corpus):
    corpus = tmp_path / "corpus"
    shutil.copytree(demo_corpus, corpus)
    ws_dir = tmp_path / "ws"
    pairsift.ingest(corpus / "images", ws_dir, captions=corpus / "captions.csv", name="demo",
                    chunk_size=16, progress=False)
    ws = Workspace.open(ws_dir)
    gone = ws.read_part(0, ["uid", "shard"]).to_pylist()[2]
    (corpus / "images" / gone["shard"].split("/")[-1]).unlink()
    embed = pairsift.embed(ws_dir, progress=False)
    assert embed.failed == 1
    (error,) = ws.errors("embed").to_pylist()
    assert (error["uid"], error["reason"]) == (gone["uid"], "missing_image")
    clusters = pairsift.cluster(ws_dir, k=2, progress=False)
    assert clusters.without_embedding == 1
    semantic = pairsift.dedup_semantic(ws_dir, progress=False)
    assert semantic.without_embedding == 1
    exact = pairsift.dedup_exact(ws_dir, progress=False)
    assert exact.kept + exact.dropped == ws.num_samples()
    assert {e["reason"] for e in ws.errors("hashes").to_pylist()} == {"missing_image"}
    for stage in ("dedup-exact", "dedup-semantic"):
        pairsift.undo(ws_dir, stage)  # the missing image is kept: an export must skip it
    for out, format in ((tmp_path / "wds", "webdataset"), (tmp_path / "t.csv", "openclip-csv")):
        exported = pairsift.export(ws_dir, out, format=format)
        assert exported.left_out["missing_image"] == 1, format
        assert exported.exported == ws.num_samples() - sum(exported.left_out.values())


# -- recipes --------------------------------------------------------------------------------
RECIPE = """\
sources:
  - path: {images}
    captions: {captions}
    name: demo
    chunk_size: 16
model: default
stages:
  - embed: {{}}
  - score: {{}}
  - filter-clip-score: {{keep_fraction: 0.75}}
  - dedup-exact: {{}}
  - cluster: {{target_size: 20}}
  - dedup-semantic: {{order: quality}}
"""


def _recipe(tmp_path, demo_corpus, text=RECIPE):
    path = tmp_path / "recipe.yaml"
    path.write_text(text.format(images=demo_corpus / "images",
                                captions=demo_corpus / "captions.csv"))
    return path


def test_recipe_equals_the_steps_and_resumes(tmp_path, demo_corpus, embedded_workspace):
    steps = tmp_path / "steps"
    shutil.copytree(embedded_workspace, steps)
    pairsift.score(steps, progress=False)
    pairsift.filter_clip_score(steps, keep_fraction=0.75, progress=False)
    pairsift.dedup_exact(steps, progress=False)
    pairsift.cluster(steps, target_size=20, progress=False)
    pairsift.dedup_semantic(steps, order="quality", progress=False)

    recipe = _recipe(tmp_path, demo_corpus)
    ran = pairsift.run(recipe, tmp_path / "recipe-ws", progress=False)
    assert [s.status for s in ran.plan] == ["runs"] * 7
    a, b = Workspace.open(steps), Workspace.open(tmp_path / "recipe-ws")
    assert a.decision_stages() == b.decision_stages()
    for stage in a.decision_stages():
        assert a.current_run(stage) == b.current_run(stage)
        assert a.stage_decisions(stage).equals(b.stage_decisions(stage)), stage
    assert b.recipes()[0]["hash"] == ran.digest

    again = pairsift.run(recipe, tmp_path / "recipe-ws", dry_run=True)
    assert [s.status for s in again.plan] == ["cached"] * 7
    page = pairsift.report(tmp_path / "recipe-ws", progress=False).read_text()
    run_facts = page.split('<section id="run"')[1]
    assert ran.digest in run_facts and "filter-clip-score: {keep_fraction: 0.75}" in run_facts


def test_recipe_typo_fails_before_any_write_naming_the_line(tmp_path, demo_corpus):
    bad = RECIPE.replace("dedup-exact: {{}}", "dedup-exact: {{threds: 2}}")
    with pytest.raises(ConfigError, match=r"recipe.yaml:11: dedup-exact has no option "
                                          r"'threds' \(did you mean 'threads'\?\)"):
        pairsift.run(_recipe(tmp_path, demo_corpus, bad), tmp_path / "ws", progress=False)
    unknown = RECIPE.replace("- score: {{}}", "- scroe: {{}}")
    with pytest.raises(ConfigError, match=r":9: unknown stage 'scroe' \(did you mean 'score'"):
        pairsift.run(_recipe(tmp_path, demo_corpus, unknown), tmp_path / "ws", progress=False)
    missing = RECIPE.replace("  - cluster: {{target_size: 20}}\n", "")
    with pytest.raises(ConfigError, match=r":12: dedup-semantic needs `cluster`"):
        pairsift.run(_recipe(tmp_path, demo_corpus, missing), tmp_path / "ws", progress=False)
    assert not (tmp_path / "ws").exists()


@pytest.mark.parametrize("entry, message", [
    ("sources:\n  - {path: a, nmae: b}", r":2: a source has no option 'nmae'.*'name'"),
    ("sources:\n  - {name: b}", r":2: a source needs `path`"),
    ("stages: [score]\nexport:\n  - {format: parquet}", r":3: an export needs `out`"),
    ("stages: [score]\nexports: []", r"a recipe has no option 'exports'.*'export'"),
])
def test_recipe_entries_with_unknown_or_missing_keys_name_the_line(tmp_path, entry, message):
    from pairsift.recipe import load_recipe

    (tmp_path / "recipe.yaml").write_text(entry + "\n")
    with pytest.raises(ConfigError, match=message):
        load_recipe(tmp_path / "recipe.yaml")


def test_dry_run_prints_the_plan_and_writes_nothing(tmp_path, demo_corpus):
    result = CliRunner().invoke(app, ["run", str(_recipe(tmp_path, demo_corpus)), "-w",
                                      str(tmp_path / "ws"), "--dry-run"])
    assert result.exit_code == 0, result.output
    assert "dedup-semantic" in result.output and "runs" in result.output
    assert not (tmp_path / "ws").exists()


# -- undo -----------------------------------------------------------------------------------
def test_undo_removes_a_stage_from_exports_and_the_report(workspace_copy):
    pairsift.score(workspace_copy, progress=False)
    pairsift.filter_clip_score(workspace_copy, keep_fraction=0.5, progress=False)
    ws = Workspace.open(workspace_copy)
    assert ws.num_dropped() > 0
    result = CliRunner().invoke(app, ["undo", "filter clip-score", "-w", str(workspace_copy)])
    assert result.exit_code == 0, result.output
    ws.refresh()
    assert ws.decision_stages() == [] and ws.num_dropped() == 0
    manifest = json.loads((workspace_copy / "pairsift.json").read_text())
    assert "filter-clip-score" not in manifest["current"]
    again = pairsift.filter_clip_score(workspace_copy, keep_fraction=0.5, progress=False)
    assert not again.cached and Workspace.open(workspace_copy).num_dropped() == again.dropped


def test_export_decides_parts_added_since_the_decisions(workspace_copy, tmp_path, demo_corpus):
    first = pairsift.dedup_exact(workspace_copy, progress=False)
    extra = _extra_source(tmp_path, demo_corpus, "copies", 5)  # byte copies of kept images
    pairsift.ingest(extra, workspace_copy, captions=extra / "captions.csv", name="copies",
                    progress=False)
    out = pairsift.export(workspace_copy, tmp_path / "uids.npy", format="datacomp-uids")
    ws = Workspace.open(workspace_copy)
    assert ws.run_record("dedup-exact")["run"] != first.run  # decided again, new part included
    assert out.exported == ws.num_samples() - ws.num_dropped() == first.kept


def test_no_dedup_stage_erases_every_copy_of_an_image(workspace_copy):
    """Issue 15 item 6: exact dedup kept copy A and dropped B, then SemDeDup (its own ranking)
    dropped A as a duplicate of B: no copy survived. Now SemDeDup only sees what exact dedup
    kept, so it never drops a sample because of a copy another stage already dropped."""
    exact = pairsift.dedup_exact(workspace_copy, progress=False)
    pairsift.cluster(workspace_copy, target_size=20, progress=False)
    semantic = pairsift.dedup_semantic(workspace_copy, order="hard", progress=False)
    ws = Workspace.open(workspace_copy)
    by_exact = {d["uid"] for d in ws.stage_decisions("dedup-exact").to_pylist()
                if d["verdict"] == "drop"}
    drops = [(d["uid"], json.loads(d["evidence"])["of"])
             for d in ws.stage_decisions("dedup-semantic").to_pylist() if d["verdict"] == "drop"]
    assert exact.dropped > 0 and semantic.dropped > 0 and semantic.excluded == exact.dropped
    assert not {uid for uid, _ in drops} & by_exact  # they took no part: nothing to drop
    assert not {of for _, of in drops} & by_exact  # and no drop points at one of them
    kept_by_exact = {d["of"] for d in (json.loads(e) for e in ws.stage_decisions(
        "dedup-exact").column("evidence").to_pylist()) if "of" in d}
    assert kept_by_exact - ({uid for uid, _ in drops})  # some kept copies survive both
