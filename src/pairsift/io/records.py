"""What a source reader yields: samples with their location, or errors with a reason."""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from typing import Any

_UID = re.compile(r"^[0-9a-f]{32}$")

IMAGE_EXTENSIONS = frozenset(
    ["jpg", "jpeg", "png", "webp", "gif", "bmp", "tif", "tiff", "pgm", "ppm", "pbm", "pnm",
     "jp2", "avif"]
)
CAPTION_EXTENSIONS = ("txt", "caption", "text")


def make_uid(source: str, shard: str, key: str) -> str:
    """128-bit hex uid derived from where the sample comes from, never from row order."""
    return hashlib.sha256(f"{source}/{shard}/{key}".encode()).hexdigest()[:32]


def valid_uid(value: Any) -> str | None:
    """A source-provided uid if it is DataComp-shaped (32 lowercase hex), else None."""
    if isinstance(value, str) and _UID.match(value.strip().lower()):
        return value.strip().lower()
    return None


def decode_caption(raw: bytes | str | None) -> tuple[str | None, str | None]:
    """Caption text and an issue flag; invalid UTF-8 is replaced and flagged, never dropped."""
    if raw is None:
        return None, "missing_caption"
    if isinstance(raw, str):
        text, issue = raw, None
    else:
        try:
            text, issue = raw.decode("utf-8"), None
        except UnicodeDecodeError:
            text, issue = raw.decode("utf-8", errors="replace"), "invalid_utf8"
    text = text.strip()
    if not text and issue is None:
        issue = "empty_caption"
    return text, issue


@dataclass
class RawSample:
    """One sample as found in a source: where its image lives and its caption."""

    key: str
    shard: str  # absolute path of the container file
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
