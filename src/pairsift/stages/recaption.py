"""Synthetic captions (stage ``recaption``): K captions per image from a captioner, with their
provenance, their text embeddings in the workspace's model space, their CLIP score against the
image (``s_b``) and CLIP-S; the mixing stage (:mod:`pairsift.stages.mix`) decides from these.

Captions longer than the text encoder's context are cut by its tokenizer, never rejected.
"""

from __future__ import annotations

import json
import zlib
from collections.abc import Container
from typing import Any

import numpy as np
import pyarrow as pa

from .. import spaces
from ..captionmetrics import clip_s, clips_texts
from ..engine.views import Collection, PartData
from ..io.images import decode_image
from ..models import load_encoder, model_slug
from ..models.captioners import LABELS, LABELS_VERSION, Decoding, check_name, load_captioner
from ..params import Param
from ..stage import Dependencies, MapStage, PartOutput, Sample, fail, register
from .embed import DRAFT_SIZE, embed_texts
from .score import clip_scores

SPOT = "parrot-spot"
SPACE = spaces.SYNTHETIC_TEXT  # embeddings/<model>/synthetic_text-<run>/: n × K × dim per part
SCHEMA = pa.schema([
    ("synthetic_captions", pa.list_(pa.string())),  # K per image
    ("synthetic_scores", pa.list_(pa.float32())),  # s_b of each: cosine with the image
    ("synthetic_clip_s", pa.list_(pa.float32())),  # CLIP-S of each
    ("synthetic_caption", pa.string()),  # the one with the highest s_b
    ("s_b", pa.float32()),
    ("clip_s_synthetic", pa.float32()),
    ("clip_s_raw", pa.float32()),  # CLIP-S of the raw caption (NaN without one)
    ("caption_provenance", pa.string()),  # JSON: captioner, decoding options, seed
])


def caption_scores(images: np.ndarray, texts: np.ndarray) -> np.ndarray:
    """(n, k) cosines of each image with its k captions' embeddings (n × k × d); NaN where
    either is zero."""
    n, k, dim = texts.shape
    return clip_scores(np.repeat(images, k, axis=0), texts.reshape(n * k, dim)).reshape(n, k)


def space_of(run: str) -> str:
    """The embedding space holding one recaption run's caption embeddings."""
    return f"{SPACE}-{run}"


@register
class Recaption(MapStage):
    """Caption every image with a captioner (``labels`` offline: the default model's ImageNet
    class and the spotted text — not a captioning model), K captions each, with their text
    embeddings, CLIP score ``s_b`` and CLIP-S; resumes per part."""

    name = "recaption"
    columns = ("caption",)
    needs_image = True
    per_sample = True
    reads_embeddings = True
    uses = (SPOT,)
    batch = 16
    params = (
        Param("captioner", str, LABELS, "labels | open_clip:COCA_ARCH/PRETRAINED | "
                                        "hf:Salesforce/blip2-opt-2.7b (or another BLIP/BLIP-2)."),
        Param("n", int, 1, "Captions per image.", low=1, high=64),
        Param("temperature", float, 0.75, "Sampling temperature (0: greedy).", low=0),
        Param("top_p", float, 0.9, "Nucleus sampling mass.", low=0, high=1, closed="right"),
        Param("max_tokens", int, 30, "Longest caption, in the captioner's tokens.", low=6),
        Param("seed", int, 0, "Sampling seed (with each image's uid)."),
        Param("model", str, None, "Embeddings to score against (default: the last embedded "
                                  "model).", runtime=True),
        Param("device", str, "cpu", "cpu | cuda | cuda:N", runtime=True),
        Param("batch_size", int, 16, "Images per captioner call.", low=1, runtime=True),
        Param("threads", int, None, "Decode threads.", low=1, runtime=True),
    )

    def check(self) -> None:
        check_name(self["captioner"])
        if self["temperature"] == 0 and self["n"] > 1:
            fail("recaption: greedy decoding (temperature 0) gives one caption; use n=1 or a "
                 "temperature above 0")

    def extra_inputs(self, ws: Any) -> dict[str, Any]:
        """The labels captioner's version: a generative captioner's runs stay valid when only
        labels changes (re-captioning a pool with CoCa costs GPU hours)."""
        return {"labels_version": LABELS_VERSION} if self["captioner"] == LABELS else {}

    def dependencies(self, present: Container[str] = ()) -> Dependencies:
        """Only ``labels`` quotes the spotted text, so only it depends on ``parrot spot``."""
        return (), self.uses if self["captioner"] == LABELS else ()

    @property
    def decoding(self) -> Decoding:
        return Decoding(self["n"], self["temperature"], self["top_p"], self["max_tokens"],
                        self["seed"])

    def provenance(self) -> str:
        return json.dumps({"captioner": self["captioner"], **self.decoding.as_dict()})

    def setup(self, inputs: dict[str, Any]) -> None:
        self.captioner = load_captioner(self["captioner"], self["device"])
        self.encoder = load_encoder(inputs["model"], self["device"])

    def sample_table(self, part: PartData) -> pa.Table:
        rows = part.rows
        if SPOT in part.inputs and SPOT in self.dependencies()[1]:
            rows = rows.append_column("ocr_text", part.signal(SPOT, ["ocr_text"])
                                      .column("ocr_text"))
        return rows

    def prepare(self, sample: Sample) -> tuple[Any, list[str] | None, str]:
        image = decode_image(sample.data, draft=DRAFT_SIZE).image
        return (self.captioner.preprocess(image), sample.row.get("ocr_text"),
                sample.row["uid"])

    def process(self, items: list[Any]) -> list[list[str]]:
        pixels, spotted, uids = zip(*items, strict=True)
        # one seed per image, from the user's seed and the uid: the same image gets the same
        # seed wherever it runs (see Captioner for what batching still changes)
        seeds = [zlib.crc32(f"{self['seed']}/{uid}".encode()) for uid in uids]
        return self.captioner.caption(list(pixels), self.decoding, list(spotted), seeds)

    def assemble(self, part: PartData, results: list[Any] | None) -> PartOutput:
        n, k, encoder = part.num_rows, self["n"], self.encoder
        done = [i for i, r in enumerate(results or []) if r is not None]
        texts = [c for i in done for c in results[i]]
        image = np.asarray(part.embeddings("image"), np.float32)
        embedded = np.zeros((n, k, encoder.dim), np.float32)
        depicted = np.zeros((n, k, encoder.dim), np.float32)
        if done:
            embedded[done] = embed_texts(encoder, texts).reshape(len(done), k, -1)
            depicted[done] = embed_texts(encoder, clips_texts(texts)).reshape(len(done), k, -1)
        scores = caption_scores(image, embedded)
        depicts = clip_s(caption_scores(image, depicted))
        best = np.argmax(np.nan_to_num(scores, nan=-np.inf), axis=1)
        rows = np.arange(n)
        has = np.zeros(n, bool)
        has[done] = True
        captions = [results[i] if has[i] else None for i in range(n)]
        table = pa.table({
            "synthetic_captions": captions,
            "synthetic_scores": [scores[i].tolist() if has[i] else None for i in range(n)],
            "synthetic_clip_s": [depicts[i].tolist() if has[i] else None for i in range(n)],
            "synthetic_caption": [c[best[i]] if c else None for i, c in enumerate(captions)],
            "s_b": np.where(has, scores[rows, best], np.nan).astype(np.float32),
            "clip_s_synthetic": np.where(has, depicts[rows, best], np.nan).astype(np.float32),
            "clip_s_raw": self._raw_clip_s(part, image),
            "caption_provenance": [self.provenance() if has[i] else None for i in range(n)],
        }, schema=SCHEMA)
        return PartOutput(signals=table, embeddings={space_of(part.run): embedded},
                          embeddings_model=model_slug(part.model))

    def _raw_clip_s(self, part: PartData, image: np.ndarray) -> np.ndarray:
        """CLIP-S of the raw captions (NaN without one), for comparing sources."""
        raw = part.column("caption").to_pylist()
        return clip_s(clip_scores(image, embed_texts(self.encoder, clips_texts(raw))))

    def summarize(self, data: Collection) -> dict[str, Any]:
        captioned = sum(int(np.count_nonzero(~np.isnan(data.part(p).values(self.name, "s_b"))))
                        for p in data.parts)
        return {"captioner": self["captioner"], "captioned": captioned,
                "decoding": self.decoding.as_dict()}
