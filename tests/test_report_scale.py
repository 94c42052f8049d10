"""The report's memory grows by bytes per sample (issue 10, "Columnar everywhere").

Two tiled workspaces (generated rows and embeddings, no images) of 40,000 and 240,000
samples go through score, filter-clip-score, dedup-exact, cluster and dedup-semantic for real;
their reports are rendered in a fresh process that measures the peak of what Python and numpy
allocate (tracemalloc) and of what Arrow allocates (its memory pool). The difference between
the two sizes, per added sample, is what the report costs a sample; fixed costs (plots,
imports, one part at a time) cancel out. The chunked and float32 computations that keep it
small give exactly what numpy gives on the whole float64 array.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest

import pairsift
from pairsift.reporting import sections
from pairsift.synth.tiled import tiled_workspace

PART = 20_000
SMALL, LARGE = 40_000, 240_000
BYTES_PER_SAMPLE = 60

# Renders the first workspace once to warm up (lazy imports, font cache), then each one
# measured: the Python + numpy peak above what was allocated before, and Arrow's peak so far.
# A low gc threshold collects matplotlib's reference cycles promptly: left to pile up, they are
# megabytes of fixed cost that would hide a per-sample cost.
MEASURE = """
import gc, json, sys, tracemalloc
import pyarrow as pa
from pairsift import Workspace
from pairsift.reporting import render_report
import pairsift.stages.semdedup  # imported lazily by the report: torch is no per-sample cost

render_report(Workspace.open(sys.argv[1]))
gc.set_threshold(100)
out = []
for root in sys.argv[1:]:
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    page = render_report(Workspace.open(root))
    traced = tracemalloc.get_traced_memory()[1] - before
    tracemalloc.stop()
    out.append({"traced": traced, "arrow": pa.default_memory_pool().max_memory(), "page": page})
print(json.dumps(out))
"""


def curated(root: Path, n: int) -> Path:
    tiled_workspace(root, n, part_size=PART, dim=16)
    pairsift.score(root, progress=False)
    pairsift.filter_clip_score(root, keep_fraction=0.7, progress=False)
    pairsift.dedup_exact(root, progress=False)
    pairsift.cluster(root, k=200, niter=5, progress=False)
    pairsift.dedup_semantic(root, progress=False)
    return root


@dataclass(frozen=True)
class Measured:
    per_sample: dict[str, float]  # bytes a sample added, traced (Python, numpy) and Arrow
    page: str = field(repr=False)  # the large workspace's report


@pytest.fixture(scope="module")
def measured(tmp_path_factory) -> Measured:
    base = tmp_path_factory.mktemp("scale")
    roots = [curated(base / "small", SMALL), curated(base / "large", LARGE)]
    done = subprocess.run([sys.executable, "-c", MEASURE, *map(str, roots)],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    small, large = json.loads(done.stdout)
    return Measured({kind: (large[kind] - small[kind]) / (LARGE - SMALL)
                     for kind in ("traced", "arrow")}, large["page"])


def test_report_memory_grows_by_bytes_per_sample(measured):
    assert sum(measured.per_sample.values()) < BYTES_PER_SAMPLE, measured.per_sample


def test_large_report_has_every_section_and_full_galleries(measured):
    page = measured.page
    assert re.findall(r'<section id="([^"]+)"', page) == [
        "funnel", "dist-clip_score", "dist-max_sim", "dist-cluster",
        "gallery-filter-clip-score", "gallery-dedup-exact", "gallery-dedup-semantic",
        "overlap", "run"]
    assert f"<td>readable</td><td class=\"num\">{LARGE:,}</td>" in page
    for stage in ("filter-clip-score", "dedup-exact", "dedup-semantic"):
        section = page.split(f'id="gallery-{stage}"')[1].split("</section>")[0]
        assert section.count("<figure") >= 12, stage
    duplicates = page.split('id="gallery-dedup-exact"')[1].split("</section>")[0]
    assert duplicates.count('class="card pair"') == 12  # each beside the sample it copies


# -- what the columnar reads compute is what whole-array numpy computes ----------------------
def test_borderline_search_by_chunks_matches_one_stable_sort(monkeypatch):
    rng = np.random.default_rng(3)
    values = rng.choice([0.1, 0.2, 0.25, 0.3, np.nan, np.inf], 500).astype(np.float32)
    values[::7] = rng.random(len(values[::7]))
    monkeypatch.setattr(sections, "CHUNK", 16)  # many chunks, ties across them
    for drops in ("below", "above"):
        got = sections._nearest(values, 0.25, drops, 9)
        for side, found in zip(sections._sides(values.astype(np.float64), 0.25, drops), got,
                               strict=True):
            candidates = np.flatnonzero(side & np.isfinite(values))
            distance = np.abs(values[candidates].astype(np.float64) - 0.25)
            assert found.tolist() == candidates[np.argsort(distance, kind="stable")[:9]].tolist()


@pytest.mark.parametrize("n", [1, 2, 5, 1000, 1001])
def test_min_median_max_are_numpys_float64_percentiles(n):
    values = (np.random.default_rng(n).standard_normal(n) * 1e3).astype(np.float32)
    expected = np.percentile(values.astype(np.float64), [0, 50, 100]).tolist()
    assert list(sections._min_median_max(values.copy())) == expected
