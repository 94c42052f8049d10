"""The report's caption section, when ``recaption`` (and ``mix``) ran: where the kept set's
captions come from, their diversity and CLIP-S per source, and a gallery of images with their
raw and synthetic captions side by side (replaced captions first)."""

from __future__ import annotations

from typing import Any

import numpy as np

from ..captionmetrics import SubsetStats
from ..models.captioners import LABELS
from ..stages.mix import BOTH, CAPTION_SOURCE, RAW, SYNTHETIC
from ..stages.score import SIGNAL as RAW_SCORE
from .html import count, esc, num_cell, table
from .sections import Context, Section, _thumb

LABELS_NOTE = ("The labels captioner names the default model's ImageNet class in that model's "
               "own class prompt: its CLIP score and CLIP-S under the default model are "
               "inflated by construction, not a sign of better captions.")


def caption_section(ctx: Context) -> Section | None:
    ws = ctx.data.ws
    if ws.current_run("recaption") is None:
        return None
    mixed = "mix" in ws.signal_stages()
    stats, gallery = SubsetStats(), _Gallery(ctx.max_thumbnails)
    for k, part in enumerate(ctx.data.part_ids):
        _add_part(ctx, part, int(ctx.data.starts[k]), mixed, stats, gallery)
    record = ws.run_record("recaption")
    captioner = record["options"]["captioner"]
    model = record["inputs"].get("model", "")
    rows = [[esc(s), num_cell(count(f.captions)), num_cell(count(f.unique_trigrams)),
             num_cell(f"{f.trigrams_per_1000:,.0f}"), num_cell(f"{f.clip_s:.3f}")]
            for s, f in ((s, stats.stats(s)) for s in stats.subsets())]
    merged = stats.merged(stats.subsets())
    rows.append(["<strong>all kept pairs</strong>" if mixed else "<strong>all</strong>",
                 num_cell(count(merged.captions)), num_cell(count(merged.unique_trigrams)),
                 num_cell(f"{merged.trigrams_per_1000:,.0f}"), num_cell(f"{merged.clip_s:.3f}")])
    note = f'<p class="note">{esc(LABELS_NOTE)}</p>' if captioner == LABELS else ""
    body = (note + table(["caption source", "pairs", "unique trigrams", "per 1,000 captions",
                          f"mean CLIP-S ({model})"], rows)
            + f'<h3>Raw and synthetic captions <span class="count">{captioner}</span></h3>'
            + f'<div class="gallery">{gallery.html(ctx)}</div>')
    scope = "the kept set, by the caption mix chose" if mixed else \
        "every image (mix has not run), raw and synthetic"
    return Section("captions", "Synthetic captions",
                   body, f"Captions of {scope}: diversity (unique word trigrams) and CLIP-S "
                         f"(2.5·max(cos, 0), 'A photo depicts …') per source.")


def _add_part(ctx: Context, part: int, start: int, mixed: bool, stats: SubsetStats,
              gallery: _Gallery) -> None:
    ws = ctx.data.ws
    recaption = ws.part_signal("recaption", part, ["synthetic_caption", "clip_s_raw",
                                                   "clip_s_synthetic", "s_b"])
    raw_caption = np.asarray(ws.read_part(part, ["caption"]).column("caption").to_pylist(), object)
    synthetic = np.asarray(recaption.column("synthetic_caption").to_pylist(), object)
    if mixed:
        kept = ~ws.dropped(part)
        source = ws.part_signal("mix", part, [CAPTION_SOURCE]).column(
            CAPTION_SOURCE).to_numpy(zero_copy_only=False)
        raw = kept & np.isin(source, [RAW, BOTH])
        syn = kept & np.isin(source, [SYNTHETIC, BOTH])
    else:
        raw, syn = _present(raw_caption), _present(synthetic)
    clips_raw = recaption.column("clip_s_raw").to_numpy(zero_copy_only=False)
    clips_syn = recaption.column("clip_s_synthetic").to_numpy(zero_copy_only=False)
    stats.add(RAW, raw_caption[raw].tolist(), clips_raw[raw])
    stats.add(SYNTHETIC, synthetic[syn].tolist(), clips_syn[syn])
    score = ws.part_signal("score", part, [RAW_SCORE]) if ws.current_run("score") else None
    s_r = score.column(RAW_SCORE).to_numpy(zero_copy_only=False) if score is not None \
        else np.full(len(raw), np.nan)
    s_b = recaption.column("s_b").to_numpy(zero_copy_only=False)
    replaced = syn & ~raw if mixed else np.zeros(len(raw), bool)
    for order, mask in ((0, replaced), (1, (raw | syn) & ~replaced & _present(synthetic))):
        for i in np.flatnonzero(mask)[:gallery.limit]:  # later rows of a part never get in
            gallery.offer(order, start + int(i), raw_caption[i], synthetic[i], s_r[i], s_b[i],
                          "synthetic" if replaced[i] else ("both" if raw[i] and syn[i]
                                                           else "raw"))


def _present(captions: np.ndarray) -> np.ndarray:
    return np.array([c is not None for c in captions], bool)


class _Gallery:
    """The first ``limit`` samples, replaced captions before the others."""

    def __init__(self, limit: int):
        self.limit = limit
        self.cards: list[tuple[int, int, dict[str, Any]]] = []

    def offer(self, order: int, row: int, raw: str | None, synthetic: str | None,
              s_r: float, s_b: float, chosen: str) -> None:
        if sum(o <= order for o, _, _ in self.cards) >= self.limit:
            return
        self.cards.append((order, row, {"raw": raw, "synthetic": synthetic, "s_r": s_r,
                                        "s_b": s_b, "chosen": chosen}))
        self.cards.sort(key=lambda c: c[:2])
        del self.cards[self.limit:]

    def html(self, ctx: Context) -> str:
        rows = ctx.data.rows([row for _, row, _ in self.cards])
        return "".join(_card(ctx, rows[row], info) for _, row, info in self.cards if row in rows)


def _card(ctx: Context, row: dict[str, Any], info: dict[str, Any]) -> str:
    def line(label: str, text: str | None, score: float) -> str:
        chosen = info["chosen"] in (label, BOTH)
        mark = ' <span class="badge keep">chosen</span>' if chosen else ""
        value = "no score" if np.isnan(score) else f"{score:.3f}"
        return (f'<p class="caption"><b>{label}</b> ({value}){mark}: '
                f'{esc(text) if text else "<em>none</em>"}</p>')

    replaced = " replaced" if info["chosen"] == SYNTHETIC else ""
    return (f'<figure class="card pair{replaced}"><div class="images">{_thumb(ctx, row)}</div>'
            f'<figcaption>{line(RAW, info["raw"], info["s_r"])}'
            f'{line(SYNTHETIC, info["synthetic"], info["s_b"])}'
            f'<span class="uid" title="{esc(row["uid"])}">{esc(row["key"])}</span>'
            "</figcaption></figure>")

