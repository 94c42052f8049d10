"""The embed map stage: images and captions into the encoder's spaces."""

from __future__ import annotations

from typing import Any

import numpy as np

from ..engine.views import Collection, PartData
from ..io.images import decode_image
from ..lazy import lazy
from ..models import check_model, has_text, load_encoder, model_slug, weights_version
from ..models.base import ImageTextEncoder
from ..params import Param
from ..stage import MapStage, PartOutput, Sample, register

torch = lazy("torch")  # imported on first use: the CLI starts without torch

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


@register
class Embed(MapStage):
    """Embed images and captions; resumes where a killed run stopped.

    Each image gets the model's joint image–text embedding and, when the model has one, a
    visual embedding for image–image similarity; each caption a text embedding. Stored as
    float16, rows aligned with the part. A sample whose image no longer decodes gets zero rows
    and an error row; later stages leave it out.
    """

    name = "embed"
    columns = ("caption",)
    needs_image = True
    per_sample = True
    params = (
        Param("model", str, "default", "'default' (offline), 'open_clip:ARCH/PRETRAINED' or "
                                       "an image-only 'timm:ARCH.TAG' (DINO, DINOv2)."),
        Param("device", str, "cpu", "cpu | cuda | cuda:N", runtime=True),
        Param("batch_size", int, 64, "Images per forward pass.", low=1, runtime=True),
        Param("threads", int, None, "Decode threads.", low=1, runtime=True),
    )

    def check(self) -> None:
        check_model(self["model"])  # an unknown model name fails here, before any write

    def extra_inputs(self, ws: Any) -> dict[str, Any]:
        """The checkpoint's digest, when the model is a file: retrained weights, new run."""
        version = weights_version(self["model"])
        return {"weights": version} if version else {}

    def setup(self, inputs: dict[str, Any]) -> None:
        self.encoder = load_encoder(self["model"], self["device"])

    def prepare(self, sample: Sample) -> Any:
        return prepare_image(self.encoder, sample.data)

    def process(self, items: list[Any]) -> list[tuple[np.ndarray | None, np.ndarray | None]]:
        out = self.encoder.embed_pixels(torch.stack(items))
        none = [None] * len(items)
        return list(zip(none if out.joint is None else out.joint,
                        none if out.visual is None else out.visual, strict=True))

    def assemble(self, part: PartData, results: list[Any] | None) -> PartOutput:
        """The part's spaces, the marker space (``image``, or ``visual`` for an image-only
        model) written last."""
        n, encoder = part.num_rows, self.encoder
        arrays = {}
        if encoder.dim:
            arrays["text"] = embed_texts(encoder, part.column("caption").to_pylist())
        if encoder.visual_dim:
            arrays["visual"] = np.zeros((n, encoder.visual_dim), np.float32)
        if encoder.dim:
            arrays["image"] = np.zeros((n, encoder.dim), np.float32)
        for i, result in enumerate(results or []):
            if result is not None:
                if encoder.dim:
                    arrays["image"][i] = result[0]
                if encoder.visual_dim:
                    arrays["visual"][i] = result[1]
        return PartOutput(embeddings=arrays, embeddings_model=model_slug(self["model"]))

    def part_done(self, part: PartData) -> bool:
        marker = "image" if has_text(self["model"]) else "visual"
        return part.ws.has_embeddings(model_slug(self["model"]), [marker], part.part)

    def summarize(self, data: Collection) -> dict[str, Any]:
        """The model's widths read from the stored embeddings, so that the record is the same
        whichever process (or Ray worker) loaded the encoder."""
        slug = model_slug(self["model"])
        details: dict[str, Any] = {"model": self["model"]}
        if data.parts:
            first = data.parts[0]

            def width(space: str) -> int | None:  # None: the model has no such space
                stored = data.ws.has_embeddings(slug, [space], first)
                return data.ws.embeddings(slug, space, first).shape[1] if stored else None

            details["models"] = {slug: {"name": self["model"], "visual_dim": width("visual"),
                                        "dim": width("image")}}
        return details
