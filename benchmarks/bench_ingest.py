"""Ingest throughput on WebDataset shards (samples/s) and peak RSS.

    python benchmarks/bench_ingest.py --n 10000
"""

from __future__ import annotations

import argparse
import shutil
import time

from _common import WORK, corpus, machine, peak_rss_mib

from pairsift import ingest


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--n", type=int, default=10_000)
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    root = corpus(args.n)
    ws = WORK / "ws-ingest"
    shutil.rmtree(ws, ignore_errors=True)
    rss_before = peak_rss_mib()
    start = time.perf_counter()
    summary = ingest(root, ws, threads=args.threads, progress=False)
    seconds = time.perf_counter() - start
    print(f"| samples in | readable | errors | seconds | samples/s | peak RSS MiB "
          f"(before ingest) | machine |\n|---|---|---|---|---|---|---|\n"
          f"| {summary.total} | {summary.samples} | {sum(summary.errors.values())} | "
          f"{seconds:.1f} | {summary.total / seconds:.0f} | {peak_rss_mib():.0f} "
          f"({rss_before:.0f}) | {machine()} |")


if __name__ == "__main__":
    main()
