"""Which photo a caption names, judged from the generator's own descriptions of its photos.

Used to score captions against the truth (is a kept pair's caption about its image?) without
trusting any model: a caption names the photo whose descriptions (``Photo.caption`` and
``Photo.short``) share the most content words with it, if exactly one photo shares the most.

>>> named_photo("a photo of a tabby cat; the text reads 'SALE'")
'chelsea'
>>> named_photo("a photo of a toilet seat") is None
True
"""

from __future__ import annotations

from functools import cache

from .photos import PHOTOS
from .text import tokens

# Words every kind of caption uses: they name no subject.
_GENERIC = frozenset((
    "a", "an", "the", "of", "on", "in", "at", "with", "and", "or", "to", "by", "for", "from",
    "its", "next", "under", "seen", "up", "close", "photo", "image", "picture", "black",
    "white", "text", "reads", "words"))


@cache
def _subject_words() -> dict[str, frozenset[str]]:
    return {p.stem: frozenset(tokens(f"{p.caption} {p.short}")) - _GENERIC for p in PHOTOS}


def named_photo(caption: str | None) -> str | None:
    """The stem of the one photo the caption shares the most content words with, or None."""
    words = set(tokens(caption or "")) - _GENERIC
    shared = {stem: len(words & subject) for stem, subject in _subject_words().items()}
    best = max(shared.values(), default=0)
    winners = [stem for stem, n in shared.items() if n == best]
    return winners[0] if best > 0 and len(winners) == 1 else None


def names_photo(caption: str | None, photo: str) -> bool:
    """Whether ``caption`` names ``photo`` (a stem such as ``"chelsea"``)."""
    return named_photo(caption) == photo
