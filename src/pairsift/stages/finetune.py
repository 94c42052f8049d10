"""The finetune stage: an ArcFace head on the stored embeddings of labelled samples, saved in
the workspace as the space ``BASE+arcface:NAME`` (retrieval/arcface.py, spaces.py).

Open-set split: the labelled *identities* are shuffled with the seed and ``holdout`` of them
are held out; half of those (validation) only choose the epoch (early stopping on their
recall@1, ties by mAP, or on ``select``; the initial head is epoch 0), the other half (test)
are never seen by training or by the choice of epoch, and the before/after figures are
measured on them. Each sample's share is stored as the signal
``arcface_split`` (train, validation, test, or null when it has no label).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from .. import spaces
from ..engine.views import Collection
from ..errors import ConfigError
from ..io.tables import read_table
from ..lazy import lazy
from ..models import model_slug
from ..models.base import l2_normalize
from ..models.cache import file_digest
from ..params import Param
from ..retrieval import arcface
from ..stage import GlobalStage, PartOutput, fail, register
from ..workspace import config_hash
from .cluster import image_space

torch = lazy("torch")  # imported on first use: the CLI starts without torch

SPLITS = (None, "train", "validation", "test")  # codes 0..3 of the arcface_split signal
MIN_TEST_IDENTITIES = 2


@register
class Finetune(GlobalStage):
    """Train an ArcFace head (BatchNorm + Linear, or a small MLP) on the stored embeddings of
    labelled samples; it becomes the space SPACE+arcface:NAME for index, search, classify,
    calibrate, cluster and dedup. Prints recall@1/5/10, mAP, score overlap and the ECE of
    P(same) on held-out identities, before and after."""

    name = "finetune"
    reads_embeddings = True
    params = (
        Param("labels", Path, None, "Table of labelled samples: CSV, TSV, JSONL or Parquet."),
        Param("label_column", str, "label", "Column holding the identity."),
        Param("id_column", str, "key", "Column naming the sample.", choices=("key", "uid")),
        Param("space", str, None, "Embeddings to train on (default: visual where the model "
                                  "has it, else image).", choices=spaces.IMAGE_SPACES),
        Param("name", str, "arcface", "The head's name: its space is SPACE+arcface:NAME."),
        Param("dim", int, 256, "Output dimension of the head.", low=2),
        Param("hidden", int, None, "Width of a hidden layer: a small MLP head instead of "
                                   "BatchNorm + Linear.", low=1),
        Param("margin", float, 0.5, "Additive angular margin m, in radians.", low=0, high=1.5),
        Param("scale", float, 30.0, "Logit scale s.", low=0, closed="neither"),
        Param("epochs", int, 30, "Most epochs; training stops earlier when validation "
                                 "recall@1 has not improved for 'patience' epochs.", low=1),
        Param("patience", int, 5, "Epochs without improvement before stopping.", low=1),
        Param("batch_size", int, 128, "Samples per step.", low=2),
        Param("lr", float, 5e-3, "AdamW learning rate.", low=0, closed="neither"),
        Param("weight_decay", float, 0.01, "AdamW weight decay.", low=0),
        Param("init", str, "pca", "Start of the head: 'pca' (the top principal directions "
                                     "of the standardised training embeddings, class weights "
                                     "at the identities' means) or 'random'.",
              choices=("pca", "random")),
        Param("select", str, "recall@1", "Validation score that picks the epoch (ties: the "
                                         "higher mAP); the initial head is epoch 0.",
              choices=arcface.SELECT),
        Param("holdout", float, 0.2, "Share of the identities held out (half validation, "
                                     "half test).", low=0, high=1, closed="neither"),
        Param("seed", int, 0, "Split and training seed."),
        Param("threads", int, None, "torch threads.", low=1, runtime=True),
    )

    def check(self) -> None:
        if self["labels"] is None:
            fail("finetune needs --labels: a table naming samples (by key or uid) and their "
                 "identity")
        spaces.check_head_name(self["name"])

    def space(self, ws: Any) -> str:
        return self["space"] or image_space(ws, ws.current_model())

    def extra_inputs(self, ws: Any) -> dict[str, Any]:
        labels = Path(self["labels"])
        if not labels.is_file():
            raise ConfigError(f"finetune: no labels file {labels}")
        inputs = {"labels": file_digest(labels)[:16],
                  "space": self.space(ws)}
        inputs["trained_from"] = config_hash({"config": self.config, **inputs,
                                              "model": ws.current_model(),
                                              "parts": ws.parts_fingerprint()})
        path = spaces.head_path(ws, self["name"])
        if path.exists():  # a head of another run is there: this run must train and replace it
            head = spaces.load_head(ws, self["name"])
            if head.record.get("trained_from") != inputs["trained_from"]:
                inputs["replaces"] = head.digest
        return inputs

    def plan(self, data: Collection) -> list[str]:
        return ["train"]

    def run_task(self, data: Collection, task: str) -> dict[str, np.ndarray]:
        space = data.inputs["space"]
        codes, names = label_codes(data, Path(self["labels"]), self["id_column"],
                                   self["label_column"])
        codes[~data.has_embedding(space)] = -1
        split = split_identities(codes, len(names), self["holdout"], self["seed"])
        rows = {s: np.flatnonzero(split == SPLITS.index(s)) for s in SPLITS[1:]}
        embeddings = data.embeddings(space)  # float16 rows: not quite unit length
        x = {s: l2_normalize(embeddings[r]) for s, r in rows.items()}
        y = {s: np.unique(codes[r], return_inverse=True)[1] for s, r in rows.items()}
        config = arcface.HeadConfig(**{k: self[k] for k in (
            "dim", "margin", "scale", "hidden", "epochs", "patience", "batch_size", "lr",
            "weight_decay", "init", "select", "seed")})
        with torch_threads(self["threads"]):
            trained = arcface.train_head(x["train"], y["train"], x["validation"],
                                         y["validation"], config)
        before = arcface.evaluate_space(x["test"], y["test"], self["seed"])
        after = arcface.evaluate_space(arcface.apply(trained.head, x["test"]), y["test"],
                                       self["seed"])
        record = {
            "model": model_slug(data.model), "model_name": data.model,
            "base": space, "config": self.config, "trained_from": data.inputs["trained_from"],
            "labels": str(self["labels"]), "label_column": self["label_column"],
            "identities": {s: int(len(np.unique(codes[r]))) for s, r in rows.items()},
            "split_samples": {s: int(len(r)) for s, r in rows.items()},
            "before": before.metrics, "after": after.metrics, "history": trained.history,
            "best_epoch": trained.best_epoch, "train_seconds": round(trained.seconds, 3)}
        head = arcface.folded_head(trained.head, record)
        return arcface.head_arrays(head) | {
            "split": split, "before_same": before.same, "before_different": before.different,
            "after_same": after.same, "after_different": after.different}

    def combine(self, data: Collection, results: Any) -> dict[str, Any]:
        result = next(iter(results))
        head = arcface.head_from_arrays(result)
        name = self["name"]
        before, after = (arcface.SpaceEvaluation(head.record[k], result[f"{k}_same"],
                                                 result[f"{k}_different"])
                         for k in ("before", "after"))
        saved = data.save_head(name, head, {".png": lambda path: arcface.plot_scores(
            before, after, path, f"{spaces.head_space(head.base, name)}: test identities")})
        return {"head": saved, "split": result["split"]}

    def part_output(self, data: Collection, state: dict[str, Any], part: int) -> PartOutput:
        codes = state["split"][data.rows_of(part)]
        names = pa.array(SPLITS, pa.string()).take(pa.array(codes))
        return PartOutput(signals=pa.table({"arcface_split": names}))

    def summarize(self, data: Collection, state: dict[str, Any]) -> dict[str, Any]:
        head, name = state["head"], self["name"]
        path = spaces.head_path(data.ws, name)
        keep = ("identities", "split_samples", "before", "after", "best_epoch", "train_seconds")
        return {"head": name, "space": spaces.head_space(head.base, name),
                "digest": head.digest, "path": str(path), "select": self["select"],
                "plot": str(path.with_suffix(".png")),
                **{k: head.record[k] for k in keep}}


def label_codes(data: Collection, path: Path, id_column: str,
                label_column: str) -> tuple[np.ndarray, np.ndarray]:
    """An identity code per row of the collection (-1: no label) and the identity names,
    matched part by part (every sample whose key or uid the table names)."""
    table = read_table(path)
    for column in (id_column, label_column):
        if column not in table.column_names:
            raise ConfigError(f"{path}: no column {column!r}; columns are {table.column_names}")
    table = table.filter(pc.and_(pc.is_valid(table.column(id_column)),
                                 pc.is_valid(table.column(label_column))))
    ids = table.column(id_column).cast(pa.string()).combine_chunks()
    names, label_of_id = np.unique(
        table.column(label_column).cast(pa.string()).to_numpy(zero_copy_only=False),
        return_inverse=True)

    def read(part: int) -> np.ndarray:
        column = data.ws.read_part(part, [id_column]).column(id_column)
        at = pc.index_in(column, value_set=ids).to_numpy(zero_copy_only=False)
        at = np.nan_to_num(np.asarray(at, np.float64), nan=-1).astype(np.int64)
        return np.where(at >= 0, label_of_id[np.maximum(at, 0)], -1)

    codes = data._concat(read, np.int32)
    if (codes >= 0).sum() == 0:
        raise ConfigError(f"{path}: no sample of the workspace is named in column "
                          f"{id_column!r}: check --id-column")
    return codes, names


def split_identities(codes: np.ndarray, n_identities: int, holdout: float,
                     seed: int) -> np.ndarray:
    """Per row, the index in SPLITS of its identity's share: identities (not samples) are
    shuffled and ``holdout`` of them held out, alternately validation and test."""
    present = np.unique(codes[codes >= 0])
    order = np.random.default_rng(seed).permutation(present)
    held = int(round(holdout * len(order)))
    if held < 2 * MIN_TEST_IDENTITIES or len(order) - held < 2:
        raise ConfigError(f"finetune: {len(order)} identities with embeddings are too few to "
                          f"hold out {holdout:.0%} of them (at least {MIN_TEST_IDENTITIES} "
                          f"validation and {MIN_TEST_IDENTITIES} test identities, and 2 to "
                          f"train on); label more identities or raise --holdout")
    share = np.full(n_identities, SPLITS.index("train"), np.int8)
    share[order[:held:2]] = SPLITS.index("validation")
    share[order[1:held:2]] = SPLITS.index("test")
    return np.where(codes >= 0, share[np.maximum(codes, 0)], 0).astype(np.int8)


@contextmanager
def torch_threads(n: int | None) -> Iterator[None]:
    """torch's thread count set to ``n`` (falsy: unchanged) for the block only: it is
    process-wide, and a Python session goes on to run other stages."""
    before = torch.get_num_threads()
    if n:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)
