"""FairDeDup selection rule (docs/algorithms.md §3.2) and prototypes (§3.2 step 1)."""

from __future__ import annotations

import zlib

import numpy as np
import pytest

from pairsift.stages.fairdedup import (
    DEFAULT_TEMPLATES,
    fairdedup_cluster,
    image_prototypes,
    text_prototypes,
)
from pairsift.stages.semdedup import rank_cluster, semdedup_cluster

D = 32
P_A, P_B = np.eye(D)[0], np.eye(D)[1]
PROTOTYPES = np.stack([P_A, P_B]).astype(np.float32)  # group 0 = A, group 1 = B


def _content(n: int, rng: np.random.Generator) -> np.ndarray:
    """Random unit 'subject' directions orthogonal to both prototypes."""
    c = rng.normal(size=(n, D))
    c[:, :2] = 0
    return c / np.linalg.norm(c, axis=1, keepdims=True)


def _person(content: np.ndarray, proto: np.ndarray, strength: float = 0.2) -> np.ndarray:
    x = content / np.linalg.norm(content, axis=-1, keepdims=True) + strength * proto
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def _fairness_cluster(seed: int = 0):
    """A cluster where A is over-represented and SemDeDup's survivor is biased towards A.

    Every item shares the cluster's topic direction. 30 A and 10 B singletons, plus 10
    near-duplicate neighbourhoods of 2 A-like and 2 B-like copies of one subject (cos ≈ 0.93
    inside, ≈ 0.5 across). The A-like copies carry extra clutter, so they sit farther from
    the centroid and SemDeDup's keep-hard ranking puts one of them first: nothing in its rule
    looks at groups, the bias comes from the data.
    """
    rng = np.random.default_rng(seed)
    topic = _content(1, rng)[0]
    rows, groups = [], []
    for g, count in ((0, 30), (1, 10)):
        rows.append(_person(topic + _content(count, rng), PROTOTYPES[g]))
        groups += [g] * count
    for subject in _content(10, rng):
        for g in (0, 0, 1, 1):
            x = topic + subject + 0.2 * PROTOTYPES[g]
            if g == 0:
                x = x + 0.4 * _content(1, rng)[0]  # clutter, roughly orthogonal to the rest
            rows.append((x / np.linalg.norm(x))[None])
            groups.append(g)
    return np.concatenate(rows).astype(np.float32), np.array(groups)


def _b_share(keep: np.ndarray, groups: np.ndarray) -> float:
    return float(np.mean(groups[keep] == 1))


def test_fairdedup_restores_group_balance_that_semdedup_skews():
    """§3.1-§3.2: same duplicates, same prune rate, kept set closer to the cluster's balance."""
    X, groups = _fairness_cluster()
    centroid = X.mean(0) / np.linalg.norm(X.mean(0))
    dist = 1 - X @ centroid
    ids = np.arange(len(X))
    order = rank_cluster(dist, ids)
    sem = semdedup_cluster(X, dist, ids, eps=0.1)
    fair = fairdedup_cluster(X[order], 0.1, PROTOTYPES)
    g_ranked = groups[order]

    assert fair.representation[0] > fair.representation[1]  # A over-represented → g* = B
    assert fair.remove.sum() == sem.remove.sum() == 30  # same prune rate
    original = _b_share(np.ones(len(X), bool), groups)  # 30 / 80
    sem_share = _b_share(~sem.remove, groups)
    fair_share = _b_share(~fair.remove, g_ranked)
    assert sem_share < original - 0.1  # the construction really biases SemDeDup
    assert abs(fair_share - original) < abs(sem_share - original)
    dup = np.bincount(fair.neighbourhood)[fair.neighbourhood] > 1
    assert (g_ranked[dup & ~fair.remove] == 1).all()  # every neighbourhood kept a B-like member
    assert (fair.kept_because[dup] == 1).all() and (fair.kept_because[~dup] == -1).all()
    np.testing.assert_array_equal(fair.group_of_max_prototype, g_ranked)


def _naive_neighbourhoods(x: np.ndarray, walk: np.ndarray, t: float) -> np.ndarray:
    sim = x.astype(np.float64) @ x.T.astype(np.float64)
    owner = np.full(len(x), -1)
    for i in walk:
        if owner[i] < 0:
            owner[(owner < 0) & (sim[i] > t)] = i
            owner[i] = i
    return owner


@pytest.mark.parametrize("block", [1, 2, 5, 64])
@pytest.mark.parametrize("order", ["ranked", "random"])
def test_blocked_neighbourhoods_equal_direct_definition(block, order):
    """§3.2 step 3: N(i) = {i} ∪ unvisited j with cos > 1−ε, seeds in walk order."""
    X, _ = _fairness_cluster(seed=block)
    res = fairdedup_cluster(X, 0.1, PROTOTYPES, order=order, seed=3, block=block)
    walk = np.arange(len(X)) if order == "ranked" else np.random.default_rng(3).permutation(len(X))
    np.testing.assert_array_equal(res.neighbourhood, _naive_neighbourhoods(X, walk, 0.9))
    kept_per_nbhd = np.bincount(res.neighbourhood[~res.remove], minlength=len(X))
    assert (kept_per_nbhd[np.unique(res.neighbourhood)] == 1).all()


def _dynamic_case(pair_first: bool) -> np.ndarray:
    """Ranked cluster: 3 B singletons, an {A-like, B-like} pair, 6 A singletons (A wins overall)."""
    rng = np.random.default_rng(1)
    subject = _content(1, rng)[0]
    pair = [_person(subject, P_A), _person(subject, P_B)]
    b_alone = list(_person(_content(3, rng), P_B))
    a_alone = list(_person(_content(6, rng), P_A))
    rows = pair + b_alone + a_alone if pair_first else b_alone + pair + a_alone
    return np.array(rows, dtype=np.float32)


def test_dynamic_representation_follows_the_kept_set():
    """§3.2 step 2 variant B: after keeping three B items, A is the scarce group."""
    X = _dynamic_case(pair_first=False)
    static = fairdedup_cluster(X, 0.1, PROTOTYPES)
    dynamic = fairdedup_cluster(X, 0.1, PROTOTYPES, dynamic=True)
    assert static.remove.tolist() == [False] * 3 + [True, False] + [False] * 6
    assert dynamic.remove.tolist() == [False] * 3 + [False, True] + [False] * 6
    assert static.kept_because[3] == 1 and dynamic.kept_because[3] == 0
    first = _dynamic_case(pair_first=True)  # nothing kept yet: falls back to the cluster r_g
    np.testing.assert_array_equal(
        fairdedup_cluster(first, 0.1, PROTOTYPES, dynamic=True).remove,
        fairdedup_cluster(first, 0.1, PROTOTYPES).remove,
    )


def test_relevance_gate_falls_back_to_semdedup_choice():
    """§3.2 edge case [P]: no person content in a neighbourhood → keep the earliest-ranked."""
    rng = np.random.default_rng(2)
    thing, person = _content(2, rng)
    X = np.array(
        [_person(thing, P_A, 0.0), _person(thing, P_B, 0.05),  # an object, faint B cue
         _person(person, P_A), _person(person, P_B)]  # a person pair
        + list(_person(_content(4, rng), P_A)),  # A dominates the cluster
        dtype=np.float32,
    )
    plain = fairdedup_cluster(X, 0.1, PROTOTYPES)
    gated = fairdedup_cluster(X, 0.1, PROTOTYPES, relevance_gate=0.1)
    assert plain.remove[:4].tolist() == [True, False, True, False]
    assert gated.remove[:4].tolist() == [False, True, True, False]
    assert gated.kept_because[:4].tolist() == [-1, -1, 1, 1]


def test_label_column_mode():
    """Attribute column instead of prototypes: keep the member labelled g*, else earliest."""
    rng = np.random.default_rng(3)
    s1, s2, s3 = _content(3, rng)
    near = [_person(s1, P_A, 0.0)] * 3 + [_person(s2, P_A, 0.0)] * 2 + [_person(s3, P_A, 0.0)] * 2
    X = np.array(near + list(_content(4, rng)), dtype=np.float32)
    labels = np.array([0, 0, 1, -1, -1, 0, -1, 0, 0, 1, -1])  # g* = 1 (2 of 9 known labels)
    res = fairdedup_cluster(X, 0.05, labels=labels)
    assert res.remove[:7].tolist() == [True, True, False, False, True, False, True]
    assert res.kept_because[:7].tolist() == [1, 1, 1, -1, -1, -1, -1]
    np.testing.assert_array_equal(res.group_of_max_prototype, labels)
    with pytest.raises(ValueError):
        fairdedup_cluster(X, 0.05, PROTOTYPES, labels=labels)
    with pytest.raises(ValueError):
        fairdedup_cluster(X, 0.05)


def test_ties_keep_the_earlier_ranked_member():
    x = _person(_content(1, np.random.default_rng(4))[0], P_B)
    res = fairdedup_cluster(np.array([x, x, x], dtype=np.float32), 0.1, PROTOTYPES)
    assert res.remove.tolist() == [False, True, True]


def _fake_encoder(texts: list[str]) -> np.ndarray:
    """Deterministic stand-in for a CLIP text tower: a random vector per string (×2 scale)."""
    return np.stack([
        2 * np.random.default_rng(zlib.crc32(t.encode())).normal(size=8) for t in texts
    ])


def test_text_prototypes_average_normalised_template_embeddings():
    """§3.2 step 1: templates × terms → embed → normalise → mean → normalise."""
    protos = text_prototypes(_fake_encoder, {"male": ["man", "male"], "female": ["woman"]})
    assert protos.shape == (2, 8) and protos.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(protos, axis=1), 1, atol=1e-6)
    E = _fake_encoder([t.format(w) for w in ("man", "male") for t in DEFAULT_TEMPLATES])
    E /= np.linalg.norm(E, axis=1, keepdims=True)
    np.testing.assert_allclose(protos[0], E.mean(0) / np.linalg.norm(E.mean(0)), atol=1e-6)
    np.testing.assert_allclose(
        text_prototypes(_fake_encoder, ["woman"]), protos[1:], atol=1e-7
    )


def test_image_prototypes_are_mean_directions():
    E = {"a": np.array([[2.0, 0], [0, 3.0]]), "b": np.array([[0, -1.0]])}
    protos = image_prototypes(E)
    np.testing.assert_allclose(protos, [[0.70710677, 0.70710677], [0, -1]], atol=1e-6)
    np.testing.assert_array_equal(image_prototypes(list(E.values())), protos)
