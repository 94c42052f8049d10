"""Choose the ArcFace head's defaults on validation identities only (bench_arcface.py reports).

Protocol: a *tuning* corpus of the generator (``--corpus-seed``, by default another corpus
than the one bench_arcface.py reports on) is embedded; for each tuning seed the identities are
split as ``finetune`` splits them (``--holdout``: half validation, half test) and the **test
identities are dropped unread**. The validation identities are cut in two halves: "stop"
drives early stopping (as the stage's validation identities do), "judge" measures the chosen
head. Every configuration in ``--grid`` is trained with :func:`arcface.train_head` on the
training identities, and the script prints, per seed and averaged, the judge half's
recall@1, mAP, score overlap and ROC AUC, before (the encoder's space) and after.

    nice -n 5 python benchmarks/tune_arcface.py --seeds 20 21 22 23 \\
        --grid '{"init": "random"}' '{}' '{"scale": 8, "margin": 0.2}'
"""

from __future__ import annotations

import argparse
import json

import numpy as np
import pyarrow.parquet as pq
import torch
from _common import machine
from bench_arcface import embedded, group_corpus

from pairsift.models import model_slug
from pairsift.models.base import l2_normalize
from pairsift.retrieval import arcface
from pairsift.stages.finetune import SPLITS, split_identities
from pairsift.workspace import Workspace

METRICS = ("recall@1", "mAP", "overlap", "auc")


def visual_groups(originals: int, per: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Unit visual embeddings of the tuning corpus and each sample's group code."""
    corpus = group_corpus(originals, per, seed)
    ws = Workspace.open(embedded(corpus, threads=2))
    x = ws.embedding_rows(model_slug(ws.current_model()), "visual")[:]
    keys = np.concatenate([ws.read_part(p, ["key"]).column("key").to_numpy(
        zero_copy_only=False) for p in ws.part_ids()])
    truth = pq.read_table(corpus / "truth.parquet", columns=["key", "group"]).to_pandas()
    group = truth.set_index("key").loc[keys, "group"].to_numpy().astype(str)
    return l2_normalize(np.asarray(x, np.float32)), np.unique(group, return_inverse=True)[1]


def tuning_split(codes: np.ndarray, holdout: float,
                 seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Rows to train on, to stop on and to judge on; the test identities are not returned."""
    split = split_identities(codes, int(codes.max()) + 1, holdout, seed)
    train = np.flatnonzero(split == SPLITS.index("train"))
    validation = np.flatnonzero(split == SPLITS.index("validation"))
    ids = np.random.default_rng(seed).permutation(np.unique(codes[validation]))
    stop = np.isin(codes[validation], ids[: len(ids) // 2])
    return train, validation[stop], validation[~stop]


def judge(x: np.ndarray, codes: np.ndarray) -> dict[str, float]:
    m = arcface.evaluate_space(x, codes).metrics
    return {k: m[k] for k in METRICS}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--originals", type=int, default=300)
    parser.add_argument("--per", type=int, default=5)
    parser.add_argument("--corpus-seed", type=int, default=1)
    parser.add_argument("--holdout", type=float, default=0.4)
    parser.add_argument("--seeds", type=int, nargs="+", default=[20, 21, 22, 23])
    parser.add_argument("--grid", nargs="+", default=["{}"],
                        help="HeadConfig overrides as JSON, one configuration each")
    args = parser.parse_args()
    torch.set_num_threads(1)  # the shared 2 cores: one thread is the faster (RESULTS.md)
    print(machine())
    x, codes = visual_groups(args.originals, args.per, args.corpus_seed)
    splits = {seed: tuning_split(codes, args.holdout, seed) for seed in args.seeds}
    before = {seed: judge(x[j], codes[j]) for seed, (_, _, j) in splits.items()}
    print(f"corpus {args.originals}x{args.per} seed {args.corpus_seed}: "
          f"{len(np.unique(codes))} identities; judge halves before: " + "; ".join(
              f"seed {s}: " + ", ".join(f"{k} {v:.3f}" for k, v in m.items())
              for s, m in before.items()))
    for overrides in args.grid:
        rows = []
        for seed, (train, stop, held) in splits.items():
            config = arcface.HeadConfig(**{**json.loads(overrides), "seed": seed})
            y = np.unique(codes[train], return_inverse=True)[1]
            trained = arcface.train_head(x[train], y, x[stop], codes[stop], config)
            after = judge(arcface.apply(trained.head, x[held]), codes[held])
            rows.append(after)
            print(f"{overrides} seed {seed}: best epoch {trained.best_epoch}, "
                  f"{trained.seconds:.1f} s; " + ", ".join(
                      f"{k} {before[seed][k]:.3f}->{after[k]:.3f}" for k in METRICS),
                  flush=True)
        mean_before = {k: np.mean([before[s][k] for s in splits]) for k in METRICS}
        mean_after = {k: np.mean([r[k] for r in rows]) for k in METRICS}
        wins = sum(r["overlap"] < before[s]["overlap"] for r, s in zip(rows, splits,
                                                                       strict=True))
        print(f"MEAN {overrides}: " + ", ".join(
            f"{k} {mean_before[k]:.3f}->{mean_after[k]:.3f}" for k in METRICS)
            + f"; overlap lower in {wins}/{len(rows)} seeds", flush=True)


if __name__ == "__main__":
    main()
