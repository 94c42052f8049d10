"""What a source reader yields: samples with their location, or errors with a reason.

Paths and keys are stored as Arrow strings, which must be valid UTF-8, while file names are
bytes. :func:`path_text` turns a path into text with a reversible escape (a backslash doubled,
each byte that is not UTF-8 as ``\\xHH``), and :func:`text_path` turns it back, so a sample
whose name is not UTF-8 keeps a stable key and can be read again.
"""

from __future__ import annotations

import codecs
import hashlib
import math
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa

_UID = re.compile(r"^[0-9a-f]{32}$")
_ESCAPE = re.compile(rb"\\(\\|x[0-9a-f]{2})")

IMAGE_EXTENSIONS = frozenset(
    ["jpg", "jpeg", "png", "webp", "gif", "bmp", "tif", "tiff", "pgm", "ppm", "pbm", "pnm",
     "jp2", "avif"]
)
CAPTION_EXTENSIONS = ("txt", "caption", "text")


def image_files(folder: Path) -> list[Path]:
    """The image files under ``folder`` (recursively), in a fixed order."""
    return sorted(p for p in folder.rglob("*")
                  if p.is_file() and p.suffix.lstrip(".").lower() in IMAGE_EXTENSIONS)

MAX_CAPTION_BYTES = 64 * 1024  # stored caption, UTF-8; longer ones are cut and flagged

# Error rows that are not samples, so that readable + sample errors = samples in:
SHARD_REASONS = frozenset({"broken_shard", "unreadable_dir"})  # a whole file or directory
DROPPED_REASONS = frozenset({  # a piece of input dropped; its sample is counted on its own
    "duplicate_member", "duplicate_caption_row", "bad_caption_row"})


def path_text(path: str | os.PathLike) -> str:
    """``path`` as UTF-8 text: ``\\`` doubled, bytes that are not UTF-8 as ``\\xHH``."""
    return os.fsencode(path).replace(b"\\", b"\\\\").decode("utf-8", "backslashreplace")


def text_path(text: str) -> str:
    """The file system path that :func:`path_text` wrote as ``text``."""
    return os.fsdecode(_ESCAPE.sub(_unescape, text.encode("utf-8")))


def arrow_file(path: str | os.PathLike) -> Any:
    """``path`` opened for Arrow readers, which refuse a str path that is not UTF-8; a URL
    (object storage) opens through :mod:`pairsift.io.storage`."""
    from .storage import is_url, open_binary

    return open_binary(path) if is_url(path) else pa.OSFile(os.fsencode(path))


def _unescape(match: re.Match[bytes]) -> bytes:
    escaped = match[1]
    return b"\\" if escaped == b"\\" else bytes.fromhex(escaped[1:].decode())


def make_uid(source: str, shard: str, key: str) -> str:
    """128-bit hex uid derived from where the sample comes from, never from row order."""
    return hashlib.sha256(f"{source}/{shard}/{key}".encode()).hexdigest()[:32]


def valid_uid(value: Any) -> str | None:
    """A source-provided uid if it is DataComp-shaped (32 lowercase hex), else None."""
    if isinstance(value, str) and _UID.match(value.strip().lower()):
        return value.strip().lower()
    return None


def caption_value(value: Any) -> bytes | str | None:
    """A caption cell as text or bytes: null and NaN are no caption, numbers their text."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    return value if isinstance(value, str | bytes) else str(value)


def decode_caption(raw: bytes | str | None, *,
                   complete: bool = True) -> tuple[str | None, str | None]:
    """Caption text and an issue flag: invalid UTF-8 is replaced and flagged, never dropped;
    text over MAX_CAPTION_BYTES is cut at a character boundary and flagged
    ``caption_truncated`` (also when ``complete`` is False: the reader stopped early), which
    wins over ``invalid_utf8``.
    """
    if raw is None:
        return None, "missing_caption"
    data = _utf8(raw) if isinstance(raw, str) else bytes(raw)
    try:
        text, issue = _decode(data, "strict", complete), None
    except UnicodeDecodeError:
        text, issue = _decode(data, "replace", complete), "invalid_utf8"
    text = text.strip()
    encoded = text.encode("utf-8")
    if not complete or len(encoded) > MAX_CAPTION_BYTES:
        # encoded is valid UTF-8, so "ignore" drops only a character the cut went through
        text = encoded[:MAX_CAPTION_BYTES].decode("utf-8", "ignore").rstrip()
        issue = "caption_truncated"
    if not text and issue is None:
        issue = "empty_caption"
    return text, issue


def _utf8(text: str) -> bytes:
    """UTF-8 of ``text``; lone surrogates (undecodable bytes kept by ``surrogateescape``, or a
    JSON ``\\ud800``-style escape) stay invalid bytes, so that they are replaced and flagged."""
    try:
        return text.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:
        return text.encode("utf-8", "surrogatepass")


def _decode(data: bytes, errors: str, complete: bool) -> str:
    # An incomplete read may stop inside a character: the decoder then leaves it out.
    return codecs.getincrementaldecoder("utf-8")(errors).decode(data, final=complete)


@dataclass
class RawSample:
    """One sample as found in a source: where its image lives and its caption."""

    key: str
    shard: str  # absolute path of the container file, as path_text writes it
    container: str  # file | tar | parquet
    offset: int
    data: bytes
    caption: str | None
    caption_issue: str | None
    uid: str | None = None  # the source's own uid, if it has one
    meta: str | None = None  # the source's per-sample json, verbatim


@dataclass
class SampleError:
    """A sample (or a piece of one) that cannot be used, with a reason code and detail."""

    key: str
    shard: str
    reason: str
    message: str
    uid: str | None = None
