"""Caption metrics of a subset, per caption source: diversity (unique word trigrams) and CLIP-S.

- **Unique trigrams**: each caption is tokenised as the parrot-caption words are (lowercase,
  NFKC, split on non-alphanumerics: :func:`pairsift.synth.text.tokens`); trigrams are three
  consecutive tokens of one caption, counted as a set over the subset. Reported as the
  absolute count and per 1,000 captions. Trigrams are kept as 64-bit hashes (numpy), a few
  bytes each, never as Python strings across a collection.
- **CLIP-S** (Hessel et al., ``clipscore.py``): ``2.5 · max(cos(image, text), 0)`` with the
  caption prefixed by "A photo depicts" before it is encoded. Values depend on the encoder:
  report them with its name, never compare them across encoders.

>>> clip_s(np.array([0.4, -0.1], np.float32)).tolist()
[1.0, 0.0]
>>> len(trigram_hashes(["a tabby cat on a mat", "A tabby cat on a rug"]))
5
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass

import numpy as np

from .synth.text import tokens

CLIPS_PREFIX = "A photo depicts "
CLIPS_WEIGHT = 2.5


def clip_s(cosines: np.ndarray) -> np.ndarray:
    """CLIP-S from the cosine of each image and its "A photo depicts …" caption."""
    return (CLIPS_WEIGHT * np.maximum(np.asarray(cosines, np.float32), 0)).astype(np.float32)


def clips_texts(captions: Sequence[str | None]) -> list[str | None]:
    """Captions as CLIP-S encodes them (a missing or empty caption stays missing)."""
    return [CLIPS_PREFIX + c if c else None for c in captions]


def trigram_hashes(captions: Iterable[str | None]) -> np.ndarray:
    """The distinct word trigrams of ``captions`` as sorted unique uint64 hashes."""
    out: list[int] = []
    for caption in captions:
        words = tokens(caption or "")
        for i in range(len(words) - 2):
            digest = hashlib.blake2b(" ".join(words[i:i + 3]).encode(), digest_size=8)
            out.append(int.from_bytes(digest.digest(), "little"))
    return np.unique(np.asarray(out, np.uint64))


@dataclass
class CaptionStats:
    """One subset's figures (``clip_s`` is the mean over captions that have a score)."""

    captions: int
    unique_trigrams: int
    trigrams_per_1000: float
    clip_s: float

    def as_dict(self) -> dict[str, float | int]:
        return asdict(self)


class TrigramCounter:
    """Unique trigrams over a subset fed part by part (each part's hashes, merged at the end)."""

    def __init__(self) -> None:
        self.parts: list[np.ndarray] = []
        self.captions = 0

    def add(self, captions: Sequence[str | None]) -> None:
        self.parts.append(trigram_hashes(captions))
        self.captions += len(captions)

    def unique(self) -> np.ndarray:
        return np.unique(np.concatenate(self.parts)) if self.parts else np.zeros(0, np.uint64)


class SubsetStats:
    """Accumulates captions and CLIP-S per subset name (e.g. a caption source)."""

    def __init__(self) -> None:
        self._trigrams: dict[str, TrigramCounter] = {}
        self._clip_s: dict[str, list[float]] = {}  # [sum, count]

    def add(self, subset: str, captions: Sequence[str | None], scores: np.ndarray) -> None:
        self._trigrams.setdefault(subset, TrigramCounter()).add(captions)
        scores = np.asarray(scores, np.float64)
        scores = scores[~np.isnan(scores)]
        total = self._clip_s.setdefault(subset, [0.0, 0.0])
        total[0] += float(scores.sum())
        total[1] += scores.size

    def stats(self, subset: str) -> CaptionStats:
        return self.merged([subset])

    def subsets(self) -> list[str]:
        return list(self._trigrams)

    def merged(self, subsets: Sequence[str]) -> CaptionStats:
        """The figures of several subsets taken as one (trigrams shared are counted once)."""
        counters = [self._trigrams[s] for s in subsets if s in self._trigrams]
        parts = [h for c in counters for h in c.parts]
        unique = int(np.unique(np.concatenate(parts)).size) if parts else 0
        n = sum(c.captions for c in counters)
        total, count = (sum(self._clip_s.get(s, [0.0, 0.0])[i] for s in subsets) for i in (0, 1))
        return CaptionStats(n, unique, 1000 * unique / n if n else float("nan"),
                            total / count if count else float("nan"))
