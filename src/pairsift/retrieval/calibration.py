"""Match confidence: a cosine score turned into P(same | score) (docs/algorithms.md §6.1).

Two-distribution Bayes model: densities ``f1`` of same pairs and ``f0`` of different pairs,
``P(same | s) = sigmoid(logit(prior) + log f1(s) - log f0(s))``, computed in log space. The
densities are a Gaussian KDE (Scott bandwidth; the default), Beta on ``u = (s + 1) / 2``
(method of moments, then maximum likelihood), or Gaussian. docs/algorithms.md §6.1: Beta is the
default; pairsift uses the KDE because different-pair scores are a mixture (unrelated photos
plus other crops of the same photo) that one unimodal density cannot fit: on 9,040 held-out
synthetic pairs Beta's ECE was 0.026 against the KDE's 0.0026.
Unequal spreads make the likelihood ratio non-monotone (a higher score could mean a lower
confidence), so the log ratio is evaluated on a grid and clamped: to its running maximum above
the mode of ``f1`` and its running minimum below it. With fewer than ``MIN_POSITIVES`` same
pairs the densities are not trusted and Platt scaling (a logistic fit of the label on ``s``,
with Platt's smoothed targets so separable data stays finite) is used instead.

The prior is stated, not hidden: the densities do not depend on how many pairs of each kind
were sampled, so ``prior`` can be set to the deployment rate (for one true match among N
candidates, about 1/N); Platt's intercept carries the calibration set's rate ``fit_prior`` and
is shifted by the odds ratio of the two priors.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
from scipy import optimize, special, stats

from ..errors import ConfigError
from ..workspace import atomic_write

MIN_POSITIVES = 50
METHODS = ("beta", "gaussian", "kde", "platt")
U_EPS = 1e-6  # u = (s + 1) / 2 is clamped to [U_EPS, 1 - U_EPS]
GRID = np.linspace(-1.0, 1.0, 2001)
KDE_MAX_SAMPLES = 2000  # per class, stored in the JSON
MIN_STD = 1e-3
MAX_GROUP_MEMBERS = 200  # same pairs of a larger group come from a sample of its members
BINS = 10


def _u(scores: np.ndarray) -> np.ndarray:
    return np.clip((np.asarray(scores, np.float64) + 1) / 2, U_EPS, 1 - U_EPS)


def _logit(p: float) -> float:
    return float(np.log(p) - np.log1p(-p))


def fit_beta(scores: np.ndarray) -> dict[str, float]:
    """Beta(a, b) of u by maximum likelihood, started from the method-of-moments estimate."""
    u = _u(scores)
    mean, var = u.mean(), max(u.var(), 1e-10)
    common = max(mean * (1 - mean) / var - 1, 1e-3)
    log_u, log_1u = np.log(u).mean(), np.log1p(-u).mean()

    def nll(t: np.ndarray) -> tuple[float, np.ndarray]:
        a, b = np.exp(t)
        value = special.betaln(a, b) - (a - 1) * log_u - (b - 1) * log_1u
        psi_ab = special.digamma(a + b)
        grad = np.array([a * (special.digamma(a) - psi_ab - log_u),
                         b * (special.digamma(b) - psi_ab - log_1u)])
        return float(value), grad

    start = np.log([mean * common, (1 - mean) * common])
    result = optimize.minimize(nll, start, jac=True, method="L-BFGS-B")
    a, b = np.exp(result.x)
    return {"a": float(a), "b": float(b)}


def beta_logpdf(s: np.ndarray, a: float, b: float) -> np.ndarray:
    return stats.beta.logpdf(_u(s), a, b)


def fit_gaussian(scores: np.ndarray) -> dict[str, float]:
    return {"mean": float(np.mean(scores)), "std": float(max(np.std(scores), MIN_STD))}


def gaussian_logpdf(s: np.ndarray, mean: float, std: float) -> np.ndarray:
    return stats.norm.logpdf(s, mean, std)


def fit_kde(scores: np.ndarray) -> dict[str, list[float]]:
    """The samples themselves (an even subsample above KDE_MAX_SAMPLES): a KDE is its data."""
    s = np.sort(np.asarray(scores, np.float64))
    if len(s) > KDE_MAX_SAMPLES:
        s = s[np.linspace(0, len(s) - 1, KDE_MAX_SAMPLES).round().astype(int)]
    if np.ptp(s) == 0:  # a KDE of identical points is singular: spread them by MIN_STD
        s = s + np.linspace(-MIN_STD, MIN_STD, len(s))
    return {"samples": [round(float(x), 6) for x in s]}


def kde_logpdf(s: np.ndarray, samples: list[float]) -> np.ndarray:
    return stats.gaussian_kde(np.asarray(samples)).logpdf(np.atleast_1d(s))


FAMILIES = {"beta": (fit_beta, beta_logpdf), "gaussian": (fit_gaussian, gaussian_logpdf),
            "kde": (fit_kde, kde_logpdf)}


def fit_platt(scores: np.ndarray, same: np.ndarray) -> dict[str, float]:
    """Logistic ``P = sigmoid(a s + b)`` with Platt's targets (N+ + 1)/(N+ + 2), 1/(N- + 2)."""
    pos, neg = int(same.sum()), int((~same).sum())
    target = np.where(same, (pos + 1) / (pos + 2), 1 / (neg + 2))
    s = np.asarray(scores, np.float64)

    def loss(t: np.ndarray) -> tuple[float, np.ndarray]:
        z = t[0] * s + t[1]
        value = np.mean(np.logaddexp(0, z) - target * z)
        residual = special.expit(z) - target
        return float(value), np.array([np.mean(residual * s), np.mean(residual)])

    result = optimize.minimize(loss, np.array([1.0, _logit(pos / len(s))]), jac=True,
                               method="L-BFGS-B", bounds=[(0, None), (None, None)])
    return {"a": float(result.x[0]), "b": float(result.x[1])}


@dataclass
class Calibration:
    """A fitted score -> P(same) map; ``method`` is the model actually used."""

    method: str
    params: dict[str, Any]
    fit_prior: float  # share of same pairs in the fitted set
    prior: float  # the stated prior used by ``posterior`` unless one is passed
    requested: str
    positives: int
    negatives: int
    note: str | None = None

    def log_odds(self, scores: np.ndarray, prior: float | None = None) -> np.ndarray:
        s = np.asarray(scores, np.float64)
        prior = self.prior if prior is None else prior
        if self.method == "platt":
            shift = _logit(prior) - _logit(self.fit_prior)
            return self.params["a"] * s + self.params["b"] + shift
        return _logit(prior) + np.interp(s, GRID, self._monotone_llr)

    def posterior(self, scores: np.ndarray, prior: float | None = None) -> np.ndarray:
        """P(same | score) under ``prior`` (default: the stated prior)."""
        return special.expit(self.log_odds(scores, prior))

    def raw_llr(self, s: np.ndarray) -> np.ndarray:
        """log f1(s) - log f0(s) before monotonicity is enforced."""
        logpdf = FAMILIES[self.method][1]
        return logpdf(s, **self.params["same"]) - logpdf(s, **self.params["different"])

    @cached_property
    def _monotone_llr(self) -> np.ndarray:
        llr = self.raw_llr(GRID)
        mode = int(np.argmax(FAMILIES[self.method][1](GRID, **self.params["same"])))
        out = llr.copy()
        out[mode:] = np.maximum.accumulate(llr[mode:])
        out[:mode + 1] = np.minimum.accumulate(llr[:mode + 1][::-1])[::-1]
        return out

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Calibration:
        return cls(**data)


def fit(scores: np.ndarray, same: np.ndarray, *, method: str = "kde",
        prior: float | None = None) -> Calibration:
    """Fit ``method`` on labelled pair scores (Platt below MIN_POSITIVES same pairs)."""
    if method not in METHODS:
        raise ConfigError(f"unknown calibration method {method!r}; choose one of {METHODS}")
    scores, same = np.asarray(scores, np.float64), np.asarray(same, bool)
    pos, neg = int(same.sum()), int((~same).sum())
    if pos == 0 or neg == 0:
        raise ConfigError(f"calibration needs both same and different pairs; got {pos} same "
                         f"and {neg} different")
    if prior is not None and not 0 < prior < 1:
        raise ConfigError(f"the prior must be strictly between 0 and 1, got {prior}")
    used, note = method, None
    if method != "platt" and pos < MIN_POSITIVES:
        used = "platt"
        note = f"{pos} same pairs < {MIN_POSITIVES}: Platt scaling instead of {method}"
    if used == "platt":
        params: dict[str, Any] = fit_platt(scores, same)
    else:
        fit_family = FAMILIES[used][0]
        params = {"same": fit_family(scores[same]), "different": fit_family(scores[~same])}
    fit_prior = pos / len(scores)
    return Calibration(used, params, fit_prior, fit_prior if prior is None else prior, method,
                       pos, neg, note)


def reliability_bins(p: np.ndarray, y: np.ndarray, bins: int = BINS) -> list[dict[str, Any]]:
    """Equal-width confidence bins: count, mean confidence and observed share of same pairs."""
    edges = np.linspace(0, 1, bins + 1)
    which = np.clip(np.digitize(p, edges[1:-1]), 0, bins - 1)
    out = []
    for b in range(bins):
        mask = which == b
        out.append({"lo": float(edges[b]), "hi": float(edges[b + 1]), "count": int(mask.sum()),
                    "confidence": float(p[mask].mean()) if mask.any() else None,
                    "observed": float(y[mask].mean()) if mask.any() else None})
    return out


def expected_calibration_error(p: np.ndarray, y: np.ndarray, bins: int = BINS) -> float:
    """Sum over bins of (bin share) x |observed rate - mean confidence|."""
    total = len(p)
    return float(sum(b["count"] / total * abs(b["observed"] - b["confidence"])
                     for b in reliability_bins(p, y, bins) if b["count"]))


@dataclass
class Evaluation:
    """Calibration quality on pairs the fit did not see."""

    pairs: int
    positives: int
    ece: float
    brier: float
    bins: list[dict[str, Any]] = field(default_factory=list)


def evaluate(calibration: Calibration, scores: np.ndarray, same: np.ndarray) -> Evaluation:
    """ECE, Brier score and reliability bins at the fitted set's prior, which a stratified
    held-out split shares (the stated prior may differ and would shift every confidence)."""
    same = np.asarray(same, bool)
    p = calibration.posterior(scores, prior=calibration.fit_prior)
    y = same.astype(np.float64)
    return Evaluation(len(p), int(same.sum()), expected_calibration_error(p, y),
                      float(np.mean((p - y) ** 2)), reliability_bins(p, y))


def stratified_holdout(same: np.ndarray, fraction: float,
                       rng: np.random.Generator) -> np.ndarray:
    """A boolean mask of held-out pairs: ``fraction`` of the same and of the different ones."""
    held = np.zeros(len(same), bool)
    for label in (True, False):
        rows = np.flatnonzero(same == label)
        held[rng.choice(rows, int(round(fraction * len(rows))), replace=False)] = True
    return held


def group_pairs(groups: np.ndarray, rng: np.random.Generator,
                max_pairs: int = 200_000) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
    """Pairs (i, j, same) from group labels, and the share of same pairs among all pairs.

    Every pair is used when there are at most ``max_pairs``; otherwise every same pair (up to
    ``max_pairs // 2``) and a uniform sample of different pairs.
    """
    n = len(groups)
    _, codes, sizes = np.unique(groups, return_inverse=True, return_counts=True)
    total = n * (n - 1) // 2
    population = float((sizes * (sizes - 1) // 2).sum() / max(total, 1))
    if total <= max_pairs:
        i, j = np.triu_indices(n, 1)
        return i, j, codes[i] == codes[j], population
    i, j = _same_pairs(codes, rng, max_pairs // 2)
    need = max_pairs - len(i)
    a, b = rng.integers(0, n, 2 * need), rng.integers(0, n, 2 * need)
    keep = codes[a] != codes[b]
    a, b = np.minimum(a, b)[keep][:need], np.maximum(a, b)[keep][:need]
    same = np.concatenate([np.ones(len(i), bool), np.zeros(len(a), bool)])
    return np.concatenate([i, a]), np.concatenate([j, b]), same, population


def _same_pairs(codes: np.ndarray, rng: np.random.Generator,
                limit: int) -> tuple[np.ndarray, np.ndarray]:
    members = np.split(np.argsort(codes, kind="stable"), np.cumsum(np.bincount(codes))[:-1])
    members = [m if len(m) <= MAX_GROUP_MEMBERS else rng.choice(m, MAX_GROUP_MEMBERS, False)
               for m in members]
    pairs = [np.stack(np.triu_indices(len(m), 1)) for m in members]
    i = np.concatenate([m[p[0]] for m, p in zip(members, pairs, strict=True)])
    j = np.concatenate([m[p[1]] for m, p in zip(members, pairs, strict=True)])
    if len(i) > limit:
        take = rng.choice(len(i), limit, replace=False)
        i, j = i[take], j[take]
    return i, j


def save(path: Path, calibration: Calibration, report: dict[str, Any]) -> None:
    blob = json.dumps({"calibration": calibration.to_dict(), **report}, indent=1).encode()
    atomic_write(path, lambda tmp: tmp.write_bytes(blob))


def load(path: Path) -> Calibration:
    return Calibration.from_dict(json.loads(path.read_text())["calibration"])


def plot_reliability(evaluation: Evaluation, path: Path, title: str) -> None:
    """A reliability diagram (observed share of same pairs against confidence) as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    used = [b for b in evaluation.bins if b["count"]]
    fig, ax = plt.subplots(figsize=(4, 4), dpi=100)
    ax.plot([0, 1], [0, 1], color="grey", linestyle="--", linewidth=1)
    ax.plot([b["confidence"] for b in used], [b["observed"] for b in used], marker="o")
    ax.set(xlim=(0, 1), ylim=(0, 1), xlabel="confidence P(same)", ylabel="observed same",
           title=f"{title}\nECE {evaluation.ece:.3f}, Brier {evaluation.brier:.3f}")
    fig.tight_layout()
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png"))
    plt.close(fig)
