"""Exact and perceptual dedup: the ``hashes`` map stage, then one decision per sample.

Kept member of a duplicate group: the highest CLIP score when the workspace has scores, then
the lowest uid (``stages.hashdedup.exact_duplicates``).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa

from ..engine.local import decode_error_row, default_threads, map_images, run_signal_stage
from ..io.images import ImageDecodeError, decode_image
from ..stages.hashdedup import (
    DHASH_MAX_DISTANCE,
    PHASH_MAX_DISTANCE,
    exact_duplicates,
    image_hashes,
    near_duplicates,
    perceptual_pairs,
)
from ..workspace import Workspace
from .decisions import FilterSummary, decision_table, record_decisions

HASHES = "hashes"
EXACT = "exact_dedup"
PERCEPTUAL = "perceptual_dedup"
ROW_COLUMNS = ["uid", "key", "source", "container", "shard", "offset", "length"]


def compute_hashes(ws: Workspace, *, threads: int | None = None, progress: bool = True) -> None:
    """Pixel sha256, pHash and dHash of every image (skips parts already hashed)."""

    def compute(part: int, rows: pa.Table, advance) -> tuple[pa.Table, list[dict]]:
        records = rows.to_pylist()
        hashed = map_images(records, lambda data: image_hashes(decode_image(data).image),
                            image_columns=ws.image_columns(), threads=threads or default_threads())
        columns: dict[str, list] = {"pixel_sha256": [], "phash": [], "dhash": []}
        errors = []
        for row, h in zip(records, hashed, strict=True):
            advance(1)
            if isinstance(h, ImageDecodeError):
                errors.append(decode_error_row(row, HASHES, h))
                h = None
            for name in columns:
                columns[name].append(getattr(h, name) if h else None)
        return pa.table({"uid": rows.column("uid"),
                         "pixel_sha256": pa.array(columns["pixel_sha256"], pa.string()),
                         "phash": pa.array(columns["phash"], pa.int64()),
                         "dhash": pa.array(columns["dhash"], pa.int64())}), errors

    run_signal_stage(ws, HASHES, {"hash_size": 8}, compute, columns=ROW_COLUMNS,
                     progress=progress)


def _samples(ws: Workspace) -> pa.Table:
    """uid, sha256, hashes and (when scored) clip_score of every sample, sorted by uid."""
    table = pa.concat_tables(t for _, t in ws.iter_parts(["uid", "sha256"]))
    hashes = ws.signals(HASHES)
    for name in ("pixel_sha256", "phash", "dhash"):
        table = table.append_column(name, hashes.column(name))
    if ws.current_run("clip_score"):
        table = table.append_column("clip_score", ws.signals("clip_score").column("clip_score"))
    return table.sort_by("uid")


def _priority(table: pa.Table) -> np.ndarray | None:
    if "clip_score" not in table.column_names:
        return None
    return table.column("clip_score").to_numpy(zero_copy_only=False).astype(np.float32)


def dedup_exact(workspace: str | Path, *, threads: int | None = None,
                progress: bool = True) -> FilterSummary:
    """Drop byte-identical and pixel-identical copies, keeping one per group.

    Pixel identity covers byte identity (equal bytes decode to equal pixels); the evidence
    says which one matched. Undecodable pixels fall back to the file's sha256.
    """
    ws = Workspace.open(workspace)
    compute_hashes(ws, threads=threads, progress=progress)
    table = _samples(ws)
    uids = table.column("uid").to_pylist()
    sha = table.column("sha256").to_pylist()
    keys = [p or f"bytes:{s}" for p, s in zip(table.column("pixel_sha256").to_pylist(), sha,
                                              strict=True)]
    kept = exact_duplicates(keys, _priority(table))
    config = {"keep": "highest clip_score, then lowest uid"}
    decisions = decision_table(
        EXACT, uids, kept != np.arange(len(uids)), "exact_duplicate_of",
        lambda i: {"of": uids[kept[i]], "match": "bytes" if sha[kept[i]] == sha[i] else "pixels"},
        config)
    return record_decisions(ws, EXACT, config, decisions)


def dedup_perceptual(workspace: str | Path, *, max_phash: int = PHASH_MAX_DISTANCE,
                     max_dhash: int = DHASH_MAX_DISTANCE, threads: int | None = None,
                     progress: bool = True) -> FilterSummary:
    """Drop near-duplicates: pHash within ``max_phash`` and dHash within ``max_dhash`` bits.

    Groups are connected components of the near-pair graph, found with an exact multi-index
    Hamming search (no N×N comparison); one member per group is kept.
    """
    ws = Workspace.open(workspace)
    compute_hashes(ws, threads=threads, progress=progress)
    table = _samples(ws)
    valid = np.asarray(table.column("phash").is_valid())
    index = np.flatnonzero(valid)
    phash = table.column("phash").to_numpy(zero_copy_only=False)[index].astype(np.int64)
    dhash = table.column("dhash").to_numpy(zero_copy_only=False)[index].astype(np.int64)
    priority = _priority(table)
    sub_kept, distance = near_duplicates(len(index), perceptual_pairs(phash, dhash, max_phash,
                                                                      max_dhash),
                                         None if priority is None else priority[index])
    kept = np.arange(table.num_rows)
    kept[index] = index[sub_kept]
    dist = np.zeros(table.num_rows, np.int32)
    dist[index] = distance
    uids = table.column("uid").to_pylist()
    config = {"max_phash": max_phash, "max_dhash": max_dhash}
    decisions = decision_table(
        PERCEPTUAL, uids, kept != np.arange(len(uids)), "near_duplicate_of",
        lambda i: {"of": uids[kept[i]], "phash_distance": None if dist[i] < 0 else int(dist[i])},
        config)
    return record_decisions(ws, PERCEPTUAL, config, decisions)
