"""ArcFace head on the synthetic generator's near-duplicate groups, and its training time.

Part 1: a corpus of originals, each with near duplicates made by the generator's transforms
(JPEG q30, resize, crops, flip, brightness, border, WebP); a group (an original and its
duplicates) is an identity. It is ingested and embedded with the default model, and
``pairsift finetune`` trains a head on the visual space with held-out identities; the script
prints recall@1/5/10, mAP, the overlap of same/different score histograms, ROC AUC and the ECE
of P(same) on the test identities, before and after, for several seeds (each seed draws
another split and initialisation).

Part 2: training time of ``finetune`` on 10,000 labelled 1280-d embeddings (the default
model's visual width) in 1,000 identities, on ``--threads`` torch threads, every epoch run.

    nice -n 5 python benchmarks/bench_arcface.py --part 1 --originals 300 --per 5
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from _common import WORK, machine

import pairsift
from pairsift.models import model_slug
from pairsift.synth import SynthConfig, make_corpus
from pairsift.synth.tiled import MODEL, tiled_workspace

METRICS = ("recall@1", "recall@5", "recall@10", "mAP", "overlap", "auc", "ece")


def group_corpus(originals: int, per: int, seed: int = 0) -> Path:
    """The generator's corpus of ``originals`` groups of 1 + ``per``; ``seed`` draws another
    corpus (other crops of the photos)."""
    root = WORK / (f"arcface-corpus-{originals}x{per}" + (f"-seed{seed}" if seed else ""))
    if not (root / "truth.parquet").exists():
        shutil.rmtree(root, ignore_errors=True)
        make_corpus(root, SynthConfig(
            seed=seed, originals=originals, exact_duplicates=0, near_duplicates=originals * per,
            mismatched=0, rendered_text=0, corrupt=0, missing_captions=0, missing_images=0),
            layout="folder")
    return root


def embedded(corpus: Path, threads: int) -> Path:
    ws = corpus.parent / f"{corpus.name}-ws"
    if not (ws / "pairsift.json").exists():
        shutil.rmtree(ws, ignore_errors=True)
        start = time.perf_counter()
        pairsift.ingest(corpus / "images", ws, captions=corpus / "captions.csv",
                        progress=False)
        pairsift.embed(ws, threads=threads, progress=False)
        print(f"ingest + embed: {time.perf_counter() - start:.0f} s")
    return ws


def labels(corpus: Path) -> Path:
    truth = pq.read_table(corpus / "truth.parquet", columns=["key", "group"])
    path = corpus / "groups.parquet"
    pq.write_table(truth.filter(pc.is_valid(truth.column("group"))), path)
    return path


def part1(args: argparse.Namespace) -> None:
    corpus = group_corpus(args.originals, args.per, args.corpus_seed)
    ws = embedded(corpus, args.threads)
    table = labels(corpus)
    rows = []
    for seed in args.seeds:
        s = pairsift.finetune(ws, labels=table, label_column="group", holdout=args.holdout,
                              seed=seed, name=f"groups-{seed}", threads=args.threads,
                              progress=False, **json.loads(args.options))
        rows.append(s)
        print(f"seed {seed}: {s.identities} identities, {s.split_samples} samples, best epoch "
              f"{s.best_epoch}, {s.train_seconds:.1f} s")
        for m in METRICS:
            print(f"  {m:10s} before {s.before[m]:.3f}  after {s.after[m]:.3f}")
    print("\nmean (min-max) over seeds")
    for m in METRICS:
        before = np.array([s.before[m] for s in rows])
        after = np.array([s.after[m] for s in rows])
        print(f"  {m:10s} before {before.mean():.3f} ({before.min():.3f}-{before.max():.3f})"
              f"  after {after.mean():.3f} ({after.min():.3f}-{after.max():.3f})")


def part2(args: argparse.Namespace) -> None:
    n, identities, dim = args.labelled, args.labelled // 10, 1280
    root = WORK / "arcface-timing"
    shutil.rmtree(root, ignore_errors=True)
    ws = tiled_workspace(root, n, part_size=n, dim=dim, clusters=10)
    rng = np.random.default_rng(0)
    label = rng.permutation(np.repeat(np.arange(identities), n // identities))
    centres = rng.standard_normal((identities, dim), np.float32)
    x = centres[label] + 1.5 * rng.standard_normal((n, dim), np.float32)
    ws.write_embeddings(model_slug(MODEL), {"image": x / np.linalg.norm(x, axis=1,
                                                                        keepdims=True)}, 0)
    keys = ws.read_part(0, ["key"]).column("key")
    path = root.parent / "arcface-timing-labels.parquet"
    pq.write_table(pa.table({"key": keys, "identity": label.astype(str)}), path)
    for rep in range(args.repeats):
        start, cpu = time.perf_counter(), time.process_time()
        s = pairsift.finetune(ws, labels=path, label_column="identity", epochs=args.epochs,
                              patience=args.epochs, threads=args.threads, seed=rep,
                              name=f"timing-{rep}", progress=False)
        total, cpu = time.perf_counter() - start, time.process_time() - cpu
        # on a shared machine wall time counts the waits; CPU time (all threads) does not
        print(f"{n:,} labelled {dim}-d embeddings ({s.split_samples['train']:,} trained on), "
              f"{args.epochs} epochs on {args.threads} threads: training {s.train_seconds:.1f} s "
              f"wall ({s.train_seconds / args.epochs:.2f} s/epoch), whole stage {total:.1f} s "
              f"wall, {cpu:.1f} s CPU")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--originals", type=int, default=300)
    parser.add_argument("--per", type=int, default=5, help="near duplicates per original")
    parser.add_argument("--corpus-seed", type=int, default=0,
                        help="the generator's seed (tune_arcface.py tunes on seed 1)")
    parser.add_argument("--holdout", type=float, default=0.4)
    parser.add_argument("--seeds", type=int, nargs="+", default=[100, 101, 102],
                        help="split and training seeds (100-102: never used in tuning)")
    parser.add_argument("--options", default="{}",
                        help='finetune options as JSON, e.g. \'{"init": "random"}\'')
    parser.add_argument("--labelled", type=int, default=10_000)
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--part", choices=("1", "2", "both"), default="both")
    args = parser.parse_args()
    print(machine())
    if args.part in ("1", "both"):
        part1(args)
    if args.part in ("2", "both"):
        part2(args)


if __name__ == "__main__":
    main()
