"""One keep policy for every dedup stage.

Which copy of a duplicate group survives: the highest CLIP score (when the workspace is scored;
no score ranks last), then the most pixels, then the lowest uid — so a JPEG-q30 thumbnail never
beats its original, and the choice does not depend on the order rows were ingested in.

Dedup stages run in a fixed precedence (exact, perceptual, then semantic or fair). Each one only
sees the samples that the stages before it kept, so it can never drop the last copy of an image
whose other copies an earlier stage dropped (exact keeps A and drops B; SemDeDup then never
sees B, so it cannot drop A "as a duplicate of B").
"""

from __future__ import annotations

import numpy as np

from ..engine.views import Collection

DEDUP_PRECEDENCE = ("dedup-exact", "dedup-perceptual", "dedup-semantic")
KEEP_POLICY = "highest clip_score, then most pixels, then lowest uid"


def earlier_dedup(stage: str) -> tuple[str, ...]:
    """The dedup stages whose drops ``stage`` must not see (``dedup-fair`` ranks as semantic)."""
    rank = DEDUP_PRECEDENCE.index("dedup-semantic" if stage == "dedup-fair" else stage)
    return DEDUP_PRECEDENCE[:rank]


def excluded(data: Collection, stage: str) -> np.ndarray:
    """Bool per row: dropped by an earlier dedup stage that ran (those are its inputs)."""
    earlier = [s for s in earlier_dedup(stage) if s in data.inputs]
    return data.dropped(earlier) if earlier else np.zeros(data.n, bool)


def keep_order(data: Collection) -> np.ndarray:
    """Row indices, best copy first, by :data:`KEEP_POLICY`."""
    codes = data.uid_codes()
    fewer_pixels = data.pixels()
    np.negative(fewer_pixels, out=fewer_pixels)
    keys = [codes["lo"], codes["hi"], fewer_pixels]
    if "score" in data.inputs:
        worse = -data.read_values("score", "clip_score")
        worse[np.isnan(worse)] = np.inf
        keys.append(worse)
    return np.lexsort(keys)


def keep_rank(data: Collection) -> np.ndarray:
    """Position of each row in :func:`keep_order` (0: the best copy), as compact integers."""
    order = keep_order(data)
    rank = np.empty(len(order), index_dtype(len(order)))
    rank[order] = np.arange(len(order), dtype=rank.dtype)
    return rank


def index_dtype(n: int) -> np.dtype:
    """The smallest integer type that indexes ``n`` rows: 4 bytes a row up to 2**31 rows."""
    return np.dtype(np.int32 if n < 2**31 else np.int64)
