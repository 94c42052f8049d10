"""Model protocols. Backends live beside this module and are chosen by a name string."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import numpy as np
from PIL import Image

from ..lazy import lazy

torch = lazy("torch")  # imported on first use: the CLI starts without torch


@dataclass(frozen=True)
class ImageEmbeddings:
    """Embeddings of one image batch, float32 and L2-normalised row-wise.

    ``joint`` lives in the image-text space (compare with caption embeddings), or is ``None``
    for an image-only backend (timm); ``visual`` is the backend's image-only feature space for
    image-image similarity, or ``None`` when the backend has only the joint space.
    """

    joint: np.ndarray | None
    visual: np.ndarray | None


@runtime_checkable
class ImageTextEncoder(Protocol):
    """An image tower and a text tower that share one embedding space.

    ``preprocess`` is CPU-only and thread-safe, so decode threads can prepare tensors while the
    model runs; ``embed_pixels`` runs the model on a stacked batch of those tensors.
    """

    name: str
    dim: int | None  # None: image-only (no text tower)
    visual_dim: int | None
    device: str

    def preprocess(self, image: Image.Image) -> torch.Tensor: ...

    def embed_pixels(self, pixels: torch.Tensor) -> ImageEmbeddings: ...

    def encode_texts(self, texts: list[str]) -> np.ndarray: ...


# A token of real text covers a few characters (about 4 in English for both BPE and WordPiece), so
# the first context × 16 characters of a caption hold more tokens than the encoder keeps: cutting
# there first changes no kept token, and bounds tokenising work (a 100 MB caption took 81 s and
# 7.3 GB to tokenise in full, only to be truncated to the context afterwards).
MAX_CHARS_PER_TOKEN = 16


def cut_to_context(texts: list[str], context_tokens: int) -> list[str]:
    """Each text cut to ``context_tokens * MAX_CHARS_PER_TOKEN`` characters, before tokenising;
    the tokenizer then truncates to the context as usual."""
    limit = context_tokens * MAX_CHARS_PER_TOKEN
    return [text[:limit] for text in texts]


def l2_normalize(x: np.ndarray) -> np.ndarray:
    """Row-wise L2 normalisation in float32; zero rows stay zero instead of becoming NaN."""
    x = np.asarray(x, dtype=np.float32)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.maximum(norms, 1e-12)


def encode_images(encoder: ImageTextEncoder, images: list[Image.Image]) -> ImageEmbeddings:
    """Embed a list of RGB images in one batch (convenience for small inputs and tests)."""
    if not images:
        empty = None if encoder.dim is None else np.zeros((0, encoder.dim), np.float32)
        visual_dim = encoder.visual_dim
        visual = None if visual_dim is None else np.zeros((0, visual_dim), np.float32)
        return ImageEmbeddings(empty, visual)
    return encoder.embed_pixels(torch.stack([encoder.preprocess(im) for im in images]))
