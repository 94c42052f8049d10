"""CLIP score (stage ``score``) and the DataComp / LAION filter on it (``filter-clip-score``,
docs/algorithms.md §5.1)."""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
import pyarrow as pa

from ..engine.views import Collection, PartData
from ..params import Param
from ..stage import DecideStage, Decisions, MapStage, PartOutput, fail, register

SIGNAL = "clip_score"
NanPolicy = Literal["exclude", "datacomp"]
NAN_POLICIES = ("exclude", "datacomp")


def clip_scores(images: np.ndarray, texts: np.ndarray, chunk: int = 16_384) -> np.ndarray:
    """Row-wise cosine of image and caption embeddings, float32; NaN where either is zero.

    Stored embeddings are L2-normalised (float16), so re-normalise in float32 to undo the
    rounding before the dot product. Rows go in chunks: memory-mapped parts are never copied
    whole.
    """
    out = np.empty(len(images), np.float32)
    for start in range(0, len(images), chunk):
        img = np.asarray(images[start:start + chunk], np.float32)
        txt = np.asarray(texts[start:start + chunk], np.float32)
        img_norm = np.linalg.norm(img, axis=1)
        txt_norm = np.linalg.norm(txt, axis=1)
        with np.errstate(invalid="ignore", divide="ignore"):
            scores = np.einsum("ij,ij->i", img, txt) / (img_norm * txt_norm)
        scores[(img_norm == 0) | (txt_norm == 0)] = np.nan
        out[start:start + chunk] = scores
    return out


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


def clip_score_decisions(scores: np.ndarray, cut: float, *,
                         fraction: float | None = None) -> Decisions:
    """Keep ``score >= cut`` (LAION/DataComp use ``>=``); samples with no score drop."""
    missing = np.isnan(scores)
    keep = ~missing & (scores >= cut)
    evidence: dict[str, Any] = {"clip_score": scores, "threshold": round(float(cut), 6)}
    if fraction is not None:
        evidence["fraction"] = fraction
    return Decisions(~keep, np.where(missing, "clip_score_missing", "clip_score_below"),
                     evidence)


@register
class Score(MapStage):
    """CLIP score: the cosine of each image's and its caption's embeddings (NaN without a
    caption, never a made-up score)."""

    name = "score"
    reads_embeddings = True
    # the model is resolved into the run's inputs, so it is not part of the config as well
    params = (Param("model", str, None, "Embeddings to score (default: the last embedded "
                                        "model).", runtime=True),)

    def assemble(self, part: PartData, results: None) -> PartOutput:
        scores = clip_scores(part.embeddings("image"), part.embeddings("text"))
        return PartOutput(signals=pa.table({SIGNAL: scores}))


@register
class FilterClipScore(DecideStage):
    """Keep pairs by CLIP score: ``>= threshold``, or DataComp's top fraction
    ``keep_fraction``."""

    name = "filter-clip-score"
    requires = ("score",)
    reason = "clip_score_below"
    params = (
        Param("threshold", float, None, "Keep score >= T (LAION: 0.28 with OpenAI ViT-B/32)."),
        Param("keep_fraction", float, None, "Keep the top fraction F, as DataComp (e.g. 0.3).",
              low=0, high=1, closed="right", aliases=("top",)),
        Param("nan_policy", str, "exclude", "With keep_fraction, samples without a score: "
                                            "exclude (F of the scored ones) or datacomp "
                                            "(counted in N, as DataComp's code).",
              choices=NAN_POLICIES),
    )

    def check(self) -> None:
        if (self["threshold"] is None) == (self["keep_fraction"] is None):
            fail("filter-clip-score needs exactly one of threshold (--threshold) and "
                 "keep_fraction (--keep-fraction)")

    def prepare(self, data: Collection) -> float:
        scores = data.values("score", SIGNAL)
        return resolve_threshold(scores, threshold=self["threshold"],
                                 fraction=self["keep_fraction"], nan_policy=self["nan_policy"])

    def decide(self, part: PartData, cut: float) -> Decisions:
        return clip_score_decisions(part.values("score", SIGNAL), cut,
                                    fraction=self["keep_fraction"])

    def summarize(self, data: Collection, cut: float) -> dict[str, Any]:
        return {"threshold": cut}
