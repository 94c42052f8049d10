"""Report time and size on a 100,000-sample workspace with every stage's data.

    python benchmarks/bench_report.py --n 100000

How the workspace is built (cheaply, once, in ``_work/ws-report-<n>``):

1. the 2,000-sample synthetic WebDataset corpus (``_common.corpus``) is ingested into
   ``_work/ws-report-src``: real tar shards, real images, real ingest errors;
2. its part rows are tiled into parts of 10,000 rows with fresh uids and keys, written with
   ``Workspace.write_part``, so every row still points at real image bytes (thumbnails
   decode); its ingest errors are tiled the same way (same error rate, distinct uids);
3. signals are written per part with ``write_table(ws.signal_path(...))`` in a finished run:
   ``score`` (normal), ``cluster`` (1,000 Zipf-sized clusters + a ``subgroup`` column),
   ``dedup-semantic`` ``max_sim`` (beta), ``parrot-spot`` ``cotr`` (mostly 0);
4. decisions per part with ``ws.write_decisions``: ``filter-clip-score`` (keep the top 70 %),
   ``dedup-semantic`` (ε = 0.05, evidence ``of`` another uid), ``dedup-exact`` (1 %, ``of``)
   and ``filter-parrot`` (CoTR > 0.3, evidence ``words``).

Only ``report(...)`` is timed; peak RSS is measured around it.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from _common import WORK, corpus, machine, peak_rss_mib

from pairsift import Workspace, ingest
from pairsift.pipeline.report import report
from pairsift.workspace import DECISION_SCHEMA, config_hash, write_table

PART_ROWS = 10_000


def source_workspace() -> Workspace:
    root = WORK / "ws-report-src"
    if not (root / "pairsift.json").exists():
        ingest(corpus(2000), root, progress=False)
    return Workspace.open(root)


def tiled_parts(src: Workspace, ws: Workspace, n: int) -> None:
    """Parts of ``PART_ROWS`` rows copied from the source's rows, each with a new uid and key."""
    rows = pa.concat_tables(t for _, t in src.iter_parts())
    errors = src.errors()
    error_rate = errors.num_rows / rows.num_rows
    parts = {}
    for part, start in enumerate(range(0, n, PART_ROWS)):
        count = min(PART_ROWS, n - start)
        take = rows.take(np.arange(start, start + count) % rows.num_rows)
        take = take.set_column(0, "uid", pa.array([f"{i:032x}" for i in range(start,
                                                                                start + count)]))
        take = take.set_column(1, "key", pc.binary_join_element_wise(
            take.column("key"), pa.array([str(i) for i in range(start, start + count)]), "-"))
        bad = errors.take(np.arange(int(count * error_rate)) % max(errors.num_rows, 1))
        bad = bad.set_column(3, "uid", pa.array([f"e{part:07d}{i:024x}"
                                                 for i in range(bad.num_rows)], pa.string()))
        parts[part] = ws.write_part(part, take, bad, take.column("source")[0].as_py(),
                                    f"tile-{part}")
    (name, record), = src.sources().items()
    ws.commit_parts(name, record, parts, complete=True)


def _run(ws: Workspace, stage: str, config: dict) -> str:
    run = config_hash(config)
    ws.begin_run(stage, run, {"kind": "bench", "config": config, "options": config,
                              "inputs": {}})
    return run


def write_signal(ws: Workspace, stage: str, config: dict, columns: dict[str, np.ndarray]) -> None:
    run = _run(ws, stage, config)
    start = 0
    for part, table in ws.iter_parts(["uid"]):
        stop = start + table.num_rows
        write_table(ws.signal_path(stage, run, part),
                    pa.table({"uid": table.column("uid"),
                              **{k: v[start:stop] for k, v in columns.items()}}))
        start = stop
    ws.finish_run(stage, run, {"parts": len(ws.part_ids())})


def write_decisions(ws: Workspace, stage: str, config: dict, uids: pa.Array, drop: np.ndarray,
                    reason: str, evidence: list[dict], summary: dict) -> None:
    """Decisions for every uid, per part; ``evidence`` lists the dropped samples' evidence in
    order."""
    run = _run(ws, stage, config)
    texts = np.full(len(uids), "{}", dtype=object)
    texts[drop] = [json.dumps(e) for e in evidence]
    start = 0
    for part in ws.part_ids():
        rows = slice(start, start + ws.part_rows(part))
        ws.write_decisions(stage, run, part, pa.table({
            "uid": uids[rows], "stage": pa.array([stage] * (rows.stop - rows.start)),
            "verdict": pa.array(np.where(drop[rows], "drop", "keep")),
            "reason": pa.array(np.where(drop[rows], reason, "")),
            "evidence": pa.array(texts[rows], pa.string()),
            "config_hash": pa.array([run] * (rows.stop - rows.start))}, schema=DECISION_SCHEMA))
        start = rows.stop
    ws.finish_run(stage, run, summary)


def curate(ws: Workspace) -> None:
    uids = ws.uids()
    n = len(uids)
    rng = np.random.default_rng(0)
    clip = rng.normal(0.3, 0.05, n).astype(np.float32)
    write_signal(ws, "score", {"model": "synthetic"}, {"clip_score": clip})
    cut = float(np.quantile(clip, 0.3))
    low = clip < cut
    write_decisions(ws, "filter-clip-score", {"threshold": None, "keep_fraction": 0.7}, uids, low,
                    "clip_score_below", [{"clip_score": float(s), "threshold": cut}
                                         for s in clip[low]], {"threshold": cut})
    clusters = np.minimum(rng.zipf(1.5, n), 1000) - 1
    groups = rng.choice(np.array(["a", "b", "c", "d"]), n, p=[0.5, 0.3, 0.15, 0.05])
    write_signal(ws, "cluster", {"k": 1000}, {"cluster": clusters.astype(np.int32),
                                               "subgroup": groups})
    max_sim = rng.beta(8, 2, n).astype(np.float32)
    write_signal(ws, "dedup-semantic", {"eps": 0.05}, {"max_sim": max_sim})
    dup = max_sim > 0.95
    other = uids.take(pa.array(rng.integers(0, n, int(dup.sum())))).to_pylist()
    write_decisions(ws, "dedup-semantic", {"eps": 0.05}, uids, dup, "semantic_duplicate_of",
                    [{"of": o, "max_sim": float(s)} for o, s in zip(other, max_sim[dup],
                                                                   strict=True)],
                    {"dropped": int(dup.sum())})
    exact = rng.random(n) < 0.01
    other = uids.take(pa.array(rng.integers(0, n, int(exact.sum())))).to_pylist()
    write_decisions(ws, "dedup-exact", {}, uids, exact, "exact_duplicate_of",
                    [{"of": o, "match": "bytes"} for o in other], {"dropped": int(exact.sum())})
    cotr = np.where(rng.random(n) < 0.1, rng.random(n), 0.0).astype(np.float32)
    write_signal(ws, "parrot-spot", {"threshold": 0.3}, {"cotr": cotr})
    parrot = cotr > 0.3
    captions = pa.concat_arrays([t.column("caption").combine_chunks()
                                 for _, t in ws.iter_parts(["caption"])])
    words = [(c or "").split()[:1] for c in captions.filter(pa.array(parrot)).to_pylist()]
    write_decisions(ws, "filter-parrot", {"threshold": 0.3}, uids, parrot, "parrot_caption",
                    [{"cotr": float(c), "words": w} for c, w in zip(cotr[parrot], words,
                                                                   strict=True)],
                    {"dropped": int(parrot.sum())})


def workspace(n: int) -> Workspace:
    root = WORK / f"ws-report-{n}"
    if (root / "decisions" / "filter-parrot").is_dir():
        return Workspace.open(root)
    if root.exists():
        raise SystemExit(f"{root} is a half-built workspace: remove it and run again")
    ws = Workspace.open(root, create=True)
    tiled_parts(source_workspace(), ws, n)
    curate(ws)
    return ws


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--n", type=int, default=100_000)
    args = parser.parse_args()
    ws = workspace(args.n)
    rss_before = peak_rss_mib()
    start = time.perf_counter()
    path = report(ws.root, progress=False)
    seconds = time.perf_counter() - start
    size = path.stat().st_size / 2**20
    print(f"| samples | seconds | HTML MiB | peak RSS MiB (before) | machine |\n"
          f"|---|---|---|---|---|\n| {ws.num_samples():,} | {seconds:.1f} | {size:.2f} | "
          f"{peak_rss_mib():.0f} ({rss_before:.0f}) | {machine()} |")


if __name__ == "__main__":
    main()
