"""Language-ID accuracy, and the throughput of DataComp's basic and image-based filters.

    nice -n 5 python benchmarks/bench_basicfilter.py --n 200000 --k 1000 --repeat 2

1. Accuracy of each offline language identifier on tests/data/languages/captions.tsv (5 caption
   sentences in each of 20 languages, written for pairsift's tests), per language, and its
   speed in captions/s.
2. A generated workspace of N samples (``synth.tiled``: 512-d embeddings, no images) whose
   captions are drawn from those sentences; then, each timed ``--repeat`` times (the stage's
   run undone in between): ``language`` (LID + counts), ``filter-basic`` (decisions from the
   stored signals), ``cluster`` as DataComp clusters (L2, 20 iterations, seed 0) and
   ``filter-image-based`` with 1,000 reference embeddings (pool rows plus noise), by dot
   product (each sample re-assigned) and by L2 (the cluster stage's own labels).
"""

from __future__ import annotations

import argparse
import csv
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pyarrow as pa
from _common import WORK, machine

import pairsift
from pairsift import Workspace
from pairsift.models import model_slug
from pairsift.models.language import BUNDLED, LANGID, load_identifier
from pairsift.synth.tiled import MODEL, tiled_workspace

SENTENCES = Path(__file__).resolve().parents[1] / "tests" / "data" / "languages" / "captions.tsv"


def sentences() -> list[dict[str, str]]:
    with open(SENTENCES, encoding="utf-8") as f:
        return list(csv.DictReader(f, delimiter="\t"))


def accuracy(name: str) -> None:
    rows = sentences()
    identifier = load_identifier(name)
    texts = [r["text"] for r in rows]
    start = time.perf_counter()
    for _ in range(5):
        found, _ = identifier.identify(texts)
    rate = 5 * len(texts) / (time.perf_counter() - start)
    right, total = Counter(), Counter()
    for row, language in zip(rows, found, strict=True):
        total[row["language"]] += 1
        right[row["language"]] += language == row["language"]
    per = " ".join(f"{lang} {right[lang]}/{total[lang]}" for lang in total)
    print(f"{name}: {sum(right.values())}/{len(rows)} right, {rate:,.0f} captions/s; {per}")


def workspace(n: int) -> Path:
    root = WORK / f"basicfilt-{n}"
    if root.exists():
        return root
    ws = tiled_workspace(root, n, part_size=50_000, clusters=max(1, n // 200))
    texts = [r["text"] for r in sentences()]
    rng = np.random.default_rng(0)
    for part in ws.part_ids():
        rows = ws.read_part(part)
        captions = pa.array([texts[i] for i in rng.integers(0, len(texts), rows.num_rows)])
        rows = rows.set_column(rows.schema.get_field_index("caption"), "caption", captions)
        ws.write_part(part, rows, pa.table({}), "tiled", f"tile-{part:05d}")
    return root


def reference(root: Path, m: int = 1000) -> Path:
    ws = Workspace.open(root)
    pool = np.asarray(ws.embeddings(model_slug(MODEL), "image", ws.part_ids()[0])[:m],
                      np.float32)
    noisy = pool + 0.02 * np.random.default_rng(1).standard_normal(pool.shape)
    path = root.parent / f"{root.name}-reference.npy"
    np.save(path, noisy.astype(np.float32))
    return path


def timed(root: Path, stage: str, call, repeat: int) -> None:
    seconds = []
    for _ in range(repeat):
        Workspace.open(root).clear_stage(stage)
        start = time.perf_counter()
        summary = call()
        seconds.append(time.perf_counter() - start)
    n = Workspace.open(root).num_samples()
    kept = f", kept {summary.kept:,}" if summary.kept is not None else ""
    print(f"{stage}: {' / '.join(f'{s:.1f}' for s in seconds)} s "
          f"({n / min(seconds):,.0f}–{n / max(seconds):,.0f} samples/s){kept}")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=200_000)
    parser.add_argument("--k", type=int, default=1000)
    parser.add_argument("--repeat", type=int, default=2)
    args = parser.parse_args()
    print(machine())
    for name in (BUNDLED, LANGID):
        accuracy(name)
    root = workspace(args.n)
    ref = reference(root)
    timed(root, "language", lambda: pairsift.language(root, progress=False), args.repeat)
    timed(root, "filter-basic", lambda: pairsift.filter_basic(root, progress=False),
          args.repeat)
    timed(root, "cluster", lambda: pairsift.cluster(
        root, k=args.k, spherical=False, niter=20, seed=0, progress=False), 1)
    for assign in ("dot", "l2"):
        timed(root, "filter-image-based", lambda a=assign: pairsift.filter_image_based(
            root, reference=ref, assign=a, progress=False), args.repeat)


if __name__ == "__main__":
    main()
