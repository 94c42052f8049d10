"""One command per registered stage, made from the stage's declared options, so the CLI, the
Python API and recipes take exactly the same options. How a stage's result is printed is the
only per-stage code here."""

from __future__ import annotations

import inspect
import typing
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import typer
from rich.table import Table

from .. import api
from ..engine.runner import ENGINE_PARAMS
from ..params import Param
from ..stage import Stage, StageSummary, get_stage, python_name, stage_names
from .app import GROUPS, Quiet, Workspace, app, console, counts_table, friendly_errors

_TYPES = {bool: bool, int: int, float: float, str: str, Path: Path, list: str}


def _option(p: Param) -> inspect.Parameter:
    flags = [p.flag, *("--" + a.replace("_", "-") for a in p.aliases)]
    if p.kind is bool:
        flags = [f"{p.flag}/--no-{p.name.replace('_', '-')}"]
    help_text = p.help + (f" [{'|'.join(p.choices)}]" if p.choices else "")
    kind = _TYPES[p.kind] if p.default is not None or p.kind is bool else _TYPES[p.kind] | None
    return inspect.Parameter(p.name, inspect.Parameter.KEYWORD_ONLY, default=p.default,
                             annotation=Annotated[kind, typer.Option(*flags, help=help_text)])


def engine_options() -> list[inspect.Parameter]:
    """--engine, --address, --gpus-per-worker: on every stage command and `pairsift run`."""
    return [_option(p) for p in ENGINE_PARAMS]


def with_engine_options(fn: Any) -> Any:
    """``fn(..., **engine)`` as a command that also takes the engine options."""
    hints = typing.get_type_hints(fn, include_extras=True)
    params = [p.replace(annotation=hints[p.name])
              for p in inspect.signature(fn).parameters.values() if p.kind is not p.VAR_KEYWORD]
    fn.__signature__ = inspect.Signature([*params, *engine_options()])
    return fn


def _command(cls: type[Stage]) -> Any:
    """A typer command whose parameters are the stage's options."""
    keyword = inspect.Parameter.KEYWORD_ONLY
    params = [inspect.Parameter("workspace", keyword, annotation=Workspace)]
    for p in cls.params:
        if cls.kind == "source" and p.name == "sources":
            params.insert(0, inspect.Parameter("sources", keyword, annotation=Annotated[
                list[str], typer.Argument(help=p.help)]))
        else:
            params.append(_option(p))
    params += [*engine_options(),
               inspect.Parameter("quiet", keyword, default=False, annotation=Quiet)]

    def command(**values: Any) -> None:
        quiet = values.pop("quiet")
        summary = getattr(api, python_name(cls.name))(**values, progress=not quiet)
        PRINTERS.get(cls.name, print_default)(summary)

    command.__signature__ = inspect.Signature(params)  # type: ignore[attr-defined]
    command.__doc__ = " ".join((cls.__doc__ or cls.name).strip().split("\n\n")[0].split())
    return friendly_errors(command)


def register_all() -> None:
    for name in stage_names():
        group, _, rest = name.partition("-")
        target, command_name = (GROUPS[group], rest) if rest and group in GROUPS else (app, name)
        target.command(command_name)(_command(get_stage(name)))


# -- printing ---------------------------------------------------------------------------------
def _cached(s: StageSummary) -> str:
    return " (finished before with the same options: nothing recomputed)" if s.cached else ""


def print_default(s: StageSummary) -> None:
    if s.dropped is not None:
        console.print(f"{s.stage}: kept {s.kept:,}, dropped {s.dropped:,}{_cached(s)}")
    else:
        console.print(f"{s.stage}: {s.samples:,} samples in {s.parts_done} parts "
                      f"({s.parts_skipped} parts already done, {s.failed} failed){_cached(s)}")


def _print_ingest(s: Any) -> None:
    for skipped in s.skipped_sources:
        console.print(f"source [bold]{skipped}[/bold] was already ingested: nothing added")
    rows = [("samples in", s.total), ("readable", s.samples)]
    rows += [(f"error: {reason}", n) for reason, n in s.errors.most_common()]
    if s.shard_errors:
        rows.append(("shard errors (shards or folders not read)", s.shard_errors))
    rows += [(f"dropped: {reason}", n) for reason, n in s.dropped.most_common()]
    if s.ignored_files:
        rows.append(("files that are not samples (ignored)", s.ignored_files))
    console.print(counts_table(f"ingest → {s.workspace}", rows))


def _print_embed(s: StageSummary) -> None:
    console.print(f"embedded {s.samples:,} samples in {s.parts_done} parts with {s.model} "
                  f"({s.parts_skipped} parts already done, {s.failed} failed to decode)")


def _print_filter_clip_score(s: StageSummary) -> None:
    console.print(f"clip score >= {s.threshold:.4f}: kept {s.kept:,}, dropped {s.dropped:,}"
                  f"{_cached(s)}")


def _print_cluster(s: StageSummary) -> None:
    sizes = np.asarray(s.sizes)
    console.print(f"{s.k} clusters in the {s.space} space; sizes: min {sizes.min()}, median "
                  f"{int(np.median(sizes))}, max {sizes.max()}{_cached(s)}")
    if s.without_embedding:
        console.print(f"{s.without_embedding:,} samples have no embedding: left out")


def _print_dedup_semantic(s: StageSummary) -> None:
    sweep = Table("eps", "kept fraction", title="eps sweep (semdedup_code rule)")
    for e, fraction in s.sweep:
        sweep.add_row(f"{e:g}", f"{fraction:.3f}")
    console.print(sweep)
    console.print(f"semdedup at eps={s.eps:.4g}: kept {s.kept:,}, dropped {s.dropped:,}"
                  f"{_cached(s)}")
    _print_left_out(s)


def _print_left_out(s: StageSummary) -> None:
    if s.without_embedding or s.excluded:
        console.print(f"left out: {s.without_embedding:,} without an embedding, "
                      f"{s.excluded:,} already dropped by an earlier dedup stage")


def _print_dedup_fair(s: StageSummary) -> None:
    table = Table("subgroup", "samples", "kept by SemDeDup", "kept by FairDeDup",
                  title=f"retention at the same prune rate (eps={s.eps:g})")
    for r in s.retention:
        r = r if isinstance(r, dict) else vars(r)
        table.add_row(r["group"], f"{r['samples']:,}", f"{r['kept_semdedup']:,}",
                      f"{r['kept_fairdedup']:,}")
    console.print(table)
    console.print(f"fairdedup: kept {s.kept:,}, dropped {s.dropped:,}{_cached(s)}")
    _print_left_out(s)


def _print_parrot_spot(s: StageSummary) -> None:
    console.print(counts_table(f"parrot spot ({s.parts_done} parts computed)", [
        ("samples", s.total), ("with spotted text", s.with_text),
        ("parrot captions (CoTR > 0)", s.parrot),
        ("skipped by the has-text pass", s.skipped_by_probe)]))


def _print_parrot_relative(s: StageSummary) -> None:
    console.print(f"{s.scored:,} images with text re-scored: mean RSA {s.mean_rsa:.3f}, "
                  f"RSC {s.mean_rsc:.3f}, random boxes {s.mean_rs_rand:.3f}")


def _print_recaption(s: StageSummary) -> None:
    note = (" — labels names the default model's ImageNet class plus the spotted text; its "
            "CLIP score under the default model is inflated by construction"
            if s.captioner == "labels" else "")
    console.print(f"recaption with {s.captioner}: {s.captioned:,} images captioned "
                  f"({s.parts_skipped} parts already done, {s.failed} failed){_cached(s)}{note}")


def _print_mix(s: StageSummary) -> None:
    if "compare" in s.details:
        table = Table("strategy", "τ", "images kept", "pairs kept", "unique trigrams",
                      "mean CLIP-S", "share synthetic",
                      title=f"mixing strategies at top {s.top:g} (CLIP-S under {s.clip_s_model})")
        for r in s.compare:
            table.add_row(r["strategy"], f"{r['threshold']:.4f}", f"{r['images']:,}",
                          f"{r['pairs']:,}", f"{r['unique_trigrams']:,}", f"{r['clip_s']:.3f}",
                          f"{r['share_synthetic']:.2f}")
        console.print(table)
    console.print(f"mix {s.strategy} at top {s.top:g} (τ = {s.threshold:.4f}): kept {s.kept:,} "
                  f"images, dropped {s.dropped:,}{_cached(s)}")


def _print_finetune(s: StageSummary) -> None:
    table = Table(f"{s.identities['test']} test identities ({s.split_samples['test']} "
                  "samples), never trained on", "before", "after", title=s.space)
    for metric in ("recall@1", "recall@5", "recall@10", "mAP", "overlap", "auc", "ece"):
        table.add_row(metric, f"{s.before[metric]:.3f}", f"{s.after[metric]:.3f}")
    console.print(table)
    console.print(f"trained on {s.identities['train']} identities ({s.split_samples['train']} "
                  f"samples), best epoch {s.best_epoch}"
                  f"{' (the initial head: no epoch beat it)' if s.best_epoch == 0 else ''} "
                  f"by {s.select} on "
                  f"{s.identities['validation']} validation identities, "
                  f"{s.train_seconds:.1f} s{_cached(s)}\nhead {s.path}\nscore plot {s.plot}\n"
                  f"overlap: shared area of the same/different score histograms; ece: of "
                  f"P(same) fitted on half the test pairs", soft_wrap=True)


PRINTERS = {"ingest": _print_ingest, "finetune": _print_finetune, "embed": _print_embed,
            "filter-clip-score": _print_filter_clip_score, "cluster": _print_cluster,
            "dedup-semantic": _print_dedup_semantic, "dedup-fair": _print_dedup_fair,
            "parrot-spot": _print_parrot_spot, "parrot-relative": _print_parrot_relative,
            "recaption": _print_recaption, "mix": _print_mix}


def _print_by_reason(s: StageSummary) -> None:
    print_default(s)
    for reason, n in s.by_reason.items():
        console.print(f"  dropped: {reason} {n:,}")


def _print_filter_image_based(s: StageSummary) -> None:
    unreadable = (f" ({s.unreadable_references:,} unreadable images left out)"
                  if s.unreadable_references else "")
    console.print(f"{s.references:,} reference embeddings{unreadable} mark "
                  f"{s.marked_clusters:,} of {s.k:,} clusters")
    _print_by_reason(s)


PRINTERS |= {"filter-basic": _print_by_reason, "filter-image-based": _print_filter_image_based}

register_all()
