"""The ``pairsift`` command line: a thin typer layer over :mod:`pairsift.api`."""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import shlex
from pathlib import Path
from typing import Annotated

import numpy as np
import typer
from rich.console import Console
from rich.table import Table

from . import api
from .io.tables import SourceError
from .workspace import WorkspaceError

app = typer.Typer(no_args_is_help=True, add_completion=False,
                  help="Curate web image-text pairs for CLIP-style training.")
filter_app = typer.Typer(no_args_is_help=True, help="Decide keep/drop from a signal.")
app.add_typer(filter_app, name="filter")
dedup_app = typer.Typer(no_args_is_help=True, help="Find duplicates and drop all but one.")
app.add_typer(dedup_app, name="dedup")
console = Console()

Workspace = Annotated[Path, typer.Option("--workspace", "-w", envvar="PAIRSIFT_WORKSPACE",
                                         help="Workspace directory (or $PAIRSIFT_WORKSPACE).")]
Quiet = Annotated[bool, typer.Option("--quiet", "-q", help="No progress bars.")]


def friendly_errors(fn):
    """Show expected failures (bad source, missing workspace, bad option) as one clear line."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except (SourceError, WorkspaceError, ValueError, FileNotFoundError) as exc:
            console.print(f"[red]error:[/red] {exc}")
            raise typer.Exit(2) from None

    return wrapper


def _counts_table(title: str, rows: list[tuple[str, int]]) -> Table:
    table = Table(title=title, show_header=False)
    for label, count in rows:
        table.add_row(label, f"{count:,}")
    return table


@app.command()
@friendly_errors
def ingest(
    sources: Annotated[list[str], typer.Argument(help="Folders, .tar shards (brace patterns "
                                                     "like 'shard-{00000..00009}.tar'), .parquet")],
    workspace: Workspace,
    name: Annotated[str | None, typer.Option(help="Source name (default: its name).")] = None,
    kind: Annotated[str, typer.Option(help="auto | folder | webdataset | parquet")] = "auto",
    captions: Annotated[Path | None, typer.Option(help="Caption table for a folder: "
                                                      "CSV, TSV, JSONL or Parquet.")] = None,
    image_column: Annotated[str | None, typer.Option(help="Column naming the image.")] = None,
    caption_column: Annotated[str | None, typer.Option(help="Column holding the caption.")] = None,
    chunk_size: Annotated[int, typer.Option(help="Folder files per workspace part.")] = 10_000,
    threads: Annotated[int | None, typer.Option(help="Decode threads.")] = None,
    quiet: Quiet = False,
) -> None:
    """Read sources into a workspace; every unusable sample is recorded with a reason."""
    s = api.ingest(sources, workspace, name=name, kind=kind, captions=captions,
                   image_column=image_column, caption_column=caption_column,
                   chunk_size=chunk_size, threads=threads, progress=not quiet)
    for skipped in s.skipped_sources:
        console.print(f"source [bold]{skipped}[/bold] was already ingested: nothing added")
    rows = [("samples in", s.total), ("readable", s.samples)]
    rows += [(f"error: {reason}", n) for reason, n in s.errors.most_common()]
    if s.shard_errors:
        rows.append(("shard errors (shards or folders not read)", s.shard_errors))
    rows += [(f"dropped: {reason}", n) for reason, n in s.dropped.most_common()]
    if s.ignored_files:
        rows.append(("files that are not samples (ignored)", s.ignored_files))
    console.print(_counts_table(f"ingest → {s.workspace}", rows))


@app.command()
@friendly_errors
def embed(
    workspace: Workspace,
    model: Annotated[str, typer.Option(help="'default' (offline) or "
                                            "'open_clip:ARCH/PRETRAINED'.")] = "default",
    device: Annotated[str, typer.Option(help="cpu | cuda | cuda:N")] = "cpu",
    batch_size: Annotated[int, typer.Option(help="Images per forward pass.")] = 64,
    threads: Annotated[int | None, typer.Option(help="Decode threads.")] = None,
    quiet: Quiet = False,
) -> None:
    """Embed images and captions; resumes where a killed run stopped."""
    s = api.embed(workspace, model=model, device=device, batch_size=batch_size,
                  threads=threads, progress=not quiet)
    console.print(f"embedded {s.samples:,} samples in {s.parts_done} parts with {s.model} "
                  f"({s.parts_skipped} parts already done, {s.failed} failed to decode)")


@app.command()
@friendly_errors
def score(
    workspace: Workspace,
    model: Annotated[str | None, typer.Option(help="Embeddings to use (default: last "
                                                   "embedded model).")] = None,
) -> None:
    """CLIP score: cosine of each image and its caption."""
    parts = api.score(workspace, model=model)
    console.print(f"clip_score written for {parts} parts")


@filter_app.command("clip-score")
@friendly_errors
def filter_clip_score(
    workspace: Workspace,
    threshold: Annotated[float | None, typer.Option(help="Keep score >= T (LAION: 0.28 with "
                                                         "OpenAI ViT-B/32).")] = None,
    top: Annotated[float | None, typer.Option(help="Keep the top fraction F, as DataComp "
                                                   "(e.g. 0.3).")] = None,
    nan_policy: Annotated[str, typer.Option(help="With --top, samples without a score: "
                                                 "exclude (F of the scored ones) | datacomp "
                                                 "(counted in N, as DataComp's "
                                                 "code).")] = "exclude",
) -> None:
    """Keep pairs by CLIP score: a threshold or DataComp's top fraction."""
    s = api.filter_clip_score(workspace, threshold=threshold, top=top, nan_policy=nan_policy)
    console.print(f"clip score >= {s.threshold:.4f}: kept {s.kept:,}, dropped {s.dropped:,}")


def _print_dedup(s) -> None:
    console.print(f"{s.stage}: kept {s.kept:,}, dropped {s.dropped:,}")


@dedup_app.command("exact")
@friendly_errors
def dedup_exact(
    workspace: Workspace,
    threads: Annotated[int | None, typer.Option(help="Decode threads.")] = None,
    quiet: Quiet = False,
) -> None:
    """Byte- and pixel-identical copies: keep the best-scoring member of each group."""
    _print_dedup(api.dedup_exact(workspace, threads=threads, progress=not quiet))


@dedup_app.command("perceptual")
@friendly_errors
def dedup_perceptual(
    workspace: Workspace,
    max_phash: Annotated[int, typer.Option(help="Max pHash Hamming distance.")] = 4,
    max_dhash: Annotated[int, typer.Option(help="Max dHash Hamming distance (veto).")] = 6,
    threads: Annotated[int | None, typer.Option(help="Decode threads.")] = None,
    quiet: Quiet = False,
) -> None:
    """Re-encoded / resized copies by pHash + dHash; keep one per group."""
    _print_dedup(api.dedup_perceptual(workspace, max_phash=max_phash, max_dhash=max_dhash,
                                      threads=threads, progress=not quiet))


@app.command()
@friendly_errors
def cluster(
    workspace: Workspace,
    k: Annotated[int | None, typer.Option(help="Number of clusters.")] = None,
    target_size: Annotated[int, typer.Option(help="Mean cluster size when --k is not "
                                                  "given.")] = 1000,
    pca_dim: Annotated[int | None, typer.Option(help="Reduce to this many dims first.")] = None,
    spherical: Annotated[bool, typer.Option(help="Cosine (spherical) k-means.")] = True,
    seed: Annotated[int, typer.Option(help="Sampling and k-means seed.")] = 1234,
    device: Annotated[str, typer.Option(help="cpu | cuda")] = "cpu",
    quiet: Quiet = False,
) -> None:
    """faiss k-means on the image embeddings (trained on a sample, assigned in chunks)."""
    s = api.cluster(workspace, k=k, target_size=target_size, pca_dim=pca_dim,
                    spherical=spherical, seed=seed, device=device, progress=not quiet)
    console.print(f"{s.k} clusters in the {s.space} space; sizes: min {s.sizes.min()}, "
                  f"median {int(np.median(s.sizes))}, max {s.sizes.max()}")


@dedup_app.command("semantic")
@friendly_errors
def dedup_semantic(
    workspace: Workspace,
    eps: Annotated[float | None, typer.Option(help="Drop if cosine > 1 - eps to an "
                                                   "earlier-ranked member.")] = None,
    keep_fraction: Annotated[float | None, typer.Option(help="Choose eps to keep this "
                                                             "fraction.")] = None,
    order: Annotated[str, typer.Option(help="hard | easy | random")] = "hard",
    tie_break: Annotated[str, typer.Option(help="Ranking of exact copies: meta (Meta's "
                                                "stable sort, dataset order) | id (NeMo "
                                                "Curator's, by id).")] = "meta",
    rank_by: Annotated[str | None, typer.Option(help="Rank by a signal column instead "
                                                     "(largest kept), e.g. clip_score.")] = None,
    rule: Annotated[str, typer.Option(help="semdedup_code | greedy_kept | "
                                           "components")] = "semdedup_code",
    strict: Annotated[bool, typer.Option(help="'>' like Meta's code (--no-strict: '>=' "
                                              "like NeMo).")] = True,
    block: Annotated[int, typer.Option(help="Columns per similarity block.")] = 1024,
    device: Annotated[str, typer.Option(help="cpu | cuda")] = "cpu",
    quiet: Quiet = False,
) -> None:
    """SemDeDup inside each cluster; prints the eps sweep (eps -> kept fraction)."""
    s = api.dedup_semantic(workspace, eps=eps, keep_fraction=keep_fraction, order=order,
                           tie_break=tie_break, rank_by=rank_by, rule=rule, strict=strict,
                           block=block, device=device, progress=not quiet)
    sweep = Table("eps", "kept fraction", title="eps sweep (semdedup_code rule)")
    for e, fraction in s.sweep:
        sweep.add_row(f"{e:g}", f"{fraction:.3f}")
    console.print(sweep)
    console.print(f"semdedup at eps={s.eps:.4g}: kept {s.kept:,}, dropped {s.dropped:,}")


@dedup_app.command("fair")
@friendly_errors
def dedup_fair(
    workspace: Workspace,
    groups: Annotated[str | None, typer.Option(help="Comma-separated subgroup names for "
                                                    "prompt prototypes, e.g. 'man,woman'.")] = None,
    labels: Annotated[Path | None, typer.Option(help="Table with a uid or key column and a "
                                                     "label column.")] = None,
    label_column: Annotated[str, typer.Option(help="Label column of --labels.")] = "subgroup",
    eps: Annotated[float | None, typer.Option(help="Duplicate if cosine > 1 - eps "
                                                   "(default: the model's).")] = None,
    dynamic: Annotated[bool, typer.Option(help="Measure representation over kept items.")] = False,
    relevance_gate: Annotated[float | None, typer.Option(help="Fall back to SemDeDup's choice "
                                                              "below this prototype "
                                                              "similarity.")] = None,
    device: Annotated[str, typer.Option(help="cpu | cuda")] = "cpu",
    quiet: Quiet = False,
) -> None:
    """FairDeDup: SemDeDup's duplicates, keeping the least-represented subgroup's member."""
    s = api.dedup_fair(workspace, groups=groups.split(",") if groups else None, labels=labels,
                       label_column=label_column, eps=eps, dynamic=dynamic,
                       relevance_gate=relevance_gate, device=device, progress=not quiet)
    table = Table("subgroup", "samples", "kept by SemDeDup", "kept by FairDeDup",
                  title=f"retention at the same prune rate (eps={s.eps:g})")
    for r in s.retention:
        table.add_row(r.group, f"{r.samples:,}", f"{r.kept_semdedup:,}", f"{r.kept_fairdedup:,}")
    console.print(table)
    console.print(f"fairdedup: kept {s.kept:,}, dropped {s.dropped:,}")


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


parrot_app = typer.Typer(no_args_is_help=True,
                         help="Parrot captions: text in images that the caption repeats.")
app.add_typer(parrot_app, name="parrot")


@parrot_app.command("spot")
@friendly_errors
def parrot_spot(
    workspace: Workspace,
    spotter: Annotated[str, typer.Option(help="rapidocr | tesseract")] = "rapidocr",
    has_text_pass: Annotated[bool, typer.Option(
        help="Run the text detector alone first; recognise only where it finds text.")] = True,
    mode: Annotated[str, typer.Option(help="CoTR: caption (|C∩E|/|C|) | iou "
                                           "(|C∩E|/|C∪E|).")] = "caption",
    fuzzy: Annotated[float, typer.Option(help="Max normalised edit distance of a match "
                                              "(0: exact).")] = 0.0,
    stopwords: Annotated[bool, typer.Option(
        help="Never match function words (a, on, the, ...) or one-character tokens; "
             "--no-stopwords: every word can match, the literal rule.")] = True,
    threads: Annotated[int | None, typer.Option(help="Worker threads.")] = None,
    quiet: Quiet = False,
) -> None:
    """Spot text in every image: words, boxes, co-embedded words, CoTR, text area."""
    s = api.parrot_spot(workspace, spotter=spotter, has_text_pass=has_text_pass, mode=mode,
                        fuzzy=fuzzy, stopwords=stopwords, threads=threads, progress=not quiet)
    console.print(_counts_table(f"parrot spot ({s.parts_done} parts computed)", [
        ("samples", s.samples), ("with spotted text", s.with_text),
        ("parrot captions (CoTR > 0)", s.parrot),
        ("skipped by the has-text pass", s.skipped_by_probe)]))


@parrot_app.command("relative")
@friendly_errors
def parrot_relative(
    workspace: Workspace,
    model: Annotated[str | None, typer.Option(help="Encoder (default: the embedded one, "
                                                   "else 'default').")] = None,
    device: Annotated[str, typer.Option(help="cpu | cuda | cuda:N")] = "cpu",
    inpainter: Annotated[str, typer.Option(help="telea | ns (OpenCV).")] = "telea",
    radius: Annotated[float, typer.Option(help="Inpainting radius in pixels.")] = 3.0,
    seed: Annotated[int, typer.Option(help="Seed of the random-box baseline.")] = 0,
    batch_size: Annotated[int, typer.Option(help="Images per forward pass (x4 variants).")] = 16,
    threads: Annotated[int | None, typer.Option(help="Decode/inpaint threads.")] = None,
    quiet: Quiet = False,
) -> None:
    """Re-score images with text removed: RSA (all words), RSC (co-embedded), random boxes."""
    s = api.parrot_relative(workspace, model=model, device=device, inpainter=inpainter,
                            radius=radius, seed=seed, batch_size=batch_size, threads=threads,
                            progress=not quiet)
    console.print(f"{s.scored:,} images with text re-scored: mean RSA {s.mean_rsa:.3f}, "
                  f"RSC {s.mean_rsc:.3f}, random boxes {s.mean_rs_rand:.3f}")


@parrot_app.command("filter")
@friendly_errors
def parrot_filter(
    rule: Annotated[str, typer.Argument(help="parrot | text-dominated | simple-fix")],
    workspace: Workspace,
    threshold: Annotated[float | None, typer.Option(help="parrot: drop CoTR > T (0); "
                                                         "text-dominated: drop text area > T "
                                                         "(0.5); simple-fix: keep CLIP score "
                                                         "> T (0.3) with no text.")] = None,
) -> None:
    """Keep/drop on spotted text: parrot captions, text-dominated images, the paper's fix."""
    rules = {"parrot": (api.filter_parrot, "cotr_threshold"),
             "text-dominated": (api.filter_text_dominated, "max_text_area"),
             "simple-fix": (api.filter_simple_fix, "clip_threshold")}
    if rule not in rules:
        raise ValueError(f"unknown rule {rule!r}; choose one of {', '.join(rules)}")
    fn, option = rules[rule]
    s = fn(workspace, **({} if threshold is None else {option: threshold}))
    console.print(f"{s.stage}: kept {s.kept:,}, dropped {s.dropped:,}")


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
    quiet: Quiet = False,
) -> None:
    """Build or extend the vector index, part by part: exact when small, IVF when large."""
    s = api.index(workspace, model=model, memory_budget=memory_budget, rebuild=rebuild,
                  progress=not quiet)
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
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Top-k samples for a text or an image: score, confidence, verdict, reasons, caption."""
    hits = api.search(workspace, text, image=image, k=k, verdict=verdict, reason=reason,
                      model=model)
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
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Label images by their nearest labelled samples (majority and similarity-weighted)."""
    results = api.classify(workspace, images, labels=labels, label_column=label_column,
                           key_column=key_column, k=k, model=model)
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
    space: Annotated[str | None, typer.Option(help="visual | image (default: visual where "
                                                   "the model has it).")] = None,
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
        console.print(f"  {ex['clip_score']:.3f}  {ex['key']}: {ex['caption']!r}")
        console.print(f"         pairsift explain {ex['uid']} -w {shlex.quote(str(r.workspace))}",
                      soft_wrap=True, markup=False)  # never wrapped: it is pasted back
    console.print(f"workspace: {r.workspace}\nexport: {r.export}\nreport: {r.report}")


if __name__ == "__main__":
    app()
