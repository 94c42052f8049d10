"""timm backend: image-only encoders such as the self-supervised DINO and DINOv2 ViTs.

``timm:vit_small_patch16_224.dino`` or ``timm:vit_small_patch14_dinov2.lvd142m`` (weights
downloaded by timm from the Hugging Face hub on machines with internet), or
``timm:ARCH.TAG/PATH`` for a local checkpoint file. The embedding is the model's pooled
feature (``num_classes=0``: the CLS token for these ViTs), L2-normalised, in the ``visual``
space. There is no text tower, so there is no joint image-text space: ``encode_texts`` says
so instead of returning anything. ``pretrained=False`` builds the architecture with random
weights; it exists only so tests can exercise this code path offline.
"""

from __future__ import annotations

import numpy as np
import timm
import torch
from PIL import Image

from pairsift.errors import ConfigError
from pairsift.models.base import ImageEmbeddings, l2_normalize


def check_arch(arch: str) -> None:
    """Fail early, before any download, on a name timm does not know."""
    if not timm.is_model(arch):
        raise ConfigError(f"unknown timm model {arch!r}; timm.list_pretrained('*dino*') lists "
                          "the DINO and DINOv2 names, e.g. vit_small_patch16_224.dino")


class TimmEncoder:
    """A timm model behind the encoder protocol, image-only: ``dim`` is None (no joint
    space) and ``visual_dim`` the width of its pooled feature."""

    dim = None

    def __init__(self, arch: str, pretrained: bool | str = True, device: str = "cpu") -> None:
        check_arch(arch)
        checkpoint = pretrained if isinstance(pretrained, str) else None
        overlay = {"file": checkpoint} if checkpoint else None
        model = timm.create_model(arch, pretrained=bool(pretrained), num_classes=0,
                                  pretrained_cfg_overlay=overlay)
        # Random weights are named so that they cannot be mistaken for (or reloaded as) real ones.
        suffix = f"/{checkpoint}" if checkpoint else ("" if pretrained else "/random-init")
        self.name = f"timm:{arch}{suffix}"
        self.device = device
        self.visual_dim = int(model.num_features)
        self._model = model.eval().to(device)
        config = timm.data.resolve_model_data_config(model)
        self._preprocess = timm.data.create_transform(**config, is_training=False)

    def preprocess(self, image: Image.Image) -> torch.Tensor:
        """The model's own eval transform (resize, centre crop, normalise); stateless."""
        return self._preprocess(image if image.mode == "RGB" else image.convert("RGB"))

    def embed_pixels(self, pixels: torch.Tensor) -> ImageEmbeddings:
        with torch.inference_mode():
            features = self._model(pixels.to(self.device))
        return ImageEmbeddings(joint=None, visual=l2_normalize(features.float().cpu().numpy()))

    def encode_texts(self, texts: list[str]) -> np.ndarray:
        raise ConfigError(f"{self.name} is an image-only encoder (no text tower): text "
                          "queries, CLIP scores and caption checks need an image-text model "
                          "such as 'default' or 'open_clip:ARCH/PRETRAINED'")
