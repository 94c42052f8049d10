"""Parrot captions: spot text (map stage ``parrot``), relative scores after text removal
(``parrot_relative``), the three text filters, per-group rates and the encoder audit.

Spotting is the expensive step and runs once; CoTR, text area and the spotted words are stored
beside it, so the filters decide in seconds with any threshold.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch

from ..engine.local import (
    decode_error_row,
    default_threads,
    map_images,
    ordered_map,
    progress_bar,
    run_signal_stage,
)
from ..io.images import ImageDecodeError, decode_image
from ..io.sources import ImageBytesReader
from ..models import load_encoder
from ..models.base import ImageTextEncoder
from ..models.inpaint import Inpainter, load_inpainter
from ..models.ocr import Box, load_detector, load_spotter
from ..stages import parrot as algo
from ..stages.parrot_audit import STYLES, WORDS, AuditResult, audit_figure, sync_scores
from ..workspace import Workspace, WorkspaceError
from .decisions import FilterSummary, decision_table, record_decisions
from .score import SIGNAL as CLIP_SIGNAL

SIGNAL = "parrot"
RELATIVE = "parrot_relative"
PARROT_FILTER = "parrot_filter"
TEXT_FILTER = "text_dominated_filter"
SIMPLE_FIX_FILTER = "simple_fix_filter"
ROW_COLUMNS = ["uid", "key", "source", "container", "shard", "offset", "length", "caption"]
MAX_TEXT_AREA = 0.5  # pairsift's default: more than half of the image is text
SIMPLE_FIX_CLIP = 0.3  # the paper's threshold, on OpenAI ViT-B/32's cosine scale

_BOX = pa.list_(pa.int32(), 4)
SIGNAL_SCHEMA = pa.schema([
    ("uid", pa.string()),
    ("ocr_text", pa.list_(pa.string())),  # spotted words, reading order
    ("ocr_boxes", pa.list_(_BOX)),  # [x0, y0, x1, y1] per word
    ("ocr_conf", pa.list_(pa.float32())),
    ("ocr_co_emb", pa.list_(pa.bool_())),  # per word: part of the co-embedded text
    ("co_emb_words", pa.list_(pa.string())),  # caption tokens the image shows
    ("cotr", pa.float32()),  # NaN: no caption
    ("text_area", pa.float32()),  # share of the image under confidently read word boxes
    ("text_probe", pa.bool_()),  # has-text pass found text; null: pass not run
])
RELATIVE_COLUMNS = ("s0", "s_all", "s_co", "s_rand", "rsa", "rsc", "rs_rand", "rsa_diff",
                    "rsc_diff", "rs_rand_diff")


@dataclass
class SpotSummary:
    parts_done: int
    samples: int
    with_text: int
    parrot: int
    skipped_by_probe: int


@dataclass
class RelativeSummary:
    parts_done: int
    scored: int  # captioned images with spotted text
    mean_rsa: float
    mean_rsc: float
    mean_rs_rand: float


def parrot_spot(workspace: str | Path, *, spotter: str = "rapidocr", has_text_pass: bool = True,
                mode: str = "caption", fuzzy: float = 0.0, stopwords: bool = True,
                threads: int | None = None, progress: bool = True) -> SpotSummary:
    """Spot text in every image and compare it with the caption (signal ``parrot``).

    ``has_text_pass`` runs rapidocr's detector alone first and skips recognition where it
    finds nothing. CoTR options (docs/algorithms.md §4.2): ``mode`` caption|iou, ``fuzzy``
    normalised edit distance (0: exact), ``stopwords`` keeps function words from matching.
    """
    if mode not in algo.COTR_MODES:
        raise ValueError(f"unknown CoTR mode {mode!r}; choose one of {algo.COTR_MODES}")
    ws = Workspace.open(workspace)
    config = {"spotter": spotter, "has_text_pass": has_text_pass, "mode": mode,
              "fuzzy": fuzzy, "stopwords": stopwords,
              "text_area": {"min_confidence": algo.AREA_MIN_CONFIDENCE,
                            "large_word_share": algo.LARGE_WORD_SHARE,
                            "large_word_min_confidence": algo.LARGE_WORD_MIN_CONFIDENCE}}
    words = algo.STOPWORDS if stopwords else frozenset()
    reader = load_spotter(spotter)
    detector = load_detector() if has_text_pass else None

    def spot(data: bytes) -> tuple[list, bool | None, int, int]:
        image = decode_image(data).image
        return (*algo.spot_image(image, reader, detector), image.width, image.height)

    def compute(part: int, rows: pa.Table, advance) -> tuple[pa.Table, list[dict]]:
        records = rows.to_pylist()
        results = map_images(records, spot, image_columns=ws.image_columns(),
                             threads=threads or default_threads())
        out, errors = [], []
        for row, result in zip(records, results, strict=True):
            advance(1)
            if isinstance(result, ImageDecodeError):
                errors.append(decode_error_row(row, SIGNAL, result))
                out.append({"uid": row["uid"]})
                continue
            out.append(_signal_row(row, *result, mode=mode, fuzzy=fuzzy, stopwords=words))
        return pa.Table.from_pylist(out, SIGNAL_SCHEMA), errors

    done = run_signal_stage(ws, SIGNAL, config, compute, columns=ROW_COLUMNS, progress=progress)
    table = ws.signals(SIGNAL, ["ocr_text", "cotr", "text_probe"])
    n_words = _n_words(table)
    return SpotSummary(done, table.num_rows, int((n_words > 0).sum()),
                       int(algo.parrot_drop(_floats(table, "cotr")).sum()),
                       table.column("text_probe").to_pylist().count(False))


def _signal_row(row: dict, spotted: list, probe: bool | None, width: int, height: int, *,
                mode: str, fuzzy: float, stopwords: frozenset[str]) -> dict:
    texts = [s.text for s in spotted]
    matched = algo.co_embedded(row["caption"], texts, fuzzy=fuzzy, stopwords=stopwords)
    boxes = [list(s.box) for s in spotted]
    return {"uid": row["uid"], "ocr_text": texts, "ocr_boxes": boxes,
            "ocr_conf": [s.confidence for s in spotted],
            "ocr_co_emb": algo.co_embedded_mask(texts, set(matched.values())),
            "co_emb_words": list(matched),
            "cotr": algo.rate(row["caption"], texts, matched, mode),
            "text_area": algo.text_area(algo.area_boxes(spotted, width, height), width, height),
            "text_probe": probe}


def _floats(table: pa.Table, column: str) -> np.ndarray:
    return table.column(column).to_numpy(zero_copy_only=False).astype(np.float64)


def _n_words(table: pa.Table) -> np.ndarray:
    return np.array([len(w or []) for w in table.column("ocr_text").to_pylist()])


# -- relative scores -------------------------------------------------------------------------

def parrot_relative(workspace: str | Path, *, model: str | None = None, device: str = "cpu",
                    inpainter: str = "telea", radius: float = 3.0, seed: int = 0,
                    batch_size: int = 16, threads: int | None = None,
                    progress: bool = True) -> RelativeSummary:
    """RSA/RSC (docs/algorithms.md §4.3) for every captioned image with spotted text (signal
    ``parrot_relative``; others get NaN): the image is re-scored after inpainting all
    spotted words, only the co-embedded ones, and random boxes of the same sizes.

    All four scores come from one forward pass of the same preprocessing, so S0 is the
    model's score of the untouched image, not the stored (float16) one.
    """
    ws = Workspace.open(workspace)
    model = model or _embed_model(ws)
    config = {"model": model, "inpainter": inpainter, "radius": radius, "seed": seed,
              "parrot_run": ws.current_run(SIGNAL)}
    if config["parrot_run"] is None:
        raise WorkspaceError(f"{ws.root}: no spotted text yet; run `pairsift parrot spot`")
    encoder = load_encoder(model, device)
    filler = load_inpainter(inpainter, radius=radius)
    spots_run = config["parrot_run"]

    def compute(part: int, rows: pa.Table, advance) -> tuple[pa.Table, list[dict]]:
        spots = pq.read_table(ws.signal_path(SIGNAL, spots_run, part)).to_pylist()
        records = [{**r, **s} for r, s in zip(rows.to_pylist(), spots, strict=True)]
        todo = [i for i, r in enumerate(records) if r["caption"] and r["ocr_boxes"]]
        scores = np.full((len(records), 4), np.nan, np.float32)
        errors: list[dict] = []
        for start in range(0, len(todo), batch_size):
            chunk = todo[start:start + batch_size]
            scores[chunk] = _score_chunk([records[i] for i in chunk], encoder, filler, seed,
                                         ws, errors, threads or default_threads())
            advance(len(chunk))
        advance(len(records) - len(todo))
        return _relative_table(rows.column("uid"), scores), errors

    done = run_signal_stage(ws, RELATIVE, config, compute, columns=ROW_COLUMNS,
                            progress=progress)
    table = ws.signals(RELATIVE, ["s0", "rsa", "rsc", "rs_rand"])
    means = [algo.nanmean(_floats(table, c)) for c in ("rsa", "rsc", "rs_rand")]
    return RelativeSummary(done, int((~np.isnan(_floats(table, "s0"))).sum()), *means)


def _embed_model(ws: Workspace) -> str:
    try:
        return ws.run_config("embed")["model"]
    except WorkspaceError:
        return "default"


def _score_chunk(records: list[dict], encoder: ImageTextEncoder, filler: Inpainter, seed: int,
                 ws: Workspace, errors: list[dict], threads: int) -> np.ndarray:
    """S0, S_all, S_co, S_rand of each record (NaN rows for images that no longer decode)."""
    texts = encoder.encode_texts([r["caption"] for r in records])
    out = np.full((len(records), 4), np.nan, np.float32)
    tensors, owners = [], []
    for i, result in enumerate(_variants(records, encoder, filler, seed, ws, threads)):
        if isinstance(result, ImageDecodeError):
            errors.append(decode_error_row(records[i], RELATIVE, result))
            continue
        tensors += result
        owners += [i] * len(result)
    if tensors:
        joint = encoder.embed_pixels(torch.stack(tensors)).joint
        sims = np.einsum("ij,ij->i", joint, texts[owners])
        owner = np.array(owners)
        for i in np.unique(owner):
            out[i] = _four(sims[owner == i])
    return out


def _four(sims: np.ndarray) -> np.ndarray:
    """(S0, S_all, S_co, S_rand) from 3 variants (no co-embedded words: S_co = S0) or 4."""
    if len(sims) == 3:
        return np.array([sims[0], sims[1], sims[0], sims[2]], np.float32)
    return sims.astype(np.float32)


def _variants(records: list[dict], encoder: ImageTextEncoder, filler: Inpainter, seed: int,
              ws: Workspace, threads: int) -> Iterator[list[torch.Tensor] | ImageDecodeError]:
    """Per record, in order: the preprocessed original and its inpainted variants."""

    def make(item: tuple[dict, bytes]) -> list[torch.Tensor] | ImageDecodeError:
        record, data = item
        try:
            image = decode_image(data).image
        except ImageDecodeError as exc:
            return exc
        boxes: list[Box] = [tuple(b) for b in record["ocr_boxes"]]
        co = [b for b, c in zip(boxes, record["ocr_co_emb"], strict=True) if c]
        rng = np.random.default_rng([seed, int(record["uid"][:16], 16)])
        images = [image, filler.inpaint(image, boxes)]
        if co:
            images.append(filler.inpaint(image, co))
        images.append(filler.inpaint(image, algo.random_boxes(boxes, *image.size, rng)))
        return [encoder.preprocess(im) for im in images]

    with ImageBytesReader(ws.image_columns()) as reader:
        yield from ordered_map(make, ((r, reader.read(r)) for r in records), threads)


def _relative_table(uids: pa.ChunkedArray, scores: np.ndarray) -> pa.Table:
    ratios = algo.relative_scores(*scores.T)
    columns = dict(zip(("s0", "s_all", "s_co", "s_rand"), scores.T, strict=True)) | ratios
    return pa.table({"uid": uids, **{c: pa.array(columns[c], pa.float32())
                                     for c in RELATIVE_COLUMNS}})


# -- filters ---------------------------------------------------------------------------------

def _spots(ws: Workspace) -> pa.Table:
    return ws.signals(SIGNAL, ["uid", "ocr_text", "co_emb_words", "cotr", "text_area"])


def _round(x: float) -> float | None:
    return None if math.isnan(x) else round(float(x), 6)


def filter_parrot(workspace: str | Path, *, cotr_threshold: float = 0.0) -> FilterSummary:
    """Drop parrot captions: CoTR > ``cotr_threshold`` (0: any co-embedded word)."""
    ws = Workspace.open(workspace)
    table = _spots(ws)
    cotr = _floats(table, "cotr")
    words = table.column("co_emb_words").to_pylist()
    config = {"cotr_threshold": cotr_threshold, "parrot_run": ws.current_run(SIGNAL)}
    evidence = lambda i: {"words": words[i], "cotr": _round(cotr[i]),  # noqa: E731
                          "threshold": cotr_threshold}
    return record_decisions(ws, PARROT_FILTER, config, decision_table(
        PARROT_FILTER, table.column("uid").to_pylist(), algo.parrot_drop(cotr, cotr_threshold),
        "parrot_caption", evidence, config))


def filter_text_dominated(workspace: str | Path, *,
                          max_text_area: float = MAX_TEXT_AREA) -> FilterSummary:
    """Drop images whose spotted words cover more than ``max_text_area`` of the image."""
    ws = Workspace.open(workspace)
    table = _spots(ws)
    area = np.nan_to_num(_floats(table, "text_area"))
    words = table.column("ocr_text").to_pylist()
    config = {"max_text_area": max_text_area, "parrot_run": ws.current_run(SIGNAL)}
    evidence = lambda i: {"words": words[i], "text_area": _round(area[i]),  # noqa: E731
                          "max_text_area": max_text_area}
    return record_decisions(ws, TEXT_FILTER, config, decision_table(
        TEXT_FILTER, table.column("uid").to_pylist(), algo.text_dominated_drop(area, max_text_area),
        "text_dominated", evidence, config))


def filter_simple_fix(workspace: str | Path, *,
                      clip_threshold: float = SIMPLE_FIX_CLIP) -> FilterSummary:
    """The paper's recipe: keep only images with no spotted text AND CLIP score > threshold.

    The paper also required a LAION aesthetics score > 4.5; pairsift has no aesthetics
    predictor, so that clause is left to a separate filter.
    """
    ws = Workspace.open(workspace)
    table = _spots(ws)
    clip = _clip_scores(ws, table.column("uid"))
    n_words = _n_words(table)
    words = table.column("ocr_text").to_pylist()
    config = {"clip_threshold": clip_threshold, "parrot_run": ws.current_run(SIGNAL),
              "scores": ws.current_run(CLIP_SIGNAL)}
    evidence = lambda i: {"words": words[i] or [], "clip_score": _round(clip[i]),  # noqa: E731
                          "threshold": clip_threshold}
    keep = algo.simple_fix_keep(n_words, clip, clip_threshold)
    return record_decisions(ws, SIMPLE_FIX_FILTER, config, decision_table(
        SIMPLE_FIX_FILTER, table.column("uid").to_pylist(), ~keep, "simple_fix", evidence,
        config))


def _clip_scores(ws: Workspace, uids: pa.ChunkedArray) -> np.ndarray:
    """CLIP scores aligned with ``uids`` (both signals are stored part by part, in order)."""
    try:
        table = ws.signals(CLIP_SIGNAL, ["uid", CLIP_SIGNAL])
    except WorkspaceError:
        raise WorkspaceError(f"{ws.root}: no CLIP scores; run `pairsift score` first") from None
    if not table.column("uid").equals(uids):
        raise WorkspaceError("clip_score and parrot cover different samples; re-run both")
    return _floats(table, CLIP_SIGNAL)


# -- rates and audit -------------------------------------------------------------------------

def parrot_rates(workspace: str | Path, *, by: str = "source",
                 cotr_threshold: float = 0.0) -> list[dict]:
    """Text and parrot-caption rates per source or per cluster (signal ``cluster``)."""
    ws = Workspace.open(workspace)
    table = _spots(ws)
    if by == "source":
        groups = pa.concat_tables(t for _, t in ws.iter_parts(["source"])).column("source")
    elif by == "cluster":
        clusters = ws.signals("cluster", ["uid", "cluster"])
        if not clusters.column("uid").equals(table.column("uid")):
            raise WorkspaceError("cluster and parrot cover different samples; re-run both")
        groups = clusters.column("cluster")
    else:
        raise ValueError(f"rates are by 'source' or 'cluster', not {by!r}")
    return algo.group_rates(groups.to_pylist(), _n_words(table), _floats(table, "cotr"),
                            cotr_threshold)


def parrot_audit(*, model: str = "default", device: str = "cpu", out: str | Path | None = None,
                 words: list[str] | None = None, progress: bool = True) -> AuditResult:
    """The synthetic text benchmark (docs/algorithms.md §4.1) for encoder ``model``; with
    ``out``, writes ``parrot_audit.json`` (numbers) and ``parrot_audit.png`` (plot) there."""
    words = list(dict.fromkeys(words or WORDS))
    # The bar starts before the model loads, which takes most of a short audit's time.
    with progress_bar("parrot audit", len(words) * len(STYLES), unit="images",
                      enabled=progress) as advance:
        result = sync_scores(load_encoder(model, device), words, advance=advance)
    if out is not None:
        folder = Path(out)
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "parrot_audit.json").write_text(json.dumps(result.summary(), indent=1))
        audit_figure(result).savefig(folder / "parrot_audit.png", dpi=120)
    return result
