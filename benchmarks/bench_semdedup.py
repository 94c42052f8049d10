"""SemDeDup pairwise scoring: pairsift's blocked triangle vs the official algorithms.

Run by hand (not a test):

    python benchmarks/bench_semdedup.py --n 1000000 --d 512 --clusters 1000
    python benchmarks/bench_semdedup.py --n 50000 --clusters 100          # quick check

Data: `--clusters` random unit centres, log-normal cluster sizes (σ = 1), points =
normalise(centre + unit-scale Gaussian noise) (cos to centre ≈ 0.7), and `--dup-fraction` of
points replaced by a near-copy of another member of their cluster (cos ≈ 0.999). Stored as a
raw float16 file, clustered contiguously; the stored order inside a cluster is taken as the
ranked order (ranking is the same for every approach and is not timed).

Each approach runs in its own subprocess, so `peak RSS` is that approach's own high-water mark
(`getrusage`); clusters are read with `np.fromfile`, not mmap, so page cache is not counted.
Every pairwise approach reads a cluster, converts float16 → float32, L2-normalises and scores
it; `compute s` is the scoring alone (synchronised on CUDA), `total s` includes the reads.

- pairsift: `max_similarity`, column blocks s..e use only `X[:e] @ X[s:e].T` (≈ n²d flop,
  half the others; small clusters use blocks of ~n/8, see `effective_block`).
- nemo_blocked: NeMo Curator's loop, `X @ X[s:e].T`, `triu(P, 1-s)`, column max (2n²d flop).
- official_dense: Meta SemDeDup, `S = X Xᵀ`, zero diagonal, `triu(S, 1)`, column max.
- gemm_floor: only `X @ X.T` per cluster (2 Σ n_c² d flop): the matmul the dense method needs,
  with no masking or reduction. pairsift computes about half these flops, so it can beat it.
- kmeans: pairsift `fit_kmeans` (faiss, spherical, k = --clusters) + chunked `assign`; this
  one reads through a memmap, so its RSS includes mapped pages.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

APPROACHES = ("pairsift", "nemo_blocked", "official_dense", "gemm_floor", "kmeans")


def make_data(args: argparse.Namespace, workdir: Path) -> np.ndarray:
    """Write the embeddings (raw float16) and return cluster boundaries."""
    rng = np.random.default_rng(args.seed)
    centres = rng.normal(size=(args.clusters, args.d))
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    raw = rng.lognormal(0.0, 1.0, args.clusters)
    sizes = np.maximum(1, np.floor(raw / raw.sum() * args.n)).astype(np.int64)
    sizes[np.argsort(-raw)[: args.n - sizes.sum()]] += 1  # exact total (largest first)
    with open(workdir / "emb.f16", "wb") as f:
        for c, size in enumerate(sizes):
            x = centres[c] + rng.normal(size=(size, args.d)) / np.sqrt(args.d)
            dups = np.flatnonzero(rng.random(size) < args.dup_fraction)
            src = rng.integers(0, size, len(dups))
            x[dups] = x[src] + 0.05 * rng.normal(size=(len(dups), args.d)) / np.sqrt(args.d)
            x /= np.linalg.norm(x, axis=1, keepdims=True)
            x.astype(np.float16).tofile(f)
    bounds = np.concatenate([[0], np.cumsum(sizes)])
    np.save(workdir / "bounds.npy", bounds)
    return bounds


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _sync(device: str) -> None:
    import torch

    if device.startswith("cuda"):
        torch.cuda.synchronize()


def nemo_blocked(x, block: int):
    """NeMo Curator's pairwise loop (docs/algorithms.md §2.2): full rows for every column block."""
    import torch

    n = x.shape[0]
    out = torch.empty(n, dtype=torch.float32, device=x.device)
    for s in range(0, n, block):
        e = min(s + block, n)
        P = torch.mm(x, x[s:e].T)
        out[s:e] = torch.triu(P, diagonal=1 - s).max(dim=0).values
    return out


def official_dense(x):
    """Meta SemDeDup (docs/algorithms.md §1.2 step 5): dense S, zero diagonal, strict triu."""
    import torch

    S = x @ x.T
    S.fill_diagonal_(0.0)
    return torch.triu(S, diagonal=1).max(dim=0).values


def run_pairwise(args: argparse.Namespace, workdir: Path) -> dict:
    import torch

    from pairsift.stages.cluster import unit_rows
    from pairsift.stages.semdedup import effective_block, max_similarity

    bounds = np.load(workdir / "bounds.npy")
    base = rss_mb()
    max_sim = np.empty(int(bounds[-1]), dtype=np.float32)
    compute = flops = 0.0
    start = time.perf_counter()
    for s, e in zip(bounds[:-1], bounds[1:], strict=True):
        n = int(e - s)
        raw = np.fromfile(workdir / "emb.f16", np.float16, n * args.d, offset=int(s) * args.d * 2)
        x = unit_rows(raw.reshape(n, args.d), args.device)
        _sync(args.device)
        t0 = time.perf_counter()
        if args.worker == "pairsift":
            max_sim[s:e] = max_similarity(x, args.block, args.device)[0]
            blk = effective_block(n, args.block)
            flops += sum(2 * min(b + blk, n) * min(blk, n - b) * args.d for b in range(0, n, blk))
        elif args.worker == "nemo_blocked":
            max_sim[s:e] = nemo_blocked(x, args.block).cpu().numpy()
            flops += 2 * n * n * args.d
        elif args.worker == "official_dense":
            max_sim[s:e] = official_dense(x).cpu().numpy()
            flops += 2 * n * n * args.d
        else:
            torch.mm(x, x.T)
            flops += 2 * n * n * args.d
        _sync(args.device)
        compute += time.perf_counter() - t0
    total = time.perf_counter() - start
    if args.worker != "gemm_floor":
        np.save(workdir / f"{args.worker}.npy", max_sim)
    return {"total_s": total, "compute_s": compute, "gflop": flops / 1e9, "base_rss_mb": base}


def run_kmeans(args: argparse.Namespace, workdir: Path) -> dict:
    from pairsift.stages.cluster import fit_kmeans

    n = int(np.load(workdir / "bounds.npy")[-1])
    X = np.memmap(workdir / "emb.f16", np.float16, "r", shape=(n, args.d))
    base = rss_mb()
    t0 = time.perf_counter()
    model = fit_kmeans(X, args.clusters, niter=args.kmeans_niter, seed=args.seed)
    t1 = time.perf_counter()
    model.assign(X, device=args.device)
    t2 = time.perf_counter()
    return {"total_s": t2 - t0, "compute_s": t1 - t0, "assign_s": t2 - t1, "base_rss_mb": base}


def worker(args: argparse.Namespace) -> None:
    import faiss
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
        faiss.omp_set_num_threads(args.threads)
    workdir = Path(args.workdir)
    out = run_kmeans(args, workdir) if args.worker == "kmeans" else run_pairwise(args, workdir)
    out["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    if args.device.startswith("cuda"):
        out["gpu_peak_mb"] = round(torch.cuda.max_memory_allocated() / 2**20)
    print(json.dumps(out))


def check_removals(workdir: Path, eps_values: list[float], names: list[str]) -> list[str]:
    """Removal sets at each ε must match the dense reference (docs/algorithms.md §1.2 step 6, `>`).

    Different matmul shapes can round a dot product differently in the last bit, so an item
    whose score is within 1e-6 of the threshold may flip; any other difference is a bug.
    """
    ref = np.load(workdir / "official_dense.npy")
    lines = []
    for name in names:
        got = np.load(workdir / f"{name}.npy")
        for eps in eps_values:
            t = np.float32(1 - eps)
            diff = np.flatnonzero((got > t) != (ref > t))
            assert np.all(np.abs(ref[diff] - t) <= 1e-6), f"{name} differs at eps={eps}"
            lines.append(f"{name} vs official_dense, eps={eps}: removes {(got > t).sum()} of "
                         f"{len(ref)}, {len(diff)} borderline differences, max |ΔM| = "
                         f"{np.abs(got - ref).max():.1e}")
    return lines


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=1_000_000)
    p.add_argument("--d", type=int, default=512)
    p.add_argument("--clusters", type=int, default=1000)
    p.add_argument("--block", type=int, default=1024)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--dup-fraction", type=float, default=0.05)
    p.add_argument("--eps", type=float, nargs="+", default=[0.01, 0.05, 0.4])
    p.add_argument("--kmeans-niter", type=int, default=20)
    p.add_argument("--device", default="cuda" if _cuda() else "cpu")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: default)")
    p.add_argument("--approaches", nargs="+", default=list(APPROACHES), choices=APPROACHES)
    p.add_argument("--worker", choices=APPROACHES, help=argparse.SUPPRESS)
    p.add_argument("--workdir", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        worker(args)
        return
    with tempfile.TemporaryDirectory(prefix="bench_semdedup_") as tmp:
        workdir = Path(tmp)
        t0 = time.perf_counter()
        bounds = make_data(args, workdir)
        sizes = np.diff(bounds)
        print(f"data: n={args.n} d={args.d} clusters={args.clusters} (sizes min {sizes.min()}, "
              f"median {int(np.median(sizes))}, max {sizes.max()}), "
              f"Σn_c²={int((sizes**2).sum()):,}, generated in {time.perf_counter() - t0:.1f}s, "
              f"device={args.device}, block={args.block}, "
              f"threads={args.threads or _threads()}")
        rows = {}
        for name in args.approaches:
            cmd = [sys.executable, __file__, *sys.argv[1:], "--worker", name, "--workdir", tmp]
            done = subprocess.run(cmd, capture_output=True, text=True, env=os.environ)
            if done.returncode:
                sys.exit(f"{name} failed:\n{done.stderr}")
            rows[name] = json.loads(done.stdout.strip().splitlines()[-1])
        print(_table(rows))
        blocked = [a for a in ("pairsift", "nemo_blocked") if a in args.approaches]
        if "official_dense" in args.approaches and blocked:
            print("\n".join(check_removals(workdir, args.eps, blocked)))


def _cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def _threads() -> int:
    import torch

    return torch.get_num_threads()


def _table(rows: dict[str, dict]) -> str:
    head = ("| approach | total s | compute s | GFLOP | GFLOP/s | peak RSS MB | RSS − start MB "
            "| GPU peak MB |\n|---|---|---|---|---|---|---|---|")
    lines = [head]
    for name, r in rows.items():
        gflop = r.get("gflop")
        rate = f"{gflop / r['compute_s']:.1f}" if gflop else "—"
        extra = f" (fit; assign {r['assign_s']:.2f}s)" if "assign_s" in r else ""
        lines.append(
            f"| {name} | {r['total_s']:.2f} | {r['compute_s']:.2f}{extra} | "
            f"{f'{gflop:.1f}' if gflop else '—'} | {rate} | {r['peak_rss_mb']:.0f} | "
            f"{r['peak_rss_mb'] - r['base_rss_mb']:.0f} | {r.get('gpu_peak_mb', '—')} |"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    main()
