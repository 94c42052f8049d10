"""The embed map stage: images and captions into the encoder's spaces."""

from __future__ import annotations

import numpy as np
import torch

from ..io.images import decode_image
from ..models.base import ImageTextEncoder

# Decode JPEGs at reduced DCT scale, still at least twice the model's input size.
DRAFT_SIZE = (448, 448)


def prepare_image(encoder: ImageTextEncoder, data: bytes) -> torch.Tensor:
    """Bytes -> the model's input tensor. Thread-safe; raises ImageDecodeError."""
    return encoder.preprocess(decode_image(data, draft=DRAFT_SIZE).image)


def embed_texts(encoder: ImageTextEncoder, captions: list[str | None],
                batch_size: int = 256) -> np.ndarray:
    """Caption embeddings; missing or empty captions get a zero row (no score, never a guess)."""
    out = np.zeros((len(captions), encoder.dim), np.float32)
    present = [i for i, c in enumerate(captions) if c]
    for start in range(0, len(present), batch_size):
        rows = present[start:start + batch_size]
        out[rows] = encoder.encode_texts([captions[i] for i in rows])
    return out
