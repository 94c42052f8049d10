"""Parrot stage throughput (images/s) with and without the "has text" pass.

    python benchmarks/bench_parrot.py --n 200

The corpus has about 30% images with drawn words (the paper measured ~50% of LAION-2B images
with some text; 30% is a middle ground for filtered web data). Both runs spot the same
ingested workspace (different configs, so neither reuses the other's output) with models
loaded beforehand; decode is included. Prints a Markdown block for RESULTS.md, with the
parrot F1 of each run against the truth and what the pass skipped.
"""

from __future__ import annotations

import argparse
import shutil
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
from _common import WORK, machine

from pairsift import Workspace, ingest, parrot_spot
from pairsift.engine.threads import default_threads
from pairsift.models.ocr import load_detector, load_spotter
from pairsift.synth import SynthConfig, make_corpus

# The small corpus's counts with 39 rendered-text samples: 26 of 87 (30%) have drawn words.
CONFIG = dict(originals=15, exact_duplicates=4, near_duplicates=16, mismatched=6,
              rendered_text=39, corrupt=4, missing_captions=1, missing_images=2)


def build(n: int) -> Path:
    root = WORK / f"corpus-parrot-{n}"
    if not (root / "truth.parquet").exists():
        shutil.rmtree(root, ignore_errors=True)
        make_corpus(root, SynthConfig(n_samples=n, **CONFIG), layout="webdataset")
    return root


def scored(ws: Path, truth: dict[str, dict]) -> tuple[float, int]:
    """Parrot F1 against the truth, and images with drawn words that the pass skipped."""
    w = Workspace.open(ws)
    keys = {r["uid"]: r["key"] for _, t in w.iter_parts(["uid", "key"]) for r in t.to_pylist()}
    rows = [(truth[keys[r["uid"]]], r) for r in w.signals("parrot-spot").to_pylist()]
    true = np.array([t["text_role"] == "parrot" for t, _ in rows])
    pred = np.array([(r["cotr"] or 0) > 0 for _, r in rows])
    f1 = 2 * (true & pred).sum() / (2 * (true & pred).sum() + (true ^ pred).sum())
    return f1, sum(bool(t["drawn_words"]) and r["text_probe"] is False for t, r in rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--n", type=int, default=200)
    args = parser.parse_args()
    root = build(args.n)
    truth = {r["key"]: r for r in pq.read_table(root / "truth.parquet").to_pylist()}
    drawn = sum(bool(r["drawn_words"]) for r in truth.values() if not r["expected_error"])
    ws = WORK / "ws-parrot"
    shutil.rmtree(ws, ignore_errors=True)
    ingest(root, ws, progress=False)
    load_spotter("rapidocr"), load_detector()  # load once, outside the timings
    lines = [f"Machine: {machine()}; {default_threads()} threads. Corpus: "
             f"{Workspace.open(ws).num_samples()} readable images, {drawn} with drawn words.",
             "", "| has-text pass | images/s | with text | skipped by pass | drawn text "
             "skipped | parrot F1 |", "|---|---|---|---|---|---|"]
    for has_text_pass in (False, True):
        start = time.perf_counter()
        s = parrot_spot(ws, has_text_pass=has_text_pass, progress=False)
        rate = s.samples / (time.perf_counter() - start)
        f1, missed = scored(ws, truth)
        lines.append(f"| {'on' if has_text_pass else 'off'} | {rate:.2f} | {s.with_text} | "
                     f"{s.skipped_by_probe} | {missed} | {f1:.3f} |")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
