"""Subject fidelity of generated images (DreamBooth's DINO, CLIP-I and CLIP-T).

- DINO: mean cosine over every (generated, reference) pair in a self-supervised image space
  (DINO ViT-S/16 in the paper);
- CLIP-I: the same mean in a CLIP image space;
- CLIP-T: mean cosine of each generated image with its prompt's CLIP text embedding (a raw
  cosine: no CLIPScore factor 2.5, no clamp).

The mean over all pairs of unit vectors is the dot product of the two means, so no
generated x reference matrix is formed.
"""

from __future__ import annotations

import re

import numpy as np


def mean_pair_cosine(a: np.ndarray, b: np.ndarray) -> float:
    """``mean_{i,j} a_i . b_j`` of L2-normalised rows: ``mean(a) . mean(b)``."""
    if not len(a) or not len(b):
        raise ValueError("both image sets must be non-empty")
    return float(a.mean(axis=0) @ b.mean(axis=0))


def prompt_cosine(image_emb: np.ndarray, prompt_emb: np.ndarray) -> float:
    """Mean cosine of each generated image with its own prompt (rows paired)."""
    if image_emb.shape != prompt_emb.shape:
        raise ValueError("one prompt embedding per generated image")
    return float((image_emb * prompt_emb).sum(axis=1).mean())


def strip_identifier(prompt: str, identifier: str | None) -> str:
    """The prompt without the rare token naming the subject ("a sks dog" -> "a dog")."""
    if not identifier:
        return prompt
    return re.sub(rf"\s*\b{re.escape(identifier)}\b", "", prompt).strip()
