"""`pairsift embed` throughput as a ratio to the bare model forward on pre-decoded tensors.

    python benchmarks/bench_embed.py --n 2000

The bare figure runs only ``encoder.embed_pixels`` over batches of tensors prepared beforehand
(decode and preprocessing excluded), with the same batch size; a ratio of 1.0 means decoding is
fully hidden behind the model. Both exclude model loading and include caption encoding only in
the pipeline figure's own text pass, which is reported separately.
"""

from __future__ import annotations

import argparse
import shutil
import time

import torch
from _common import WORK, corpus, machine

from pairsift import Workspace, embed, ingest
from pairsift.io.sources import ImageBytesReader
from pairsift.models import load_encoder
from pairsift.stages.embed import embed_texts, prepare_image


def bare_forward(encoder, ws: Workspace, batch_size: int) -> tuple[float, float, int]:
    """Seconds for the model forward alone and for caption encoding alone."""
    tensors, captions = [], []
    with ImageBytesReader() as reader:
        for _, table in ws.iter_parts():
            for row in table.to_pylist():
                tensors.append(prepare_image(encoder, reader.read(row)))
                captions.append(row["caption"])
    start = time.perf_counter()
    for i in range(0, len(tensors), batch_size):
        encoder.embed_pixels(torch.stack(tensors[i:i + batch_size]))
    images = time.perf_counter() - start
    start = time.perf_counter()
    embed_texts(encoder, captions)
    return images, time.perf_counter() - start, len(tensors)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--n", type=int, default=2000)
    parser.add_argument("--model", default="default")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch-size", type=int, default=64)
    args = parser.parse_args()
    root = corpus(args.n)
    ws_dir = WORK / "ws-embed"
    shutil.rmtree(ws_dir, ignore_errors=True)
    ingest(root, ws_dir, progress=False)
    encoder = load_encoder(args.model, args.device)  # load once, outside both timings
    bare_images, bare_text, n = bare_forward(encoder, Workspace.open(ws_dir), args.batch_size)
    start = time.perf_counter()
    embed(ws_dir, model=args.model, device=args.device, batch_size=args.batch_size,
          progress=False)
    pipeline = time.perf_counter() - start
    bare = bare_images + bare_text
    print(f"| images | bare forward img/s | bare forward + captions s | pairsift embed s | "
          f"pairsift embed img/s | ratio | machine |\n|---|---|---|---|---|---|---|\n"
          f"| {n} | {n / bare_images:.1f} | {bare:.1f} | {pipeline:.1f} | {n / pipeline:.1f} | "
          f"{bare / pipeline:.2f} | {machine()}, {args.device} |")


if __name__ == "__main__":
    main()
