"""Searching an index: top-k with a filter, exact re-scoring of lossy hits, nprobe tuning.

Filtering is done inside faiss with an ``IDSelectorBitmap`` over index positions, not by
over-fetching and dropping hits afterwards: a filter that leaves 1 % of the collection still
returns k hits from an exact index, and costs no extra candidates. With IVF only the ``nprobe``
probed lists are searched, so a very selective filter can return fewer than k hits.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import faiss
import numpy as np

from .build import IndexStore, WorkspaceVectors

RERANK_FACTOR = 8  # candidates per hit fetched from lossy codes before exact re-scoring
RECALL_TARGET = 0.97  # tuned recall@10: the 0.95 goal plus a margin for 200 sample queries
NPROBES = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096)
TUNE_QUERIES = 200

Fetch = Callable[[np.ndarray], np.ndarray]


def search_index(index: faiss.Index, queries: np.ndarray, k: int, *, nprobe: int | None = None,
                 allowed: np.ndarray | None = None, fetch: Fetch | None = None,
                 rerank: int = RERANK_FACTOR) -> tuple[np.ndarray, np.ndarray]:
    """Top-k (scores, positions) by inner product; positions are -1 where fewer than k match.

    ``allowed`` is a boolean mask over index positions; ``fetch`` returns exact vectors of
    positions, given for lossy codes so their best ``rerank * k`` candidates are re-scored.
    """
    queries = np.ascontiguousarray(queries, np.float32)
    fetch_k = min(k * (rerank if fetch else 1), index.ntotal)
    if fetch_k == 0:
        return np.full((len(queries), k), -np.inf, np.float32), np.full((len(queries), k), -1)
    ivf = faiss.try_extract_index_ivf(index)
    params = faiss.SearchParametersIVF() if ivf else faiss.SearchParameters()
    if ivf:
        params.nprobe = min(nprobe or 1, ivf.nlist)
    if allowed is not None:
        bitmap = np.packbits(allowed, bitorder="little")  # must outlive the search call
        params.sel = faiss.IDSelectorBitmap(len(allowed), faiss.swig_ptr(bitmap))
    scores, positions = index.search(queries, fetch_k, params=params)
    if fetch is not None:
        scores, positions = rescore(queries, positions, fetch, k)
    return _pad(scores, k, -np.inf), _pad(positions, k, -1)


def _pad(a: np.ndarray, k: int, value: float) -> np.ndarray:
    if a.shape[1] >= k:
        return a[:, :k]
    return np.pad(a, ((0, 0), (0, k - a.shape[1])), constant_values=value)


def rescore(queries: np.ndarray, positions: np.ndarray, fetch: Fetch,
            k: int) -> tuple[np.ndarray, np.ndarray]:
    """Re-score each query's candidates with exact vectors and keep the best k."""
    scores = np.full((len(queries), k), -np.inf, np.float32)
    out = np.full((len(queries), k), -1, np.int64)
    for i, row in enumerate(positions):
        candidates = row[row >= 0]
        if len(candidates) == 0:
            continue
        exact = fetch(candidates) @ queries[i]
        best = np.argsort(-exact, kind="stable")[:k]
        scores[i, :len(best)], out[i, :len(best)] = exact[best], candidates[best]
    return scores, out


def exact_search(queries: np.ndarray, chunks: Iterable[np.ndarray],
                 k: int) -> tuple[np.ndarray, np.ndarray]:
    """Exact top-k over vectors given chunk by chunk (positions continue across chunks), so a
    collection larger than memory can be the ground truth."""
    best_s = np.full((len(queries), 0), -np.inf, np.float32)
    best_p = np.zeros((len(queries), 0), np.int64)
    offset = 0
    for chunk in chunks:
        s = queries @ chunk.T
        p = np.broadcast_to(np.arange(offset, offset + len(chunk)), s.shape)
        s, p = np.hstack([best_s, s]), np.hstack([best_p, p])
        if s.shape[1] > k:
            top = np.argpartition(-s, k - 1, axis=1)[:, :k]
            s, p = np.take_along_axis(s, top, 1), np.take_along_axis(p, top, 1)
        order = np.argsort(-s, axis=1, kind="stable")
        best_s, best_p = np.take_along_axis(s, order, 1), np.take_along_axis(p, order, 1)
        offset += len(chunk)
    return best_s, best_p


def recall_at_k(found: np.ndarray, truth: np.ndarray) -> float:
    """Mean fraction of each query's true top-k that was found."""
    hits = [len(set(f[f >= 0]) & set(t)) / len(t) for f, t in zip(found, truth, strict=True)]
    return float(np.mean(hits))


def tune_nprobe(index: faiss.Index, queries: np.ndarray, truth: np.ndarray, *,
                fetch: Fetch | None = None, rerank: int = RERANK_FACTOR,
                own: np.ndarray | None = None,
                target: float = RECALL_TARGET) -> tuple[int, float]:
    """The smallest nprobe whose recall@k reaches ``target`` (else the largest tried).

    ``own`` gives each query's own position when queries are indexed vectors: it is left out
    of the results, as it is of ``truth``.
    """
    nlist = faiss.extract_index_ivf(index).nlist
    k = truth.shape[1]
    recall = 0.0
    for nprobe in (p for p in NPROBES if p <= nlist):
        found = search_index(index, queries, k + (own is not None), nprobe=nprobe,
                             fetch=fetch, rerank=rerank)[1]
        recall = recall_at_k(found if own is None else _without(found, own, k), truth)
        if recall >= target:
            return nprobe, recall
    return min(NPROBES[-1], nlist), recall


def tune_store(store: IndexStore, k: int = 10, seed: int = 0) -> dict[str, Any]:
    """Tune a stored IVF index with indexed vectors as queries (each query's own row left out
    of both result lists) and write the nprobe and recall into its metadata."""
    loaded = store.load()
    fetch = WorkspaceVectors(store, loaded.ids)
    rng = np.random.default_rng(seed)
    own = np.sort(rng.choice(loaded.index.ntotal, min(TUNE_QUERIES, loaded.index.ntotal),
                             replace=False))
    queries = fetch(own)
    chunks = (store.vectors(int(p))[0] for p in sorted(int(p) for p in loaded.meta["parts"]))
    truth = _without(exact_search(queries, chunks, k + 1)[1], own, k)
    choice = loaded.choice
    nprobe, recall = tune_nprobe(loaded.index, queries, truth, own=own, rerank=choice.rerank,
                                 fetch=fetch if choice.lossy else None)
    meta = {**loaded.meta, "nprobe": nprobe, "recall_at_10": round(recall, 4)}
    store.write_meta(meta)
    return meta


def _without(positions: np.ndarray, own: np.ndarray, k: int) -> np.ndarray:
    """Each row's positions other than the query's own, first k."""
    rows = [[p for p in row if p != o][:k] for row, o in zip(positions, own, strict=True)]
    return np.array([r + [-1] * (k - len(r)) for r in rows], np.int64)
