"""Embed: every part's images and captions, batched, threaded decoding, resumable per part."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import torch

from ..engine.local import decode_error_row, default_threads, map_images, progress_bar
from ..io.images import ImageDecodeError
from ..models import load_encoder, model_slug
from ..models.base import ImageTextEncoder
from ..stages.embed import embed_texts, prepare_image
from ..workspace import ERROR_SCHEMA, Workspace

ROW_COLUMNS = ["uid", "key", "source", "container", "shard", "offset", "length", "caption"]


@dataclass
class EmbedSummary:
    model: str
    parts_done: int
    parts_skipped: int
    samples: int
    failed: int


def spaces_of(encoder: ImageTextEncoder) -> list[str]:
    return ["image", "text"] + (["visual"] if encoder.visual_dim else [])


def embed(
    workspace: str | Path,
    *,
    model: str = "default",
    device: str = "cpu",
    batch_size: int = 64,
    threads: int | None = None,
    progress: bool = True,
) -> EmbedSummary:
    """Embed images (joint + visual space) and captions of every part not yet embedded.

    >>> from pairsift import embed  # doctest: +SKIP
    >>> embed("ws", model="open_clip:ViT-B-32/laion2b_s34b_b79k", device="cuda")  # doctest: +SKIP
    """
    ws = Workspace.open(workspace)
    encoder = load_encoder(model, device)
    slug, spaces = model_slug(model), spaces_of(encoder)
    ws.manifest["models"][slug] = {"name": model, "dim": encoder.dim,
                                   "visual_dim": encoder.visual_dim}
    run = ws.start_run("embed", {"model": model})
    todo = [p for p in ws.part_ids() if not ws.has_embeddings(slug, spaces, p)]
    total = sum(ws.manifest["parts"][str(p)]["rows"] for p in todo)
    summary = EmbedSummary(model, 0, len(ws.part_ids()) - len(todo), 0, 0)
    with progress_bar(f"embed ({model})", total, enabled=progress) as advance:
        for part in todo:
            rows = ws.read_part(part, ROW_COLUMNS)
            arrays, errors = embed_part(encoder, rows, batch_size, threads or default_threads(),
                                        ws.image_columns(), advance)
            ws.write_errors("embed", part, errors)
            ws.write_embeddings(slug, arrays, part)
            summary.parts_done += 1
            summary.samples += rows.num_rows
            summary.failed += errors.num_rows
    ws.finish_run("embed", run, {"parts": len(ws.part_ids())})
    return summary


def embed_part(encoder: ImageTextEncoder, rows: pa.Table, batch_size: int, threads: int,
               image_columns: dict[str, str | None],
               advance: Callable[[int], None]) -> tuple[dict[str, np.ndarray], pa.Table]:
    """Embeddings of one part (aligned with its rows) and the samples that failed to decode."""
    n = rows.num_rows
    joint = np.zeros((n, encoder.dim), np.float32)
    visual = np.zeros((n, encoder.visual_dim), np.float32) if encoder.visual_dim else None
    records = rows.to_pylist()
    errors: list[dict] = []
    prepared = map_images(records, lambda data: prepare_image(encoder, data),
                          image_columns=image_columns, threads=threads, window=batch_size * 2)
    for index, pixels in _batches(prepared, batch_size, records, errors):
        out = encoder.embed_pixels(torch.stack(pixels))
        joint[index] = out.joint
        if visual is not None:
            visual[index] = out.visual
        advance(len(index))
    advance(len(errors))
    arrays = {"image": joint, "text": embed_texts(encoder, rows.column("caption").to_pylist())}
    if visual is not None:
        arrays["visual"] = visual
    return arrays, pa.Table.from_pylist(errors, ERROR_SCHEMA)


def _batches(prepared: Iterator, batch_size: int, records: list[dict],
             errors: list[dict]) -> Iterator[tuple[list[int], list[torch.Tensor]]]:
    """Group decoded tensors into batches; decode failures become error rows (zero vectors)."""
    index: list[int] = []
    pixels: list[torch.Tensor] = []
    for i, item in enumerate(prepared):
        if isinstance(item, ImageDecodeError):
            errors.append(decode_error_row(records[i], "embed", item))
            continue
        index.append(i)
        pixels.append(item)
        if len(index) == batch_size:
            yield index, pixels
            index, pixels = [], []
    if index:
        yield index, pixels
