"""GPU checks and throughput, run by hand on a machine with CUDA (nothing here downloads).

    python benchmarks/bench_gpu.py --n-tiled 200000 --n-images 4000

1. Parity: on a generated workspace (``synth.tiled``, 512-d), ``cluster`` and
   ``dedup semantic`` with ``device="cuda"`` against ``device="cpu"`` on a copy: decisions
   compared row by row, and the time of each.
2. Embed throughput of the engine (decode on CPU threads, model on the GPU in batches) with
   open_clip ViT-B-32 and ViT-L-14 **at random weights** (open_clip's pretrained weights cannot
   be downloaded here): a speed figure only, never a quality one. Images come from the
   synthetic corpus (WebDataset shards); the model's forward alone is timed too.
"""

from __future__ import annotations

import argparse
import shutil
import time

import numpy as np
import torch
from _common import WORK, corpus

import pairsift
from pairsift import Workspace
from pairsift.models.openclip import OpenClipEncoder
from pairsift.stages import embed as embed_stage
from pairsift.synth.tiled import tiled_workspace


def parity(n: int) -> None:
    root = WORK / f"gpu-tiled-{n}"
    shutil.rmtree(root, ignore_errors=True)
    tiled_workspace(root / "cpu", n, part_size=50_000, dim=512, clusters=max(1, n // 2000))
    shutil.copytree(root / "cpu", root / "cuda")
    k = max(1, n // 2000)
    for device in ("cpu", "cuda"):
        ws = root / device
        start = time.perf_counter()
        pairsift.cluster(ws, k=k, niter=20, device=device, progress=False)
        clustered = time.perf_counter() - start
        start = time.perf_counter()
        s = pairsift.dedup_semantic(ws, eps=0.05, device=device, progress=False)
        deduped = time.perf_counter() - start
        print(f"{device}: cluster {clustered:.1f} s, dedup semantic {deduped:.1f} s, dropped "
              f"{s.dropped:,} of {n:,}", flush=True)
    a, b = (Workspace.open(root / d) for d in ("cpu", "cuda"))
    labels = [x.stage_decisions("dedup-semantic", ["uid", "verdict"]) for x in (a, b)]
    same = np.mean(np.array(labels[0].column("verdict").to_pylist()) ==
                   np.array(labels[1].column("verdict").to_pylist()))
    clusters = [x.signals("cluster", ["cluster"]).column("cluster").to_numpy() for x in (a, b)]
    print(f"cluster labels equal: {np.mean(clusters[0] == clusters[1]):.4%}; "
          f"dedup verdicts equal: {same:.4%}", flush=True)


def embed_throughput(n: int, arch: str, batch: int) -> None:
    source = corpus(n)
    ws = WORK / f"gpu-embed-{arch}-{n}"
    shutil.rmtree(ws, ignore_errors=True)
    pairsift.ingest(source, ws, progress=False)
    encoder = OpenClipEncoder(arch, None, "cuda")  # random weights: speed only
    embed_stage.load_encoder = lambda name, device: encoder
    samples = Workspace.open(ws).num_samples()
    start = time.perf_counter()
    pairsift.embed(ws, model=f"open_clip:{arch}/random", device="cuda", batch_size=batch,
                   threads=16, progress=False)
    seconds = time.perf_counter() - start
    pixels = torch.randn(batch, 3, 224, 224, device="cuda")
    encoder.embed_pixels(pixels)
    torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(10):
        encoder.embed_pixels(pixels)
    torch.cuda.synchronize()
    forward = 10 * batch / (time.perf_counter() - start)
    print(f"{arch} (random weights): engine {samples / seconds:,.0f} images/s end to end "
          f"({samples:,} images, batch {batch}); forward alone {forward:,.0f} images/s",
          flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n-tiled", type=int, default=200_000)
    parser.add_argument("--n-images", type=int, default=4000)
    parser.add_argument("--batch", type=int, default=256)
    args = parser.parse_args()
    print(torch.cuda.get_device_name(0), flush=True)
    parity(args.n_tiled)
    for arch in ("ViT-B-32", "ViT-L-14"):
        embed_throughput(args.n_images, arch, args.batch)


if __name__ == "__main__":
    main()
