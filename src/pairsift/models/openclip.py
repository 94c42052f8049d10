"""open_clip backend: what real users run, a true CLIP image-text space, on GPU where there is one.

Weights come from open_clip's pretrained tags (downloaded by open_clip on machines with internet)
or a local checkpoint file. ``pretrained=None`` builds the architecture with random weights; that
exists only so tests can exercise this code path offline and is never used as a default.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import open_clip
import torch
from PIL import Image

from pairsift.models.base import ImageEmbeddings, cut_to_context, l2_normalize

TEXT_BATCH = 256
# pairsift's own model configs (``pairsift-tiny``: a CLIP that trains in minutes on a CPU),
# registered so open_clip knows them by name like its own.
CONFIGS = Path(__file__).with_name("configs")
open_clip.add_model_config(CONFIGS)


def _check_arch_and_weights(arch: str, pretrained: str | None) -> None:
    """Fail early with a ValueError that lists the valid choices, before any download starts."""
    if arch not in open_clip.list_models():
        raise ValueError(
            f"unknown open_clip architecture {arch!r}; see open_clip.list_models() for the names"
        )
    if pretrained is None or os.path.isfile(pretrained):
        return
    tags = open_clip.list_pretrained_tags_by_model(arch)
    if pretrained not in tags:
        raise ValueError(
            f"{pretrained!r} is neither an existing checkpoint file nor a pretrained tag of "
            f"{arch!r}; its tags are: {', '.join(tags) or '(none)'}"
        )


def _autocast_dtype(device: str) -> torch.dtype | None:
    """bf16 where the GPU supports it (no overflow risk), else fp16; None (fp32) off CUDA."""
    if torch.device(device).type != "cuda":
        return None
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


class OpenClipEncoder:
    """An open_clip model behind the ``ImageTextEncoder`` protocol.

    CLIP has a single space, so ``visual`` is ``None`` and image-image similarity uses ``joint``.
    Parameters stay fp32; on CUDA the forward passes run under autocast and the outputs are cast
    back to float32.
    """

    visual_dim = None

    def __init__(self, arch: str, pretrained: str | None, device: str = "cpu") -> None:
        _check_arch_and_weights(arch, pretrained)
        model, _, preprocess = open_clip.create_model_and_transforms(
            arch, pretrained=pretrained, device=device
        )
        # Random weights are named so that they cannot be mistaken for (or reloaded as) real ones.
        self.name = f"open_clip:{arch}/{pretrained or 'random-init'}"
        self.device = device
        self.dim = int(model.visual.output_dim)
        self._model = model.eval()
        self._preprocess = preprocess
        self._tokenizer = open_clip.get_tokenizer(arch)
        self._autocast_dtype = _autocast_dtype(device)

    @contextlib.contextmanager
    def _inference(self) -> Iterator[None]:
        """No autograd; mixed precision on CUDA only."""
        with (
            torch.inference_mode(),
            torch.autocast(
                torch.device(self.device).type,
                dtype=self._autocast_dtype,
                enabled=self._autocast_dtype is not None,
            ),
        ):
            yield

    def preprocess(self, image: Image.Image) -> torch.Tensor:
        """The model's own eval transform (resize, centre crop, RGB, normalise); stateless."""
        return self._preprocess(image)

    def embed_pixels(self, pixels: torch.Tensor) -> ImageEmbeddings:
        """L2-normalised image embeddings in the joint space; there is no separate visual space."""
        with self._inference():
            joint = self._model.encode_image(pixels.to(self.device), normalize=True)
        return ImageEmbeddings(joint=l2_normalize(joint.float().cpu().numpy()), visual=None)

    def encode_texts(self, texts: list[str]) -> np.ndarray:
        """L2-normalised text embeddings, tokenized and encoded in batches of ``TEXT_BATCH``;
        texts longer than the context (77 tokens for most models) are cut to it."""
        out = [np.zeros((0, self.dim), np.float32)]
        for start in range(0, len(texts), TEXT_BATCH):
            batch = cut_to_context(list(texts[start : start + TEXT_BATCH]),
                                   self._tokenizer.context_length)
            tokens = self._tokenizer(batch).to(self.device)
            with self._inference():
                emb = self._model.encode_text(tokens, normalize=True)
            out.append(emb.float().cpu().numpy())
        return l2_normalize(np.concatenate(out))
