"""SemDeDup scoring, ranking and removal rules (docs/algorithms.md §1, §2, test vectors §A.1-2)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pairsift.stages.semdedup import (
    effective_block,
    eps_for_keep_fraction,
    eps_sweep,
    max_similarity,
    rank_cluster,
    remove_mask,
    semdedup_cluster,
    threshold,
)

RULES = ("semdedup_code", "greedy_kept", "components")


def _unit(n: int, d: int, seed: int = 0) -> np.ndarray:
    x = np.random.default_rng(seed).normal(size=(n, d)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def _with_gram(S: list[list[float]]) -> np.ndarray:
    """Unit vectors whose Gram matrix is exactly S (rows of its Cholesky factor)."""
    return np.linalg.cholesky(np.array(S, dtype=np.float64)).astype(np.float32)


def _dup_clusters(seed: int = 0, n_groups: int = 12, d: int = 16) -> np.ndarray:
    """Random items plus groups of near-copies and chains, shuffled: every rule has work."""
    rng = np.random.default_rng(seed)
    base = _unit(n_groups, d, seed)
    rows = [base]
    for g in range(n_groups):
        for step in range(rng.integers(0, 4)):  # a drifting chain A~B~C, A≁C possible
            rows.append(base[g] + (step + 1) * 0.18 * rng.normal(size=(1, d)) / np.sqrt(d))
    rows.append(_unit(20, d, seed + 1))
    x = np.concatenate(rows)[rng.permutation(sum(len(r) for r in rows))]
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def _full_reference(x: np.ndarray):
    S = np.triu(x @ x.T, 1)
    return S.max(0), S.argmax(0)


@pytest.mark.parametrize("block", [1, 2, 8, 36, 37, 64])
def test_blocked_scores_equal_full_triu(block):
    """§A.1: 37×8, blocked column max/argmax == triu(S,1) on the full matrix; row 0 → (0, 0).

    Indices must match exactly; values may differ in the last bit because BLAS sums a dot
    product in a shape-dependent order.
    """
    x = _unit(37, 8)
    ref_sim, ref_idx = _full_reference(x)
    sim, idx = max_similarity(x, block=block)
    assert sim.dtype == np.float32 and idx.dtype == np.int64
    np.testing.assert_array_equal(idx, ref_idx)
    np.testing.assert_allclose(sim, ref_sim, rtol=0, atol=3e-7)
    assert (sim[0], idx[0]) == (0.0, 0)


def test_effective_block_caps_memory_and_splits_small_clusters():
    assert effective_block(10_000) == 1024  # the cap: n×1024 floats at most
    assert effective_block(2000) == 250 and effective_block(100) == 128
    assert effective_block(100, block=8) == 8
    with pytest.raises(ValueError):
        effective_block(10, block=0)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu():
    x = _dup_clusters()
    cpu, gpu = (max_similarity(x, block=7, device=d) for d in ("cpu", "cuda"))
    np.testing.assert_array_equal(cpu[1], gpu[1])
    np.testing.assert_allclose(cpu[0], gpu[0], atol=1e-6)
    for rule in RULES:
        np.testing.assert_array_equal(
            remove_mask(cpu[0], 0.1, rule=rule, X=x, block=5),
            remove_mask(cpu[0], 0.1, rule=rule, X=x, block=5, device="cuda"),
        )


def test_scores_floor_at_zero_and_point_at_self():
    """§1.2 step 5 / §2.4: with only negative earlier similarities M = 0 and max_id = self."""
    x = np.array([[1, 0], [-1, 0], [0.6, 0.8]], dtype=np.float32)
    sim, idx = max_similarity(x, block=2)
    np.testing.assert_allclose(sim, [0.0, 0.0, 0.6], atol=1e-7)
    np.testing.assert_array_equal(idx, [0, 1, 0])


CHAIN = [[1, 0.95, 0.5], [0.95, 1, 0.95], [0.5, 0.95, 1]]
V_SHAPE = [[1, 0.5, 0.95], [0.5, 1, 0.95], [0.95, 0.95, 1]]
EXPECTED = {  # per matrix: rule -> removed, ε = 0.1, row order
    "chain": {"semdedup_code": [0, 1, 1], "greedy_kept": [0, 1, 0], "components": [0, 1, 1]},
    "v": {"semdedup_code": [0, 0, 1], "greedy_kept": [0, 0, 1], "components": [0, 1, 1]},
}


@pytest.mark.parametrize(("name", "S"), [("chain", CHAIN), ("v", V_SHAPE)])
def test_code_rule_on_spec_matrices(name, S):
    """§A.2 verbatim: M = column max of triu(S, 1), removed iff M > 0.9."""
    m = np.triu(np.array(S, dtype=np.float32), 1).max(0)
    np.testing.assert_array_equal(remove_mask(m, 0.1), EXPECTED[name]["semdedup_code"])


def _realisable(S: list[list[float]]) -> list[list[float]]:
    """§A.2's matrices are not positive semi-definite (det = −0.1525): no vectors have them.

    Two sides of 0.95 force the third cosine ≥ 2·0.95² − 1 ≈ 0.805, so 0.5 becomes 0.81; the
    graph thresholded at 0.9, which is all any rule sees, is unchanged.
    """
    return [[0.81 if v == 0.5 else v for v in row] for row in S]


@pytest.mark.parametrize(("name", "S"), [("chain", CHAIN), ("v", V_SHAPE)])
@pytest.mark.parametrize("block", [1, 2, 8])
def test_keep_rules_on_spec_graphs(name, S, block):
    """§A.2 / §1.3: the code rule differs from greedy-keep and from components."""
    x = _with_gram(_realisable(S))
    sim, _ = max_similarity(x, block=block)
    for rule in RULES:
        got = remove_mask(sim, 0.1, rule=rule, X=x, block=block)
        np.testing.assert_array_equal(got, np.array(EXPECTED[name][rule], bool), err_msg=rule)


def test_strict_and_non_strict_threshold_at_exact_tie():
    """§2.3: Meta removes at M > 1−ε, NeMo at M >= 1−ε; scores compared in float32."""
    t = threshold(0.25)
    assert t == np.float32(0.75)
    sim = np.array([0, np.nextafter(t, 0), t, np.nextafter(t, 1)], dtype=np.float32)
    np.testing.assert_array_equal(remove_mask(sim, 0.25), [0, 0, 0, 1])
    np.testing.assert_array_equal(remove_mask(sim, 0.25, strict=False), [0, 0, 1, 1])
    x = np.array([[1, 0], [0.75, np.sqrt(1 - 0.75**2)]], dtype=np.float32)  # cos = 0.75 exactly
    for rule in RULES:
        for strict, removed in ((True, [0, 0]), (False, [0, 1])):
            m, _ = max_similarity(x)
            got = remove_mask(m, 0.25, rule=rule, strict=strict, X=x)
            np.testing.assert_array_equal(got, removed, err_msg=f"{rule} strict={strict}")


@pytest.mark.parametrize("eps", [0.0, 1.0, -0.1, 1.5])
def test_eps_must_be_inside_open_unit_interval(eps):
    """§1.5 [P]: ε ≥ 1 would remove nothing silently; ε ≤ 0 is meaningless."""
    with pytest.raises(ValueError):
        remove_mask(np.zeros(3, np.float32), eps)


def test_rank_orders_and_tie_breaks():
    """§1.2 steps 3-4 (Meta, stable: the default) and §2.3 (NeMo, (distance, id) one way)."""
    dist = np.array([0.2, 0.5, 0.5, 0.1])
    ids = np.array([10, 11, 12, 13])
    np.testing.assert_array_equal(rank_cluster(dist, ids, "hard"), [1, 2, 0, 3])
    np.testing.assert_array_equal(rank_cluster(dist, ids, "easy"), [3, 0, 2, 1])
    np.testing.assert_array_equal(rank_cluster(dist, ids, "hard", tie_break="id"), [2, 1, 0, 3])
    np.testing.assert_array_equal(rank_cluster(dist, ids, "easy", tie_break="id"), [3, 0, 1, 2])
    with pytest.raises(ValueError):
        rank_cluster(dist, ids, tie_break="stable")
    uids = np.array(["d", "a", "c", "b"])  # string uids sort too
    np.testing.assert_array_equal(rank_cluster(dist, uids, "hard", tie_break="id"), [2, 1, 0, 3])
    clip = np.array([0.3, 0.9, 0.1, 0.5])  # rank by any signal: highest score first
    np.testing.assert_array_equal(rank_cluster(None, ids, key=clip), [1, 3, 0, 2])
    r1, r2 = (rank_cluster(dist, ids, "random", seed=7) for _ in range(2))
    np.testing.assert_array_equal(r1, r2)
    assert sorted(r1) == [0, 1, 2, 3]
    missing = np.array([0.3, -np.inf, 0.1, 0.5])  # e.g. a pair with no score: ranked last
    np.testing.assert_array_equal(rank_cluster(None, ids, key=missing), [3, 0, 2, 1])
    with pytest.raises(ValueError):
        rank_cluster(np.array([0.1, np.nan, 0, 0]), ids)


def _reference_removals(M: np.ndarray, eps: float, strict: bool) -> np.ndarray:
    """Meta's `M > 1 - eps` on a float32 torch tensor, or NeMo's `>= 1.0 - eps` as pyarrow
    evaluates it on float32 scores (promoted to float64)."""
    if strict:
        return (torch.from_numpy(M) > 1 - eps).numpy()
    return M.astype(np.float64) >= 1.0 - eps


@pytest.mark.parametrize("strict", [True, False])
def test_eps_for_keep_fraction_keeps_at_least_q(strict):
    """§1.4: threshold at the ⌈qN⌉-th smallest score; ties at it keep more, never fewer."""
    rng = np.random.default_rng(0)
    m = np.concatenate([np.zeros(40), rng.uniform(0.5, 1, 150), np.full(10, 0.9), np.ones(5)])
    m = m.astype(np.float32)
    for q in (0.05, 0.2, 0.5, 0.73, 0.9, 0.97):
        eps, achieved = eps_for_keep_fraction(m, q, strict=strict)
        assert 0 < eps < 1
        kept = 1 - remove_mask(m, eps, strict=strict).mean()
        assert achieved == pytest.approx(kept)
        assert kept == 1 - _reference_removals(m, eps, strict).mean()
        assert achieved >= q
        k = int(np.ceil(q * len(m)))  # the smallest achievable count ≥ qN, ties included
        assert achieved * len(m) == np.sum(m <= np.sort(m)[k - 1])
    assert eps_for_keep_fraction(m, 1.0)[1] == pytest.approx(200 / 205)  # exact copies go


def test_eps_sweep_is_monotone_and_matches_the_rule():
    """§1.4: kept fraction q(ε) = |{M ≤ 1−ε}| / N, non-increasing in ε."""
    m = max_similarity(_dup_clusters())[0]
    eps_values = np.linspace(0.01, 0.99, 40)
    kept = eps_sweep(m, eps_values)
    assert np.all(np.diff(kept) <= 0)
    for e, k in zip(eps_values, kept, strict=True):
        assert k == pytest.approx(1 - remove_mask(m, e).mean())


def _naive_rule(x: np.ndarray, t: float, rule: str) -> np.ndarray:
    """Direct O(n²) statement of each rule (docs/algorithms.md §1.3), to check the blocked pass."""
    sim = x.astype(np.float64) @ x.T.astype(np.float64)
    n = len(x)
    if rule == "greedy_kept":
        kept: list[int] = []
        remove = np.zeros(n, bool)
        for j in range(n):
            remove[j] = any(sim[i, j] > t for i in kept)
            if not remove[j]:
                kept.append(j)
        return remove
    label = np.arange(n)  # components by repeated min-label propagation
    adj = np.triu(sim > t, 1)
    adj |= adj.T
    while True:
        new = np.minimum(label, np.where(adj, label[None, :], n).min(1))
        if np.array_equal(new, label):
            return label != np.arange(n)
        label = new


@pytest.mark.parametrize("rule", ["greedy_kept", "components"])
@pytest.mark.parametrize("block", [1, 3, 16, 500])
def test_blocked_rules_equal_direct_definition(rule, block):
    x = _dup_clusters(seed=block)
    m, _ = max_similarity(x, block=block)
    for eps in (0.05, 0.1, 0.2):
        got = remove_mask(m, eps, rule=rule, X=x, block=block)
        np.testing.assert_array_equal(got, _naive_rule(x, 1 - eps, rule))
        code = remove_mask(m, eps)
        assert got.any()
        if rule == "greedy_kept":
            assert not (got & ~code).any()  # greedy only ever keeps more than the code rule


def test_cluster_driver_maps_results_back_to_caller_rows():
    """A planted duplicate pair: the member farther from the centroid survives (keep_hard)."""
    x = _unit(30, 12, seed=5)
    x[17] = x[4] + 0.01 * _unit(1, 12, seed=6)[0]
    centroid = x.mean(0) / np.linalg.norm(x.mean(0))
    dist = 1 - (x / np.linalg.norm(x, axis=1, keepdims=True)) @ centroid
    ids = np.array([f"uid{i:02d}" for i in range(30)])
    res = semdedup_cluster(x.astype(np.float16) * 3, dist, ids, eps=0.01, block=4)
    far, near = (4, 17) if dist[4] > dist[17] else (17, 4)
    assert res.remove.tolist() == [i == near for i in range(30)]
    assert res.max_id[near] == ids[far] and res.max_sim[near] > 0.99
    assert res.max_id[res.order[0]] == ids[res.order[0]] and res.max_sim[res.order[0]] == 0
    np.testing.assert_array_equal(res.order, rank_cluster(dist, ids))
    assert semdedup_cluster(x, dist, ids).remove is None  # scores only, decide later
    with pytest.raises(ValueError):
        semdedup_cluster(x, dist, np.zeros(30))  # ids must be unique


def test_singleton_cluster_is_never_removed():
    res = semdedup_cluster(_unit(1, 4), np.array([0.3]), np.array([7]), eps=0.5)
    assert res.max_sim.tolist() == [0.0] and res.max_id.tolist() == [7]
    assert res.remove.tolist() == [False]


def _meta_removals(X: np.ndarray, dist: np.ndarray, order: str, eps: float) -> np.ndarray:
    """Meta's code on one cluster: rows in dataset order, Python's stable `sorted` by distance
    (descending, keep_hard), `easy` reverses the list, then `M > 1 - eps` in torch."""
    ranked = [i for i, _ in sorted(enumerate(dist), key=lambda item: item[1], reverse=True)]
    if order == "easy":
        ranked = ranked[::-1]
    reps = torch.tensor(X[ranked])
    S = reps @ reps.T
    S.fill_diagonal_(0.0)
    scores = torch.max(torch.triu(S, diagonal=1), dim=0)[0]
    remove = np.zeros(len(X), bool)
    remove[ranked] = (scores > 1 - eps).numpy()
    return remove


def _nemo_removals(X: np.ndarray, dist: np.ndarray, ids: np.ndarray, order: str,
                   eps: float) -> np.ndarray:
    """NeMo Curator on one cluster: sort by (distance, id), both descending for hard and
    ascending for easy, then `cosine_sim_score >= 1.0 - eps` as pyarrow compares (float64)."""
    ranked = sorted(range(len(X)), key=lambda i: (dist[i], ids[i]), reverse=order == "hard")
    x = X[ranked]
    M = np.triu(x @ x.T, 1).max(0)
    remove = np.zeros(len(X), bool)
    remove[ranked] = M.astype(np.float64) >= 1.0 - eps
    return remove


@pytest.mark.parametrize("order", ["hard", "easy"])
def test_tie_break_keeps_the_copy_each_reference_keeps(order):
    """Four exact copies (rows 1-4, equal distances): `meta` keeps the first in dataset order
    for hard and the last for easy (Meta's stable sort, then a reversed list); `id` keeps the
    largest id for hard and the smallest for easy (NeMo's (distance, id) sort)."""
    X = _unit(7, 8, seed=3)
    X[1:5] = X[1]
    dist = np.array([0.4, 0.3, 0.3, 0.3, 0.3, 0.1, 0.35], np.float32)
    ids = np.array([50, 20, 5, 30, 10, 60, 70])
    meta = semdedup_cluster(X, dist, ids, eps=0.01, order=order).remove
    np.testing.assert_array_equal(meta, _meta_removals(X, dist, order, 0.01))
    nemo = semdedup_cluster(X, dist, ids, eps=0.01, order=order, tie_break="id",
                            strict=False).remove
    np.testing.assert_array_equal(nemo, _nemo_removals(X, dist, ids, order, 0.01))
    copies = np.arange(1, 5)
    assert copies[~meta[1:5]].tolist() == ([1] if order == "hard" else [4])
    assert ids[copies[~nemo[1:5]]].tolist() == ([30] if order == "hard" else [5])


@pytest.mark.parametrize("eps", [0.05, 0.1, 0.3, 0.01, 0.07, 0.2])
def test_each_rule_compares_at_its_reference_precision(eps):
    """Scores exactly at float32(1−ε) and its neighbours. Meta (`M > 1 - eps` in torch) rounds
    1−ε to float32; NeMo's `>=` runs in pyarrow, which promotes float32 scores to float64.
    At ε = 0.05, 0.1, 0.3 float32(1−ε) < 1−ε, so NeMo keeps the score float32(1−ε)."""
    t32 = np.float32(1 - eps)
    M = np.array([0, np.nextafter(t32, np.float32(0)), t32, np.nextafter(t32, np.float32(2))],
                 np.float32)
    meta, nemo = _reference_removals(M, eps, True), _reference_removals(M, eps, False)
    np.testing.assert_array_equal(remove_mask(M, eps), meta)
    np.testing.assert_array_equal(remove_mask(M, eps, strict=False), nemo)
    assert eps_sweep(M, [eps], strict=False)[0] == 1 - nemo.mean()
    assert eps_sweep(M, [eps])[0] == 1 - meta.mean()
    s = np.float32(np.sqrt(1 - np.float64(t32) ** 2))
    pair = np.array([[1, 0], [t32, s]], np.float32)  # one pair with similarity float32(1−ε)
    assert max_similarity(pair)[0][1] == t32
    for rule in RULES:
        res = semdedup_cluster(pair, np.array([0.2, 0.1]), np.arange(2), eps, rule=rule,
                               strict=False)
        assert res.remove.tolist() == [False, bool(nemo[2])], rule


def test_thresholds_match_the_references_for_any_eps():
    """Scores at float32(1−ε) and two floats either side, for 300 random ε."""
    for eps in np.random.default_rng(0).uniform(0.001, 0.999, 300):
        t32 = np.float32(1 - eps)
        M = np.array([t32 + k * np.spacing(t32) for k in range(-2, 3)], np.float32)
        for strict in (True, False):
            np.testing.assert_array_equal(remove_mask(M, eps, strict=strict),
                                          _reference_removals(M, eps, strict))
