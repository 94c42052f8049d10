"""Zero-shot classification as clip_benchmark computes it.

A class's text embedding is the L2-normalised mean of the normalised embeddings of every
template filled with the class name; an image's logits are its cosines with those. Reported:
top-1 and top-5 accuracy, and the mean per-class recall (DataComp's main metric on Caltech-101,
Aircraft, Flowers and Pets, where classes are unbalanced and accuracy favours the large ones).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from ..models.base import ImageTextEncoder, l2_normalize

Template = Callable[[str], str]


def openai_imagenet_templates() -> list[Template]:
    """The 80 prompt templates OpenAI used for ImageNet (shipped with open_clip)."""
    from open_clip.zero_shot_metadata import OPENAI_IMAGENET_TEMPLATES

    return list(OPENAI_IMAGENET_TEMPLATES)


def read_templates(text: str) -> list[Template]:
    """Templates from a file's text: one per line, ``{}`` (or ``{c}``) where the class goes."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return [line.replace("{c}", "{}").format for line in lines]


def class_embeddings(encoder: ImageTextEncoder, classnames: Sequence[str],
                     templates: Sequence[Template]) -> np.ndarray:
    """One row per class: normalised mean of its normalised template embeddings."""
    texts = [template(name) for name in classnames for template in templates]
    emb = encoder.encode_texts(texts)  # L2-normalised rows, class-major
    return l2_normalize(emb.reshape(len(classnames), len(templates), -1).mean(axis=1))


def topk_accuracy(logits: np.ndarray, targets: np.ndarray, k: int) -> float:
    """Share of rows whose target is among the ``k`` largest logits (k capped at the classes)."""
    k = min(k, logits.shape[1])
    top = np.argpartition(-logits, k - 1, axis=1)[:, :k]
    return float((top == targets[:, None]).any(axis=1).mean())


def mean_per_class_recall(predictions: np.ndarray, targets: np.ndarray) -> float:
    """Mean over the classes present in ``targets`` of the share of their images predicted
    right (scikit-learn's balanced accuracy)."""
    classes, counts = np.unique(targets, return_counts=True)
    hits = np.bincount(targets[predictions == targets], minlength=classes.max() + 1)[classes]
    return float((hits / counts).mean())


def zeroshot_metrics(image_emb: np.ndarray, class_emb: np.ndarray,
                     targets: np.ndarray) -> dict[str, float]:
    """acc1, acc5 and mean per-class recall of images against class embeddings."""
    targets = np.asarray(targets, dtype=np.int64)
    logits = image_emb @ class_emb.T  # images x classes: a class list is small
    return {"acc1": topk_accuracy(logits, targets, 1), "acc5": topk_accuracy(logits, targets, 5),
            "mean_per_class_recall": mean_per_class_recall(logits.argmax(axis=1), targets)}
