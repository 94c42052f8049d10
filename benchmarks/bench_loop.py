"""Closing the loop at toy scale: tiny CLIPs trained from scratch on curated subsets.

    python benchmarks/bench_loop.py parrot --seeds 3 --steps 10
    python benchmarks/bench_loop.py dedup --seeds 3 --steps 10

``parrot`` (the Parrot-captions paper): a synthetic corpus where a third of the images with
drawn words have captions repeating them. One model trains on a random subset of all of it
(parrot-heavy), the other on a subset of the same size after ``parrot spot`` + ``filter
parrot``; each is audited with ``parrot audit`` on the corpus's overlay words (the Sync. Score,
and its gap over the other words' mean cosine).

``dedup`` (SemDeDup): a corpus where half the pairs are near duplicates of the other half
(transformed copies). One model trains on all of it, the other on the half that ``dedup
semantic --keep-fraction 0.5`` keeps, for the same number of steps; both are evaluated for
retrieval on the held-out synthetic evaluation set.

Every seed trains both models with the same seed (subset sampling and training). Prints a
Markdown block for RESULTS.md: mean ± standard deviation over seeds (each row also goes to
stderr as it is measured). Batches of 24: 240 pairs and their deduplicated 120 both divide into
whole batches, so both models take exactly the same number of steps.
"""

from __future__ import annotations

import argparse
import csv
import math
import shutil
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
from _common import WORK, machine

import pairsift
from pairsift.synth import VOCABULARY, SynthConfig, make_corpus
from pairsift.synth.evalset import EvalSetConfig, make_eval_set

BATCH = 24
NONE = dict(originals=0, exact_duplicates=0, near_duplicates=0, mismatched=0, rendered_text=0,
            corrupt=0, missing_captions=0, missing_images=0)


def curated(name: str, config: SynthConfig, stages: list[tuple[str, dict]]) -> tuple[Path, Path]:
    """Corpus -> workspace; exports before (all) and after ``stages`` (curated), as CSV."""
    root = WORK / f"loop-{name}"
    if (root / "curated.csv").exists():
        return root / "all.csv", root / "curated.csv"
    shutil.rmtree(root, ignore_errors=True)
    corpus = make_corpus(root / "corpus", config)
    ws = root / "ws"
    pairsift.ingest([str(corpus.source)], ws, captions=corpus.captions, progress=False)
    pairsift.export(ws, root / "all.csv", format="openclip-csv")
    for stage, options in stages:
        getattr(pairsift, stage)(ws, progress=False, **options)
    pairsift.export(ws, root / "curated.csv", format="openclip-csv")
    return root / "all.csv", root / "curated.csv"


def subset(export: Path, size: int, seed: int, out: Path) -> Path:
    """``size`` rows of an open_clip CSV, drawn without replacement."""
    with export.open(newline="") as f:
        rows = list(csv.reader(f, delimiter="\t"))
    header, body = rows[0], rows[1:]
    chosen = np.random.default_rng(seed).choice(len(body), size=min(size, len(body)),
                                                replace=False)
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("w", newline="") as f:
        writer = csv.writer(f, delimiter="\t")
        writer.writerow(header)
        writer.writerows(body[i] for i in sorted(chosen))
    return out


def train(export: Path, run: Path, steps: int, seed: int):
    """At least ``steps`` steps: whole epochs (open_clip_train's unit), the fewest that do."""
    epochs = math.ceil(steps / (_rows(export) // BATCH))
    return pairsift.train(export, run, epochs=epochs, batch_size=BATCH, seed=seed,
                          overwrite=True)


def parrot(seeds: int, steps: int) -> list[str]:
    config = SynthConfig(**{**NONE, "originals": 60, "rendered_text": 240})
    everything, filtered = curated("parrot", config, [("parrot_spot", {}),
                                                      ("filter_parrot", {})])
    size = min(_rows(filtered), _rows(everything))
    lines = [f"subsets of {size} pairs; all: {_rows(everything)}, after filter parrot: "
             f"{_rows(filtered)}; {steps} steps of {BATCH}; audit words: the corpus's "
             f"{len(VOCABULARY)} overlay words", "",
             "| seed | subset | steps | Sync. Score | other words | gap | train s |",
             "|---|---|---|---|---|---|---|"]
    results: dict[str, list[tuple[float, float]]] = {"parrot-heavy": [], "filtered": []}
    for seed in range(seeds):
        for label, export in (("parrot-heavy", everything), ("filtered", filtered)):
            data = subset(export, size, seed, WORK / "loop-parrot" / f"{label}-{seed}.csv")
            run = train(data, WORK / "loop-parrot" / f"run-{label}-{seed}", steps, seed)
            audit = pairsift.parrot_audit(model=run.model, words=list(VOCABULARY),
                                          progress=False)
            gap = audit.sync_score - audit.baseline
            results[label].append((audit.sync_score, gap))
            lines.append(f"| {seed} | {label} | {run.steps} | {audit.sync_score:.3f} | "
                         f"{audit.baseline:.3f} | {gap:+.3f} | {run.seconds:.0f} |")
            print(lines[-1], file=sys.stderr, flush=True)
    lines.append("")
    for label, values in results.items():
        sync, gap = np.asarray(values).T
        lines.append(f"- {label}: Sync. Score {_mean_sd(sync)}, gap {_mean_sd(gap)}")
    return lines


def dedup(seeds: int, steps: int) -> list[str]:
    config = SynthConfig(**{**NONE, "originals": 120, "near_duplicates": 120})
    everything, deduped = curated("dedup", config, [
        ("embed", {}), ("cluster", {"target_size": 20}),
        ("dedup_semantic", {"keep_fraction": 0.5}),
    ])
    eval_root = WORK / "loop-dedup" / "eval"
    if not (eval_root / "retrieval.csv").exists():
        shutil.rmtree(eval_root, ignore_errors=True)
        make_eval_set(eval_root, EvalSetConfig(per_class=4))
    lines = [f"all: {_rows(everything)} pairs, after dedup semantic: {_rows(deduped)} "
             f"({_kept_kinds(WORK / 'loop-dedup', deduped)}); "
             f"{steps} steps of {BATCH} each; retrieval on the held-out set (56 images, "
             "112 captions)", "",
             "| seed | data | steps | R@1 (mean of both) | image R@5 | text R@5 | train s |",
             "|---|---|---|---|---|---|---|"]
    results: dict[str, list[tuple[float, float, float]]] = {"all": [], "deduplicated": []}
    for seed in range(seeds):
        for label, export in (("all", everything), ("deduplicated", deduped)):
            run = train(export, WORK / "loop-dedup" / f"run-{label}-{seed}", steps, seed)
            m = pairsift.evaluate(eval_root / "retrieval.csv", model=run.model,
                                  task="retrieval").metrics
            row = (m["datacomp_retrieval"], m["image_retrieval_recall@5"],
                   m["text_retrieval_recall@5"])
            results[label].append(row)
            lines.append(f"| {seed} | {label} | {run.steps} | {row[0]:.3f} | {row[1]:.3f} | "
                         f"{row[2]:.3f} | {run.seconds:.0f} |")
            print(lines[-1], file=sys.stderr, flush=True)
    lines.append("")
    for label, values in results.items():
        r1, i5, t5 = np.asarray(values).T
        lines.append(f"- {label}: R@1 {_mean_sd(r1)}, image R@5 {_mean_sd(i5)}, text R@5 "
                     f"{_mean_sd(t5)}")
    return lines


def _kept_kinds(root: Path, export: Path) -> str:
    """How many originals and near duplicates an export kept, from the corpus's truth."""
    truth = pq.read_table(root / "corpus" / "truth.parquet", columns=["name", "kind"])
    kinds = dict(zip(*truth.to_pydict().values(), strict=True))
    with export.open(newline="") as f:
        kept = Counter(kinds[Path(r["filepath"]).name]
                       for r in csv.DictReader(f, delimiter="\t"))
    return ", ".join(f"{n} {kind}" for kind, n in sorted(kept.items()))


def _rows(export: Path) -> int:
    with export.open() as f:
        return sum(1 for _ in f) - 1


def _mean_sd(values: np.ndarray) -> str:
    return f"{values.mean():.3f} ± {values.std(ddof=1) if len(values) > 1 else 0:.3f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("experiment", choices=("parrot", "dedup"))
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=30)
    args = parser.parse_args()
    started = time.perf_counter()
    lines = {"parrot": parrot, "dedup": dedup}[args.experiment](args.seeds, args.steps)
    print(f"### bench_loop {args.experiment}: `python benchmarks/bench_loop.py "
          f"{args.experiment} --seeds {args.seeds} --steps {args.steps}`\n")
    print(f"{machine()}, shared with other work; {time.perf_counter() - started:.0f} s\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
