"""Match confidence (docs/algorithms.md §6.1): Bayes rule, monotonicity, prior, fallback, ECE."""

from __future__ import annotations

import json

import numpy as np
import pytest
from scipy import stats
from test_index import searchable_workspace, truth_by_key, variant  # noqa: F401 - fixture

from pairsift import Workspace
from pairsift.pipeline.search import calibrate, search
from pairsift.retrieval import calibration as cal
from pairsift.retrieval.build import IndexStore


def beta_scores(a: float, b: float, n: int, rng: np.random.Generator) -> np.ndarray:
    return 2 * rng.beta(a, b, n) - 1


@pytest.fixture(scope="module")
def pairs() -> tuple[np.ndarray, np.ndarray]:
    """Well-specified data: same ~ Beta(12, 2), different ~ Beta(4, 4) on u = (s+1)/2."""
    rng = np.random.default_rng(0)
    same, different = beta_scores(12, 2, 600, rng), beta_scores(4, 4, 5400, rng)
    scores = np.concatenate([same, different])
    return scores, np.arange(len(scores)) < len(same)


def test_beta_fit_recovers_parameters():
    scores = beta_scores(8, 2, 20_000, np.random.default_rng(1))
    fitted = cal.fit_beta(scores)
    assert fitted["a"] == pytest.approx(8, rel=0.05) and fitted["b"] == pytest.approx(2, rel=0.05)


def test_posterior_is_bayes_rule_with_the_stated_prior(pairs):
    model = cal.fit(*pairs, method="beta", prior=0.3)
    s = np.array([0.2, 0.5, 0.7, 0.9])
    u = (s + 1) / 2
    f1 = stats.beta.pdf(u, **model.params["same"])
    f0 = stats.beta.pdf(u, **model.params["different"])
    assert model.posterior(s) == pytest.approx(0.3 * f1 / (0.3 * f1 + 0.7 * f0), rel=1e-3)


@pytest.mark.parametrize("method", ["beta", "platt"])
def test_prior_shift_multiplies_the_odds(pairs, method):
    model = cal.fit(*pairs, method=method)
    s = np.array([0.3, 0.6, 0.8])
    odds = lambda p: p / (1 - p)  # noqa: E731
    ratio = odds(model.posterior(s, prior=0.01)) / odds(model.posterior(s, prior=0.5))
    assert ratio == pytest.approx(np.full(3, odds(0.01) / odds(0.5)), rel=1e-6)


def test_unequal_variances_are_made_monotone():
    rng = np.random.default_rng(2)
    same = rng.normal(0.8, 0.05, 500)
    different = rng.normal(0.2, 0.3, 5000)
    scores = np.concatenate([same, different])
    model = cal.fit(scores, np.arange(len(scores)) < 500, method="gaussian")
    grid = np.linspace(-1, 1, 401)
    assert (np.diff(model.raw_llr(grid)) < 0).any()  # the wide f0 wins again at the top
    assert (np.diff(model.posterior(grid)) >= 0).all()
    top = model.posterior(np.array([0.99]))[0]
    assert top == pytest.approx(model.posterior(grid).max())  # held at its peak, no dip
    raw = 1 / (1 + np.exp(-(np.log(model.prior / (1 - model.prior)) + model.raw_llr(0.99))))
    assert raw < top - 0.1


def test_few_positives_fall_back_to_platt(pairs):
    scores, same = pairs
    keep = ~same | (np.cumsum(same) <= 30)
    model = cal.fit(scores[keep], same[keep], method="beta")
    assert model.method == "platt" and model.requested == "beta" and "30 same" in model.note
    assert (np.diff(model.posterior(np.linspace(-1, 1, 50))) >= 0).all()


@pytest.mark.parametrize("method", ["beta", "gaussian", "kde", "platt"])
def test_held_out_pairs_are_well_calibrated(pairs, method):
    scores, same = pairs
    held = cal.stratified_holdout(same, 0.3, np.random.default_rng(3))
    assert same[held].sum() == 180 and (~same[held]).sum() == 1620
    model = cal.fit(scores[~held], same[~held], method=method)
    result = cal.evaluate(model, scores[held], same[held])
    assert result.ece < 0.03 and result.brier < 0.06
    assert sum(b["count"] for b in result.bins) == held.sum()


def test_ece_and_brier_by_hand():
    p, y = np.array([0.05, 0.95, 0.85, 0.35]), np.array([0.0, 1.0, 0.0, 0.0])
    # bins: [0,.1) has 0.05 vs 0; [.3,.4) 0.35 vs 0; [.8,.9) 0.85 vs 0; [.9,1] 0.95 vs 1
    assert cal.expected_calibration_error(p, y) == pytest.approx((0.05 + 0.35 + 0.85 + 0.05) / 4)
    model = cal.Calibration("platt", {"a": 0.0, "b": 0.0}, 0.5, 0.5, "platt", 1, 1)
    assert cal.evaluate(model, np.zeros(4), y.astype(bool)).brier == pytest.approx(0.25)


def test_group_pairs_all_or_sampled():
    groups = np.array(["a", "a", "b", "b", "b", "c"])
    i, j, same, population = cal.group_pairs(groups, np.random.default_rng(0))
    assert len(i) == 15 and same.sum() == 4 and population == pytest.approx(4 / 15)
    assert ((groups[i] == groups[j]) == same).all()
    big = np.repeat(np.arange(300), 3)  # 300 groups of 3: 900 same pairs in 404,550
    i, j, same, population = cal.group_pairs(big, np.random.default_rng(0), max_pairs=5000)
    assert same.sum() == 900 and len(i) == 5000 and (i < j).all()
    assert ((big[i] == big[j]) == same).all()
    assert population == pytest.approx(900 / (900 * 899 / 2))


def test_saved_calibration_gives_the_same_confidences(pairs, tmp_path):
    model = cal.fit(*pairs, method="kde", prior=0.1)
    cal.save(tmp_path / "c.json", model, {"note": "test"})
    again = cal.load(tmp_path / "c.json")
    s = np.linspace(-1, 1, 21)
    assert again.posterior(s) == pytest.approx(model.posterior(s))


def test_invalid_inputs_are_refused(pairs):
    scores, same = pairs
    with pytest.raises(ValueError, match="both same and different"):
        cal.fit(scores[same], same[same])
    with pytest.raises(ValueError, match="prior"):
        cal.fit(scores, same, prior=1.0)
    with pytest.raises(ValueError, match="unknown calibration method"):
        cal.fit(scores, same, method="isotonic")


# -- on the demo workspace ---------------------------------------------------------------------
def test_calibration_from_duplicate_groups_is_saved_beside_the_index(
        searchable_workspace, demo_corpus):  # noqa: F811 - the imported fixture
    store = IndexStore(Workspace.open(searchable_workspace), "default", "visual")
    saved = json.loads(store.calibration_path.read_text())
    assert saved["space"] == "visual" and saved["source"].startswith("groups:")
    assert saved["calibration"]["method"] == "platt"  # the demo has < 50 same pairs
    assert saved["heldout"]["pairs"] > 100 and saved["heldout"]["ece"] < 0.1
    assert (store.root / "reliability.png").read_bytes().startswith(b"\x89PNG")
    truth = truth_by_key(demo_corpus)
    query = variant(demo_corpus / "images" / "img_0041.png")
    hits = search(searchable_workspace, image=query, k=6)
    assert truth[hits[0].key]["group"] == "img_0041.png" and hits[0].confidence > 0.8
    others = [h for h in hits if truth[h.key]["photo"] != "brick"]
    assert others and all(h.confidence < 0.1 for h in others)
    assert all(a.confidence >= b.confidence for a, b in zip(hits, hits[1:], strict=False))


def test_calibrate_from_a_pairs_table(workspace_copy, demo_corpus, tmp_path):
    from pairsift.pipeline.search import index

    index(workspace_copy, progress=False)
    rows = ["a,b,same", "img_0048,img_0012,true", "img_0048,img_0039,true",
            "img_0050,img_0056,true", "img_0048,img_0050,false", "img_0041,img_0052,false",
            "img_0000,img_0016,false", "img_0019,img_0045,false"]
    (tmp_path / "pairs.csv").write_text("\n".join(rows) + "\n")
    summary = calibrate(workspace_copy, pairs=tmp_path / "pairs.csv", holdout=0.4)
    assert summary.pairs == 7 and summary.positives == 3 and summary.method == "platt"
    assert summary.prior == pytest.approx(3 / 7)
    with pytest.raises(ValueError, match="exactly one"):
        calibrate(workspace_copy)
