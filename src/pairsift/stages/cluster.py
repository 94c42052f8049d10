"""k-means partition for semantic dedup (docs/algorithms.md §1.2 steps 1-3, docs/design.md §6).

Pairwise dedup only compares items inside one cluster, so the partition decides both the cost
(Σ n_c² d) and which duplicates can be found at all. faiss trains on a seeded random sample
(the full data need never be in RAM); assignment streams over the rows in chunks.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import faiss
import numpy as np
import pyarrow as pa

from .. import spaces
from ..engine.views import Collection, embedded_rows
from ..errors import WorkspaceError
from ..lazy import lazy
from ..params import Param
from ..stage import GlobalStage, PartOutput, register

torch = lazy("torch")  # imported on first use: the CLI starts without torch
Device = str  # "cpu", "cuda", "cuda:1" (or a torch.device)

DEFAULT_TARGET_CLUSTER_SIZE = 1000
"""Mean items per cluster when k is not given. SemDeDup used 50,000 clusters for 440M items
(~8.8k each); smaller clusters are cheaper (cost ∝ N × mean size) but miss more duplicates
that fall on different sides of a boundary."""

POINTS_PER_CENTROID = 256  # faiss's own default subsample per centroid
MAX_TRAIN_SIZE = 1_000_000  # caps the training sample (2 GB at d=512 float32)


def float_tensor(X: np.ndarray | torch.Tensor, device: Device = "cpu") -> torch.Tensor:
    """float32 tensor on `device`, copying numpy input only when needed (dtype, read-only)."""
    if isinstance(X, torch.Tensor):
        return X.to(device=device, dtype=torch.float32)
    a = np.asarray(X, dtype=np.float32)
    if not a.flags.writeable:  # e.g. a read-only memmap: torch cannot wrap it safely
        a = a.copy()
    return torch.from_numpy(a).to(device)


def unit_rows(X: np.ndarray | torch.Tensor, device: Device = "cpu") -> torch.Tensor:
    """Rows as L2-normalised float32 on `device`.

    The stored vectors may be float16 or not quite unit length; cosine math needs unit rows,
    and a zero or non-finite row has no direction, so it is an error rather than a silent NaN
    (docs/algorithms.md §1.2 step 1).
    """
    t = float_tensor(X, device)
    if t.ndim != 2:
        raise ValueError(f"expected a 2-D array of embeddings, got shape {tuple(t.shape)}")
    norms = torch.linalg.vector_norm(t, dim=1, keepdim=True)
    bad = ~torch.isfinite(norms[:, 0]) | (norms[:, 0] == 0)
    if bool(bad.any()):
        row = int(torch.nonzero(bad)[0, 0])
        raise ValueError(f"embedding row {row} has zero or non-finite norm")
    return t / norms


def choose_k(n: int, target_mean_cluster_size: int = DEFAULT_TARGET_CLUSTER_SIZE) -> int:
    """Number of clusters giving about `target_mean_cluster_size` items each (1 ≤ k ≤ n)."""
    if n < 1 or target_mean_cluster_size < 1:
        raise ValueError("n and target_mean_cluster_size must be positive")
    return int(min(n, max(1, round(n / target_mean_cluster_size))))


def default_train_size(n: int, k: int) -> int:
    """faiss's 256 points per centroid, at least 20k when available, capped for memory."""
    return int(min(n, max(POINTS_PER_CENTROID * k, 20_000), max(MAX_TRAIN_SIZE, k)))


@dataclass(frozen=True)
class KMeansModel:
    """Frozen centroids (+ optional PCA) that assign new rows; plain arrays, easy to persist."""

    centroids: np.ndarray  # (k, d') float32, in the clustering space (after PCA)
    spherical: bool = True
    pca_matrix: np.ndarray | None = None  # (d', d): y = A x + b
    pca_bias: np.ndarray | None = None  # (d',)

    @property
    def k(self) -> int:
        return int(self.centroids.shape[0])

    def to_arrays(self) -> dict[str, np.ndarray]:
        """Arrays for `np.savez`; `from_arrays` inverts it."""
        out = {"centroids": self.centroids, "spherical": np.array(self.spherical)}
        if self.pca_matrix is not None:
            out |= {"pca_matrix": self.pca_matrix, "pca_bias": self.pca_bias}
        return out

    @classmethod
    def from_arrays(cls, arrays: Mapping[str, np.ndarray]) -> KMeansModel:
        pca = "pca_matrix" in arrays
        return cls(
            centroids=np.asarray(arrays["centroids"], dtype=np.float32),
            spherical=bool(arrays["spherical"]),
            pca_matrix=np.asarray(arrays["pca_matrix"], dtype=np.float32) if pca else None,
            pca_bias=np.asarray(arrays["pca_bias"], dtype=np.float32) if pca else None,
        )

    def project(self, X: np.ndarray | torch.Tensor, device: Device = "cpu") -> torch.Tensor:
        """Rows mapped into the clustering space: normalise, PCA, re-normalise if spherical."""
        t = unit_rows(X, device)
        if self.pca_matrix is None:
            return t
        A = float_tensor(self.pca_matrix, device)
        t = t @ A.T + float_tensor(self.pca_bias, device)
        return unit_rows(t) if self.spherical else t

    def assign(
        self,
        X: np.ndarray,
        chunk_size: int | None = None,
        device: Device = "cpu",
        progress: Callable[[int, int], None] | None = None,
        metric: str | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Nearest centroid (int32) and cosine distance `1 − cos` to it (float32), per row.

        Spherical: nearest = max inner product (faiss IndexFlatIP). L2: nearest = min squared
        L2 to the raw centroid. ``metric`` ("dot" or "l2") overrides that choice: DataComp
        trains L2 k-means but assigns by the largest dot product with the raw centroids.
        The distance is always to the *normalised* centroid, as SemDeDup and NeMo rank by it
        (docs/algorithms.md §1.2 step 3, §2.1); with PCA, in the PCA space.
        Rows are streamed in chunks, so `X` may be a float16 memmap larger than RAM; by default
        a chunk's rows × centroids score matrix takes about 256 MiB, whatever k.
        """
        n = len(X)
        chunk_size = chunk_size or int(np.clip(2**26 // max(self.k, 1), 1024, 65_536))
        C = float_tensor(self.centroids, device)  # read-only when shared (Ray)
        Cn = C / torch.linalg.vector_norm(C, dim=1, keepdim=True).clamp_min(1e-30)
        sq = (C * C).sum(1)
        labels = np.empty(n, dtype=np.int32)
        dist = np.empty(n, dtype=np.float32)
        dot = self.spherical if metric is None else metric == "dot"
        for s in range(0, n, chunk_size):
            e = min(s + chunk_size, n)
            x = self.project(X[s:e], device)
            scores = x @ C.T if dot else 2 * (x @ C.T) - sq
            lab = scores.argmax(1)
            labels[s:e] = lab.cpu().numpy()
            cos = (x * Cn[lab]).sum(1) / torch.linalg.vector_norm(x, dim=1)
            dist[s:e] = (1 - cos).cpu().numpy()
            if progress is not None:
                progress(e, n)
        return labels, dist


def fit_kmeans(
    X: np.ndarray,
    k: int | None = None,
    *,
    spherical: bool = True,
    niter: int = 100,
    seed: int = 1234,
    pca_dim: int | None = None,
    train_size: int | None = None,
    verbose: bool = False,
) -> KMeansModel:
    """Train faiss k-means on a seeded random sample of L2-normalised rows.

    Defaults follow SemDeDup (spherical, niter=100, seed=1234; docs/algorithms.md §1.2 step 2);
    k defaults to `choose_k(n)`. `pca_dim` first fits a faiss PCAMatrix on the same sample,
    which makes training and assignment cheaper for wide embeddings.
    """
    n = len(X)
    k = choose_k(n) if k is None else k
    m = default_train_size(n, k) if train_size is None else min(train_size, n)
    if not 1 <= k <= m:
        raise ValueError(f"need 1 <= k <= training rows, got k={k}, rows={m}")
    rows = np.sort(np.random.default_rng(seed).choice(n, size=m, replace=False))
    sample = _unit_sample(X[rows])
    pca_matrix = pca_bias = None
    if pca_dim is not None:
        pca = faiss.PCAMatrix(sample.shape[1], pca_dim)
        pca.train(sample)
        pca_matrix = faiss.vector_to_array(pca.A).reshape(pca_dim, -1).astype(np.float32)
        pca_bias = faiss.vector_to_array(pca.b).astype(np.float32)
    model = KMeansModel(np.zeros((0, 0), np.float32), spherical, pca_matrix, pca_bias)
    if pca_dim is not None:  # without PCA the sample is already in the clustering space
        sample = model.project(sample).numpy()
    km = faiss.Kmeans(
        sample.shape[1], k, niter=niter, seed=seed, spherical=spherical, verbose=verbose,
        min_points_per_centroid=1, max_points_per_centroid=max(POINTS_PER_CENTROID, -(-m // k)),
        gpu=faiss.get_num_gpus() > 0,
    )
    km.train(sample)
    return KMeansModel(km.centroids.astype(np.float32), spherical, pca_matrix, pca_bias)


def _unit_sample(rows: np.ndarray) -> np.ndarray:
    """The training rows as unit float32, normalised in place: the sample (up to
    MAX_TRAIN_SIZE rows) is k-means' largest allocation, so it is never held twice."""
    sample = np.array(rows, dtype=np.float32)
    norms = np.linalg.norm(sample, axis=1)
    bad = ~np.isfinite(norms) | (norms == 0)
    if bad.any():
        raise ValueError(f"embedding row {int(np.flatnonzero(bad)[0])} has zero or non-finite "
                         "norm")
    sample /= norms[:, None]
    return sample


def cluster_members(labels: np.ndarray) -> dict[int, np.ndarray]:
    """Row indices per cluster id (ascending rows), to feed per-cluster dedup; int32 while
    the rows fit, so the index costs 4 bytes a sample."""
    order = np.argsort(labels, kind="stable")
    if len(labels) < 2**31:
        order = order.astype(np.int32)
    ids, starts = np.unique(labels[order], return_index=True)
    return {int(c): rows for c, rows in zip(ids, np.split(order, starts[1:]), strict=True)}


# -- stage --------------------------------------------------------------------------------------
class _Rows:
    """The rows of ``source`` at ``index``, addressed as a matrix (a view without copying)."""

    def __init__(self, source: Any, index: np.ndarray):
        self._source, self._index = source, index

    def __len__(self) -> int:
        return len(self._index)

    def __getitem__(self, rows: Any) -> np.ndarray:
        return self._source[self._index[rows]]


def image_space(ws: Any, model: str) -> str:
    """The visual space when the model has one (image-image similarity), else the joint one."""
    from ..models import model_slug

    return "visual" if ws.models().get(model_slug(model), {}).get("visual_dim") else "image"


@register
class Cluster(GlobalStage):
    """faiss k-means on the image embeddings, trained on a sample, assigned part by part:
    a cluster id and the cosine distance to its centroid per sample. A sample without an
    embedding (its image failed at embed) gets cluster -1 and is left out of dedup."""

    name = "cluster"
    reads_embeddings = True
    params = (
        Param("k", int, None, "Number of clusters (default: about target_size samples each).",
              low=1),
        Param("target_size", int, DEFAULT_TARGET_CLUSTER_SIZE, "Mean cluster size when k is "
                                                               "not given.", low=1),
        Param("pca_dim", int, None, "Reduce to this many dimensions first.", low=1),
        Param("spherical", bool, True, "Cosine (spherical) k-means."),
        Param("niter", int, 100, "k-means iterations.", low=1),
        Param("seed", int, 1234, "Sampling and k-means seed."),
        Param("space", str, None, "Embedding space: visual, image or a trained head's "
                                  "(visual+arcface:NAME); default visual where the model "
                                  "has it."),
        Param("device", str, "cpu", "cpu | cuda", runtime=True),
    )

    def check(self) -> None:
        if self["space"] is not None:
            spaces.parse(self["space"])

    def extra_inputs(self, ws: Any) -> dict[str, Any]:
        return spaces.space_inputs(ws, self["space"] or image_space(
            ws, self.options.get("model") or ws.current_model()))

    def plan(self, data: Collection) -> list[str]:
        return ["fit"]

    def run_task(self, data: Collection, task: str) -> dict[str, np.ndarray]:
        space = data.inputs["space"]
        valid = np.flatnonzero(data.has_embedding(space)).astype(np.int32 if data.n < 2**31
                                                                   else np.int64)
        if not len(valid):
            raise WorkspaceError(f"{data.ws.root}: no sample has an embedding to cluster")
        k = self["k"] or choose_k(len(valid), self["target_size"])
        model = fit_kmeans(_Rows(data.embeddings(space), valid), min(k, len(valid)),
                           spherical=self["spherical"], niter=self["niter"], seed=self["seed"],
                           pca_dim=self["pca_dim"])
        return model.to_arrays()

    def combine(self, data: Collection, results: Any) -> dict[str, Any]:
        return {"model": KMeansModel.from_arrays(next(iter(results)))}

    def part_output(self, data: Collection, state: dict[str, Any], part: int) -> PartOutput:
        X = data.part(part).embeddings(data.inputs["space"])
        valid = embedded_rows(X)
        labels = np.full(len(X), -1, np.int32)
        dist = np.full(len(X), np.nan, np.float32)
        if valid.any():
            rows = X if valid.all() else np.asarray(X)[valid]  # a memmap is read in chunks
            labels[valid], dist[valid] = state["model"].assign(rows, device=self["device"])
        return PartOutput(signals=pa.table({"cluster": labels, "dist_to_centroid": dist}))

    def summarize(self, data: Collection, state: dict[str, Any]) -> dict[str, Any]:
        """Read from the written labels, so that parts assigned on other workers count."""
        labels = data.read_values("cluster", "cluster", np.int32)
        k = state["model"].k
        return {"k": k, "space": data.inputs["space"],
                "sizes": np.bincount(labels[labels >= 0], minlength=k),
                "without_embedding": int((labels < 0).sum())}
