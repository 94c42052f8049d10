"""Metric learning on frozen embeddings: an ArcFace head, and open-set retrieval metrics.

The backbone stays frozen; a small head (BatchNorm + Linear, or a one-hidden-layer MLP) is
trained on the stored embeddings of labelled samples with the additive angular margin loss
(Deng et al. 2019, pytorch-metric-learning's ``ArcFaceLoss``): the logit of the true identity
is ``s * cos(theta_y + m)``, the others ``s * cos(theta_j)``, theta the angle between the
normalised output and the normalised class weight, then cross-entropy. At inference the class
weights are dropped and the head's normalised output is the embedding.

Evaluation is open-set, as in face recognition: the identities evaluated on are never trained
on. Each evaluated sample queries all the others (itself left out); recall@k is the share of
queries with a same-identity sample among the k nearest, mAP the mean average precision of
the same-identity samples in the full ranking. Queries run in blocks, so no n x n matrix.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from scipy import stats

from ..lazy import lazy
from ..models.base import l2_normalize
from . import calibration as cal

torch = lazy("torch")  # imported on first use: the CLI starts without torch

KS = (1, 5, 10)
OVERLAP_BINS = 100  # histogram bins on [-1, 1] for the overlap coefficient
PLOT_PAIRS = 20_000  # pairs per kind kept for the score plot


@dataclass(frozen=True)
class HeadConfig:
    dim: int = 256
    margin: float = 0.5  # radians
    scale: float = 30.0
    hidden: int | None = None  # a hidden layer (MLP head) instead of BatchNorm + Linear
    epochs: int = 30
    patience: int = 5  # epochs without a better validation recall@1 before stopping
    batch_size: int = 128
    lr: float = 5e-3
    seed: int = 0


@dataclass
class Training:
    """A trained head (eval mode) and how training went."""

    head: Any  # torch.nn.Sequential
    history: list[dict[str, float]] = field(default_factory=list)
    best_epoch: int = 0
    seconds: float = 0.0


def build_head(d_in: int, config: HeadConfig) -> torch.nn.Sequential:
    nn = torch.nn
    if config.hidden is None:
        return nn.Sequential(nn.BatchNorm1d(d_in), nn.Linear(d_in, config.dim))
    return nn.Sequential(nn.BatchNorm1d(d_in), nn.Linear(d_in, config.hidden), nn.ReLU(),
                         nn.Linear(config.hidden, config.dim))


def arcface_loss(num_classes: int, config: HeadConfig) -> Any:
    """pytorch-metric-learning's ArcFaceLoss; it takes the margin in degrees."""
    from pytorch_metric_learning.losses import ArcFaceLoss

    return ArcFaceLoss(num_classes, config.dim, margin=math.degrees(config.margin),
                       scale=config.scale)


def train_head(x: np.ndarray, y: np.ndarray, x_val: np.ndarray, y_val: np.ndarray,
               config: HeadConfig, log: Callable[[str], None] = lambda s: None) -> Training:
    """Train on unit rows ``x`` with identity codes ``y`` (0..C-1); keep the epoch with the
    best recall@1 on the validation identities (disjoint from ``y``'s)."""
    torch.manual_seed(config.seed)
    rng = np.random.default_rng(config.seed)
    head = build_head(x.shape[1], config)
    loss_fn = arcface_loss(int(y.max()) + 1, config)
    optimizer = torch.optim.AdamW([*head.parameters(), *loss_fn.parameters()], lr=config.lr)
    xt, yt = torch.from_numpy(np.ascontiguousarray(x, np.float32)), torch.from_numpy(y)
    best, best_state, stale = -1.0, copy.deepcopy(head.state_dict()), 0
    out = Training(head)
    start = time.perf_counter()
    for epoch in range(1, config.epochs + 1):
        head.train()
        losses = []
        for rows in _batches(rng.permutation(len(x)), config.batch_size):
            loss = loss_fn(head(xt[rows]), yt[rows])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            losses.append(loss.item())
        recall = retrieval_metrics(apply(head, x_val), y_val, ks=(1,))["recall@1"]
        out.history.append({"epoch": epoch, "loss": float(np.mean(losses)),
                            "val_recall@1": recall})
        log(f"epoch {epoch}: loss {np.mean(losses):.3f}, validation recall@1 {recall:.3f}")
        if recall > best:
            best, best_state, out.best_epoch, stale = recall, copy.deepcopy(
                head.state_dict()), epoch, 0
        else:
            stale += 1
            if stale >= config.patience:
                break
    head.load_state_dict(best_state)
    head.eval()
    out.seconds = time.perf_counter() - start
    return out


def _batches(order: np.ndarray, size: int) -> list[np.ndarray]:
    """Minibatches of ``order``; a last batch of one row joins the previous one (BatchNorm
    cannot normalise a single row)."""
    batches = [order[i:i + size] for i in range(0, len(order), size)]
    if len(batches) > 1 and len(batches[-1]) == 1:
        batches[-2] = np.concatenate([batches[-2], batches.pop()])
    return batches


def apply(head: torch.nn.Module, x: np.ndarray) -> np.ndarray:
    """Unit rows of the head's output (eval mode, no autograd)."""
    head.eval()
    with torch.inference_mode():
        out = head(torch.from_numpy(np.ascontiguousarray(x, np.float32))).numpy()
    return l2_normalize(out)


def fold(head: torch.nn.Sequential) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """The head as affine layers with ReLU between them: eval-mode BatchNorm merged into the
    Linear after it (``W diag(g) x + W t + b``)."""
    bn, *rest = head
    scale = (bn.weight / torch.sqrt(bn.running_var + bn.eps)).detach().numpy()
    shift = (bn.bias.detach() - bn.running_mean * bn.weight
             / torch.sqrt(bn.running_var + bn.eps)).detach().numpy()
    linears = [m for m in rest if isinstance(m, torch.nn.Linear)]
    first = linears[0].weight.detach().numpy()
    weights = [first * scale[None, :]] + [m.weight.detach().numpy() for m in linears[1:]]
    biases = [linears[0].bias.detach().numpy() + first @ shift]
    biases += [m.bias.detach().numpy() for m in linears[1:]]
    return ([w.astype(np.float32) for w in weights], [b.astype(np.float32) for b in biases])


# -- evaluation ---------------------------------------------------------------------------------
def retrieval_metrics(x: np.ndarray, labels: np.ndarray, ks: tuple[int, ...] = KS,
                      block_bytes: int = 2**27) -> dict[str, float]:
    """Recall@k and mAP of every sample querying the others (unit rows ``x``). Queries with
    no other sample of their identity are left out; ``queries`` says how many counted."""
    n = len(x)
    x = np.ascontiguousarray(x, np.float32)
    block = max(1, block_bytes // (8 * max(n, 1)))
    hits = {k: 0 for k in ks}
    ap_sum, queries = 0.0, 0
    for start in range(0, n, block):
        q = np.arange(start, min(start + block, n))
        scores = x[q] @ x.T
        scores[np.arange(len(q)), q] = -np.inf  # a query never finds itself
        same = labels[q][:, None] == labels[None, :]
        same[np.arange(len(q)), q] = False
        counted = same.any(axis=1)
        order = np.argsort(-scores[counted], axis=1, kind="stable")
        ranked = np.take_along_axis(same[counted], order, axis=1)
        for k in ks:
            hits[k] += int(ranked[:, :k].any(axis=1).sum())
        found = np.cumsum(ranked, axis=1)
        precision = found / np.arange(1, n + 1)
        ap_sum += float(((precision * ranked).sum(axis=1) / ranked.sum(axis=1)).sum())
        queries += int(counted.sum())
    out = {f"recall@{k}": hits[k] / max(queries, 1) for k in ks}
    return out | {"mAP": ap_sum / max(queries, 1), "queries": queries}


def overlap_coefficient(same: np.ndarray, different: np.ndarray,
                        bins: int = OVERLAP_BINS) -> float:
    """Shared area of the two score histograms on [-1, 1] (1: identical, 0: separated)."""
    edges = np.linspace(-1, 1, bins + 1)
    p = np.histogram(np.clip(same, -1, 1), edges)[0] / max(len(same), 1)
    q = np.histogram(np.clip(different, -1, 1), edges)[0] / max(len(different), 1)
    return float(np.minimum(p, q).sum())


def roc_auc(same: np.ndarray, different: np.ndarray) -> float:
    """P(a same pair scores above a different pair), ties counting half (Mann-Whitney U)."""
    ranks = stats.rankdata(np.concatenate([same, different]))
    n1, n0 = len(same), len(different)
    return float((ranks[:n1].sum() - n1 * (n1 + 1) / 2) / (n1 * n0))


@dataclass
class SpaceEvaluation:
    """Retrieval and pair-score figures of one space on the test identities."""

    metrics: dict[str, float]
    same: np.ndarray  # a sample of same-identity pair scores (for the plot)
    different: np.ndarray


def evaluate_space(x: np.ndarray, labels: np.ndarray, seed: int = 0) -> SpaceEvaluation:
    """Recall@k, mAP, the overlap and ROC AUC of same vs different pair scores, and the ECE
    of P(same) fitted (KDE, retrieval/calibration.py) on half the pairs and measured on the
    other half."""
    rng = np.random.default_rng(seed)
    metrics = retrieval_metrics(x, labels)
    i, j, same, _ = cal.group_pairs(labels, rng)
    scores = np.einsum("nd,nd->n", x[i], x[j])
    metrics["overlap"] = overlap_coefficient(scores[same], scores[~same])
    metrics["auc"] = roc_auc(scores[same], scores[~same])
    metrics["ece"] = _heldout_ece(scores, same, rng)
    return SpaceEvaluation(metrics, _sample(scores[same], rng), _sample(scores[~same], rng))


def _heldout_ece(scores: np.ndarray, same: np.ndarray, rng: np.random.Generator) -> float:
    held = cal.stratified_holdout(same, 0.5, rng)
    if not same[~held].any() or same[~held].all():
        return float("nan")
    fitted = cal.fit(scores[~held], same[~held], method="kde")
    return cal.evaluate(fitted, scores[held], same[held]).ece


def _sample(values: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    if len(values) <= PLOT_PAIRS:
        return values.astype(np.float32)
    return rng.choice(values, PLOT_PAIRS, replace=False).astype(np.float32)


def plot_scores(before: SpaceEvaluation, after: SpaceEvaluation, path: Path,
                title: str) -> None:
    """Same- and different-identity score histograms, before and after, as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    from ..workspace import atomic_write

    fig = Figure(figsize=(8, 3.2), dpi=100)
    axes = fig.subplots(1, 2, sharey=False)
    edges = np.linspace(-1, 1, OVERLAP_BINS + 1)
    for ax, (label, ev) in zip(axes, (("before", before), ("after", after)), strict=True):
        ax.hist(ev.different, edges, density=True, alpha=0.6, label="different identity")
        ax.hist(ev.same, edges, density=True, alpha=0.6, label="same identity")
        m = ev.metrics
        ax.set(title=f"{label}: recall@1 {m['recall@1']:.3f}, overlap {m['overlap']:.3f}",
               xlabel="cosine score")
    axes[0].legend(loc="upper left", fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png"))
