"""Peak memory and time of the collection-wide stages on generated workspaces of N samples.

    python benchmarks/bench_scale.py --n 1000000,10000000

For each N, a workspace without images is generated once (``synth.tiled``: parts of 100,000
rows, 512-d float16 image and caption embeddings around N / ``--cluster-size`` directions, 5 % exact
and 5 % near copies, hashes for every sample), then every stage runs in its own process, as
``pairsift`` would run it, and reports its wall time, its peak anonymous memory (RssAnon,
sampled every 20 ms: file pages of the memory-mapped embeddings are left out, the kernel drops
them under pressure) and that memory once its imports are done (the fixed cost: Python, numpy,
pyarrow, torch, faiss).
Bytes per sample is the slope between two sizes, (peak(N₂) − peak(N₁)) / (N₂ − N₁): the fixed
cost cancels out, and so do the per-cluster blocks, since k grows with N (clusters keep their
size).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

from _common import WORK, machine

STAGES = [  # (name, Python call run in the child)
    ("score", "pairsift.score(WS, progress=False)"),
    ("filter-clip-score", "pairsift.filter_clip_score(WS, keep_fraction=0.3, progress=False)"),
    ("dedup-exact", "pairsift.dedup_exact(WS, progress=False)"),
    ("cluster", "pairsift.cluster(WS, k=K, niter=20, progress=False)"),
    ("dedup-semantic", "pairsift.dedup_semantic(WS, eps=0.05, progress=False)"),
    ("export datacomp-uids", "pairsift.export(WS, OUT, format='datacomp-uids')"),
    ("report", "pairsift.report(WS, progress=False)"),
]

# Anonymous memory (RssAnon), sampled every 20 ms: what the stage allocates. Memory-mapped
# embedding pages also count in RSS, but the kernel drops them under pressure; they are not
# what decides whether a 100M pool fits. (Not ru_maxrss: Linux carries it over from the
# parent across fork and exec.)
CHILD = """
import json, re, sys, threading, time
import numpy, pyarrow, torch, faiss, pairsift
def anon():
    return int(re.search(r"RssAnon:\\s+(\\d+)", open("/proc/self/status").read()).group(1))
peak = [0]
def sample():
    while True:
        peak[0] = max(peak[0], anon())
        time.sleep(0.02)
threading.Thread(target=sample, daemon=True).start()
WS, OUT, K = sys.argv[1], sys.argv[2], int(sys.argv[3])
time.sleep(0.1)
fixed = peak[0]
start = time.perf_counter()
{call}
seconds = time.perf_counter() - start
time.sleep(0.05)
print(json.dumps({{"seconds": seconds, "peak_kib": max(peak[0], anon()), "fixed_kib": fixed}}))
"""


def workspace(n: int, clusters: int) -> Path:
    root = WORK / f"scale-{n}" / "ws"
    if not (root / "pairsift.json").exists():
        from pairsift.synth.tiled import tiled_workspace

        start = time.perf_counter()
        tiled_workspace(root, n, part_size=100_000, dim=512, clusters=clusters)
        print(f"generated {n:,} samples in {time.perf_counter() - start:.0f} s", flush=True)
    return root


def run_stage(ws: Path, name: str, call: str, clusters: int) -> dict:
    """Run the stage in a fresh process, after forgetting any earlier run of it (a run of the
    same options would be skipped, and task checkpoints reused)."""
    import pairsift
    from pairsift.stage import stage_names

    if name in stage_names():
        pairsift.undo(ws, name)
    out = ws.parent / "subset.npy"
    child = subprocess.run([sys.executable, "-c", CHILD.format(call=call), str(ws), str(out),
                            str(clusters)], capture_output=True, text=True, check=False)
    if child.returncode:
        raise SystemExit(f"{call} failed:\n{child.stderr[-3000:]}")
    return json.loads(child.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", default="1000000,10000000", help="sizes, comma-separated")
    parser.add_argument("--cluster-size", type=int, default=5000,
                        help="samples per cluster: k = N / this, so blocks keep their size")
    args = parser.parse_args()
    sizes = [int(n) for n in args.n.split(",")]
    results: dict[str, dict[int, dict]] = {}
    for n in sizes:
        k = max(1, n // args.cluster_size)
        ws = workspace(n, k)
        for name, call in STAGES:
            results.setdefault(name, {})[n] = r = run_stage(ws, name, call, k)
            print(f"{n:>11,}  {name:<22} {r['seconds']:8.1f} s  peak "
                  f"{r['peak_kib'] / 2**20:6.2f} GiB  fixed {r['fixed_kib'] / 2**20:5.2f} GiB",
                  flush=True)
    print(f"\n{machine()}\n")
    header = " | ".join(f"{n:,}: s, peak GiB" for n in sizes)
    print(f"| stage | {header} | bytes/sample (slope) | 100M extrapolated |")
    print("|---|" + "---|" * (len(sizes) + 2))
    for name, by_n in results.items():
        cells = " | ".join(f"{by_n[n]['seconds']:.0f} s, {by_n[n]['peak_kib'] / 2**20:.2f}"
                           for n in sizes)
        lo, hi = sizes[0], sizes[-1]
        slope = ((by_n[hi]["peak_kib"] - by_n[lo]["peak_kib"]) * 1024 / (hi - lo)
                 if hi > lo else float("nan"))
        at_100m = (by_n[hi]["peak_kib"] * 1024 + slope * (100_000_000 - hi)) / 2**30
        print(f"| {name} | {cells} | {slope:.1f} | {at_100m:.1f} GiB |")


if __name__ == "__main__":
    main()
