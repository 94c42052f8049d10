"""Captioners: images in, K captions each out, chosen by a name string like the encoders.

- ``labels``: the offline default, and not a captioning model. It names the default model's
  ImageNet class ("a photo of a tabby cat") and adds the text ``parrot spot`` read in the image
  ("; the text reads 'SALE'"). Its captions are the default encoder's own class prompts, so
  their CLIP score under that encoder is inflated by construction; judge them against an
  independent truth.
- ``open_clip:ARCH/PRETRAINED``: an open_clip CoCa (e.g.
  ``open_clip:coca_ViT-L-14/mscoco_finetuned_laion2b_s13b_b90k``), ``model.generate``.
- ``hf:NAME``: a transformers BLIP or BLIP-2 (``hf:Salesforce/blip2-opt-2.7b``,
  ``hf:Salesforce/blip-image-captioning-large``); the model classes are called directly, since
  transformers 5 has no ``image-to-text`` pipeline.

Sampling follows the released synthetic captions of Nguyen et al. (one caption per image,
temperature 0.75); the nucleus ``top_p`` is pairsift's choice (0.9) and is recorded with the
captions, like every decoding option.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from typing import Any, Protocol

import numpy as np
from PIL import Image

from ..errors import ConfigError
from ..lazy import lazy

torch = lazy("torch")

LABELS = "labels"
OPEN_CLIP = "open_clip:"
HF = "hf:"
ACCEPTED = ('"labels" (offline: the default model\'s ImageNet class + spotted text), '
            '"open_clip:COCA_ARCH/PRETRAINED" or "hf:BLIP_OR_BLIP2_NAME_OR_PATH"')
SPOTTED_WORDS = 8  # at most this many spotted words are quoted in a labels caption
LABELS_VERSION = 2  # bump when labels writes other captions for the same options (2: per-image
                    # seeds, articles), so its earlier recaption runs are not reused


@dataclass(frozen=True)
class Decoding:
    """How captions are sampled; recorded with them. ``temperature == 0`` is greedy."""

    n: int = 1  # captions per image
    temperature: float = 0.75
    top_p: float = 0.9
    max_tokens: int = 30
    seed: int = 0

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


class Captioner(Protocol):
    """``preprocess`` is CPU-only and thread-safe (decode threads call it); ``caption`` runs
    the model on a batch and returns ``decoding.n`` captions per image. ``spotted`` is the
    text found in each image (``parrot spot``), for captioners that quote it; ``seeds`` one
    sampling seed per image (``decoding.seed`` is the user's seed they derive from).

    ``labels`` samples each image from its own seed, so its captions do not depend on how
    images are batched. A generative model samples a batch from one generator seeded with
    the batch's first seed (per-image generation would be batch size 1): its sampled
    captions depend on the batching, as its floats do on the device."""

    name: str

    def preprocess(self, image: Image.Image) -> Any: ...

    def caption(self, pixels: list[Any], decoding: Decoding,
                spotted: Sequence[Sequence[str] | None],
                seeds: Sequence[int]) -> list[list[str]]: ...


def check_name(name: str) -> None:
    """Reject a name no backend takes, before anything is loaded or written."""
    ok = (name == LABELS or (name.startswith(OPEN_CLIP) and "/" in name[len(OPEN_CLIP):])
          or (name.startswith(HF) and len(name) > len(HF)))
    if not ok:
        raise ConfigError(f"unknown captioner {name!r}; accepted forms: {ACCEPTED}")


def load_captioner(name: str, device: str = "cpu") -> Captioner:
    check_name(name)
    if name == LABELS:
        from . import load_encoder

        return LabelsCaptioner(load_encoder("default", device))  # the one cached instance
    if name.startswith(OPEN_CLIP):
        arch, _, pretrained = name[len(OPEN_CLIP):].partition("/")
        return CocaCaptioner.from_pretrained(arch, pretrained, device)
    return HfCaptioner.from_pretrained(name[len(HF):], device)


@contextlib.contextmanager
def seeded(seed: int) -> Iterator[None]:
    """torch's global generator seeded for one batch (``generate`` samples from it), and put
    back afterwards so nothing else in the process sees the change."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


# -- labels ---------------------------------------------------------------------------------
def nucleus_sample(probs: np.ndarray, decoding: Decoding, rng: np.random.Generator) -> int:
    """One class index: argmax at temperature 0, else a draw from the smallest set of classes
    holding ``top_p`` of the tempered probability."""
    if decoding.temperature == 0:
        return int(np.argmax(probs))
    logits = np.log(np.maximum(probs.astype(np.float64), 1e-30)) / decoding.temperature
    tempered = np.exp(logits - logits.max())
    tempered /= tempered.sum()
    order = np.argsort(-tempered)
    keep = order[:int(np.searchsorted(np.cumsum(tempered[order]), decoding.top_p)) + 1]
    return int(rng.choice(keep, p=tempered[keep] / tempered[keep].sum()))


def labels_caption(class_name: str, spotted: Sequence[str] | None) -> str:
    """``a photo of a tabby cat; the text reads 'SALE'``: the encoder's class prompt, with
    the article made right ("an espresso"; none added to a name that has one)."""
    text = f"a photo of {with_article(class_name)}"
    words = [w for w in spotted or () if w.strip()][:SPOTTED_WORDS]
    return f"{text}; the text reads '{' '.join(words)}'" if words else text


def with_article(noun: str) -> str:
    """``an Egyptian Mau``, ``a unicycle``, ``a cat having a striped coat`` (kept as it is).
    By spelling, with the common exceptions; ImageNet's names need no more."""
    if _HAS_ARTICLE.match(noun):
        return noun
    return f"{'an' if _VOWEL_SOUND.match(noun) else 'a'} {noun}"


_HAS_ARTICLE = re.compile(r"(?:a|an|the)\s", re.IGNORECASE)
_VOWEL_SOUND = re.compile(
    r"(?:[ai]|o(?!ne\b)|e(?!u|we)|u(?!ni|s[eu]|ku|ro|te|ti)|hour|honest|heir)", re.IGNORECASE)


class LabelsCaptioner:
    """The default model's ImageNet class, said as its class prompt, plus the spotted text."""

    name = LABELS

    def __init__(self, encoder: Any):
        from .default import imagenet_class_names

        self.encoder = encoder
        self.classes = imagenet_class_names()

    def preprocess(self, image: Image.Image) -> Any:
        return self.encoder.preprocess(image)

    def caption(self, pixels: list[Any], decoding: Decoding,
                spotted: Sequence[Sequence[str] | None],
                seeds: Sequence[int]) -> list[list[str]]:
        probs = self.encoder.class_probabilities(torch.stack(pixels))
        out = []
        for p, words, seed in zip(probs, spotted, seeds, strict=True):
            rng = np.random.default_rng(seed)
            out.append([labels_caption(self.classes[nucleus_sample(p, decoding, rng)], words)
                        for _ in range(decoding.n)])
        return out


# -- open_clip CoCa ---------------------------------------------------------------------------
def _enable_coca_sampling() -> None:
    """open_clip 3.3 switches all of ``CoCa.generate`` off when transformers lacks
    ``BeamSearchScorer``, which transformers 5 removed; its top-p/top-k sampling needs only
    the logits warpers, which transformers 5 still has. Turn those back on; beam search
    stays unavailable (refused with a message in :meth:`CocaCaptioner.caption`)."""
    from open_clip import coca_model
    from transformers import TopKLogitsWarper, TopPLogitsWarper

    if not coca_model._has_transformers:
        coca_model.GENERATION_TYPES.update(top_p=TopPLogitsWarper, top_k=TopKLogitsWarper)
        coca_model._has_transformers = True


class CocaCaptioner:
    """open_clip CoCa: ``model.generate(..., generation_type="top_p")``, decoded as open_clip
    documents (text up to ``<end_of_text>``, without ``<start_of_text>``)."""

    def __init__(self, name: str, model: Any, preprocess: Any, device: str = "cpu"):
        _enable_coca_sampling()
        self.name, self.model, self._preprocess, self.device = name, model.eval(), preprocess, \
            device

    @classmethod
    def from_pretrained(cls, arch: str, pretrained: str, device: str) -> CocaCaptioner:
        import open_clip

        if "coca" not in arch.lower():
            raise ConfigError(f"open_clip captioners are CoCa models; {arch!r} is not one "
                              "(e.g. coca_ViT-L-14/mscoco_finetuned_laion2b_s13b_b90k)")
        model, _, preprocess = open_clip.create_model_and_transforms(arch, pretrained,
                                                                     device=device)
        return cls(f"{OPEN_CLIP}{arch}/{pretrained}", model, preprocess, device)

    def preprocess(self, image: Image.Image) -> Any:
        return self._preprocess(image.convert("RGB"))

    def caption(self, pixels: list[Any], decoding: Decoding,
                spotted: Sequence[Sequence[str] | None],
                seeds: Sequence[int]) -> list[list[str]]:
        import open_clip

        if decoding.temperature == 0:
            raise ConfigError("CoCa's greedy/beam decoding needs transformers' "
                              "BeamSearchScorer, which transformers 5 removed: use a "
                              "temperature above 0")
        images = torch.stack(pixels).to(self.device).repeat_interleave(decoding.n, dim=0)
        with seeded(seeds[0]), torch.inference_mode():
            ids = self.model.generate(images, generation_type="top_p", top_p=decoding.top_p,
                                      temperature=decoding.temperature,
                                      seq_len=decoding.max_tokens, min_seq_len=5)
        texts = [open_clip.decode(row).split("<end_of_text>")[0]
                 .replace("<start_of_text>", "").strip() for row in ids.cpu()]
        return [texts[i:i + decoding.n] for i in range(0, len(texts), decoding.n)]


# -- transformers BLIP / BLIP-2 ---------------------------------------------------------------
class HfCaptioner:
    """BLIP or BLIP-2 through their model classes: processor → ``generate`` → decode."""

    def __init__(self, name: str, model: Any, processor: Any, device: str = "cpu"):
        self.name, self.model, self.processor, self.device = name, model.eval(), processor, \
            device

    @classmethod
    def from_pretrained(cls, name: str, device: str) -> HfCaptioner:
        from transformers import (
            AutoConfig,
            AutoProcessor,
            Blip2ForConditionalGeneration,
            BlipForConditionalGeneration,
        )

        classes = {"blip-2": Blip2ForConditionalGeneration, "blip": BlipForConditionalGeneration}
        model_type = AutoConfig.from_pretrained(name).model_type
        if model_type not in classes:
            raise ConfigError(f"hf:{name} is a {model_type!r} model; hf: captioners are BLIP "
                              "or BLIP-2")
        model = classes[model_type].from_pretrained(name).to(device)
        return cls(f"{HF}{name}", model, AutoProcessor.from_pretrained(name), device)

    def preprocess(self, image: Image.Image) -> Any:
        pixels = self.processor.image_processor(image.convert("RGB"), return_tensors="pt")
        return pixels["pixel_values"][0]

    def caption(self, pixels: list[Any], decoding: Decoding,
                spotted: Sequence[Sequence[str] | None],
                seeds: Sequence[int]) -> list[list[str]]:
        sampling = ({"do_sample": False} if decoding.temperature == 0 else
                    {"do_sample": True, "temperature": decoding.temperature,
                     "top_p": decoding.top_p})
        with seeded(seeds[0]), torch.inference_mode():
            ids = self.model.generate(pixel_values=torch.stack(pixels).to(self.device),
                                      max_new_tokens=decoding.max_tokens,
                                      num_return_sequences=decoding.n, **sampling)
        texts = [t.strip() for t in self.processor.batch_decode(ids, skip_special_tokens=True)]
        return [texts[i:i + decoding.n] for i in range(0, len(texts), decoding.n)]
