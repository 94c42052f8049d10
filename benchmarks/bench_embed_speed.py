"""The default model's speed: PyTorch eager (before) against ONNX Runtime (after).

    python benchmarks/bench_embed_speed.py --n 500 --repeats 3 --before 22e3cbc

1. Bare forward, in this process, on the corpus's images preprocessed beforehand and on its
   captions: GFLOP/s per network (FLOPs counted by ``torch.utils.flop_counter`` on the eager
   graphs), eager vs ONNX Runtime, and the cosine of every image's and caption's embeddings
   between the two (the fast path must hold cosine >= 0.999 against fp32 eager).
2. Where an image's time goes, one thread: JPEG decode, the old preprocessing (torchvision
   ``to_tensor`` + ``normalize``) and the new one (numpy).
3. End to end, each run in a fresh process on a fresh copy of one ingested workspace: model
   load (imports included, warm cache) and ``pairsift embed`` images/s. "before" runs the
   source tree of commit ``--before`` (extracted with ``git archive``), "after" this tree, and
   "after, PAIRSIFT_ONNX=0" this tree's fallback; runs alternate so that load from other work
   on the machine hits all of them alike. One more run of each in an empty cache gives the
   first-ever load (class-prompt embeddings, and after: the ONNX exports).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torchvision.transforms.functional as TF
from _common import WORK, corpus, machine
from torch.utils.flop_counter import FlopCounterMode

from pairsift import Workspace, ingest
from pairsift.io.images import decode_image
from pairsift.io.sources import ImageBytesReader
from pairsift.models.default import (
    IMAGE_SIZE,
    PIXEL_MEAN,
    PIXEL_STD,
    TEXT_BATCH,
    Classifier,
    DefaultEncoder,
    OnnxImageNet,
    OnnxTextNet,
    TokenEmbeddings,
    TorchImageNet,
    TorchTextNet,
    _load_classifier,
    _load_text_model,
)
from pairsift.stages.embed import DRAFT_SIZE

SRC = Path(__file__).resolve().parents[1] / "src"
CHILD = """
import json, sys, time
start = time.perf_counter()
from pairsift import embed
from pairsift.models import load_encoder
load_encoder("default")
loaded = time.perf_counter() - start
start = time.perf_counter()
embed(sys.argv[1], batch_size=64, progress=False)
print(json.dumps({"load_s": loaded, "embed_s": time.perf_counter() - start}))
"""


def read_corpus(ws: Workspace) -> tuple[list[bytes], list[str]]:
    images, captions = [], []
    with ImageBytesReader() as reader:
        for _, table in ws.iter_parts():
            for row in table.to_pylist():
                images.append(reader.read(row))
                captions.append(row["caption"] or "")
    return images, captions


def timed(fn, *args) -> tuple[float, object]:
    start = time.perf_counter()
    out = fn(*args)
    return time.perf_counter() - start, out


def image_forward(net, pixels: torch.Tensor, batch: int = 64) -> tuple[float, np.ndarray]:
    """Seconds for the whole set in batches, and the pooled features."""
    net(pixels[:batch])  # warm-up: first-call allocations and kernel choices
    start, pooled = time.perf_counter(), []
    for i in range(0, len(pixels), batch):
        pooled.append(net(pixels[i:i + batch])[0].numpy())
    return time.perf_counter() - start, np.concatenate(pooled)


def image_flops() -> float:
    """FLOPs of one image through the classifier (2 per multiply-add)."""
    with FlopCounterMode(display=False) as counter, torch.inference_mode():
        Classifier(_load_classifier())(torch.zeros(1, 3, IMAGE_SIZE, IMAGE_SIZE))
    return counter.get_total_flops()


def text_flops(net: OnnxTextNet, captions: list[str]) -> float:
    """FLOPs of MiniLM over the captions in the padded batches the ONNX path runs."""
    model = TokenEmbeddings(_load_text_model("cpu")[0].auto_model).eval()
    order = np.argsort([len(t) for t in captions], kind="stable")
    total = 0.0
    for start in range(0, len(order), TEXT_BATCH):
        rows = order[start:start + TEXT_BATCH]
        encodings = net.tokenizer.encode_batch([captions[i] for i in rows])
        ids = torch.tensor([e.ids for e in encodings])
        with FlopCounterMode(display=False) as counter, torch.inference_mode():
            model(ids, torch.tensor([e.attention_mask for e in encodings]))
        total += counter.get_total_flops()
    return total


def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)


def old_preprocess(image) -> torch.Tensor:
    """The preprocessing before this change: torchvision resize, crop, to_tensor, normalize."""
    image = TF.resize(image, IMAGE_SIZE, interpolation=TF.InterpolationMode.BICUBIC)
    return TF.normalize(TF.to_tensor(TF.center_crop(image, IMAGE_SIZE)), PIXEL_MEAN, PIXEL_STD)


def bare(ws: Workspace) -> None:
    datas, captions = read_corpus(ws)
    encoder = DefaultEncoder()  # ONNX Runtime
    n = len(datas)
    t_decode, images = timed(lambda: [decode_image(d, draft=DRAFT_SIZE).image.convert("RGB")
                                      for d in datas])
    t_old, _ = timed(lambda: [old_preprocess(im) for im in images])
    t_new, tensors = timed(lambda: [encoder.preprocess(im) for im in images])
    print(f"\n{n} images, one thread, ms per image: decode {1e3 * t_decode / n:.2f}, "
          f"preprocess torchvision {1e3 * t_old / n:.2f}, numpy {1e3 * t_new / n:.2f}")
    pixels = torch.stack(tensors)
    gflop_image = image_flops() / 1e9
    eager_image, onnx_image = TorchImageNet("cpu"), OnnxImageNet()
    rows = []
    t_eager, pooled_eager = image_forward(eager_image, pixels)
    t_onnx, pooled_onnx = image_forward(onnx_image, pixels)
    eager_text, onnx_text = TorchTextNet("cpu"), OnnxTextNet()
    eager_text(captions[:TEXT_BATCH]), onnx_text(captions[:TEXT_BATCH])  # warm-up
    tt_eager, text_eager = timed(eager_text, captions)
    tt_onnx, text_onnx = timed(onnx_text, captions)
    gflop_text = text_flops(onnx_text, captions) / 1e9
    for net, work, unit, count, t_before, t_after in (
            ("image (EfficientNet-Lite0)", gflop_image * n, "img", n, t_eager, t_onnx),
            ("text (MiniLM-L6)", gflop_text, "captions", len(captions), tt_eager, tt_onnx)):
        rows.append(f"| {net} | {work / count:.3f} | {work / t_before:.1f} | "
                    f"{count / t_before:.1f} {unit}/s | {work / t_after:.1f} | "
                    f"{count / t_after:.1f} {unit}/s | {t_before / t_after:.1f}x |")
    print("\n| network | GFLOP per item | eager GFLOP/s | eager rate | ONNX Runtime GFLOP/s | "
          "ONNX Runtime rate | speed-up |\n|---|---|---|---|---|---|---|\n" + "\n".join(rows))
    eager = DefaultEncoder.__new__(DefaultEncoder)  # the same ConSE head on eager outputs
    eager.device, eager._image, eager._class_text = "cpu", eager_image, encoder._class_text
    joint = cosines(eager.embed_pixels(pixels).joint, encoder.embed_pixels(pixels).joint)
    agreement = {"visual": cosines(pooled_eager, pooled_onnx), "joint": joint,
                 "text": cosines(text_eager, text_onnx)}
    print("\ncosine ONNX Runtime vs fp32 eager: " + ", ".join(
        f"{k} min {v.min():.7f} mean {v.mean():.7f}" for k, v in agreement.items()))
    flipped = np.mean(pooled_eager.astype(np.float16) != pooled_onnx.astype(np.float16))
    print(f"visual values whose float16 (as stored) differs: {100 * flipped:.2f} %")


def child_run(src: Path, template: Path, env: dict[str, str]) -> dict[str, float]:
    with tempfile.TemporaryDirectory(dir=WORK) as tmp:
        ws = Path(tmp) / "ws"
        shutil.copytree(template, ws)
        out = subprocess.run([sys.executable, "-c", CHILD, str(ws)], check=True, text=True,
                             capture_output=True, env={**os.environ, **env,
                                                       "PYTHONPATH": str(src)})
    return json.loads(out.stdout.strip().splitlines()[-1])


def end_to_end(template: Path, n: int, before: Path, repeats: int) -> None:
    variants = {"before": (before, {}), "after": (SRC, {}),
                "after, PAIRSIFT_ONNX=0": (SRC, {"PAIRSIFT_ONNX": "0"})}
    for src, env in variants.values():  # fill the caches: the timed runs are warm
        child_run(src, template, env)
    runs: dict[str, list[dict[str, float]]] = {name: [] for name in variants}
    for _ in range(repeats):
        for name, (src, env) in variants.items():
            runs[name].append(child_run(src, template, env))
    cold = {}
    for name, (src, env) in variants.items():
        with tempfile.TemporaryDirectory(dir=WORK) as cache:
            cold[name] = child_run(src, template, {**env, "PAIRSIFT_CACHE": cache})["load_s"]
    print(f"\n| code | embed img/s, median (min–max) of {repeats} | load s, warm cache, median "
          "(min–max) | load s, empty cache |\n|---|---|---|---|")
    for name, results in runs.items():
        rates = [n / r["embed_s"] for r in results]
        loads = [r["load_s"] for r in results]
        print(f"| {name} | {statistics.median(rates):.1f} ({min(rates):.1f}–{max(rates):.1f}) | "
              f"{statistics.median(loads):.1f} ({min(loads):.1f}–{max(loads):.1f}) | "
              f"{cold[name]:.1f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--n", type=int, default=500, help="synthetic samples")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--before", default="22e3cbc", help="commit of the 'before' code")
    parser.add_argument("--skip-bare", action="store_true")
    args = parser.parse_args()
    template = WORK / f"ws-embed-speed-{args.n}"
    if not template.exists():
        ingest(corpus(args.n), template, progress=False)
    before = WORK / f"src-{args.before}"
    if not before.exists():
        archive = subprocess.run(["git", "archive", args.before, "src"], cwd=SRC.parent, check=True,
                                 capture_output=True).stdout
        _extract(archive, before)
    n = sum(t.num_rows for _, t in Workspace.open(template).iter_parts())
    print(f"{machine()}; nproc {os.cpu_count()}; load average at start "
          f"{os.getloadavg()[0]:.1f}; torch threads {torch.get_num_threads()}")
    if not args.skip_bare:
        bare(Workspace.open(template))
    end_to_end(template, n, before, args.repeats)
    print(f"\nload average at the end {os.getloadavg()[0]:.1f}")


def _extract(archive: bytes, to: Path) -> None:
    with tempfile.TemporaryDirectory(dir=WORK) as tmp:
        subprocess.run(["tar", "-x", "-C", tmp], input=archive, check=True)
        shutil.move(Path(tmp) / "src", to)


if __name__ == "__main__":
    main()
