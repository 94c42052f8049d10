"""The report's sections: each builder returns a Section, or None when its data is absent.

A section appears only when the workspace holds what it shows, so the report of a workspace
that ran three stages has no empty chapters for the other ten. To add a stage to the report:

- a signal with a threshold (a histogram plus borderline thumbnails): add a ``SignalSpec`` to
  ``SIGNALS``;
- anything else: write ``def my_section(ctx) -> Section | None`` and add it to ``builders``.

Every decision stage gets a gallery without any change here.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any

import numpy as np
import pyarrow.compute as pc

from . import plots
from .data import Reason, ReportData
from .html import (
    compact_json,
    count,
    esc,
    evidence,
    facts,
    highlight,
    num_cell,
    percent,
    plot,
    table,
)
from .thumbnails import Thumbnails

FOUR_FIFTHS = 0.8  # a subgroup retained at < 80 % of the overall rate is flagged (EEOC rule)
MAX_SUBGROUPS = 30
CHUNK = 1 << 16  # rows per step of the borderline search


@dataclass(frozen=True)
class Section:
    id: str  # the HTML id; tests and links rely on it
    title: str
    body: str  # HTML
    lead: str = ""  # one sentence: what to look at


@dataclass(frozen=True)
class Context:
    data: ReportData
    thumbs: Thumbnails
    max_thumbnails: int = 12  # per gallery (one gallery per drop reason)
    borderline: int = 8  # per side of a threshold


Builder = Callable[[Context], Section | None]


# -- signals with thresholds -----------------------------------------------------------------
@dataclass(frozen=True)
class SignalSpec:
    """A signal column to plot, and the decision stage whose threshold cuts it."""

    stage: str  # signal stage
    column: str  # names the section: dist-<column>
    title: str
    decision: str  # the decision stage that thresholds this column
    drops: str  # "below" or "above": the side of the threshold that is dropped
    threshold: Callable[[ReportData], float | None]
    lead: str
    extra: Callable[[ReportData, np.ndarray, float | None], str] | None = None  # more plots


def _setting_threshold(stage: str, *keys: str) -> Callable[[ReportData], float | None]:
    def threshold(data: ReportData) -> float | None:
        value = data.setting(stage, *keys)
        return None if value is None else float(value)

    return threshold


def _semdedup_threshold(data: ReportData) -> float | None:
    eps = data.setting("dedup-semantic", "eps")
    return None if eps is None else 1.0 - float(eps)


def _eps_sweep(data: ReportData, max_sim: np.ndarray, threshold: float | None) -> str:
    from ..stages.semdedup import eps_sweep  # lazy: the stage module imports torch

    eps = np.geomspace(1e-4, 0.5, 80)
    strict = data.setting("dedup-semantic", "strict")
    kept = eps_sweep(np.nan_to_num(max_sim), eps, strict=strict is not False)
    chosen = None if threshold is None else 1.0 - threshold
    return plot(plots.sweep(eps, kept, chosen), "kept fraction for each epsilon")


SIGNALS: tuple[SignalSpec, ...] = (
    SignalSpec("score", "clip_score", "CLIP score", "filter-clip-score", "below",
               _setting_threshold("filter-clip-score", "threshold"),
               "Cosine of each image with its caption: low scores are captions that do not "
               "describe the image."),
    SignalSpec("dedup-semantic", "max_sim", "SemDeDup: max similarity", "dedup-semantic",
               "above",
               _semdedup_threshold,
               "Highest cosine of each sample to a better-ranked one in its cluster; above "
               "1 − ε it is a semantic duplicate. The curve shows what each ε would keep.",
               extra=_eps_sweep),
    SignalSpec("parrot-spot", "cotr", "CoTR: parrot captions", "filter-parrot", "above",
               _setting_threshold("filter-parrot", "threshold"),
               "Share of caption words that are also written in the image: high values are "
               "parrot captions that teach a model to read instead of to see."),
    SignalSpec("parrot-spot", "text_area", "Text area", "filter-text-dominated", "above",
               _setting_threshold("filter-text-dominated", "threshold"),
               "Share of each image covered by spotted words: above the threshold the image "
               "is mostly text."),
)


def distribution(spec: SignalSpec, ctx: Context) -> Section | None:
    values = ctx.data.signal(spec.stage, spec.column)  # float32 stays float32: 4 B a sample
    if values is None:
        return None
    threshold = spec.threshold(ctx.data)
    ran = spec.decision in ctx.data.decision_stages
    figures = plot(plots.histogram(values, xlabel=spec.column, threshold=threshold,
                                   dropped=ctx.data.dropped(spec.decision) if ran else None),
                   f"histogram of {spec.column}")
    if spec.extra:
        figures += spec.extra(ctx.data, values, threshold)
    return Section(f"dist-{spec.column}", spec.title,
                   facts(_value_facts(ctx, spec, values, threshold))
                   + f'<div class="plots">{figures}</div>', spec.lead)


def _value_facts(ctx: Context, spec: SignalSpec, values: np.ndarray,
                 threshold: float | None) -> list[tuple[str, str]]:
    finite = values[np.isfinite(values)]
    items = [("samples", count(values.size)), ("no value", count(values.size - finite.size))]
    if finite.size:
        lo, mid, hi = _min_median_max(finite)
        items += [("min", f"{lo:.4g}"), ("median", f"{mid:.4g}"), ("max", f"{hi:.4g}")]
    if threshold is not None:
        items.append(("threshold", f"{threshold:.4g}"))
    if spec.decision in ctx.data.decision_stages:
        dropped = int(ctx.data.dropped(spec.decision).sum())
        items.append((f"dropped by {spec.decision}",
                      f"{count(dropped)} ({percent(dropped, values.size)})"))
    return items


def _min_median_max(finite: np.ndarray) -> tuple[float, float, float]:
    """``np.percentile(finite.astype(np.float64), [0, 50, 100])`` without the float64 copy.

    Order statistics do not depend on the dtype, so ``finite`` (a copy) is partitioned in
    place; only the median of an even count interpolates, done in float64 by np.percentile on
    the two middle values, exactly as on the whole array.
    """
    half = (finite.size - 1) / 2
    middle = [int(np.floor(half)), int(np.ceil(half))]
    finite.partition(middle)
    mid = np.percentile(finite[middle].astype(np.float64), 50)
    return float(finite.min()), float(mid), float(finite.max())


def cluster_sizes(ctx: Context) -> Section | None:
    labels = ctx.data.signal("cluster", "cluster")
    if labels is None:
        return None
    if labels.dtype.kind == "f":  # an integer column with nulls reads as float with NaN
        labels = labels[np.isfinite(labels)].astype(np.int64)
    sizes = np.bincount(labels[labels >= 0]) if labels.size else np.zeros(0, np.int64)
    sizes = sizes[sizes > 0]
    if not sizes.size:
        return None
    items = [("clusters", count(sizes.size)), ("largest", count(sizes.max())),
             ("median", count(np.median(sizes))), ("singletons", count((sizes == 1).sum()))]
    return Section("dist-cluster", "Cluster sizes",
                   facts(items) + f'<div class="plots">'
                   f'{plot(plots.cluster_sizes(sizes), "cluster sizes")}</div>',
                   "Semantic dedup compares samples only inside a cluster: very large clusters "
                   "cost the most, singletons can never be duplicates.")


# -- funnel ----------------------------------------------------------------------------------
def headline(ctx: Context) -> list[tuple[str, str, str]]:
    """The numbers at the top of the page: (label, value, note)."""
    data = ctx.data
    total = data.n + data.ingest_errors
    kept = data.n - int(data.dropped_any().sum())
    return [("samples in", count(total), f"{len(data.ws.sources())} source(s)"),
            ("readable", count(data.n), percent(data.n, total)),
            ("errors", count(len(data.errors)), f"{data.ingest_errors:,} at ingest"),
            ("dropped", count(data.n - kept), f"by {len(data.decision_stages)} stage(s)"),
            ("kept", count(kept), f"{percent(kept, total)} of samples in")]


def funnel_steps(data: ReportData) -> list[tuple[str, int, str]]:
    """(step, samples left, what happened): in → readable → after each stage → exported.

    Stages count cumulatively in the order they ran: "after X" is what no stage up to X
    dropped, so each step's loss is what X added to the earlier ones.
    """
    total = data.n + data.ingest_errors
    steps = [("samples in", total, "every sample the sources name"),
             ("readable", data.n, f"−{data.ingest_errors:,} unusable at ingest (errors below)")]
    gone = np.zeros(data.n, bool)
    for stage in data.decision_stages:
        drops = data.dropped(stage)
        new = int((drops & ~gone).sum())
        gone |= drops
        note = f"−{new:,} by {stage}"
        if new != int(drops.sum()):
            note += f" (drops {int(drops.sum()):,}; {int(drops.sum()) - new:,} already gone)"
        steps.append((f"after {stage}", data.n - int(gone.sum()), note))
    steps.append(("exported", data.n - int(gone.sum()), "kept by every decision"))
    return steps


def funnel(ctx: Context) -> Section:
    steps = funnel_steps(ctx.data)
    total = steps[0][1]
    rows = [[esc(label), num_cell(count(n)), num_cell(percent(n, total)),
             f'<div class="bar"><span style="width:{100 * n / max(total, 1):.1f}%"></span>'
             "</div>", esc(note)] for label, n, note in steps]
    body = table(["step", "samples", "of samples in", "", "what happened"], rows, cls="funnel",
                 numeric=[1, 2])
    body += _errors_table(ctx, total)
    return Section("funnel", "Funnel", body,
                   "Samples in → readable → after each decision stage (in the order they ran) "
                   "→ exported.")


def _errors_table(ctx: Context, total: int) -> str:
    errors = ctx.data.errors
    if not len(errors):
        return '<p class="note">No errors: every sample was readable.</p>'
    first = pc.ScalarAggregateOptions(skip_nulls=False)
    groups = errors.group_by(["stage", "reason"], use_threads=False).aggregate(
        [([], "count_all"), ("key", "first", first), ("message", "first", first)]).to_pylist()
    groups.sort(key=lambda g: -g["count_all"])  # most common first; ties in order of appearance
    rows = [[esc(g["reason"]), esc(g["stage"]), num_cell(count(g["count_all"])),
             num_cell(percent(g["count_all"], total)),
             f'<span class="muted">{esc(_example(g)[:160])}</span>'] for g in groups]
    return ('<h3 id="errors">Errors by reason</h3>'
            + table(["reason", "stage", "samples", "of samples in", "example"], rows,
                    numeric=[2, 3]))


def _example(group: dict[str, Any]) -> str:
    return f"{group['key_first']}: {group['message_first']}"


# -- galleries -------------------------------------------------------------------------------
def gallery(stage: str, ctx: Context) -> Section:
    """Dropped samples per reason with their evidence, and the cases around the threshold.

    Only the shown samples are read: their decisions, their rows and, for a duplicate, the
    sample it duplicates (found in one scan of the uid columns for the whole gallery).
    """
    data = ctx.data
    reasons = {key: int(per_part.sum()) for key, per_part in data.decisions(stage).reasons.items()}
    chosen = data.picked(stage, {key: _pick(n, ctx.max_thumbnails)
                                 for key, n in reasons.items()})
    proofs = {key: [json.loads(e or "{}") for e in evidence]
              for key, (_, evidence) in chosen.items()}
    originals = data.find(str(p.get("of", "")) for key in reasons for p in proofs[key])
    matched = {key: [originals.get(str(p.get("of", "")), -1) for p in proofs[key]]
               for key in reasons}
    rows = data.rows([i for key in reasons for i in (*chosen[key][0], *matched[key])])
    body = "".join(_reason_gallery(ctx, key, n, chosen[key][0], proofs[key], matched[key], rows)
                   for key, n in reasons.items())
    if not reasons:
        body = '<p class="note">This stage dropped nothing.</p>'
    spec = next((s for s in SIGNALS if s.decision == stage), None)
    if spec is not None:
        body += _borderline(ctx, spec, stage)
    n_drop = sum(n for (v, _), n in reasons.items() if v == "drop")
    return Section(f"gallery-{stage}", f"Gallery: {stage}", body,
                   f"{n_drop:,} of {data.decisions(stage).decided:,} decided samples dropped. "
                   f"Up to {ctx.max_thumbnails} random samples per reason, with the evidence the "
                   "stage recorded.")


def _pick(n: int, k: int) -> np.ndarray:
    """Up to ``k`` of ``n`` ranks in order: a seeded random pick, the same every run."""
    rng = np.random.default_rng(0)
    return np.sort(rng.choice(n, min(k, n), replace=False))


def _reason_gallery(ctx: Context, key: Reason, n: int, indices: np.ndarray,
                    proofs: list[dict[str, Any]], matched: list[int],
                    rows: dict[int, dict[str, Any]]) -> str:
    """The shown samples of one (verdict, reason), beside the samples they duplicate."""
    verdict, reason = key
    common = _common(proofs)
    cards = "".join(_card(ctx, rows.get(int(i)), {k: v for k, v in p.items() if k not in common},
                          rows.get(int(m)))
                    for i, m, p in zip(indices, matched, proofs, strict=True))
    label = reason if verdict == "drop" else f"{verdict}: {reason}"
    shown = f"showing {len(proofs)}" if len(proofs) < n else "all shown"
    return (f'<h3>{esc(label or "(no reason)")} <span class="count">{_samples(n)} · {shown}'
            f'</span></h3>{evidence(common)}<div class="gallery">{cards}</div>')


def _samples(n: int) -> str:
    return f"{n:,} sample" + ("" if n == 1 else "s")


def _common(proofs: list[dict[str, Any]]) -> dict[str, Any]:
    """Evidence every shown card shares (a stage's threshold): said once, above the cards."""
    if len(proofs) < 2:
        return {}
    return {k: v for k, v in proofs[0].items()
            if k != "words" and all(k in p and p[k] == v for p in proofs[1:])}


def _card(ctx: Context, row: dict[str, Any] | None, proof: dict[str, Any],
          match: dict[str, Any] | None = None, badge: str = "") -> str:
    """One sample: thumbnail (beside the sample it duplicates), caption, evidence."""
    if row is None:
        return ""
    pair = match is not None and match["uid"] != row["uid"]
    images = _thumb(ctx, row) + (_thumb(ctx, match, "duplicate of") if pair else "")
    caption = highlight(row["caption"] or "", proof.get("words") or [])
    return (f'<figure class="card{" pair" if pair else ""}"><div class="images">{images}</div>'
            f'<figcaption>{badge}<p class="caption">{caption or "<em>no caption</em>"}</p>'
            + evidence({k: v for k, v in proof.items() if k != "words"})
            + f'<span class="uid" title="{esc(row["uid"])}">{esc(row["key"])}</span>'
            "</figcaption></figure>")


def _thumb(ctx: Context, row: dict[str, Any], label: str = "") -> str:
    uri = ctx.thumbs.data_uri(row)
    tag = (f'<img src="{uri}" alt="{esc(row["key"])}">' if uri
           else '<div class="missing">image unavailable</div>')
    note = f'<span class="tag">{esc(label)}</span>' if label else ""
    return f'<div class="thumb">{tag}{note}</div>'


def _borderline(ctx: Context, spec: SignalSpec, stage: str) -> str:
    """The samples closest to the threshold on each side: the ones a small change flips."""
    values = ctx.data.signal(spec.stage, spec.column)
    threshold = spec.threshold(ctx.data)
    if values is None or threshold is None:
        return ""
    dropped = ctx.data.dropped(stage)
    below, above = _nearest(values, threshold, spec.drops, ctx.borderline)
    rows = ctx.data.rows([*below, *above])

    def cards(indices: np.ndarray) -> str:
        return "".join(_card(ctx, rows.get(int(i)), {},
                             badge=_badge(bool(dropped[i]), float(values[i]))) for i in indices)

    at = "at or just above" if spec.drops == "below" else "at or just below"
    titles = ("just below", at) if spec.drops == "below" else (at, "just above")
    return (f"<h3>Borderline around {esc(spec.column)} = {threshold:.4g}</h3>"
            '<p class="note">The samples closest to the threshold: moving it a little flips '
            'these first.</p><div class="border">'
            + "".join(f'<div><h4>{t}</h4><div class="gallery compact">{cards(i)}</div></div>'
                      for t, i in zip(titles, (below, above), strict=True))
            + "</div>")


def _sides(values: np.ndarray, threshold: float, drops: str) -> tuple[np.ndarray, np.ndarray]:
    """Masks below and above the threshold; a value equal to it is on the kept side."""
    if drops == "below":
        return values < threshold, values >= threshold
    return values <= threshold, values > threshold


def _nearest(values: np.ndarray, threshold: float, drops: str,
             k: int) -> tuple[np.ndarray, ...]:
    """Below and above the threshold, indices of the ``k`` values closest to it, closest first
    and ties in row order. Compared in float64 a chunk at a time: temporaries stay small."""
    best: list[list[tuple[np.ndarray, np.ndarray]]] = [[], []]  # per side, per chunk
    for start in range(0, len(values), CHUNK):
        chunk = values[start:start + CHUNK].astype(np.float64)
        for found, side in zip(best, _sides(chunk, threshold, drops), strict=True):
            candidates = np.flatnonzero(side & np.isfinite(chunk))
            distance = np.abs(chunk[candidates] - threshold)
            top = np.argsort(distance, kind="stable")[:k]
            found.append((candidates[top] + start, distance[top]))
    return tuple(_closest(found, k) for found in best)


def _closest(found: list[tuple[np.ndarray, np.ndarray]], k: int) -> np.ndarray:
    """The ``k`` closest of each chunk's closest; chunks are in row order, so a stable sort
    keeps ties in row order."""
    if not found:
        return np.zeros(0, np.int64)
    indices, distances = (np.concatenate(arrays) for arrays in zip(*found, strict=True))
    return indices[np.argsort(distances, kind="stable")[:k]]


def _badge(dropped: bool, value: float) -> str:
    badge = ('<span class="badge drop">dropped</span>' if dropped
             else '<span class="badge keep">kept</span>')
    return f'<div class="verdict">{badge} <span class="value">{value:.4g}</span></div>'


# -- fairness and overlap --------------------------------------------------------------------
def fairness(ctx: Context) -> Section | None:
    """Retention per subgroup per stage, from a ``subgroup`` column (parts or any signal)."""
    data = ctx.data
    groups = data.subgroup_codes()
    stages = data.decision_stages
    if groups is None or not stages:
        return None
    names, codes = groups
    sizes = np.bincount(codes, minlength=len(names))
    masks = [data.dropped(s) for s in stages] + [data.dropped_any()]
    overall = [1 - m.mean() if m.size else 1.0 for m in masks]
    dropped = [np.bincount(codes[m], minlength=len(names)) for m in masks]
    rows = [["<strong>all samples</strong>", num_cell(count(data.n)),
             *(num_cell(f"{r:.1%}") for r in overall)]]
    largest = sorted(range(len(names)), key=lambda g: (-sizes[g], names[g]))  # ties by name
    for g in largest[:MAX_SUBGROUPS]:
        kept = [1 - d[g] / sizes[g] for d in dropped]
        rows.append([esc(names[g]), num_cell(count(sizes[g])),
                     *(_retention_cell(k, o) for k, o in zip(kept, overall, strict=True))])
    return Section("fairness", "Fairness: retention per subgroup",
                   table(["subgroup", "samples", *stages, "all stages"], rows, cls="matrix"),
                   "Share of each subgroup kept by each stage. Red: kept at under four fifths "
                   "of the overall rate, so that stage shrinks the subgroup's share.")


def _retention_cell(kept: float, overall: float) -> str:
    flagged = overall > 0 and kept < FOUR_FIFTHS * overall
    return num_cell(f"{kept:.1%}", "background:#fde2e1;color:#9b1c1c" if flagged else "")


def pairwise_drops(data: ReportData) -> tuple[list[str], np.ndarray, np.ndarray]:
    """Stages that drop something, samples each pair drops together, and each one's alone."""
    stages = [s for s in data.decision_stages if data.dropped(s).any()]
    masks = [data.dropped(s) for s in stages]
    both = np.array([[np.count_nonzero(a & b) for b in masks] for a in masks],
                    np.int64).reshape(len(masks), len(masks))
    once, twice = np.zeros(data.n, bool), np.zeros(data.n, bool)  # dropped by 1, by 2+ stages
    for mask in masks:
        twice |= once & mask
        once |= mask
    alone = np.array([np.count_nonzero(m & ~twice) for m in masks], np.int64)
    return stages, both, alone


def overlap(ctx: Context) -> Section | None:
    """How many samples each pair of decision stages both dropped."""
    stages, both, alone = pairwise_drops(ctx.data)
    if len(stages) < 2:
        return None
    top = max(int(both.max()), 1)
    rows = [[esc(a), *(num_cell(count(both[i, j]), _heat(both[i, j] / top))
                       for j in range(len(stages))), num_cell(count(alone[i]))]
            for i, a in enumerate(stages)]
    return Section("overlap", "Overlap of filters",
                   table(["dropped by", *stages, "only this stage"], rows, cls="matrix"),
                   "Samples dropped by both the row's and the column's stage; the diagonal is "
                   "each stage's own total. A large overlap: one filter makes the other "
                   "redundant.")


def _heat(share: float) -> str:
    return f"background:rgba(224,123,57,{0.08 + 0.5 * share:.2f})"


# -- run facts -------------------------------------------------------------------------------
def run_facts(ctx: Context) -> Section:
    ws = ctx.data.ws
    sources = [[esc(name), esc(s["kind"]), _paths(s["paths"]),
                compact_json({k: v for k, v in s["options"].items() if v is not None}),
                num_cell(count(len(s.get("units", {}))))]
               for name, s in ws.sources().items()]
    models = [[esc(slug), esc(m.get("name")), num_cell(esc(m.get("dim"))),
               num_cell(esc(m.get("visual_dim") or "–"))] for slug, m in ws.models().items()]
    runs = [[esc(r["stage"]), f'<code>{esc(r["run"])}</code>'
             + (' <span class="badge keep">current</span>' if ws.current_run(r["stage"])
                == r["run"] else ""),
             f"<code>{compact_json(r.get('config', {}))}</code>",
             f"<code>{compact_json(r.get('summary', {}))}</code>",
             f'<span class="nowrap">{esc(_when(r.get("started")))}</span>',
             num_cell(_duration(r))]
            for r in ws.manifest.get("runs", [])]
    body = facts([("workspace", esc(ws.root)),
                  ("created (UTC)", esc(_when(ws.manifest["created"]))),
                  ("parts", count(len(ws.part_ids())))])
    body += _recipes(ws.recipes())
    body += "<h3>Sources</h3>" + table(["name", "kind", "paths", "options", "units"], sources,
                                       numeric=[4])
    if models:
        body += "<h3>Models</h3>" + table(["name", "model", "dim", "visual dim"], models,
                                          numeric=[2, 3])
    if runs:
        body += "<h3>Stage runs</h3>" + table(
            ["stage", "run id", "config", "summary", "started (UTC)", "duration"], runs,
            numeric=[5])
    return Section("run", "Run facts", body,
                   "Where the samples came from and how every stage was configured; a run's "
                   "id is the hash of its config.")


def _recipes(recipes: list[dict[str, Any]]) -> str:
    """The recipes run on the workspace (``pairsift run``), latest last, each with its text."""
    if not recipes:
        return ""
    rows = [[f"<code>{esc(r['hash'])}</code>",
             f'<span class="nowrap">{esc(_when(r.get("started")))}</span>',
             f"<details><summary>recipe</summary><pre>{esc(r['text'])}</pre></details>"]
            for r in recipes]
    return "<h3>Recipes</h3>" + table(["recipe hash", "run (UTC)", "text"], rows)


def _paths(paths: list[str]) -> str:
    shown = "<br>".join(f"<code>{esc(p)}</code>" for p in paths[:3])
    return shown + (f"<br>… {len(paths) - 3:,} more" if len(paths) > 3 else "")


def _when(iso: str | None) -> str:
    return dt.datetime.fromisoformat(iso).strftime("%Y-%m-%d %H:%M:%S") if iso else ""


def _duration(run: dict[str, Any]) -> str:
    if not run.get("started") or not run.get("finished"):
        return "unfinished"
    seconds = (dt.datetime.fromisoformat(run["finished"])
               - dt.datetime.fromisoformat(run["started"])).total_seconds()
    return f"{seconds:,.0f} s"


def builders(data: ReportData) -> list[Builder]:
    """Every section in page order; each returns None when the workspace lacks its data."""
    from .captions import caption_section  # it builds on this module's cards

    return [
        funnel,
        *(partial(distribution, spec) for spec in SIGNALS),
        cluster_sizes,
        *(partial(gallery, stage) for stage in data.decision_stages),
        caption_section,
        fairness,
        overlap,
        run_facts,
    ]
