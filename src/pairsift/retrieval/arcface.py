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
import hashlib
import io
import json
import math
import re
import time
from collections.abc import Callable, Mapping
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


SELECT = ("recall@1", "mAP", "overlap")  # what early stopping keeps the best epoch by
INITS = ("pca", "random")  # how the head starts


@dataclass(frozen=True)
class HeadConfig:
    dim: int = 256
    margin: float = 0.5  # radians
    scale: float = 30.0
    hidden: int | None = None  # a hidden layer (MLP head) instead of BatchNorm + Linear
    epochs: int = 30
    patience: int = 5  # epochs without a better validation score before stopping
    batch_size: int = 128
    lr: float = 5e-3
    weight_decay: float = 0.01
    init: str = "pca"  # the training embeddings' principal directions, or "random"
    select: str = "recall@1"  # validation score of an epoch (SELECT); ties: the higher mAP
    seed: int = 0

    def __post_init__(self) -> None:
        if self.init not in INITS:
            raise ValueError(f"init must be one of {INITS}, got {self.init!r}")
        if self.select not in SELECT:
            raise ValueError(f"select must be one of {SELECT}, got {self.select!r}")


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
    best ``config.select`` score on the validation identities (disjoint from ``y``'s). The
    initial head is epoch 0 and a candidate too: training must beat where it started."""
    start = time.perf_counter()
    x = np.ascontiguousarray(x, np.float32)
    torch.manual_seed(config.seed)
    rng = np.random.default_rng(config.seed)
    head = build_head(x.shape[1], config)
    loss_fn = arcface_loss(int(y.max()) + 1, config)
    start_from_data(head, loss_fn, x, y, config.init)
    optimizer = torch.optim.AdamW([*head.parameters(), *loss_fn.parameters()], lr=config.lr,
                                  weight_decay=config.weight_decay)
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    validation = Validation(x_val, y_val, config.seed)
    out = Training(head)
    best, best_state, stale = None, None, 0
    for epoch in range(config.epochs + 1):
        loss = (_train_epoch(head, loss_fn, optimizer, xt, yt, rng, config.batch_size)
                if epoch else None)  # epoch 0 is the initial head: nothing trained yet
        scores = validation.scores(head)
        out.history.append({"epoch": epoch, "loss": loss,
                            **{f"val_{k}": v for k, v in scores.items()}})
        trained = "initial head" if loss is None else f"loss {loss:.3f}"
        log(f"epoch {epoch}: {trained}, validation " + ", ".join(
            f"{k} {v:.3f}" for k, v in scores.items()))
        rank = _rank(scores, config.select)
        if best is None or rank > best:
            best, best_state, out.best_epoch, stale = rank, copy.deepcopy(
                head.state_dict()), epoch, 0
        else:
            stale += 1
            if stale >= config.patience:
                break
    head.load_state_dict(best_state)
    head.eval()
    out.seconds = time.perf_counter() - start
    return out


def _train_epoch(head: Any, loss_fn: Any, optimizer: Any, xt: Any, yt: Any,
                 rng: np.random.Generator, batch_size: int) -> float:
    head.train()
    losses = []
    for rows in _batches(rng.permutation(len(xt)), batch_size):
        loss = loss_fn(head(xt[rows]), yt[rows])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    return float(np.mean(losses))


def _rank(scores: dict[str, float], select: str) -> tuple[float, ...]:
    """Higher is better: the selected score, then mAP (recall@1 saturates and ties)."""
    main = -scores["overlap"] if select == "overlap" else scores[select]
    return (main, scores["mAP"])


class Validation:
    """The validation identities' recall@1, mAP and score overlap of a head; the pairs of
    the overlap are drawn once, so epochs are compared on the same pairs."""

    def __init__(self, x: np.ndarray, labels: np.ndarray, seed: int):
        self.x, self.labels = x, labels
        self.i, self.j, self.same, _ = cal.group_pairs(labels, np.random.default_rng(seed))

    def scores(self, head: Any) -> dict[str, float]:
        h = apply(head, self.x)
        pair_scores = np.einsum("nd,nd->n", h[self.i], h[self.j])
        return {**{k: v for k, v in retrieval_metrics(h, self.labels, ks=(1,)).items()
                   if k != "queries"},
                "overlap": overlap_coefficient(pair_scores[self.same],
                                               pair_scores[~self.same])}


def start_from_data(head: Any, loss_fn: Any, x: np.ndarray, y: np.ndarray, init: str) -> None:
    """BatchNorm's running statistics set to the training embeddings' (so the initial head
    in eval mode is what training starts from); with ``init="pca"`` the Linear also starts as
    the projection on the top principal directions of the standardised training embeddings,
    and each identity's class weight as its mean there: training starts from a retrieval
    space (a PCA of the encoder's), not from a random projection and random classes.

    Only the first Linear is set: rows beyond the input width, and an MLP head's second
    layer, keep their random start, so there the initial head is not a PCA projection."""
    x = np.ascontiguousarray(x, np.float32)
    bn, linear = head[0], head[1]
    mean, var = x.mean(axis=0), x.var(axis=0)
    with torch.no_grad():
        bn.running_mean.copy_(torch.from_numpy(mean))
        bn.running_var.copy_(torch.from_numpy(var))
    if init == "random":
        return
    z = (x - mean) / np.sqrt(var + bn.eps)
    directions = principal_directions(z, linear.out_features)
    with torch.no_grad():
        linear.weight[:len(directions)] = torch.from_numpy(directions.astype(np.float32))
        linear.bias.zero_()
        h = torch.nn.functional.normalize(head.eval()(torch.from_numpy(x)), dim=1)
        centres = torch.zeros(int(y.max()) + 1, h.shape[1]).index_add_(0, torch.from_numpy(y), h)
        loss_fn.W.copy_(torch.nn.functional.normalize(centres, dim=1).T)


def principal_directions(z: np.ndarray, k: int) -> np.ndarray:
    """The top ``k`` principal directions of centred rows ``z`` (k x d), from the d x d
    covariance (an SVD of ``z`` itself would hold another n x d matrix); each signed so its
    largest entry is positive, as the SVD leaves the sign open."""
    cov = np.asarray(z.T @ z, np.float64)  # d x d; no n x d copy
    values, vectors = np.linalg.eigh(cov)
    top = vectors[:, np.argsort(values)[::-1][:k]].T
    top *= np.sign(top[np.arange(len(top)), np.abs(top).argmax(axis=1)])[:, None]
    return top.astype(np.float32)


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


# -- the head as stored -------------------------------------------------------------------------
@dataclass(frozen=True)
class Head:
    """A trained head folded into affine layers (eval-mode BatchNorm is affine, so it merges
    into the next Linear): ``x -> W_k(... relu(W_0 x + b_0) ...) + b_k``, then L2-normalised.
    Applied in numpy: reading a head's space needs no torch."""

    weights: tuple[np.ndarray, ...]  # (out, in) float32 each
    biases: tuple[np.ndarray, ...]
    record: dict[str, Any]  # config, model, base space, identities, metrics
    digest: str = ""  # of its stored bytes

    @property
    def base(self) -> str:
        return self.record["base"]

    @property
    def dim(self) -> int:
        return int(self.weights[-1].shape[0])

    def apply(self, x: np.ndarray) -> np.ndarray:
        """Unit rows in the head's space; rows without an embedding (all zeros) stay zero."""
        x = np.asarray(x, np.float32)
        norms = np.linalg.norm(x, axis=1, keepdims=True)
        valid = (norms[:, 0] > 0) & np.isfinite(norms[:, 0])
        h = np.where(valid[:, None], x / np.maximum(norms, 1e-12), 0).astype(np.float32)
        for i, (w, b) in enumerate(zip(self.weights, self.biases, strict=True)):
            h = h @ w.T + b
            if i < len(self.weights) - 1:
                np.maximum(h, 0, out=h)
        h /= np.maximum(np.linalg.norm(h, axis=1, keepdims=True), 1e-12)
        h[~valid] = 0
        return h


def folded_head(head: torch.nn.Sequential, record: dict[str, Any]) -> Head:
    weights, biases = fold(head)
    return Head(tuple(weights), tuple(biases), record)


def head_arrays(head: Head) -> dict[str, np.ndarray]:
    """The stored layout of a head: ``w0``, ``b0``, ... (float32) and ``record`` (JSON)."""
    arrays = {f"w{i}": w for i, w in enumerate(head.weights)}
    arrays |= {f"b{i}": b for i, b in enumerate(head.biases)}
    return arrays | {"record": np.array(json.dumps(head.record, sort_keys=True))}


def head_from_arrays(arrays: Mapping[str, np.ndarray], digest: str = "") -> Head:
    """The head in :func:`head_arrays`'s layout (other keys are ignored)."""
    layers = sum(1 for k in arrays if re.fullmatch(r"w\d+", k))
    return Head(tuple(np.asarray(arrays[f"w{i}"], np.float32) for i in range(layers)),
                tuple(np.asarray(arrays[f"b{i}"], np.float32) for i in range(layers)),
                json.loads(str(arrays["record"])), digest)


def head_bytes(head: Head) -> bytes:
    """The head as an .npz file's bytes (no pickle)."""
    out = io.BytesIO()
    np.savez(out, **head_arrays(head))
    return out.getvalue()


def head_from_bytes(blob: bytes) -> Head:
    """A head from :func:`head_bytes`'s bytes, its digest theirs."""
    with np.load(io.BytesIO(blob), allow_pickle=False) as stored:
        arrays = {k: stored[k] for k in stored.files}
    return head_from_arrays(arrays, hashlib.sha256(blob).hexdigest()[:16])


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
