"""Image-text retrieval recall as clip_benchmark computes it, with several captions per image.

``image_retrieval_recall@k``: share of *captions* whose image is among the k images closest to
them; ``text_retrieval_recall@k``: share of *images* with at least one of their captions among
the k captions closest to them. DataComp's retrieval score is the mean of the two recalls at 1.
Queries are scored in blocks, so memory is a block of rows, never the whole captions x images
matrix.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np

KS = (1, 5, 10)
BLOCK = 1024


def _top_k(queries: np.ndarray, keys: np.ndarray, k: int) -> Iterator[np.ndarray]:
    """Indices of each query's k closest keys, best first, one block of queries at a time."""
    k = min(k, len(keys))
    for start in range(0, len(queries), BLOCK):
        scores = queries[start:start + BLOCK] @ keys.T
        top = np.argpartition(-scores, k - 1, axis=1)[:, :k]
        order = np.argsort(-np.take_along_axis(scores, top, axis=1), axis=1, kind="stable")
        yield np.take_along_axis(top, order, axis=1)


def retrieval_metrics(image_emb: np.ndarray, text_emb: np.ndarray,
                      text_image: Sequence[int] | np.ndarray,
                      ks: Sequence[int] = KS) -> dict[str, float]:
    """Recall@k both ways; ``text_image[j]`` is the index of the image caption ``j`` describes."""
    text_image = np.asarray(text_image, dtype=np.int64)
    if len(text_image) != len(text_emb):
        raise ValueError("text_image needs one image index per caption")
    kmax = max(ks)
    image_ranks = np.concatenate(list(_top_k(text_emb, image_emb, kmax)))
    text_ranks = np.concatenate(list(_top_k(image_emb, text_emb, kmax)))
    own = np.arange(len(image_emb))[:, None]
    metrics = {}
    for k in ks:
        metrics[f"image_retrieval_recall@{k}"] = float(
            (image_ranks[:, :k] == text_image[:, None]).any(axis=1).mean())
        metrics[f"text_retrieval_recall@{k}"] = float(
            (text_image[text_ranks[:, :k]] == own).any(axis=1).mean())
    if 1 in ks:
        metrics["datacomp_retrieval"] = 0.5 * (metrics["image_retrieval_recall@1"]
                                               + metrics["text_retrieval_recall@1"])
    return metrics
