"""Exact (flat) search against the IVF indexes ``pairsift index`` chooses, on clustered vectors;
then the held-out calibration error of ``pairsift calibrate`` on synthetic corpora.

    python benchmarks/bench_index.py --n 1000000 --d 512
    python benchmarks/bench_index.py --n 200000 --calibration-samples ""

Vectors: ``n / --cluster-size`` random unit centres plus Gaussian noise of norm ``--spread``,
normalised, as embeddings cluster (the larger the spread, the more clusters overlap); queries
are fresh draws from the same clusters. Each budget row is the index ``choose_index`` picks for
that memory budget, built as the workspace builds it (one part at a time, then merged), with
nprobe tuned as ``pairsift index`` tunes it (recall@10 0.97 on 200 separate queries) and lossy
codes' best ``rerank`` x 10 candidates re-scored with float16 vectors, as the workspace does.
Latency is one query at a time on ``--threads`` faiss threads, p50 and p99 over ``--queries``
queries; recall@10 is against the exact top 10; memory is what the index holds (codes, ids,
centroids).
"""

from __future__ import annotations

import argparse
import shutil
import time

import faiss
import numpy as np
from _common import WORK, machine, peak_rss_mib

from pairsift.retrieval.build import (
    TRAIN_PER_LIST,
    bytes_per_vector,
    choose_index,
    encode,
    merge,
    parse_bytes,
)
from pairsift.retrieval.build import train as train_index
from pairsift.retrieval.search import recall_at_k, search_index, tune_nprobe

PART = 10_000  # rows per part, as in a workspace ingested with the default chunk size


def clustered(n: int, centres: np.ndarray, spread: float,
              rng: np.random.Generator) -> np.ndarray:
    """Unit vectors: a random centre plus Gaussian noise of norm about ``spread``."""
    d = centres.shape[1]
    x = centres[rng.integers(0, len(centres), n)]
    x += spread * np.sqrt(1 / d) * rng.standard_normal((n, d), np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def latencies(run, queries: np.ndarray) -> tuple[float, float]:
    """p50 and p99 milliseconds of ``run(query)`` over single queries."""
    times = []
    for q in queries:
        start = time.perf_counter()
        run(q[None])
        times.append(1000 * (time.perf_counter() - start))
    return float(np.percentile(times, 50)), float(np.percentile(times, 99))


def index_memory(index: faiss.Index) -> int:
    """Bytes held: codes and ids of every vector plus the coarse centroids."""
    ivf = faiss.extract_index_ivf(index)
    return ivf.ntotal * (ivf.code_size + 8) + ivf.nlist * ivf.d * 4


def bench_flat(data: np.ndarray, queries: np.ndarray) -> tuple[dict, faiss.Index]:
    start = time.perf_counter()
    flat = faiss.IndexFlatIP(data.shape[1])
    flat.add(data)
    build = time.perf_counter() - start
    p50, p99 = latencies(lambda q: flat.search(q, 10), queries)
    row = {"index": "Flat (exact)", "build_s": build, "p50": p50, "p99": p99, "recall": 1.0,
           "nprobe": "-", "memory": data.nbytes}
    return row, flat


def bench_ivf(data: np.ndarray, half: np.ndarray, queries: np.ndarray, tuning: np.ndarray,
              truth: np.ndarray, tuning_truth: np.ndarray, budget: int,
              rng: np.random.Generator) -> dict:
    n, d = data.shape
    choice = choose_index(n, d, budget)
    start = time.perf_counter()
    sample = data[rng.choice(n, min(n, TRAIN_PER_LIST * choice.nlist), replace=False)]
    trained = train_index(choice, sample)
    index = merge(trained, (encode(trained, data[i:i + PART]) for i in range(0, n, PART)))
    build = time.perf_counter() - start
    fetch = (lambda p: half[p].astype(np.float32)) if choice.lossy else None
    nprobe, _ = tune_nprobe(index, tuning, tuning_truth, fetch=fetch, rerank=choice.rerank)
    found = search_index(index, queries, 10, nprobe=nprobe, fetch=fetch, rerank=choice.rerank)
    p50, p99 = latencies(lambda q: search_index(index, q, 10, nprobe=nprobe, fetch=fetch,
                                                rerank=choice.rerank), queries)
    return {"index": choice.factory, "build_s": build, "p50": p50, "p99": p99,
            "recall": recall_at_k(found[1], truth), "nprobe": nprobe, "rerank": choice.rerank,
            "memory": index_memory(index), "budget": budget,
            "bytes": bytes_per_vector(choice.encoding, d)}


def calibration_rows(sizes: list[int]) -> list[dict]:
    """Held-out ECE of ``pairsift calibrate`` (each method) on synthetic corpora whose truth
    names the duplicate groups."""
    from _common import corpus

    from pairsift import embed, ingest
    from pairsift.pipeline.search import calibrate, index
    from pairsift.retrieval.calibration import METHODS

    rows = []
    for n in sizes:
        root = corpus(n, layout="folder")
        ws = WORK / f"ws-calibrate-{n}"
        shutil.rmtree(ws, ignore_errors=True)
        ingest(root / "images", ws, captions=root / "captions.csv", progress=False)
        embed(ws, progress=False)
        index(ws, progress=False)
        for method in METHODS:
            s = calibrate(ws, groups=root / "truth.parquet", method=method)
            rows.append({"samples": n, "pairs": s.pairs, "same": s.positives,
                         "method": s.method, "requested": method,
                         "heldout_pairs": s.heldout.pairs, "heldout_same": s.heldout.positives,
                         "ece": s.heldout.ece, "brier": s.heldout.brier})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=1_000_000)
    parser.add_argument("--d", type=int, default=512)
    parser.add_argument("--queries", type=int, default=500)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--cluster-size", type=int, default=1000)
    parser.add_argument("--spread", type=float, default=0.6)
    parser.add_argument("--budgets", default="4GiB,768MiB,128MiB",
                        help="memory budgets per million vectors (scaled to --n), one IVF row "
                             "each; the defaults give float32, 8-bit and 128-byte PQ codes")
    parser.add_argument("--calibration-samples", default="57,400",
                        help="synthetic corpus sizes for the calibration rows ('' for none)")
    args = parser.parse_args()
    faiss.omp_set_num_threads(args.threads)
    rng = np.random.default_rng(0)
    centres = rng.standard_normal((max(args.n // args.cluster_size, 1), args.d))
    centres = (centres / np.linalg.norm(centres, axis=1, keepdims=True)).astype(np.float32)
    start = time.perf_counter()
    data = np.concatenate([clustered(min(PART, args.n - i), centres, args.spread, rng)
                           for i in range(0, args.n, PART)])
    half = data.astype(np.float16)  # what the workspace stores and lossy hits are re-scored with
    queries = clustered(args.queries, centres, args.spread, rng)
    tuning = clustered(200, centres, args.spread, rng)
    print(f"{args.n:,} x {args.d} vectors in {len(centres):,} clusters (spread "
          f"{args.spread}) in {time.perf_counter() - start:.1f} s; "
          f"{machine()}, faiss {faiss.__version__}, {args.threads} thread(s)\n")
    flat, flat_index = bench_flat(data, queries)
    truth, tuning_truth = flat_index.search(queries, 10)[1], flat_index.search(tuning, 10)[1]
    del flat_index
    rows = [flat] + [bench_ivf(data, half, queries, tuning, truth, tuning_truth,
                               int(parse_bytes(b) * args.n / 1e6), rng)
                     for b in args.budgets.split(",")]
    print("| index | budget | bytes/vector | nprobe | rerank | build s | p50 ms | p99 ms "
          "| speed-up p50 | recall@10 | index memory MiB |\n" + "|---" * 11 + "|")
    for r in rows:
        budget = f"{r['budget'] / 2**20:,.0f} MiB" if "budget" in r else "-"
        print(f"| {r['index']} | {budget} | {r.get('bytes', 4 * args.d)} | {r['nprobe']} | "
              f"{r.get('rerank', '-')} | "
              f"{r['build_s']:.1f} | {r['p50']:.2f} | {r['p99']:.2f} | "
              f"{flat['p50'] / r['p50']:.1f}x | {r['recall']:.3f} | {r['memory'] / 2**20:,.0f} |")
    print(f"\npeak RSS {peak_rss_mib():,.0f} MiB (vectors, their float16 copy, the indexes "
          f"and the imports)")
    sizes = [int(s) for s in args.calibration_samples.split(",") if s]
    if sizes:
        print("\n| corpus samples | pairs (same) | --method | fitted | held-out pairs (same) "
              "| ECE | Brier |\n" + "|---" * 7 + "|")
        for r in calibration_rows(sizes):
            print(f"| {r['samples']} | {r['pairs']:,} ({r['same']}) | {r['requested']} | "
                  f"{r['method']} | {r['heldout_pairs']:,} ({r['heldout_same']}) | "
                  f"{r['ece']:.4f} | {r['brier']:.4f} |")


if __name__ == "__main__":
    main()
