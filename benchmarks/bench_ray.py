"""Ray engine throughput with 1 and 2 workers, against the local engine, and Ray's fixed cost.

- map stage: ``embed`` with the default model on a synthetic corpus (images decoded and
  encoded; the model loads once per actor, which the timing includes);
- SemDeDup scoring: ``dedup-semantic`` on a clustered tiled workspace (checkpoints cleared
  before each run, so every batch of clusters is scored);
- fixed cost: ``score`` on a one-part workspace of 100 samples, Ray minus local, after
  ``ray.init`` (reported separately).

Each configuration runs on a fresh copy of the same workspace; "workers" is the number of
CPUs given to the local Ray (``ray.init(num_cpus=W)``), one task or actor per CPU.

    nice -n 5 python benchmarks/bench_ray.py --images 256 --samples 200000 --repeats 2
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

import pairsift
from pairsift.synth import SynthConfig, make_corpus
from pairsift.synth.tiled import tiled_workspace


def timed(fn, *args, **kwargs) -> float:
    start = time.perf_counter()
    fn(*args, **kwargs)
    return time.perf_counter() - start


def fresh(template: Path, tmp: Path, name: str) -> Path:
    target = tmp / name
    shutil.rmtree(target, ignore_errors=True)
    shutil.copytree(template, target)
    return target


def start_ray(workers: int | None):
    import ray

    if ray.is_initialized():
        ray.shutdown()
    if workers is None:
        return None
    start = time.perf_counter()
    ray.init(num_cpus=workers, include_dashboard=False, logging_level="warning")
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=256, help="samples embedded")
    parser.add_argument("--samples", type=int, default=200_000, help="SemDeDup samples")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--no-embed", action="store_true", help="skip the embed runs")
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="bench-ray-"))

    corpus = make_corpus(tmp / "corpus", SynthConfig(n_samples=args.images, corrupt=0,
                                                     missing_images=0), layout="folder")
    ingested = tmp / "ingested"
    pairsift.ingest(corpus.source, ingested, captions=corpus.captions, chunk_size=32,
                    progress=False)
    clustered = tmp / "clustered"
    tiled_workspace(clustered, args.samples, part_size=25_000, dim=256, clusters=2_000)
    pairsift.cluster(clustered, k=args.samples // 1000, progress=False)
    tiny = tmp / "tiny"
    tiled_workspace(tiny, 100, part_size=100, dim=16, clusters=4)

    n_images = pairsift.workspace.Workspace.open(ingested).num_samples()
    print(f"embed: {n_images} images in 32-sample parts; dedup-semantic: {args.samples:,} "
          f"samples, k={args.samples // 1000}; repeats: {args.repeats}")
    for workers in (None, 1, 2):
        init = start_ray(workers)
        engine = "local" if workers is None else "ray"
        label = "local" if workers is None else f"ray, {workers} worker(s)"
        if init is not None:
            print(f"{label}: ray.init {init:.1f} s")
        for _ in range(0 if args.no_embed else args.repeats):
            t = timed(pairsift.embed, fresh(ingested, tmp, "run"), engine=engine,
                      progress=False)
            print(f"{label}: embed {t:.1f} s, {n_images / t:.1f} img/s")
        for _ in range(args.repeats):
            t = timed(pairsift.dedup_semantic, fresh(clustered, tmp, "run"), engine=engine,
                      eps=0.05, progress=False)
            print(f"{label}: dedup-semantic {t:.1f} s, {args.samples / t:,.0f} samples/s")
        for _ in range(args.repeats):
            t = timed(pairsift.score, fresh(tiny, tmp, "run"), engine=engine, progress=False)
            print(f"{label}: score on 100 samples {t:.2f} s")
    start_ray(None)
    shutil.rmtree(tmp)


if __name__ == "__main__":
    main()
