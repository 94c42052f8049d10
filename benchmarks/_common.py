"""Helpers shared by the benchmark scripts (run by hand, never by the test suite)."""

from __future__ import annotations

import multiprocessing
import os
import platform
import resource
import shutil
from pathlib import Path

from pairsift.synth import SynthConfig, make_corpus

WORK = Path(__file__).resolve().parent / "_work"


def _build(root: Path, n: int, layout: str, shard_size: int) -> None:
    make_corpus(root, SynthConfig(n_samples=n, shard_size=shard_size), layout=layout)


def corpus(n: int, layout: str = "webdataset", shard_size: int = 1000) -> Path:
    """A synthetic corpus of ``n`` samples, built once (in a child process, so the memory it
    takes does not count in the benchmark's peak RSS) and reused across runs."""
    root = WORK / f"corpus-{layout}-{n}"
    if not (root / "truth.parquet").exists():
        shutil.rmtree(root, ignore_errors=True)
        child = multiprocessing.get_context("spawn").Process(
            target=_build, args=(root, n, layout, shard_size))
        child.start()
        child.join()
        if child.exitcode:
            raise SystemExit(f"building the corpus in {root} failed")
    return root


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def machine() -> str:
    return f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}"
