"""The HTML report (issue 7): sections appear exactly when their stage's data is present, the
numbers are right, the page is self-contained, and headless Chromium renders it cleanly.

Stages other than the CLIP-score filter are written here from the synthetic corpus's ground
truth through the Workspace API (signals per part, decisions per stage), so the report is
tested on every section without running the dedup or parrot algorithms.
"""

from __future__ import annotations

import re
import shutil
import zlib
from pathlib import Path

import browser  # tests/browser.py: pytest puts tests/ on sys.path (rootdir conftest)
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from workspaces import fake_run  # tests/workspaces.py

from pairsift import Workspace, filter_clip_score, ingest, score
from pairsift.pipeline.report import report
from pairsift.reporting.data import ReportData
from pairsift.reporting.sections import SIGNALS, funnel_steps, pairwise_drops
from pairsift.reporting.thumbnails import Thumbnails

REPO = Path(__file__).resolve().parents[1]


# -- building workspaces ---------------------------------------------------------------------
def write_signal(ws: Workspace, stage: str, config: dict, columns: dict[str, dict]) -> None:
    """A signal run: ``columns`` maps a column to {uid: value}."""
    fake_run(ws, stage, config, summary={"parts": len(ws.part_ids())}, signals=lambda p, rows: {
        name: [values[u] for u in rows.column("uid").to_pylist()]
        for name, values in columns.items()})


def write_decisions(ws: Workspace, stage: str, config: dict, drops: dict[str, dict],
                    reason: str, summary: dict | None = None) -> None:
    """Decisions for every sample: ``drops`` maps a dropped uid to its evidence."""
    fake_run(ws, stage, config, drops=lambda p, rows: drops, reason=reason,
             summary=summary or {"dropped": len(drops)})


def add_curation(root: Path, corpus: Path) -> None:
    """CLIP score + filter, clusters, SemDeDup, exact dedup and parrot captions, written as the
    pipeline modules write them (stage names, columns, evidence), from the ground truth."""
    ws = Workspace.open(root)
    truth = {r["key"]: r for r in pq.read_table(corpus / "truth.parquet").to_pylist()}
    keys = {u: k for _, t in ws.iter_parts(["uid", "key"])
            for u, k in zip(*(t.column(c).to_pylist() for c in ("uid", "key")), strict=True)}
    uid_of = {k: u for u, k in keys.items()}
    rng = np.random.default_rng(7)
    rows = {u: truth[k] for u, k in keys.items()}
    clip = {u: float(rng.uniform(0.05, 0.22) if r["mismatched"] else rng.uniform(0.2, 0.6))
            for u, r in rows.items()}
    write_signal(ws, "score", {"model": "synthetic"}, {"clip_score": clip})
    write_decisions(ws, "filter-clip-score", {"threshold": 0.25, "keep_fraction": None},
                    {u: {"clip_score": s, "threshold": 0.25} for u, s in clip.items() if s < 0.25},
                    "clip_score_below", {"threshold": 0.25})
    write_signal(ws, "cluster", {"k": 12}, {
        "cluster": {u: zlib.crc32(r["photo"].encode()) % 12 for u, r in rows.items()},
        "subgroup": {u: "with text" if r["kind"] == "rendered_text" else "plain photo"
                     for u, r in rows.items()}})
    group = {u: uid_of.get(r["group"].rsplit(".", 1)[0]) if r["group"] else None
             for u, r in rows.items()}
    max_sim = {u: float(rng.uniform(0.93, 1.0) if group[u] not in (None, u)
                        else rng.uniform(0.3, 0.9)) for u in rows}
    semdedup = {u: {"of": group[u], "similarity": s, "eps": 0.08} for u, s in max_sim.items()
                if s > 0.92}
    write_signal(ws, "dedup-semantic", {"clusters": "synthetic"}, {"max_sim": max_sim})
    write_decisions(ws, "dedup-semantic", {"clusters": "synthetic"}, semdedup,  # ε in the
                    "semantic_duplicate_of", {"eps": 0.08, "dropped": len(semdedup)})  # summary
    write_decisions(ws, "dedup-exact", {"keep": "lowest uid"},
                    {u: {"of": group[u], "match": "bytes"} for u, r in rows.items()
                     if r["kind"] == "exact_duplicate"}, "exact_duplicate_of")
    cotr = {u: len(r["parrot_words"]) / max(len(r["caption"].split()), 1) if r["caption"] else 0.0
            for u, r in rows.items()}
    area = {u: 0.05 * len(r["drawn_words"]) for u, r in rows.items()}
    write_signal(ws, "parrot-spot", {"spotter": "truth"}, {"cotr": cotr, "text_area": area})
    write_decisions(ws, "filter-parrot", {"threshold": 0.2},
                    {u: {"words": rows[u]["parrot_words"], "cotr": c, "threshold": 0.2}
                     for u, c in cotr.items() if c > 0.2}, "parrot_caption")


@pytest.fixture(scope="module")
def ingested(tmp_path_factory, demo_corpus) -> Path:
    root = tmp_path_factory.mktemp("report") / "ws"
    ingest(demo_corpus / "images", root, captions=demo_corpus / "captions.csv", name="demo",
           chunk_size=16, progress=False)
    return root


@pytest.fixture(scope="module")
def curated(tmp_path_factory, ingested, demo_corpus) -> Path:
    root = tmp_path_factory.mktemp("curated") / "ws"
    shutil.copytree(ingested, root)
    add_curation(root, demo_corpus)
    return root


def ingest_unreadable(root: Path, folder: Path) -> None:
    """Add a source whose only unit has no readable sample: an empty part."""
    folder.mkdir()
    (folder / "broken.jpg").write_bytes(b"\xff\xd8 not a jpeg")
    (folder / "empty.png").write_bytes(b"")
    ingest(folder, root, name="unreadable", progress=False)


@pytest.fixture(scope="module")
def curated_with_empty_part(tmp_path_factory, ingested, demo_corpus) -> Path:
    """The curated workspace with an empty part in the middle: its signal columns are of
    Arrow's null type, as a stage writes them from an empty list."""
    root = tmp_path_factory.mktemp("curated-empty") / "ws"
    shutil.copytree(ingested, root)
    ingest_unreadable(root, root.parent / "unreadable")
    ingest(demo_corpus / "images", root, captions=demo_corpus / "captions.csv", name="again",
           chunk_size=64, progress=False)
    add_curation(root, demo_corpus)
    return root


def section_ids(page: str) -> list[str]:
    return re.findall(r'<section id="([^"]+)"', page)


# -- sections present exactly when their data is ------------------------------------------------
def test_bare_workspace_has_only_funnel_and_run_facts(ingested, tmp_path):
    page = report(ingested, tmp_path / "r.html", progress=False).read_text()
    assert section_ids(page) == ["funnel", "run"]
    assert "Errors by reason" in page and "missing_image" in page


def test_every_section_of_every_stage_that_ran(curated):
    page = report(curated, progress=False).read_text()
    assert section_ids(page) == [
        "funnel", "dist-clip_score", "dist-max_sim", "dist-cotr", "dist-text_area",
        "dist-cluster", "gallery-filter-clip-score", "gallery-dedup-semantic",
        "gallery-dedup-exact",
        "gallery-filter-parrot", "fairness", "overlap", "run"]


def test_signal_without_decisions_plots_without_threshold_or_gallery(ingested, tmp_path):
    root = tmp_path / "ws"
    shutil.copytree(ingested, root)
    ws = Workspace.open(root)
    write_signal(ws, "score", {"model": "m"}, {"clip_score": {u: 0.3 for u in
                                                                  ws.uids().to_pylist()}})
    fake_run(ws, "embed", {"model": "m"})  # a current run that wrote no signal files
    page = report(root, progress=False).read_text()
    assert section_ids(page) == ["funnel", "dist-clip_score", "run"]
    assert "Borderline" not in page


def test_unfinished_signal_run_is_left_out(curated, tmp_path):
    root = tmp_path / "ws"
    shutil.copytree(curated, root)
    ws = Workspace.open(root)
    ws.signal_path("parrot-spot", ws.current_run("parrot-spot"), ws.part_ids()[-1]).unlink()
    assert "dist-cotr" not in section_ids(report(root, progress=False).read_text())


def test_empty_part_changes_no_section(curated_with_empty_part, curated):
    ws = Workspace.open(curated_with_empty_part)
    empty = [p for p in ws.part_ids() if ws.part_rows(p) == 0]
    assert empty and empty[0] < ws.part_ids()[-1]
    run = ws.current_run("score")
    assert pq.read_schema(ws.signal_path("score", run, empty[0])).field(
        "clip_score").type == pa.null()
    page = report(curated_with_empty_part, progress=False).read_text()
    assert section_ids(page) == section_ids(report(curated, progress=False).read_text())
    data = ReportData(ws)
    assert len(data.signal("score", "clip_score")) == data.n


def test_workspace_with_only_empty_parts(tmp_path):
    root = tmp_path / "ws"
    ingest_unreadable(root, tmp_path / "unreadable")
    ws = Workspace.open(root)
    write_signal(ws, "clip_score", {"model": "m"}, {"clip_score": {}})
    write_decisions(ws, "clip_score_filter", {"threshold": 0.25}, {}, "clip_score_below")
    page = report(root, progress=False).read_text()
    assert section_ids(page)[0] == "funnel" and "unidentified" in page


# -- numbers -------------------------------------------------------------------------------------
def _dropped(root: Path, stage: str) -> set[str]:
    table = Workspace.open(root).stage_decisions(stage).to_pylist()
    return {r["uid"] for r in table if r["verdict"] == "drop"}


def test_funnel_is_cumulative_in_run_order(curated):
    data = ReportData(Workspace.open(curated))
    order = ["filter-clip-score", "dedup-semantic", "dedup-exact", "filter-parrot"]
    assert data.decision_stages == order
    steps = funnel_steps(data)
    errors = len(data.ws.errors())
    assert [s[:2] for s in steps[:2]] == [("samples in", data.n + errors), ("readable", data.n)]
    gone: set[str] = set()
    for (label, left, _), stage in zip(steps[2:-1], order, strict=True):
        gone |= _dropped(curated, stage)
        assert (label, left) == (f"after {stage}", data.n - len(gone))
    assert steps[-1][:2] == ("exported", data.n - len(gone))


def test_overlap_counts_pairs_of_stages(curated):
    stages, both, alone = pairwise_drops(ReportData(Workspace.open(curated)))
    drops = {s: _dropped(curated, s) for s in stages}
    for i, a in enumerate(stages):
        others = set().union(*(drops[s] for s in stages if s != a))
        assert alone[i] == len(drops[a] - others)
        for j, b in enumerate(stages):
            assert both[i, j] == len(drops[a] & drops[b])
    assert both[stages.index("dedup-semantic"), stages.index("dedup-exact")] > 0


def test_thresholds_come_from_the_runs(curated):
    data = ReportData(Workspace.open(curated))
    found = {s.column: s.threshold(data) for s in SIGNALS}
    assert len(found) == len(SIGNALS)  # the column names the section: one spec each
    assert found == {"clip_score": 0.25, "max_sim": pytest.approx(0.92), "cotr": 0.2,
                     "text_area": None}  # no text_dominated_filter run


# -- galleries and tables ------------------------------------------------------------------------
def test_galleries_show_evidence_pairs_marks_and_borderline(curated, tmp_path):
    page = report(curated, tmp_path / "r.html", max_thumbnails=3, borderline=2,
                  progress=False).read_text()
    exact = page.split('id="gallery-dedup-exact"')[1].split("</section>")[0]
    assert 'class="card pair"' in exact and "duplicate of" in exact
    parrot = page.split('id="gallery-filter-parrot"')[1].split("</section>")[0]
    assert re.search(r"<mark>(winter|journey|market|love)</mark>", parrot, re.IGNORECASE)
    clip = page.split('id="gallery-filter-clip-score"')[1].split("</section>")[0]
    assert "Borderline around clip_score = 0.25" in clip
    below, above = clip.split("just below")[1].split("at or just above")
    assert below.count("<figure") == 2 and below.count("badge drop") == 2
    assert above.count("<figure") == 2 and above.count("badge keep") == 2
    reasons = [block for section in page.split('id="gallery-')[1:]
               for block in section.split("</section>")[0].split("<h3>")[1:]
               if not block.startswith("Borderline")]
    assert len(reasons) == 4 and all(0 < b.count("<figure") <= 3 for b in reasons)


def test_fairness_flags_a_subgroup_a_stage_removes(curated, tmp_path):
    root = tmp_path / "ws"
    shutil.copytree(curated, root)
    ws = Workspace.open(root)
    groups = ReportData(ws).subgroups()
    with_text = {u for u, g in zip(ws.uids().to_pylist(), groups, strict=True) if g == "with text"}
    write_decisions(ws, "no_text", {}, {u: {} for u in with_text}, "text_in_image")
    fairness = report(root, progress=False).read_text().split('id="fairness"')[1]
    header, *rows = re.findall(r"<tr>(.*?)</tr>", fairness.split("</section>")[0])
    assert header.endswith("<th>no_text</th><th>all stages</th>")
    cells = {re.sub("<[^>]+>", "", r.split("</td>")[0]): r for r in rows}
    assert set(cells) == {"all samples", "plain photo", "with text"}
    assert cells["with text"].count("#fde2e1") == 2  # no_text and all stages keep 0 %
    assert "#fde2e1" not in cells["plain photo"]


def test_missing_image_gets_a_placeholder_not_an_error(tmp_path):
    with Thumbnails({}) as thumbs:
        row = {"uid": "0" * 32, "container": "file", "shard": str(tmp_path / "gone.jpg"),
               "offset": 0, "length": 0, "source": "s"}
        assert thumbs.data_uri(row) is None


def test_page_is_self_contained_and_written_atomically(curated):
    path = report(curated, progress=False)
    assert path == Workspace.open(curated).root / "report" / "index.html"
    assert [p.name for p in path.parent.iterdir()] == ["index.html"]
    page = path.read_text()
    links = re.findall(r'(?:src|href)="([^"]*)"', page)
    assert links and all(u.startswith(("data:", "#")) for u in links)
    assert "<script" not in page and "http://" not in page and "https://" not in page


# -- in a real browser ---------------------------------------------------------------------------
@pytest.mark.skipif(not browser.available(), reason=f"{browser.CHROMIUM} is missing: "
                    "apt-get install chromium (CI installs it)")
def test_demo_report_renders_in_headless_chromium(workspace_copy):
    """The demo's pipeline (ingest, embed, score, top-75% filter), its report, a screenshot."""
    score(workspace_copy)
    filter_clip_score(workspace_copy, top=0.75)
    path = report(workspace_copy, progress=False)
    out = REPO / "test-output" / "report.png"
    with browser.Browser(size=(1280, 900)) as page:
        page.goto(path)
        shown = page.evaluate("Array.from(document.querySelectorAll('section'), s => s.id)")
        broken = page.evaluate("Array.from(document.images).filter("
                               "i => !i.complete || i.naturalWidth === 0).length")
        page.screenshot(out)
    result = page.result
    assert result.errors == []
    assert [u for u in result.requests if not u.startswith("data:")] == [path.as_uri()]
    assert shown == ["funnel", "dist-clip_score", "gallery-filter-clip-score", "run"]
    assert broken == 0
    assert out.stat().st_size > 50_000
