"""The commands that are not stages: explain, export, search, the web page, the report,
the demo, parrot rates and audit, and the index."""

from __future__ import annotations

import dataclasses
import json
import math
import shlex
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from .. import api
from ..stage import get_stage, option_lines, python_name, stage_names
from .app import GROUPS, Quiet, Workspace, app, console, friendly_errors
from .stages import PRINTERS, print_default, with_engine_options

parrot_app = GROUPS["parrot"]


@app.command()
@friendly_errors
def explain(
    uid: Annotated[str, typer.Argument(help="The sample's 32-hex uid.")],
    workspace: Workspace,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Everything recorded about one sample: where it is, its signals, decisions, errors."""
    report = api.explain(workspace, uid)
    if as_json:
        print(json.dumps(report, indent=1, default=str))
        return
    console.print(f"[bold]{report['uid']}[/bold]: {report['verdict']}")
    if report["sample"]:
        sample = report["sample"]
        for field in ("key", "source", "caption", "caption_issue", "width", "height", "format",
                      "shard", "offset"):
            console.print(f"  {field}: {sample[field]}")
    for stage, values in report["signals"].items():
        console.print(f"  signal {stage}: {values}")
    for d in report["decisions"]:
        console.print(f"  decision {d['stage']}: {d['verdict']} {d['reason']} {d['evidence']}")
    for e in report["errors"]:
        console.print(f"  error at {e['stage']}: {e['reason']}: {e['message']}")


@app.command()
@friendly_errors
def export(
    out: Annotated[Path, typer.Argument(help="Output directory (webdataset) or file.")],
    workspace: Workspace,
    format: Annotated[str, typer.Option("--format", "-f", help="webdataset | parquet | "
                                        "openclip-csv | datacomp-uids")] = "webdataset",
    shard_size: Annotated[int, typer.Option(help="Samples per WebDataset shard.")] = 10_000,
    overwrite: Annotated[bool, typer.Option(
        help="Replace OUT's folder even if it is not a pairsift export of this format.")] = False,
) -> None:
    """Write the kept subset."""
    s = api.export(workspace, out, format=format, shard_size=shard_size, overwrite=overwrite)
    console.print(f"exported {s.exported:,} samples ({s.dropped:,} dropped) as {s.format} "
                  f"→ {s.out}")
    for reason, n in s.left_out.items():
        console.print(f"left out {n:,} kept samples that {s.format} cannot hold: {reason}")


def _share(x: float) -> str:
    return "-" if math.isnan(x) else f"{x:.1%}"


@parrot_app.command("rates")
@friendly_errors
def parrot_rates(
    workspace: Workspace,
    by: Annotated[str, typer.Option(help="source | cluster")] = "source",
) -> None:
    """Share of images with text, of parrot captions, and mean CoTR per source or cluster."""
    table = Table(title=f"parrot captions by {by}")
    for column in ("group", "samples", "with text", "parrot", "parrot of text", "mean CoTR"):
        table.add_column(column)
    for r in api.parrot_rates(workspace, by=by):
        table.add_row(str(r["group"]), f"{r['samples']:,}", _share(r["text_rate"]),
                      _share(r["parrot_rate"]), _share(r["parrot_of_text"]),
                      "-" if math.isnan(r["mean_cotr"]) else f"{r['mean_cotr']:.3f}")
    console.print(table)


@parrot_app.command("audit")
@friendly_errors
def parrot_audit(
    model: Annotated[str, typer.Option(help="'default' or 'open_clip:ARCH/PRETRAINED'.")] = (
        "default"),
    device: Annotated[str, typer.Option(help="cpu | cuda | cuda:N")] = "cpu",
    out: Annotated[Path, typer.Option(help="Folder for parrot_audit.json and .png.")] = Path(
        "parrot-audit"),
    words: Annotated[Path | None, typer.Option(help="Words to render, one per line "
                                                    "(default: 60 common caption words).")] = None,
    quiet: Quiet = False,
) -> None:
    """How much an encoder rewards reading text: the synthetic Sync. Score benchmark."""
    word_list = words.read_text().split() if words else None
    r = api.parrot_audit(model=model, device=device, out=out, words=word_list, progress=not quiet)
    console.print(f"{r.model}: Sync. Score {r.sync_score:.3f} (other words {r.baseline:.3f}, "
                  f"gap {r.sync_score - r.baseline:+.3f}) over {len(r.words)} words x 4 styles "
                  f"→ {out}")


@app.command()
@friendly_errors
def index(
    workspace: Workspace,
    model: Annotated[str | None, typer.Option(help="Embeddings to index (default: last "
                                                   "embedded model).")] = None,
    memory_budget: Annotated[str, typer.Option(help="Memory the index's vector codes may take "
                                                    "(e.g. 2GiB, 512MB): picks exact or IVF "
                                                    "codes.")] = "2GiB",
    rebuild: Annotated[bool, typer.Option(help="Rebuild instead of adding new parts.")] = False,
    space: Annotated[str | None, typer.Option(help="Index only this space, e.g. a trained "
                                                   "head's visual+arcface:NAME (default: "
                                                   "every embedded image space).")] = None,
    quiet: Quiet = False,
) -> None:
    """Build or extend the vector index, part by part: exact when small, IVF when large."""
    s = api.index(workspace, model=model, memory_budget=memory_budget, rebuild=rebuild,
                  space=space, progress=not quiet)
    table = Table(title=f"index ({s.model})")
    for column in ("space", "index", "vectors", "parts added", "parts skipped", "nprobe",
                   "recall@10"):
        table.add_column(column)
    for b in s.spaces:
        table.add_row(b.space, b.factory, f"{b.vectors:,}", str(b.parts_added),
                      str(b.parts_skipped), str(b.nprobe or "-"),
                      "-" if b.recall_at_10 is None else f"{b.recall_at_10:.3f}")
    console.print(table)


@app.command()
@friendly_errors
def search(
    workspace: Workspace,
    text: Annotated[str | None, typer.Argument(help="Text query (joint image-text space).")] = None,
    image: Annotated[Path | None, typer.Option(help="Image query (visual space): finds its "
                                                    "duplicates.")] = None,
    k: Annotated[int, typer.Option("-k", help="Number of hits.")] = 10,
    verdict: Annotated[str, typer.Option(help="all | kept | dropped")] = "all",
    reason: Annotated[str | None, typer.Option(help="Only samples dropped for this "
                                                    "reason.")] = None,
    model: Annotated[str | None, typer.Option(help="Index to search (default: last embedded "
                                                   "model).")] = None,
    space: Annotated[str | None, typer.Option(help="Space of an image query: visual, image or "
                                                   "a trained head's (visual+arcface:NAME), "
                                                   "applied to the query.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Top-k samples for a text or an image: score, confidence, verdict, reasons, caption."""
    hits = api.search(workspace, text, image=image, k=k, verdict=verdict, reason=reason,
                      model=model, space=space)
    if as_json:
        print(json.dumps([dataclasses.asdict(h) for h in hits], indent=1))
        return
    table = Table(title=f"{len(hits)} hits")
    for column in ("#", "score", "P(same)", "verdict", "caption", "uid"):
        table.add_column(column)
    for h in hits:
        confidence = "-" if h.confidence is None else f"{h.confidence:.2f}"
        verdict_text = h.verdict + (f" ({', '.join(h.reasons)})" if h.reasons else "")
        table.add_row(str(h.rank), f"{h.score:.3f}", confidence, verdict_text,
                      h.caption or "", h.uid)
    console.print(table)


@app.command()
@friendly_errors
def classify(
    images: Annotated[list[Path], typer.Argument(help="Images to label.")],
    workspace: Workspace,
    labels: Annotated[Path, typer.Option(help="Table of labelled samples: CSV, TSV, JSONL or "
                                              "Parquet.")],
    label_column: Annotated[str, typer.Option(help="Column holding the label.")] = "label",
    key_column: Annotated[str, typer.Option(help="Column naming the sample: key or "
                                                 "uid.")] = "key",
    k: Annotated[int, typer.Option("-k", help="Neighbours that vote.")] = 10,
    model: Annotated[str | None, typer.Option(help="Index to search (default: last embedded "
                                                   "model).")] = None,
    space: Annotated[str | None, typer.Option(help="Image space: visual, image or a trained "
                                                   "head's (visual+arcface:NAME).")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Label images by their nearest labelled samples (majority and similarity-weighted)."""
    results = api.classify(workspace, images, labels=labels, label_column=label_column,
                           key_column=key_column, k=k, model=model, space=space)
    if as_json:
        print(json.dumps([dataclasses.asdict(r) for r in results], indent=1))
        return
    table = Table(title=f"kNN labels (k={k})")
    for column in ("image", "majority", "weighted"):
        table.add_column(column)
    for r in results:
        table.add_row(r.image, f"{r.majority} ({r.majority_votes.get(r.majority, 0):.0%})",
                      f"{r.weighted} ({r.weighted_votes.get(r.weighted, 0):.0%})")
    console.print(table)


@app.command()
@friendly_errors
def calibrate(
    workspace: Workspace,
    groups: Annotated[Path | None, typer.Option(help="Table of known duplicate groups: pairs "
                                                     "inside a group are the same.")] = None,
    pairs: Annotated[Path | None, typer.Option(help="Table of labelled pairs: columns a, b, "
                                                    "same.")] = None,
    group_column: Annotated[str, typer.Option(help="Column holding the group.")] = "group",
    key_column: Annotated[str, typer.Option(help="Column naming the sample: key or "
                                                 "uid.")] = "key",
    space: Annotated[str | None, typer.Option(help="visual | image | a trained head's "
                                                   "visual+arcface:NAME (default: visual "
                                                   "where the model has it).")] = None,
    method: Annotated[str, typer.Option(help="kde | beta | gaussian | platt")] = "kde",
    prior: Annotated[float | None, typer.Option(help="P(same) to state (default: share of "
                                                     "same pairs among labelled pairs).")] = None,
    holdout: Annotated[float, typer.Option(help="Share of pairs held out to measure "
                                                "ECE.")] = 0.3,
    model: Annotated[str | None, typer.Option(help="Index to calibrate (default: last "
                                                   "embedded model).")] = None,
) -> None:
    """Fit score -> P(same) on labelled pairs; save it with the index; report held-out ECE."""
    s = api.calibrate(workspace, groups=groups, pairs=pairs, group_column=group_column,
                      key_column=key_column, space=space, method=method, prior=prior,
                      holdout=holdout, model=model)
    if s.note:
        console.print(f"[yellow]note:[/yellow] {s.note}")
    console.print(f"{s.method} on {s.space} scores: {s.pairs:,} pairs ({s.positives:,} same), "
                  f"stated prior P(same) = {s.prior:.4g}")
    table = Table(title=f"reliability on {s.heldout.pairs:,} held-out pairs "
                        f"({s.heldout.positives} same)")
    for column in ("confidence bin", "pairs", "mean confidence", "observed same"):
        table.add_column(column)
    for b in s.heldout.bins:
        if b["count"]:
            table.add_row(f"{b['lo']:.1f}-{b['hi']:.1f}", str(b["count"]),
                          f"{b['confidence']:.3f}", f"{b['observed']:.3f}")
    console.print(table)
    console.print(f"ECE {s.heldout.ece:.4f}, Brier {s.heldout.brier:.4f}\n"
                  f"saved {s.path}\nreliability diagram {s.diagram}")


@app.command()
@friendly_errors
def serve(
    workspace: Workspace,
    host: Annotated[str, typer.Option(help="Interface to listen on (loopback by "
                                           "default).")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port.")] = 8765,
    model: Annotated[str | None, typer.Option(help="Index to serve (default: last embedded "
                                                   "model).")] = None,
) -> None:
    """Run the search web page: search box, image upload, hits with verdicts and explain."""
    console.print(f"pairsift search on http://{host}:{port} (Ctrl+C stops it)")
    api.serve(workspace, host=host, port=port, model=model)


@app.command()
@friendly_errors
def report(
    workspace: Workspace,
    out: Annotated[Path | None, typer.Option("--out", "-o", help="HTML file to write "
                                             "(default: WS/report/index.html).")] = None,
    max_thumbnails: Annotated[int, typer.Option(help="Thumbnails per drop reason.")] = 12,
    borderline: Annotated[int, typer.Option(help="Samples shown on each side of a "
                                                 "threshold.")] = 8,
    quiet: Quiet = False,
) -> None:
    """One self-contained HTML page: funnel, distributions, galleries, fairness, run facts."""
    path = api.report(workspace, out, max_thumbnails=max_thumbnails, borderline=borderline,
                      progress=not quiet)
    console.print(f"report → {path} (opens from disk: no server, no network)")


@app.command()
@friendly_errors
def demo(
    directory: Annotated[Path, typer.Argument(help="Where to build the demo.")] = Path(
        "pairsift-demo"),
    model: Annotated[str, typer.Option(help="Encoder.")] = "default",
    top: Annotated[float, typer.Option(help="CLIP-score top fraction to keep.")] = 0.75,
    quiet: Quiet = False,
) -> None:
    """Build a small corpus offline and curate it: ingest → embed → score → filter → dedup →
    export → report."""
    r = api.demo(directory, model=model, top=top, progress=not quiet)
    inputs = r.funnel[0][1]
    table = Table("step", "samples", "of input", title="pairsift demo: the funnel")
    for step, count in r.funnel:
        table.add_row(step, f"{count:,}", f"{count / inputs:.0%}")
        if step == "readable":
            for reason, n in r.errors.most_common():
                table.add_row(f"  unreadable: {reason}", f"{n:,}", "")
    console.print(table)
    console.print("dropped pairs with the lowest CLIP scores:")
    for ex in r.dropped_examples:
        console.print(f"  {ex['clip_score']:.3f}  {ex['key']}: {ex['caption']!r}",
                      markup=False)
        console.print(f"         pairsift explain {ex['uid']} -w {shlex.quote(str(r.workspace))}",
                      soft_wrap=True, markup=False)  # never wrapped: it is pasted back
    console.print(f"workspace: {r.workspace}\nexport: {r.export}\nreport: {r.report}")


if __name__ == "__main__":
    app()


@friendly_errors
def run(
    recipe: Annotated[Path, typer.Argument(help="Recipe file (YAML): sources, model, stages, "
                                                "export, report.")],
    workspace: Workspace,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Check the recipe and print what "
                                                            "would run; write nothing.")] = False,
    quiet: Quiet = False,
    **engine: Any,
) -> None:
    """Run a whole curation from a recipe; finished steps are skipped, so a killed run resumes."""
    r = api.run(recipe, workspace, dry_run=dry_run, progress=not quiet, **engine)
    table = Table("line", "step", "options", "status",
                  title=f"{r.recipe.name} (recipe {r.digest}) → {r.workspace}")
    for step in r.plan:
        given = {k: v for k, v in step.options.items() if v is not None}
        table.add_row(str(step.line), step.name, json.dumps(given, default=str),
                      {"cached": "cached (skipped)", "runs": "runs",
                       "resumes": "resumes"}[step.status])
    console.print(table)
    if dry_run:
        return
    for s in r.summaries:
        PRINTERS.get(getattr(s, "stage", "ingest"), print_default)(s)
    for e in r.exports:
        console.print(f"exported {e.exported:,} samples as {e.format} → {e.out}")
    if r.report is not None:
        console.print(f"report → {r.report}")


app.command()(with_engine_options(run))


@app.command()
@friendly_errors
def undo(
    stage: Annotated[str, typer.Argument(help="The stage whose current run to remove, e.g. "
                                              "'dedup semantic' or dedup-semantic.")],
    workspace: Workspace,
) -> None:
    """Remove a stage's current decisions and signals (exports and reports stop seeing them)."""
    removed = api.undo(workspace, stage)
    console.print(f"{stage}: removed run {removed}" if removed else f"{stage} has no current "
                  "run: nothing to undo")


@app.command()
def stages() -> None:
    """Every stage with its options: the CLI flags, the Python keywords and the recipe keys."""
    for name in stage_names():
        cls = get_stage(name)
        console.print(f"[bold]{name}[/bold] ({cls.kind}): {(cls.__doc__ or '').split(chr(10))[0]}")
        for line in option_lines(cls):
            console.print(f"    {line}", soft_wrap=True)


@parrot_app.command("filter")
@friendly_errors
def parrot_filter(
    rule: Annotated[str, typer.Argument(help="parrot | text-dominated | simple-fix")],
    workspace: Workspace,
    threshold: Annotated[float | None, typer.Option(help="The filter's threshold.")] = None,
) -> None:
    """Former spelling of `pairsift filter parrot|text-dominated|simple-fix`."""
    stage = get_stage(f"filter-{rule}")  # an unknown rule: the error names the filters
    console.print(f"[yellow]note:[/yellow] `pairsift parrot filter {rule}` is now "
                  f"`pairsift filter {rule}`", soft_wrap=True)
    options = {} if threshold is None else {"threshold": threshold}
    print_default(getattr(api, python_name(stage.name))(workspace, **options))


def _metrics_table(title: str, metrics: dict[str, float]) -> Table:
    table = Table("metric", "value", title=title)
    for name, value in metrics.items():
        table.add_row(name, f"{value:.4f}")
    return table


@app.command()
@friendly_errors
def evaluate(
    data: Annotated[Path, typer.Argument(help="zeroshot: folder of class folders; retrieval: "
                                              "image-caption table or WebDataset; fairness: "
                                              "table of images with an attribute; fidelity: "
                                              "table of generated images and prompts.")],
    model: Annotated[str, typer.Option(help="'default', 'open_clip:ARCH/PRETRAINED' or "
                                            "'run:RUN' (a training run folder).")] = "default",
    task: Annotated[str, typer.Option(help="zeroshot | retrieval | fairness | "
                                           "fidelity")] = "zeroshot",
    out: Annotated[Path | None, typer.Option(help="JSON file, or folder for "
                                                  "evaluation-TASK.json (e.g. the run).")] = None,
    device: Annotated[str, typer.Option(help="cpu | cuda | cuda:N")] = "cpu",
    templates: Annotated[Path | None, typer.Option(help="zeroshot: templates, one per line "
                                                        "with {} (default: OpenAI's "
                                                        "ImageNet ones).")] = None,
    classnames: Annotated[Path | None, typer.Option(help="zeroshot: table folder,classname "
                                                         "(default: folder names).")] = None,
    image_column: Annotated[str | None, typer.Option(help="Table column with image "
                                                          "paths.")] = None,
    caption_column: Annotated[str | None, typer.Option(help="retrieval: caption "
                                                            "column.")] = None,
    attribute: Annotated[str, typer.Option(help="fairness: column with the attribute "
                                                "label.")] = "label",
    prompts: Annotated[Path | None, typer.Option(help="fairness: table template,concept "
                                                      "(default: Berg et al.'s).")] = None,
    k: Annotated[int, typer.Option("-k", help="fairness: top k for MaxSkew/MinSkew.")] = 1000,
    desired: Annotated[str, typer.Option(help="fairness: uniform | dataset")] = "uniform",
    zero_policy: Annotated[str, typer.Option(help="fairness: berg (absent label = 1/k) | "
                                                  "epsilon")] = "berg",
    references: Annotated[Path | None, typer.Option(help="fidelity: folder of the subject's "
                                                         "real images.")] = None,
    dino_model: Annotated[str, typer.Option(help="fidelity: encoder for the DINO score; "
                                                 "'default' uses the default model's visual "
                                                 "space (reported as visual_i, not "
                                                 "dino).")] = "default",
    identifier: Annotated[str | None, typer.Option(help="fidelity: subject token removed "
                                                        "from prompts for CLIP-T.")] = None,
) -> None:
    """Measure an encoder: zero-shot accuracy, retrieval recall, retrieval fairness or subject
    fidelity, on an evaluation set you bring."""
    r = api.evaluate(data, model=model, task=task, device=device, out=out, templates=templates,
                     classnames=classnames, image_column=image_column,
                     caption_column=caption_column, attribute=attribute, prompts=prompts, k=k,
                     desired=desired, zero_policy=zero_policy, references=references,
                     dino_model=dino_model, identifier=identifier)
    console.print(_metrics_table(f"{r.task}: {r.model} on {r.data} ({r.samples:,} images)",
                                 r.metrics))
    if out is not None:
        console.print(f"→ {out}")


@app.command("clip-benchmark")
@friendly_errors
def clip_benchmark(
    task: Annotated[str, typer.Argument(help="clip_benchmark dataset name, e.g. cifar10.")],
    dataset_root: Annotated[Path, typer.Option(help="Where clip_benchmark's datasets are.")],
    model: Annotated[str, typer.Option(help="open_clip:ARCH/PRETRAINED or run:RUN.")],
    out: Annotated[Path, typer.Option(help="Folder for clip_benchmark's JSON.")] = Path(
        "clip-benchmark"),
) -> None:
    """Run clip_benchmark's own evaluation (needs `pip install clip_benchmark`)."""
    from ..models import OPEN_CLIP_PREFIX, resolve_run

    name = resolve_run(model)
    if not name.startswith(OPEN_CLIP_PREFIX):
        raise typer.BadParameter("clip_benchmark evaluates open_clip models")
    arch, _, pretrained = name.removeprefix(OPEN_CLIP_PREFIX).partition("/")
    path = api.clip_benchmark(task, model=arch, pretrained=pretrained,
                              dataset_root=dataset_root, out=out)
    console.print(f"clip_benchmark {task} → {path}")


@app.command()
@friendly_errors
def train(
    export: Annotated[Path, typer.Argument(help="A pairsift export: open_clip CSV or "
                                                "WebDataset folder.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Run folder; the model is then "
                                                          "run:OUT.")],
    model_config: Annotated[str, typer.Option(help="tiny (CPU, minutes) or an open_clip "
                                                   "config: RN50, ViT-B-32...")] = "tiny",
    epochs: Annotated[int, typer.Option(help="Passes over the export.")] = 1,
    batch_size: Annotated[int, typer.Option(help="Pairs per step.")] = 64,
    lr: Annotated[float, typer.Option(help="Peak learning rate.")] = 5e-4,
    warmup: Annotated[int | None, typer.Option(help="Warm-up steps (default: a tenth of the "
                                                    "steps, at most 100).")] = None,
    seed: Annotated[int, typer.Option(help="Random seed.")] = 0,
    workers: Annotated[int, typer.Option(help="Data loader processes.")] = 0,
    device: Annotated[str, typer.Option(help="cpu | cuda")] = "cpu",
    overwrite: Annotated[bool, typer.Option(help="Replace a run already in OUT.")] = False,
) -> None:
    """Train a CLIP on an export with open_clip's trainer (open_clip_train)."""
    s = api.train(export, out, model_config=model_config, epochs=epochs, batch_size=batch_size,
                  lr=lr, warmup=warmup, seed=seed, workers=workers, device=device,
                  overwrite=overwrite)
    console.print(f"trained {s.arch} for {s.steps:,} steps on {s.samples:,} pairs in "
                  f"{s.seconds:.0f} s → {s.checkpoint}\nuse it as --model {s.model}",
                  soft_wrap=True)


@app.command()
@friendly_errors
def compare(
    runs: Annotated[list[Path], typer.Argument(
        help="Run folders written by `pairsift train`.")],
    audit: Annotated[bool, typer.Option(help="Run (or reuse) each model's parrot "
                                             "audit.")] = True,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Training runs side by side: size, caption trigrams, synthetic captions, evaluation
    metrics, parrot-audit Sync. Score."""
    rows = api.compare(runs, audit=audit)
    if as_json:
        print(json.dumps([{**dataclasses.asdict(r), "run": str(r.run)} for r in rows],
                         indent=1))
        return
    metrics = sorted({m for r in rows for m in r.metrics})
    table = Table("", *(r.run.name for r in rows), title="pairsift compare")
    for label, cell in (
            ("model", lambda r: r.arch), ("pairs", lambda r: f"{r.samples:,}"),
            ("steps", lambda r: f"{r.steps:,}"),
            ("unique trigrams", lambda r: f"{r.unique_trigrams:,}"),
            ("synthetic captions", lambda r: _share(r.synthetic_share)),
            ("Sync. Score", lambda r: "-" if r.sync_score is None else f"{r.sync_score:.3f}"),
            *((m, lambda r, m=m: f"{r.metrics[m]:.3f}" if m in r.metrics else "-")
              for m in metrics)):
        table.add_row(label, *(cell(r) for r in rows))
    console.print(table)


@app.command("eval-set")
@friendly_errors
def eval_set(
    directory: Annotated[Path, typer.Argument(help="New folder for the evaluation set.")],
    per_class: Annotated[int, typer.Option(help="Images per photo (class).")] = 6,
    seed: Annotated[int, typer.Option(help="Random seed.")] = 0,
) -> None:
    """Write a synthetic evaluation set held out from the synthetic corpora (`pairsift demo`):
    class folders, a retrieval table, class names."""
    from ..errors import ConfigError
    from ..synth.evalset import EvalSetConfig, make_eval_set

    try:
        s = make_eval_set(directory, EvalSetConfig(seed=seed, per_class=per_class))
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    console.print(f"zero-shot: {s.classes} (names: {s.classnames})\nretrieval: {s.retrieval}")
