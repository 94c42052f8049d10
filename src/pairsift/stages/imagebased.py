"""DataComp's image-based filter: keep the pool's samples whose k-means cluster a reference
image set (ImageNet's train images in DataComp) lands in.

The *pool* is clustered (stage ``cluster``; DataComp: L2 k-means, 20 iterations, seed 0, so
``pairsift cluster --no-spherical --niter 20 --seed 0 --k K``); every reference image marks its
nearest centroid, and a sample is kept when its own nearest centroid is marked. "Nearest" is
the largest dot product with the raw centroids, as DataComp's code computes it (not the
smallest L2 distance the k-means was trained with: the two differ when centroid norms differ);
``assign="l2"`` is the other. DataComp's image-based filter also keeps English captions of more
than one token and 5 characters only (``caption_filter``), and its
``image_based_intersect_clip_score`` first keeps the CLIP-score filter's survivors
(``intersect_clip_score``). DataComp clusters the caption-filtered pool; the cluster stage here
clusters every embedded sample.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Container
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from ..engine.views import Collection, PartData, embedded_rows
from ..errors import ConfigError
from ..io.records import IMAGE_EXTENSIONS, image_files
from ..params import Param
from ..stage import DecideStage, Decisions, Dependencies, fail, register
from .basicfilter import LANGUAGE, basic_filter_reasons, language_signals
from .cluster import KMeansModel

ASSIGN = ("dot", "l2")
CLIP_FILTER = "filter-clip-score"
# the reasons in DataComp's order: CLIP score, then caption, then cluster membership
REASONS = ("clip_score_below", "caption_missing", "wrong_language", "caption_few_words",
           "caption_few_chars", "no_embedding", "cluster_not_marked")


def reference_digest(path: Path) -> str:
    """What a run depends on: an embedding file's bytes, or a folder's image names and sizes."""
    if path.is_file():
        with open(path, "rb") as f:
            return hashlib.file_digest(f, "sha256").hexdigest()
    digest = hashlib.sha256()
    for file in image_files(path):
        digest.update(f"{file.relative_to(path)}\0{file.stat().st_size}\0".encode())
    return digest.hexdigest()


def embed_reference(folder: Path, model: str, space: str, *, device: str = "cpu",
                    batch_size: int = 64) -> tuple[np.ndarray, int]:
    """The folder's images embedded with the workspace's model, in the clustered space, and
    how many files were left out because they do not decode."""
    from ..io.images import ImageDecodeError, decode_image
    from ..models import load_encoder
    from ..models.base import encode_images

    def decoded(file: Path) -> Image.Image | None:
        try:
            return decode_image(file.read_bytes()).image
        except ImageDecodeError:
            return None

    encoder = load_encoder(model, device)
    files = image_files(folder)
    batches, unreadable = [], 0
    for start in range(0, len(files), batch_size):
        images = [decoded(f) for f in files[start:start + batch_size]]
        unreadable += images.count(None)
        out = encode_images(encoder, [im for im in images if im is not None])
        batches.append(out.visual if space == "visual" else out.joint)
    reference = np.concatenate(batches) if batches else np.zeros((0, 0), np.float32)
    if not len(reference):
        raise ConfigError(f"{folder} holds no readable image "
                          f"({', '.join(sorted(IMAGE_EXTENSIONS))})")
    return reference, unreadable


def load_reference(path: Path, model: str, space: str, **embedding: Any
                   ) -> tuple[np.ndarray, int]:
    """Reference embeddings from a ``.npy`` file (rows × dim) or a folder of images, and the
    number of unreadable images left out."""
    if path.is_dir():
        return embed_reference(path, model, space, **embedding)
    reference = np.load(path)
    if reference.ndim != 2 or not len(reference):
        raise ConfigError(f"{path}: expected a 2-D array of embeddings, got shape "
                          f"{reference.shape}")
    return reference, 0


def marked_clusters(model: KMeansModel, reference: np.ndarray, assign: str = "dot") -> np.ndarray:
    """The centroids nearest to some reference embedding (sorted ids)."""
    dim = model.centroids.shape[1] if model.pca_matrix is None else model.pca_matrix.shape[1]
    if reference.shape[1] != dim:
        raise ConfigError(f"reference embeddings have {reference.shape[1]} dimensions; the "
                          f"clustered embeddings have {dim}: embed the reference set with the "
                          "workspace's model")
    labels, _ = model.assign(reference, metric=assign)
    return np.unique(labels)


@register
class FilterImageBased(DecideStage):
    """DataComp's image-based filter: keep samples whose nearest pool centroid is the nearest
    centroid of some reference image (a folder of images or a .npy of their embeddings)."""

    name = "filter-image-based"
    requires = ("cluster",)
    reads_embeddings = True
    reason = "cluster_not_marked"
    params = (
        Param("reference", Path, None, "Reference images: a folder (embedded with the "
                                       "workspace's model) or a .npy of embeddings."),
        Param("assign", str, "dot", "Nearest centroid by the largest dot product (DataComp's "
                                    "code) or the smallest L2 distance.", choices=ASSIGN),
        Param("caption_filter", bool, True, "Also require DataComp's caption filter: English, "
                                            "more than 1 word and 5 characters."),
        Param("intersect_clip_score", bool, False, "Also require the filter-clip-score "
                                                   "keep (DataComp's "
                                                   "image_based_intersect_clip_score)."),
        Param("model", str, None, "Embeddings to read (default: the last embedded model).",
              runtime=True),
        Param("device", str, "cpu", "Device to embed a reference folder on.", runtime=True),
        Param("batch_size", int, 64, "Reference images per forward pass.", low=1,
              runtime=True),
    )

    def check(self) -> None:
        if self["reference"] is None:
            fail("filter-image-based needs a reference set (--reference FOLDER or FILE.npy)")
        if not Path(self["reference"]).exists():
            fail(f"reference set {self['reference']} does not exist")

    def dependencies(self, present: Container[str] = ()) -> Dependencies:
        required = (*self.requires, *((LANGUAGE,) if self["caption_filter"] else ()),
                    *((CLIP_FILTER,) if self["intersect_clip_score"] else ()))
        return required, self.uses

    def extra_inputs(self, ws: Any) -> dict[str, Any]:
        return {"space": ws.run_record("cluster")["inputs"]["space"],
                "reference": reference_digest(Path(self["reference"]))}

    def prepare(self, data: Collection) -> dict[str, Any]:
        model = KMeansModel.from_arrays(data.task_results("cluster")[0])
        reference, unreadable = load_reference(
            Path(self["reference"]), data.model, data.inputs["space"], device=self["device"],
            batch_size=self["batch_size"])
        return {"model": model, "marked": marked_clusters(model, reference, self["assign"]),
                "references": len(reference), "unreadable": unreadable, "counts": Counter()}

    def labels(self, part: PartData, model: KMeansModel) -> np.ndarray:
        """Each sample's nearest centroid by ``assign`` (-1 without an embedding); the
        cluster stage's own labels when its rule is the same."""
        if model.spherical == (self["assign"] == "dot"):
            return part.values("cluster", "cluster", np.int32)
        X = part.embeddings(part.inputs["space"])
        valid = embedded_rows(X)
        labels = np.full(len(X), -1, np.int32)
        if valid.any():
            labels[valid] = model.assign(np.asarray(X)[valid], metric=self["assign"])[0]
        return labels

    def decide(self, part: PartData, state: dict[str, Any]) -> Decisions:
        labels = self.labels(part, state["model"])
        reasons = np.full(len(labels), "", object)
        checks = [(labels < 0, "no_embedding"),
                  (~np.isin(labels, state["marked"]) & (labels >= 0), "cluster_not_marked")]
        if self["caption_filter"]:
            caption = self.caption_reasons(part)
            checks.insert(0, (caption != "", caption))
        if self["intersect_clip_score"]:
            checks.insert(0, (part.dropped([CLIP_FILTER]), "clip_score_below"))
        for failed, reason in reversed(checks):  # the first check that fails writes last
            reasons[failed] = reason if isinstance(reason, str) else reason[failed]
        drop = reasons != ""
        state["counts"].update(reasons[drop].tolist())
        return Decisions(drop, reasons, {"cluster": labels})

    @staticmethod
    def caption_reasons(part: PartData) -> np.ndarray:
        """DataComp's caption filter of the image-based baseline: English, more than one
        token, more than 5 characters (no image-size rule)."""
        caption = language_signals(part)
        ones = np.ones(len(caption["language"]))
        return basic_filter_reasons(**caption, width=ones, height=ones, min_words=2,
                                    min_chars=6, min_side=0, max_aspect=np.inf)

    def summarize(self, data: Collection, state: dict[str, Any]) -> dict[str, Any]:
        counts = state["counts"]
        return {"k": state["model"].k, "marked_clusters": len(state["marked"]),
                "references": state["references"],
                "unreadable_references": state["unreadable"],
                "by_reason": {r: counts[r] for r in REASONS if counts[r]}}
