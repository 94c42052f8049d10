"""``pairsift train``: train a CLIP on a pairsift export with open_clip's own trainer.

The export (an open_clip CSV or a WebDataset folder) is handed to ``open_clip_train.main``,
run in a child process so its logging, seeds and threads stay out of the caller's. ``tiny`` is
pairsift's ``pairsift-tiny`` config (a 3-layer ViT at 64 px and a 3-layer text tower: minutes on
two CPU cores, for toy experiments and tests); any open_clip config name (``RN50``,
``ViT-B-32``...) trains the real architecture, on a GPU. The run folder holds the trainer's
logs and checkpoints under ``trainer/`` and ``pairsift-train.json``: the model config, the
checkpoint, the trainer's arguments and where the data came from (the export's workspace and
decisions digest), so ``--model run:RUN`` names the trained model everywhere.
"""

from __future__ import annotations

import csv
import datetime as dt
import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from ..errors import ConfigError
from ..models import RUN_PREFIX, TRAIN_RECORD
from .export import MARKER, read_marker

MODEL_CONFIGS = {"tiny": "pairsift-tiny"}
TRAINER_DIR = "trainer"


@dataclass
class TrainSummary:
    run: Path
    model: str  # the name that loads it: run:RUN
    arch: str
    checkpoint: Path
    samples: int
    steps: int
    seconds: float


@dataclass
class ExportInfo:
    """What the trainer reads and where it came from."""

    dataset_type: str  # csv | webdataset
    train_data: str
    marker: Path  # where ``pairsift export`` recorded what it wrote
    provenance: dict | None  # the marker's record; None: not a pairsift export

    @property
    def samples(self) -> int:
        """The samples the export holds, as its marker records them; a CSV made by other
        means (no marker) counts its rows as open_clip reads them: quoted line breaks
        inside a caption are not rows."""
        if self.provenance is not None:
            return self.provenance["exported"]
        if self.dataset_type == "csv":
            with open(self.train_data, newline="", encoding="utf-8") as f:
                return sum(1 for _ in csv.reader(f, delimiter="\t")) - 1  # the header
        raise ConfigError(f"{self.marker} is missing or unreadable: the trainer takes a "
                          "WebDataset's sample count from the record `pairsift export` "
                          "writes; export again with `pairsift export OUT -w WS --format "
                          "webdataset`")


def describe_export(path: str | Path) -> ExportInfo:
    """An open_clip CSV (its images folder holds the marker) or a WebDataset folder."""
    path = Path(path).absolute()
    if path.is_dir():
        shards = sorted(path.glob("*.tar"))
        if not shards:
            raise ConfigError(f"{path}: a WebDataset export folder holds .tar shards")
        return ExportInfo("webdataset", "::".join(map(str, shards)), path / MARKER,
                          read_marker(path))
    if path.suffix.lower() not in (".csv", ".tsv"):
        raise ConfigError(f"{path}: train reads an open_clip CSV export or a WebDataset folder")
    images = path.with_name(f"{path.stem}_images")
    return ExportInfo("csv", str(path), images / MARKER, read_marker(images))


def trainer_args(info: ExportInfo, run: Path, arch: str, *, epochs: int, batch_size: int,
                 lr: float, warmup: int, seed: int, workers: int, device: str,
                 precision: str) -> list[str]:
    """open_clip_train's command line for this export."""
    args = ["--train-data", info.train_data, "--dataset-type", info.dataset_type,
            "--model", arch, "--logs", str(run), "--name", TRAINER_DIR,
            "--epochs", str(epochs), "--batch-size", str(batch_size), "--lr", str(lr),
            "--warmup", str(warmup), "--seed", str(seed), "--workers", str(workers),
            "--device", device, "--precision", precision, "--save-frequency", "0",
            "--zeroshot-frequency", "0", "--val-frequency", "0", "--report-to", "",
            "--log-every-n-steps", "10"]
    if info.dataset_type == "csv":
        args += ["--csv-separator", "\t", "--csv-img-key", "filepath",
                 "--csv-caption-key", "title"]
    else:
        args += ["--train-num-samples", str(info.samples)]
    return args


def train(export: str | Path, out: str | Path, *, model_config: str = "tiny", epochs: int = 1,
          batch_size: int = 64, lr: float = 5e-4, warmup: int | None = None, seed: int = 0,
          workers: int = 0, device: str = "cpu", precision: str | None = None,
          overwrite: bool = False) -> TrainSummary:
    """Train ``model_config`` (``tiny`` or an open_clip config name) on ``export`` into folder
    ``out``; the result loads as ``run:OUT``.

    >>> train("subset.csv", "runs/tiny", epochs=5)  # doctest: +SKIP
    """
    import open_clip

    from ..models import openclip  # noqa: F401 - registers pairsift's configs

    arch = MODEL_CONFIGS.get(model_config, model_config)
    if arch not in open_clip.list_models():
        raise ConfigError(f"unknown model config {model_config!r}: 'tiny' or an open_clip "
                          "config (open_clip.list_models())")
    run = Path(out).absolute()
    if (run / TRAINER_DIR).exists() and not overwrite:
        raise ConfigError(f"{run} already holds a training run; choose another folder or pass "
                          "--overwrite")
    info = describe_export(export)
    if info.samples < batch_size:
        raise ConfigError(f"{export} has {info.samples} samples, fewer than one batch "
                          f"({batch_size}): lower --batch-size")
    steps = info.samples // batch_size * epochs
    warmup = min(100, steps // 10) if warmup is None else warmup
    precision = precision or ("fp32" if device == "cpu" else "amp")
    args = trainer_args(info, run, arch, epochs=epochs, batch_size=batch_size, lr=lr,
                        warmup=warmup, seed=seed, workers=workers, device=device,
                        precision=precision)
    if overwrite and (run / TRAINER_DIR).exists():
        shutil.rmtree(run / TRAINER_DIR)
    run.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", __name__, *args], capture_output=True,
                          text=True)
    seconds = time.perf_counter() - started
    checkpoint = run / TRAINER_DIR / "checkpoints" / f"epoch_{epochs}.pt"
    if done.returncode != 0 or not checkpoint.exists():
        tail = "\n".join((done.stderr or done.stdout).splitlines()[-15:])
        raise ConfigError(f"open_clip_train failed (log: {run / TRAINER_DIR}):\n{tail}")
    record = {"arch": arch, "model_config": model_config,
              "checkpoint": str(checkpoint.relative_to(run)), "samples": info.samples,
              "steps": steps, "seconds": round(seconds, 1), "trainer_args": args,
              "export": {"path": str(Path(export).absolute()), "format": info.dataset_type,
                         "provenance": info.provenance},
              "open_clip": open_clip.__version__,
              "created": dt.datetime.now(dt.UTC).isoformat(timespec="seconds")}
    (run / TRAIN_RECORD).write_text(json.dumps(record, indent=1))
    return TrainSummary(run, f"{RUN_PREFIX}{run}", arch, checkpoint, info.samples, steps, seconds)


def _tar_samples(src, handler=None):
    """open_clip_train's tar reader without webdataset 1.0's end-of-shard markers (empty
    dicts, which open_clip_train 3.3.0's grouping reads as a file and fails on)."""
    from open_clip_train import data
    from webdataset.tariterators import tar_file_expander, url_opener

    handler = handler or data.log_and_continue
    files = tar_file_expander(url_opener(src, handler=handler), handler=handler, eof_value=None)
    return data.group_by_keys_nothrow(files, handler=handler)


def _trainer_main(argv: list[str]) -> None:
    """open_clip_train's entry point, after pairsift's configs are registered."""
    from open_clip_train import data
    from open_clip_train.main import main

    from ..models import openclip  # noqa: F401

    data.tarfile_to_samples_nothrow = _tar_samples
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    main(argv)


if __name__ == "__main__":
    _trainer_main(sys.argv[1:])
