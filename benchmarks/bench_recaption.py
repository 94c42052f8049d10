"""Synthetic captions on the synthetic corpus: what mixing keeps, judged by the generator's truth,
and how fast captioning runs.

    python benchmarks/bench_recaption.py --n 300 --seeds 0 1 2 --coca-images 8

For each seed, ``recaption --captioner labels`` (a new run: the seed is part of its id), then
``mix`` with ``raw_topk`` and ``raw_then_synthetic --filter-synthetic`` at the same top X:
images kept, how many images with a mismatched raw caption are kept with a synthetic caption,
and the share of kept pairs whose caption is correct; and the best any filter of the synthetic
captions could do (:func:`oracle_bound`). "Correct" is the generator's truth: the
caption names the image's photo (:func:`pairsift.synth.captions.names_photo`: of the corpus's
photo descriptions, that photo's shares the most content words with the caption). Throughput
is images/s of the whole recaption stage (decode, classifier, caption and CLIP-S text
encoding), model loading excluded. CoCa runs at random weights (``coca_ViT-L-14`` and
``coca_ViT-B-32`` architectures, no weights offline): a speed figure only, its captions are
noise. ``parrot spot`` is not run, so labels captions carry no spotted text here.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import time

import pyarrow.parquet as pq
import torch
from _common import WORK, corpus, machine

import pairsift
from pairsift import Workspace
from pairsift.io.images import decode_image
from pairsift.io.sources import ImageBytesReader
from pairsift.models import load_encoder
from pairsift.models.captioners import CocaCaptioner, Decoding, load_captioner
from pairsift.synth.captions import names_photo


def workspace(n: int) -> Workspace:
    root = corpus(n, layout="folder")
    ws = WORK / f"ws-recaption-{n}"
    shutil.rmtree(ws, ignore_errors=True)
    pairsift.ingest(root / "images", ws, captions=root / "captions.csv", name="synth",
                    progress=False)
    start = time.perf_counter()
    summary = pairsift.embed(ws, progress=False)
    print(f"embed (same machine, same load, for scale): "
          f"{summary.samples / (time.perf_counter() - start):.1f} images/s, model loading "
          "included")
    pairsift.score(ws, progress=False)
    return Workspace.open(ws)


def outcome(ws: Workspace, truth: dict[str, dict], **mix) -> dict[str, float]:
    pairsift.mix(ws.root, progress=False, **mix)
    ws = Workspace.open(ws.root)
    rows = [r for _, t in ws.iter_parts(["key", "caption"]) for r in t.to_pylist()]
    source = ws.signals("mix").column("caption_source").to_pylist()
    synthetic = ws.signals("recaption", ["synthetic_caption"]).column(
        "synthetic_caption").to_pylist()
    kept = correct = mismatched = rescued = 0
    for row, src, syn in zip(rows, source, synthetic, strict=True):
        photo = truth[row["key"]]
        mismatched += photo["mismatched"]
        if src is None:
            continue
        kept += 1
        caption = syn if src == "synthetic" else row["caption"]
        correct += names_photo(caption, photo["photo"])
        rescued += photo["mismatched"] and src == "synthetic"
    return {"images": kept, "correct": correct / kept, "mismatched": mismatched,
            "mismatched_rescued": rescued}


def oracle_bound(ws: Workspace, truth: dict[str, dict], top: float) -> dict[str, float]:
    """The best any filter of the synthetic captions could do after ``raw_topk --top``: keep
    every correct synthetic caption, and only as many wrong ones as needed to keep half of
    the mismatched-raw images. If even this share of correct pairs is below ``raw_topk``'s,
    no filter (``--filter-synthetic`` or any other) makes ``labels`` meet both goals."""
    pairsift.mix(ws.root, progress=False, strategy="raw_topk", top=top)
    ws = Workspace.open(ws.root)
    rows = [r for _, t in ws.iter_parts(["key", "caption"]) for r in t.to_pylist()]
    raw_kept = ws.signals("mix").column("caption_source").to_pylist()
    synthetic = ws.signals("recaption", ["synthetic_caption"]).column(
        "synthetic_caption").to_pylist()
    kept = correct = rescued_right = rescuable = mismatched = 0
    for row, src, syn in zip(rows, raw_kept, synthetic, strict=True):
        photo = truth[row["key"]]
        mismatched += photo["mismatched"]
        if src is not None:
            kept += 1
            correct += names_photo(row["caption"], photo["photo"])
        elif syn is not None:
            right = names_photo(syn, photo["photo"])
            kept, correct = kept + right, correct + right
            rescued_right += right and photo["mismatched"]
            rescuable += photo["mismatched"]
    wrong_needed = max(0, -(-mismatched // 2) - rescued_right)
    if wrong_needed > rescuable - rescued_right:
        return {"half_rescuable": False}
    kept += wrong_needed
    return {"half_rescuable": True, "images": kept, "correct": correct / kept,
            "synthetic_correct_rescued": rescued_right, "wrong_needed": wrong_needed}


def coca_speed(arch: str, ws: Workspace, images: int, batch: int) -> float:
    """Images/s of CoCa ``generate`` (top-p, 30 tokens) at random weights, with preprocessing."""
    import open_clip

    model, _, preprocess = open_clip.create_model_and_transforms(arch, pretrained=None)
    captioner = CocaCaptioner(f"open_clip:{arch}/random", model, preprocess)
    rows = [r for _, t in ws.iter_parts() for r in t.to_pylist()][:images]
    start = time.perf_counter()
    with ImageBytesReader(ws.image_columns()) as reader:
        pixels = [captioner.preprocess(decode_image(reader.read(r)).image) for r in rows]
    for i in range(0, len(pixels), batch):
        captioner.caption(pixels[i:i + batch], Decoding(), [None] * len(pixels[i:i + batch]),
                          list(range(i, i + len(pixels[i:i + batch]))))
    return len(pixels) / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--n", type=int, default=300)
    parser.add_argument("--top", type=float, default=0.5)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--coca-images", type=int, default=8)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"machine: {machine()}; torch threads {args.threads}")
    ws = workspace(args.n)
    truth = {r["key"]: r for r in pq.read_table(
        corpus(args.n, layout="folder") / "truth.parquet").to_pylist()}
    load_captioner("labels"), load_encoder("default")  # loading is not timed
    speeds = []
    for seed in args.seeds:
        start = time.perf_counter()
        summary = pairsift.recaption(ws.root, seed=seed, threads=args.threads, progress=False)
        speeds.append(summary.samples / (time.perf_counter() - start))
        raw = outcome(ws, truth, strategy="raw_topk", top=args.top)
        mixed = outcome(ws, truth, strategy="raw_then_synthetic", top=args.top,
                        filter_synthetic=True)
        bound = oracle_bound(ws, truth, args.top)
        print(f"seed {seed}: {summary.samples} images, labels {speeds[-1]:.1f} images/s\n"
              f"  raw_topk:            {raw}\n  raw_then_synthetic+f: {mixed}\n"
              f"  best possible filter: {bound}")
    print(f"labels images/s over {len(speeds)} runs: median {statistics.median(speeds):.1f}, "
          f"min {min(speeds):.1f}, max {max(speeds):.1f}")
    compared = pairsift.mix(ws.root, strategy="raw_topk", top=args.top, compare=True,
                            progress=False)
    for row in compared.compare:
        print(row)
    for arch in ("coca_ViT-B-32", "coca_ViT-L-14"):
        if args.coca_images:
            speed = coca_speed(arch, ws, args.coca_images, batch=4)
            print(f"{arch} at random weights (speed only): {speed:.2f} images/s")


if __name__ == "__main__":
    main()
