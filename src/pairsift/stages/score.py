"""CLIP score and the DataComp / LAION filter rules on it (docs/algorithms.md §5.1)."""

from __future__ import annotations

import json
from typing import Literal

import numpy as np
import pyarrow as pa

STAGE = "clip_score_filter"
NanPolicy = Literal["exclude", "datacomp"]
NAN_POLICIES = ("exclude", "datacomp")


def clip_scores(images: np.ndarray, texts: np.ndarray) -> np.ndarray:
    """Row-wise cosine of image and caption embeddings, float32; NaN where either is zero.

    Stored embeddings are L2-normalised (float16), so re-normalise in float32 to undo the
    rounding before the dot product.
    """
    img = np.asarray(images, np.float32)
    txt = np.asarray(texts, np.float32)
    img_norm = np.linalg.norm(img, axis=1)
    txt_norm = np.linalg.norm(txt, axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        scores = np.einsum("ij,ij->i", img, txt) / (img_norm * txt_norm)
    scores[(img_norm == 0) | (txt_norm == 0)] = np.nan
    return scores.astype(np.float32)


def fraction_threshold(scores: np.ndarray, fraction: float,
                       nan_policy: NanPolicy = "exclude") -> float:
    """DataComp's top-fraction threshold: the (int(N·fraction)+1)-th largest score.

    Keeping ``score >= threshold`` then keeps at least ``int(N·fraction)+1`` samples (ties add
    more), exactly as ``baselines/apply_filter.py`` does. ``nan_policy`` sets N when some
    samples have no score (NaN): ``"exclude"`` (default) counts the scored samples only, so the
    fraction is of the pairs that can be judged; ``"datacomp"`` counts every sample, as
    DataComp's ``-np.sort(-scores)[int(N·fraction)]`` does (NumPy sorts NaN last, so they rank
    below every score yet count in N): a lower cut that keeps the fraction of the whole pool.
    Where DataComp's index reaches the NaNs or runs past the end (``fraction == 1``) its cut is
    NaN or an IndexError; here every scored sample is kept.
    """
    if not 0 < fraction <= 1:
        raise ValueError(f"fraction must be in (0, 1], got {fraction}")
    if nan_policy not in NAN_POLICIES:
        raise ValueError(f"nan_policy must be one of {NAN_POLICIES}, got {nan_policy!r}")
    scores = np.asarray(scores)
    valid = np.sort(scores[~np.isnan(scores)])[::-1]
    if valid.size == 0:
        return float("inf")
    n = int((valid.size if nan_policy == "exclude" else scores.size) * fraction)
    return float(valid[min(n, valid.size - 1)])


def resolve_threshold(scores: np.ndarray, *, threshold: float | None = None,
                      fraction: float | None = None,
                      nan_policy: NanPolicy = "exclude") -> float:
    """The cut for a fixed threshold or for DataComp's top fraction (exactly one is given)."""
    if (threshold is None) == (fraction is None):
        raise ValueError("give exactly one of threshold and top fraction")
    if threshold is not None:
        return threshold
    return fraction_threshold(scores, fraction, nan_policy)


def clip_score_decisions(uids: pa.Array, scores: np.ndarray, cut: float, *,
                         fraction: float | None = None, config_hash: str = "") -> pa.Table:
    """Keep ``score >= cut`` (LAION/DataComp use ``>=``); samples with no score drop."""
    missing = np.isnan(scores)
    keep = ~missing & (scores >= cut)
    reasons = np.where(keep, "", np.where(missing, "clip_score_missing", "clip_score_below"))
    evidence = [
        json.dumps({"clip_score": None if m else round(float(s), 6),
                    "threshold": round(float(cut), 6),
                    **({"fraction": fraction} if fraction is not None else {})})
        for s, m in zip(scores, missing, strict=True)
    ]
    n = len(uids)
    return pa.table({
        "uid": uids,
        "stage": pa.array([STAGE] * n, pa.string()),
        "verdict": pa.array(np.where(keep, "keep", "drop").tolist(), pa.string()),
        "reason": pa.array(reasons.tolist(), pa.string()),
        "evidence": pa.array(evidence, pa.string()),
        "config_hash": pa.array([config_hash] * n, pa.string()),
    })
