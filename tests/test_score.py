"""CLIP score and DataComp/LAION filter semantics (docs/algorithms.md §5.1, test vector §A.3)."""

import json

import numpy as np
import pyarrow as pa
import pytest

from pairsift.engine.parts import decision_table
from pairsift.stages.score import (
    clip_score_decisions,
    clip_scores,
    fraction_threshold,
    resolve_threshold,
)


def test_fraction_threshold_matches_spec_a4():
    """docs/algorithms.md §A.3: fraction 0.3 of 6 scores -> n=1, threshold 0.5, keeps 2 (not 1)."""
    scores = np.array([0.1, 0.5, 0.3, 0.3, 0.9, 0.2], np.float32)
    cut = fraction_threshold(scores, 0.3)
    assert cut == pytest.approx(0.5)
    assert int((scores >= cut).sum()) == 2


def test_fraction_ties_keep_more():
    """docs/algorithms.md §5.1: ties at the threshold are all kept (>=)."""
    scores = np.array([0.9, 0.5, 0.5, 0.5, 0.1], np.float32)
    cut = fraction_threshold(scores, 0.2)  # n = 1 -> second largest = 0.5
    assert int((scores >= cut).sum()) == 4


def test_fraction_one_keeps_all_and_ignores_nan():
    scores = np.array([0.2, np.nan, 0.1], np.float32)
    assert fraction_threshold(scores, 1.0) == pytest.approx(0.1)


@pytest.mark.parametrize("fraction", [0, -0.1, 1.5])
def _datacomp_keep(scores: np.ndarray, fraction: float) -> np.ndarray:
    """DataComp's ``get_threshold`` + ``df[key] >= threshold``: N counts every row, NaN too
    (NumPy sorts NaN last, so they sit after the smallest score); a NaN never passes."""
    n = int(len(scores) * fraction)
    threshold = -np.sort(-scores)[n]
    with np.errstate(invalid="ignore"):
        return scores >= threshold


@pytest.mark.parametrize("fraction", [0.05, 0.3, 0.5, 0.69])
def test_nan_policy_datacomp_reproduces_datacomp_with_missing_scores(fraction):
    rng = np.random.default_rng(1)
    scores = rng.uniform(0.1, 0.4, 200).astype(np.float32)
    scores[rng.choice(200, 60, replace=False)] = np.nan  # 140 scored
    scores[:3] = np.nanmedian(scores)  # a tie
    cut = fraction_threshold(scores, fraction, nan_policy="datacomp")
    kept = ~clip_score_decisions(scores, cut).drop
    np.testing.assert_array_equal(kept, _datacomp_keep(scores, fraction))
    scored = scores[~np.isnan(scores)]  # the default: DataComp's rule over the scored only
    excluded = fraction_threshold(scores, fraction)
    np.testing.assert_array_equal(scored >= excluded, _datacomp_keep(scored, fraction))
    assert excluded > cut


def test_nan_policy_datacomp_past_the_scored_keeps_every_score():
    """Where DataComp's index falls among the NaNs its threshold is NaN and keeps nothing;
    pairsift keeps every scored sample instead (as for ``fraction == 1``)."""
    scores = np.array([0.3, np.nan, 0.2, np.nan, np.nan], np.float32)
    assert not _datacomp_keep(scores, 0.6).any()
    assert fraction_threshold(scores, 0.6, nan_policy="datacomp") == pytest.approx(0.2)
    with pytest.raises(ValueError, match="nan_policy"):
        fraction_threshold(scores, 0.6, nan_policy="drop")


@pytest.mark.parametrize("fraction", [0, -0.1, 1.5])
def test_fraction_out_of_range(fraction):
    with pytest.raises(ValueError, match="fraction"):
        fraction_threshold(np.ones(3, np.float32), fraction)


def test_exactly_one_of_threshold_and_fraction():
    with pytest.raises(ValueError, match="exactly one"):
        resolve_threshold(np.ones(3), threshold=0.2, fraction=0.3)
    with pytest.raises(ValueError, match="exactly one"):
        resolve_threshold(np.ones(3))


def test_clip_scores_cosine_and_missing():
    img = np.array([[1, 0], [0, 2], [1, 1]], np.float16)
    txt = np.array([[1, 0], [1, 0], [0, 0]], np.float16)
    s = clip_scores(img, txt)
    assert s[0] == pytest.approx(1.0)
    assert s[1] == pytest.approx(0.0)
    assert np.isnan(s[2])  # no caption embedding: no score, never 0


def test_threshold_is_inclusive_like_laion():
    """docs/algorithms.md §5.1: DataComp's laion2b filter keeps score >= 0.28."""
    scores = np.array([0.28, 0.2799, np.nan], np.float32)
    table = decision_table("filter-clip-score", "run", pa.array(["a", "b", "c"]),
                           clip_score_decisions(scores, 0.28))
    assert table.column("verdict").to_pylist() == ["keep", "drop", "drop"]
    assert table.column("reason").to_pylist() == ["", "clip_score_below", "clip_score_missing"]
    evidence = json.loads(table.column("evidence")[1].as_py())
    assert evidence["threshold"] == pytest.approx(0.28)
    assert evidence["clip_score"] == pytest.approx(0.2799, abs=1e-6)
