"""Mixing raw and synthetic captions (stage ``mix``), as Nguyen et al. ("Improving Multimodal
Datasets with Image Captioning", NeurIPS 2023) do: every image has a raw caption with score
``s_r`` (stage ``score``) and a synthetic one with ``s_b`` (stage ``recaption``), both cosines
with the image in the workspace's model space. With ``X`` the top fraction:

- ``raw_topk``: keep the images whose ``s_r`` is in the top X (DataComp's CLIP-score filter);
- ``synthetic_only``: every image gets its synthetic caption; keep the top X by ``s_b``;
- ``raw_then_synthetic``: the raw top X keep their caption, every other image gets its
  synthetic one; with ``filter_synthetic`` a synthetic pair survives only if ``s_b >= τ``, the
  same threshold that cut the raw top X (the paper's "Raw (top x%) + BLIP2 (rest, filtered)");
- ``synthetic_then_raw``: the mirror: the synthetic top X, the raw caption for the rest
  (``filter_raw``: only if ``s_r >= τ``);
- ``both``: a pool of 2N pairs, the raw and the synthetic pair of every image, top X of it.

Thresholds are DataComp's (the (int(N·X)+1)-th largest score, kept with ``>=``). An image
without a synthetic caption is treated as raw-only; one without a raw caption as
synthetic-only. Nothing is re-captioned: another X or strategy re-decides in seconds.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa

from ..captionmetrics import SubsetStats
from ..engine.views import Collection, PartData
from ..params import Param
from ..stage import Decisions, GlobalStage, PartOutput, fail, register
from .score import SIGNAL as RAW_SCORE
from .score import fraction_threshold

STRATEGIES = ("raw_topk", "synthetic_only", "raw_then_synthetic", "synthetic_then_raw", "both")
RAW, SYNTHETIC, BOTH = "raw", "synthetic", "both"
CAPTION_SOURCE = "caption_source"
# (strategy, filter_synthetic, filter_raw) rows of the --compare table
COMPARED = (("raw_topk", False, False), ("synthetic_only", False, False),
            ("raw_then_synthetic", False, False), ("raw_then_synthetic", True, False),
            ("synthetic_then_raw", False, False), ("synthetic_then_raw", False, True),
            ("both", False, False))


@dataclass(frozen=True)
class Mix:
    """One mixing rule; ``cut`` is τ, computed from the whole collection."""

    strategy: str
    filter_synthetic: bool = False
    filter_raw: bool = False

    @property
    def label(self) -> str:
        filtered = " (rest filtered)" if self.filter_synthetic or self.filter_raw else ""
        return self.strategy + filtered

    def threshold(self, s_r: np.ndarray, s_b: np.ndarray, top: float) -> float:
        """τ: the top-X cut of the scores this strategy ranks by."""
        if self.strategy in ("raw_topk", "raw_then_synthetic"):
            return fraction_threshold(s_r, top)
        if self.strategy == "both":
            return fraction_threshold(np.concatenate([s_r, s_b]), top)
        return fraction_threshold(s_b, top)

    def pairs(self, s_r: np.ndarray, s_b: np.ndarray, cut: float
              ) -> tuple[np.ndarray, np.ndarray]:
        """(raw pair kept, synthetic pair kept) per image."""
        has_r, has_b = ~np.isnan(s_r), ~np.isnan(s_b)
        raw_top = has_r & (np.nan_to_num(s_r, nan=-np.inf) >= cut)
        syn_top = has_b & (np.nan_to_num(s_b, nan=-np.inf) >= cut)
        if self.strategy == "raw_topk":
            return raw_top, np.zeros_like(raw_top)
        if self.strategy == "synthetic_only":
            return np.zeros_like(syn_top), syn_top
        if self.strategy == "both":
            return raw_top, syn_top
        if self.strategy == "raw_then_synthetic":
            syn = ~raw_top & (syn_top if self.filter_synthetic else has_b)
            raw = raw_top | (~raw_top & ~has_b & has_r & (not self.filter_synthetic))
            return raw, syn
        raw = ~syn_top & (raw_top if self.filter_raw else has_r)
        syn = syn_top | (~syn_top & ~has_r & has_b & (not self.filter_raw))
        return raw, syn


def caption_source(raw: np.ndarray, syn: np.ndarray) -> pa.Array:
    """``raw``, ``synthetic``, ``both`` or null (dropped) per image."""
    source = np.full(len(raw), None, object)
    source[raw], source[syn], source[raw & syn] = RAW, SYNTHETIC, BOTH
    return pa.array(source.tolist(), pa.string())


@register
class MixCaptions(GlobalStage):
    """Mix raw and synthetic captions (Nguyen et al. 2023): keep the raw top X and give the
    others their synthetic caption, or any other strategy; the chosen caption and its source
    go into every export. Re-decides in seconds from the stored scores."""

    name = "mix"
    requires = ("score", "recaption")
    reason = "mix_below_threshold"
    params = (
        Param("strategy", str, "raw_then_synthetic", "How raw and synthetic captions mix.",
              choices=STRATEGIES),
        Param("top", float, 0.3, "The top fraction X that sets the threshold τ.", low=0,
              high=1, closed="right"),
        Param("filter_synthetic", bool, False, "raw_then_synthetic: a synthetic pair must "
                                               "reach τ too."),
        Param("filter_raw", bool, False, "synthetic_then_raw: a raw pair must reach τ too."),
        Param("compare", bool, False, "Also compute every strategy at the same X (images, "
                                      "pairs, unique trigrams, CLIP-S, share synthetic)."),
    )

    def check(self) -> None:
        if self["filter_synthetic"] and self["strategy"] != "raw_then_synthetic":
            fail("mix: filter_synthetic (--filter-synthetic) applies to raw_then_synthetic")
        if self["filter_raw"] and self["strategy"] != "synthetic_then_raw":
            fail("mix: filter_raw (--filter-raw) applies to synthetic_then_raw")

    @property
    def mix(self) -> Mix:
        return Mix(self["strategy"], self["filter_synthetic"], self["filter_raw"])

    def combine(self, data: Collection, results: Any) -> dict[str, Any]:
        s_r, s_b = scores(data)
        return {"threshold": self.mix.threshold(s_r, s_b, self["top"])}

    def part_output(self, data: Collection, state: dict[str, Any], part: int) -> PartOutput:
        view = data.part(part, ("caption",))
        s_r, s_b = part_scores(view)
        raw, syn = self.mix.pairs(s_r, s_b, state["threshold"])
        kept = raw | syn
        reason = np.where(kept, np.where(raw, "caption_added", "caption_replaced"),
                          np.where(np.isnan(s_r) & np.isnan(s_b), "mix_no_score",
                                   self.reason))
        synthetic = view.signal("recaption", ["synthetic_caption"]).column("synthetic_caption")
        evidence = {"strategy": self.mix.label, "threshold": round(state["threshold"], 6),
                    "top": self["top"], "s_r": s_r, "s_b": s_b,
                    "raw_caption": view.column("caption"), "synthetic_caption": synthetic}
        return PartOutput(signals=pa.table({CAPTION_SOURCE: caption_source(raw, syn)}),
                          decisions=Decisions(~kept, reason, evidence, noted=syn))

    def summarize(self, data: Collection, state: dict[str, Any]) -> dict[str, Any]:
        details: dict[str, Any] = {"strategy": self.mix.label, "top": self["top"],
                                   "threshold": state["threshold"]}
        if self["compare"]:
            details["compare"] = compare(data, self["top"])
            details["clip_s_model"] = data.ws.run_record(
                "recaption", data.input_run("recaption"))["inputs"]["model"]
        return details


def scores(data: Collection) -> tuple[np.ndarray, np.ndarray]:
    """``s_r`` and ``s_b`` over the collection (4 bytes a sample each)."""
    return data.values("score", RAW_SCORE), data.values("recaption", "s_b")


def part_scores(part: PartData) -> tuple[np.ndarray, np.ndarray]:
    return part.values("score", RAW_SCORE), part.values("recaption", "s_b")


def compare(data: Collection, top: float) -> list[dict[str, Any]]:
    """Every strategy at the same X: images kept, pairs kept, unique trigrams of the kept
    captions, their mean CLIP-S, and the share of synthetic pairs. One pass over the parts."""
    s_r, s_b = scores(data)
    mixes = [Mix(*row) for row in COMPARED]
    cuts = [m.threshold(s_r, s_b, top) for m in mixes]
    stats = [SubsetStats() for _ in mixes]
    images = np.zeros(len(mixes), np.int64)
    for p in data.parts:
        view = data.part(p, ("caption",))
        part_r, part_b = part_scores(view)
        raw_captions = np.asarray(view.column("caption").to_pylist(), object)
        signals = view.signal("recaption", ["synthetic_caption", "clip_s_raw",
                                            "clip_s_synthetic"])
        syn_captions = np.asarray(signals.column("synthetic_caption").to_pylist(), object)
        clips_raw = signals.column("clip_s_raw").to_numpy(zero_copy_only=False)
        clips_syn = signals.column("clip_s_synthetic").to_numpy(zero_copy_only=False)
        for k, (mix, cut) in enumerate(zip(mixes, cuts, strict=True)):
            raw, syn = mix.pairs(part_r, part_b, cut)
            images[k] += int(np.count_nonzero(raw | syn))
            stats[k].add(RAW, raw_captions[raw].tolist(), clips_raw[raw])
            stats[k].add(SYNTHETIC, syn_captions[syn].tolist(), clips_syn[syn])
    rows = []
    for k, mix in enumerate(mixes):
        total = stats[k].merged([RAW, SYNTHETIC])
        synthetic = stats[k].stats(SYNTHETIC).captions
        rows.append({"strategy": mix.label, "threshold": cuts[k], "images": int(images[k]),
                     "pairs": total.captions, "unique_trigrams": total.unique_trigrams,
                     "clip_s": total.clip_s,
                     "share_synthetic": synthetic / total.captions if total.captions else 0.0})
    return rows
