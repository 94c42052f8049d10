"""Fairness of retrieval: Skew, MaxSkew@k, MinSkew@k and NDKL (Geyik et al. 2019), measured as
Berg et al. (2022) do for CLIP.

For each prompt ("a photo of a {} person" x "smart", ...) the images are ranked by cosine with
it, and the attribute labels of the ranking are compared with a desired distribution:

- ``Skew_a@k = ln(p_k(a) / p(a))``, ``p_k(a)`` the share of label ``a`` in the top k;
  MaxSkew@k and MinSkew@k are its largest and smallest values over the labels (ideal 0);
- ``NDKL = (1/Z) sum_i KL(D_i || D) / log2(i + 1)`` over the whole ranking, ``D_i`` the label
  distribution of the top i and ``Z = sum_i 1 / log2(i + 1)`` (ideal 0).

A label absent from the top k has an infinite skew; Berg et al.'s code counts it as ``1/k``
(``zero_policy="berg"``, the default), the other common choice adds 1e-10 to both shares
(``"epsilon"``). The results are averaged over the prompts.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

ZERO_POLICIES = ("berg", "epsilon")
DESIRED = ("uniform", "dataset")
EPSILON = 1e-10


def desired_distribution(labels: np.ndarray, n_labels: int,
                         desired: str | Sequence[float] = "uniform") -> np.ndarray:
    """The target share of each label: ``uniform`` over the labels present (equal
    opportunity), ``dataset`` their shares in the evaluated images (demographic parity), or
    explicit shares (summing to 1)."""
    if isinstance(desired, str):
        if desired not in DESIRED:
            raise ValueError(f"desired must be one of {DESIRED} or explicit shares")
        counts = np.bincount(labels, minlength=n_labels).astype(np.float64)
        shares = (counts > 0) * 1.0 if desired == "uniform" else counts
        return shares / shares.sum()
    shares = np.asarray(desired, dtype=np.float64)
    if shares.shape != (n_labels,) or not np.isclose(shares.sum(), 1.0) or (shares < 0).any():
        raise ValueError(f"explicit desired shares need {n_labels} non-negative values "
                         "summing to 1")
    if (shares[labels] == 0).any():
        raise ValueError("an evaluated image has a label whose desired share is 0")
    return shares


def skews(top_labels: np.ndarray, desired: np.ndarray, zero_policy: str = "berg") -> np.ndarray:
    """``Skew_a@k`` of every label with a desired share > 0, for the top-k ``top_labels``."""
    if zero_policy not in ZERO_POLICIES:
        raise ValueError(f"zero_policy must be one of {ZERO_POLICIES}")
    k = len(top_labels)
    if k == 0:
        raise ValueError("k must be at least 1")
    present = desired > 0
    p = np.bincount(top_labels, minlength=len(desired))[present] / k
    q = desired[present]
    if zero_policy == "berg":
        return np.log(np.where(p == 0, 1 / k, p) / q)
    return np.log((p + EPSILON) / (q + EPSILON))


def max_skew(top_labels: np.ndarray, desired: np.ndarray, zero_policy: str = "berg") -> float:
    return float(skews(top_labels, desired, zero_policy).max())


def min_skew(top_labels: np.ndarray, desired: np.ndarray, zero_policy: str = "berg") -> float:
    return float(skews(top_labels, desired, zero_policy).min())


def ndkl(ranked_labels: np.ndarray, desired: np.ndarray) -> float:
    """Normalised discounted KL divergence of the whole ranking from ``desired`` (0 ln 0 = 0)."""
    n = len(ranked_labels)
    onehot = np.zeros((n, len(desired)))
    onehot[np.arange(n), ranked_labels] = 1
    top_i = np.cumsum(onehot, axis=0) / np.arange(1, n + 1)[:, None]
    with np.errstate(divide="ignore", invalid="ignore"):
        terms = np.where(top_i > 0, top_i * np.log(top_i / desired), 0.0)
    discount = 1 / np.log2(np.arange(2, n + 2))
    return float((terms.sum(axis=1) * discount).sum() / discount.sum())


@dataclass
class FairnessResult:
    """Means over the prompts, and each prompt's values (rows in prompt order)."""

    k: int
    max_skew: float
    min_skew: float
    ndkl: float
    per_prompt: np.ndarray  # prompts x (max_skew, min_skew, ndkl)

    def metrics(self) -> dict[str, float]:
        return {f"max_skew@{self.k}": self.max_skew, f"min_skew@{self.k}": self.min_skew,
                "ndkl": self.ndkl}


def retrieval_fairness(image_emb: np.ndarray, labels: np.ndarray, prompt_emb: np.ndarray, *,
                       k: int, desired: str | Sequence[float] = "uniform",
                       n_labels: int | None = None,
                       zero_policy: str = "berg") -> FairnessResult:
    """Rank the images for each prompt and measure the rankings' labels (``labels``: integer
    codes, one per image)."""
    labels = np.asarray(labels, dtype=np.int64)
    if not 1 <= k <= len(labels):
        raise ValueError(f"k must be between 1 and the number of images ({len(labels)})")
    n_labels = n_labels or int(labels.max()) + 1
    target = desired_distribution(labels, n_labels, desired)
    rows = []
    for prompt in prompt_emb:
        ranked = labels[np.argsort(-(image_emb @ prompt), kind="stable")]
        top = skews(ranked[:k], target, zero_policy)
        rows.append((top.max(), top.min(), ndkl(ranked, target)))
    per_prompt = np.asarray(rows, dtype=np.float64).reshape(-1, 3)
    means = per_prompt.mean(axis=0)
    return FairnessResult(k, float(means[0]), float(means[1]), float(means[2]), per_prompt)
