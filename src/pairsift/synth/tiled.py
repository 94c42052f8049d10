"""Workspaces of any size without images: for scale benchmarks and memory tests.

Rows, embeddings and hashes are generated, not computed: every part holds ``part_size``
samples whose image and caption embeddings are drawn around ``clusters`` random directions,
with a share of exact copies (same file hash, pixel hash and vectors as another sample of the
part) and of near copies (a vector close to another's). The workspace records a finished
``embed`` and ``hashes`` run, so every stage that reads embeddings or hashes — score, filters,
dedup, cluster, export, report — runs on it for real. Nothing can decode its images: they do
not exist.

>>> import tempfile
>>> from pairsift.synth.tiled import tiled_workspace
>>> ws = tiled_workspace(tempfile.mkdtemp() + "/ws", 2_000, part_size=500, dim=16)
>>> ws.num_samples(), len(ws.part_ids())
(2000, 4)
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa

from ..models import model_slug
from ..uids import UID_DTYPE, hex_strings, uid_strings
from ..workspace import PART_SCHEMA, Workspace, write_table

MODEL = "open_clip:ViT-B-32/laion2b_s34b_b79k"  # what the vectors stand in for (512-d)


def tiled_workspace(root: str | Path, n: int, *, part_size: int = 100_000, dim: int = 512,
                    clusters: int = 1000, copies: float = 0.05, near: float = 0.05,
                    noise: float = 0.6, seed: int = 0) -> Workspace:
    """Write ``n`` generated samples as a workspace at ``root`` (which must not exist)."""
    ws = Workspace.open(root, create=True)
    rng = np.random.default_rng(seed)
    centres = _unit(rng.standard_normal((clusters, dim), np.float32))
    slug = model_slug(MODEL)
    hashes_run = _run_id("hashes", {})
    parts = {}
    for part, start in enumerate(range(0, n, part_size)):
        size = min(part_size, n - start)
        rows, vectors, hashes = _part(rng, centres, size, copies, near, noise)
        info = ws.write_part(part, rows, pa.table({}), "tiled", f"tile-{part:05d}")
        parts[part] = info
        ws.write_embeddings(slug, {"image": vectors, "text": _unit(
            vectors + 0.8 * rng.standard_normal(vectors.shape, np.float32))}, part)
        write_table(ws.signal_path("hashes", hashes_run, part), hashes.add_column(
            0, "uid", rows.column("uid")))
    ws.commit_parts("tiled", {"kind": "generated", "paths": [], "options": {}, "units": {},
                              "complete": True, "ignored_files": 0}, parts, complete=True)
    _record(ws, "embed", {"model": MODEL},
            models={slug: {"name": MODEL, "dim": dim, "visual_dim": None}})
    _record(ws, "hashes", {})
    return ws


def _part(rng: np.random.Generator, centres: np.ndarray, size: int, copies: float,
          near: float, noise: float) -> tuple[pa.Table, np.ndarray, pa.Table]:
    """One part: ``copies`` of the rows repeat an earlier row exactly (hashes and vectors),
    ``near`` of them its vector plus a little noise (cosine about 0.98)."""
    codes = np.frombuffer(rng.bytes(16 * size), UID_DTYPE)
    sha = np.frombuffer(rng.bytes(32 * size), np.uint8).reshape(size, 32).copy()
    phash = rng.integers(-2**63, 2**63 - 1, size, dtype=np.int64)
    vectors = centres[rng.integers(0, len(centres), size)] + noise / np.sqrt(
        centres.shape[1]) * rng.standard_normal((size, centres.shape[1]), np.float32)
    copied = np.flatnonzero(rng.random(size) < copies)
    source = rng.integers(0, size, len(copied))
    sha[copied], phash[copied], vectors[copied] = sha[source], phash[source], vectors[source]
    close = np.flatnonzero(rng.random(size) < near)
    vectors[close] = _unit(vectors[rng.integers(0, size, len(close))]) + 0.2 / np.sqrt(
        centres.shape[1]) * rng.standard_normal((len(close), centres.shape[1]), np.float32)
    hex_sha = hex_strings(sha)
    uids = uid_strings(codes)
    rows = pa.table({
        "uid": uids, "key": uids, "source": pa.array(["tiled"] * size),
        "container": pa.array(["file"] * size), "shard": pa.array(["/nonexistent"] * size),
        "offset": np.zeros(size, np.int64), "length": np.zeros(size, np.int64),
        "caption": pa.nulls(size, pa.string()), "caption_issue": pa.nulls(size, pa.string()),
        "width": rng.integers(64, 2048, size).astype(np.int32),
        "height": rng.integers(64, 2048, size).astype(np.int32),
        "format": pa.array(["JPEG"] * size), "sha256": hex_sha,
        "meta": pa.nulls(size, pa.string())}, schema=PART_SCHEMA)
    hashes = pa.table({"pixel_sha256": hex_sha, "phash": phash,
                       "dhash": phash ^ rng.integers(0, 4, size, dtype=np.int64)})
    return rows, _unit(vectors), hashes


def _unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def _run_id(stage: str, config: dict) -> str:
    """The run id the map stage with this config computes (a map stage has no inputs)."""
    from ..engine.runner import run_id
    from ..stage import get_stage

    return run_id(get_stage(stage)(**config), {})


def _record(ws: Workspace, stage: str, config: dict, *, models: dict | None = None) -> None:
    """A finished run of a map stage, as if it had computed what was generated."""
    run = _run_id(stage, config)
    ws.begin_run(stage, run, {"kind": "map", "config": config, "options": config,
                              "inputs": {}})
    ws.finish_run(stage, run, {"generated": True}, models=models)
