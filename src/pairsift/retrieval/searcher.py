"""Text or image in, hits out: uid, score, calibrated confidence, caption, verdict, reasons.

Text queries search the joint image-text space (``image``); image queries search the model's
image-only space (``visual``) when it has one, since that space is the one made for
image-image similarity, else the joint space, or the space asked for (a trained head's
``visual+arcface:NAME``: the head is applied to the query's embedding). Indexes load lazily
and stay in memory; the workspace's decisions are re-read when their files change, so
re-filtering while a server runs shows up on the next query.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from PIL import Image

from .. import spaces
from ..errors import ConfigError
from ..models import ImageTextEncoder, load_encoder, model_slug
from ..models.base import encode_images
from ..workspace import Workspace
from . import calibration as cal
from .build import IndexStore, LoadedIndex, WorkspaceVectors
from .search import Fetch, search_index

VERDICTS = ("all", "kept", "dropped")
TEXT_SPACE = "image"
PART_CACHE = 32  # workspace parts whose uid/key/caption columns stay in memory


@dataclass
class Hit:
    rank: int
    uid: str
    score: float
    confidence: float | None  # P(same image | score) where the space is calibrated
    key: str | None
    caption: str | None
    verdict: str  # keep | drop
    reasons: list[str]  # the reasons of every decision that drops it
    part: int  # where the sample's row is in the workspace
    row: int


@dataclass
class SpaceIndex:
    """One space's loaded index with its exact-vector fetcher and calibration."""

    loaded: LoadedIndex
    fetch: Fetch | None
    calibration: cal.Calibration | None

    @classmethod
    def open(cls, store: IndexStore) -> SpaceIndex:
        loaded = store.load()
        fetch = WorkspaceVectors(store, loaded.ids) if loaded.choice.lossy else None
        path = store.calibration_path
        return cls(loaded, fetch, cal.load(path) if path.exists() else None)

    def search(self, queries: np.ndarray, k: int,
               allowed: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        return search_index(self.loaded.index, queries, k, nprobe=self.loaded.meta["nprobe"],
                            allowed=allowed, fetch=self.fetch, rerank=self.loaded.choice.rerank)


class Decisions:
    """The current decisions' drop reasons as one bitmask per sample (a bit per reason),
    per part: a few bytes per sample, re-read when a decision run changes."""

    def __init__(self, ws: Workspace):
        self.ws = ws
        self.version: tuple | None = None
        self._reasons: list[str] = []
        self._bits: dict[int, np.ndarray] = {}
        self.refresh()

    def refresh(self) -> tuple:
        self.ws.refresh()
        stages = self.ws.decision_stages()
        version = (tuple(self.ws.part_ids()), *((s, self.ws.current_run(s)) for s in stages))
        if version != self.version:
            reasons: list[str] = []
            bits = {}
            for part in self.ws.part_ids():
                mask = np.zeros(self.ws.part_rows(part), np.uint64)
                for stage in stages:
                    table = self.ws.part_decisions(part, stage, ["verdict", "reason"],
                                                   missing_ok=True)
                    if table is None:  # a part added since the stage ran: undecided
                        continue
                    drop = pc.equal(table.column("verdict"), "drop").to_numpy(
                        zero_copy_only=False)
                    for reason in pc.unique(table.column("reason").filter(drop)).to_pylist():
                        if reason not in reasons:
                            reasons.append(reason)
                        chosen = drop & pc.equal(table.column("reason"), reason).to_numpy(
                            zero_copy_only=False)
                        mask[chosen] |= np.uint64(1) << np.uint64(reasons.index(reason))
                bits[part] = mask
            self._reasons, self._bits, self.version = reasons, bits, version
        return version

    def reasons(self, part: int, row: int) -> list[str]:
        bits = int(self._bits[part][row])
        return [r for i, r in enumerate(self._reasons) if bits >> i & 1]

    def all_reasons(self) -> list[str]:
        return sorted(self._reasons)

    def mask(self, ids: pa.Table, verdict: str, reason: str | None) -> np.ndarray | None:
        """Which index positions pass the verdict and reason filters (None: all of them)."""
        if verdict == "all" and reason is None:
            return None
        parts = ids.column("part").to_numpy()
        rows = ids.column("row").to_numpy()
        bits = np.zeros(len(parts), np.uint64)
        for part in np.unique(parts):
            at = parts == part
            bits[at] = self._bits[int(part)][rows[at]]
        dropped = bits != 0
        mask = {"all": np.ones(len(bits), bool), "kept": ~dropped, "dropped": dropped}[verdict]
        if reason is not None:
            mask &= (bits >> np.uint64(self._reasons.index(reason)) & np.uint64(1)) != 0
        return mask


def check_filters(k: int, verdict: str) -> None:
    if k < 1:
        raise ConfigError(f"k must be at least 1, got {k}")
    if verdict not in VERDICTS:
        raise ConfigError(f"unknown verdict filter {verdict!r}; choose one of {VERDICTS}")


class Searcher:
    """Searches one workspace's indexes; thread-safe, so one instance can serve a web app."""

    def __init__(self, workspace: str | Path | Workspace, *, model: str | None = None,
                 device: str = "cpu", space: str | None = None):
        self.ws = workspace if isinstance(workspace, Workspace) else Workspace.open(workspace)
        self._image_space = space
        self.model = model or self.ws.current_model()
        self.slug = model_slug(self.model)
        self.device = device
        self.decisions = Decisions(self.ws)
        self._spaces: dict[str, SpaceIndex] = {}
        self._masks: dict[tuple, np.ndarray | None] = {}
        self._masks_version: tuple = ()
        self._parts: OrderedDict[int, pa.Table] = OrderedDict()
        self._lock = threading.Lock()

    def warm(self) -> None:
        """Load the encoder and every index now rather than on the first query."""
        for space in {TEXT_SPACE, self.image_space}:
            self.space(space)
        self.text_vector("warm up")

    @cached_property
    def encoder(self) -> ImageTextEncoder:
        return load_encoder(self.model, self.device)

    @property
    def image_space(self) -> str:
        if self._image_space is not None:
            return self._image_space
        visual = IndexStore(self.ws, self.slug, "visual")
        return "visual" if visual.exists() else TEXT_SPACE

    def space(self, name: str) -> SpaceIndex:
        with self._lock:
            if name not in self._spaces:
                self._spaces[name] = SpaceIndex.open(IndexStore(self.ws, self.slug, name))
            return self._spaces[name]

    def text_vector(self, text: str) -> np.ndarray:
        with self._lock:
            return self.encoder.encode_texts([text])

    def image_vector(self, image: Image.Image) -> np.ndarray:
        base, head = spaces.parse(self.image_space)
        with self._lock:
            out = encode_images(self.encoder, [image])
        vector = out.visual if base == "visual" else out.joint
        return vector if head is None else spaces.load_head(self.ws, head).apply(vector)

    def search_text(self, text: str, k: int = 10, verdict: str = "all",
                    reason: str | None = None) -> list[Hit]:
        check_filters(k, verdict)
        if not text.strip():
            raise ConfigError("the text query is empty")
        return self.search(TEXT_SPACE, self.text_vector(text), k, verdict, reason)

    def search_image(self, image: Image.Image, k: int = 10, verdict: str = "all",
                     reason: str | None = None) -> list[Hit]:
        check_filters(k, verdict)
        return self.search(self.image_space, self.image_vector(image), k, verdict, reason)

    def search(self, space: str, vector: np.ndarray, k: int, verdict: str = "all",
               reason: str | None = None, allowed: np.ndarray | None = None) -> list[Hit]:
        """Hits for one query vector; ``allowed`` further restricts index positions."""
        index = self.space(space)
        mask = self._mask(space, index, verdict, reason)
        if allowed is not None:
            mask = allowed if mask is None else mask & allowed
        scores, positions = index.search(np.atleast_2d(vector), k, mask)
        found = positions[0] >= 0
        scores, positions = scores[0][found], positions[0][found]
        confidence = (index.calibration.posterior(scores) if index.calibration is not None
                      else [None] * len(scores))
        return [self._hit(rank, index.loaded.ids, int(p), float(s), c)
                for rank, (p, s, c) in enumerate(zip(positions, scores, confidence,
                                                     strict=True), 1)]

    def _mask(self, space: str, index: SpaceIndex, verdict: str,
              reason: str | None) -> np.ndarray | None:
        version = self.decisions.refresh()
        if reason is not None and reason not in self.decisions.all_reasons():
            raise ConfigError(f"no decision drops a sample for reason {reason!r}; reasons: "
                             f"{self.decisions.all_reasons()}")
        if version != self._masks_version:
            self._masks, self._masks_version = {}, version
        key = (space, verdict, reason)
        if key not in self._masks:
            self._masks[key] = self.decisions.mask(index.loaded.ids, verdict, reason)
        return self._masks[key]

    def _hit(self, rank: int, ids: pa.Table, position: int, score: float,
             confidence: float | None) -> Hit:
        uid = ids.column("uid")[position].as_py()
        part, row = ids.column("part")[position].as_py(), ids.column("row")[position].as_py()
        details = self._part(part)
        reasons = self.decisions.reasons(part, row)
        return Hit(rank, uid, score, None if confidence is None else float(confidence),
                   details.column("key")[row].as_py(), details.column("caption")[row].as_py(),
                   "drop" if reasons else "keep", reasons, part, row)

    def _part(self, part: int) -> pa.Table:
        with self._lock:
            if part not in self._parts:
                self._parts[part] = self.ws.read_part(part, ["uid", "key", "caption"])
                while len(self._parts) > PART_CACHE:
                    self._parts.popitem(last=False)
            self._parts.move_to_end(part)
            return self._parts[part]
