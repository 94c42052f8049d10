"""k-means partition (docs/algorithms.md §1.2 steps 1-3, docs/design.md §6): faiss on a sample,
chunked assignment."""

from __future__ import annotations

import io
import warnings

import numpy as np
import pytest

from pairsift.stages.cluster import (
    KMeansModel,
    choose_k,
    cluster_members,
    fit_kmeans,
    unit_rows,
)


def _blobs(k: int = 5, per: int = 120, d: int = 16, noise: float = 0.05, seed: int = 0):
    """Well-separated directions on the sphere, with float16 storage like the workspace."""
    rng = np.random.default_rng(seed)
    centres = np.linalg.qr(rng.normal(size=(d, k)))[0].T  # orthonormal: cos 0 between blobs
    truth = np.repeat(np.arange(k), per)
    X = centres[truth] + noise * rng.normal(size=(k * per, d))
    perm = rng.permutation(len(X))
    return (3.0 * X[perm]).astype(np.float16), truth[perm]  # not unit length on purpose


def _same_partition(a: np.ndarray, b: np.ndarray) -> bool:
    pairs = set(zip(a.tolist(), b.tolist(), strict=True))
    return len(pairs) == len(set(a.tolist())) == len(set(b.tolist()))


def test_choose_k():
    assert choose_k(10) == 1
    assert choose_k(1_000_000) == 1000
    assert choose_k(5, target_mean_cluster_size=1) == 5
    with pytest.raises(ValueError):
        choose_k(0)


def test_unit_rows_rejects_zero_rows():
    """docs/algorithms.md §1.2 step 1: normalise, and refuse rows without a direction."""
    x = unit_rows(np.array([[3.0, 4.0]], dtype=np.float16)).numpy()
    np.testing.assert_allclose(x, [[0.6, 0.8]], atol=1e-6)
    with pytest.raises(ValueError, match="row 1"):
        unit_rows(np.array([[1.0, 0.0], [0.0, 0.0]]))


def test_read_only_float16_memmap_is_accepted_without_warnings(tmp_path):
    """docs/design.md §3: embeddings are float16 .npy opened with mmap_mode="r"."""
    X, _ = _blobs(per=30)
    np.save(tmp_path / "e.npy", X)
    mm = np.load(tmp_path / "e.npy", mmap_mode="r")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        labels, _ = fit_kmeans(mm, 5, niter=10).assign(mm, chunk_size=64)
    np.testing.assert_array_equal(labels, fit_kmeans(X, 5, niter=10).assign(X)[0])


def test_spherical_kmeans_recovers_blobs_and_distance_is_cosine():
    X, truth = _blobs()
    model = fit_kmeans(X, 5, niter=20, seed=1234)
    labels, dist = model.assign(X)
    assert labels.dtype == np.int32 and dist.dtype == np.float32
    assert _same_partition(labels, truth)
    x = unit_rows(X).numpy()
    c = model.centroids / np.linalg.norm(model.centroids, axis=1, keepdims=True)
    np.testing.assert_allclose(dist, 1 - np.sum(x * c[labels], axis=1), atol=1e-6)
    assert dist.min() >= 0 and dist.max() < 0.1


def test_chunked_assignment_equals_one_shot():
    """docs/design.md §6: assignment streams in chunks; chunking must not change any result."""
    X, _ = _blobs(seed=1)
    model = fit_kmeans(X, 5, niter=10, train_size=300)
    one = model.assign(X, chunk_size=len(X))
    progress = []
    for chunk in (1, 7, 256):
        labels, dist = model.assign(X, chunk_size=chunk, progress=lambda d, n: progress.append(d))
        np.testing.assert_array_equal(labels, one[0])
        np.testing.assert_allclose(dist, one[1], rtol=0, atol=2e-7)
    assert progress[-1] == len(X)


def _save(model: KMeansModel) -> io.BytesIO:
    buf = io.BytesIO()
    np.savez(buf, **model.to_arrays())
    buf.seek(0)
    return buf


def test_pca_path_and_round_trip_through_arrays():
    X, truth = _blobs(d=32, seed=2)
    model = fit_kmeans(X, 5, niter=20, pca_dim=8)
    assert model.pca_matrix.shape == (8, 32) and model.centroids.shape == (5, 8)
    labels, dist = model.assign(X)
    assert _same_partition(labels, truth)
    again = KMeansModel.from_arrays(dict(np.load(_save(model))))
    np.testing.assert_array_equal(again.assign(X)[0], labels)
    np.testing.assert_array_equal(again.assign(X)[1], dist)


def test_l2_kmeans_distance_is_to_normalised_centroid():
    """docs/algorithms.md §1.2 step 3 / §2.1: L2 clustering, but the ranking distance is 1 − cos."""
    X, truth = _blobs(seed=3)
    model = fit_kmeans(X, 5, spherical=False, niter=20)
    labels, dist = model.assign(X)
    assert _same_partition(labels, truth)
    x = unit_rows(X).numpy()
    c = model.centroids[labels]
    cos = np.sum(x * c, axis=1) / np.linalg.norm(c, axis=1)
    np.testing.assert_allclose(dist, 1 - cos, atol=1e-6)
    assert not KMeansModel.from_arrays(model.to_arrays()).spherical


def test_k_larger_than_data_is_an_error_and_default_k_is_sane():
    X, _ = _blobs(per=4)
    with pytest.raises(ValueError):
        fit_kmeans(X, 100)
    assert fit_kmeans(X, niter=2).k == 1  # 20 rows: one cluster, not 20


def test_cluster_members():
    groups = cluster_members(np.array([2, 0, 2, 1, 0], dtype=np.int32))
    assert list(groups) == [0, 1, 2]
    np.testing.assert_array_equal(groups[0], [1, 4])
    np.testing.assert_array_equal(groups[2], [0, 2])
