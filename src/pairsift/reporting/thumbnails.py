"""Small JPEG thumbnails as data URIs, so the report is one file that opens from disk.

Images are read from the sources (the workspace holds no pixels) and decoded at a reduced JPEG
DCT scale, so a thumbnail costs a fraction of a full decode. A sample whose bytes are gone or
no longer decode gets no thumbnail instead of failing the report.
"""

from __future__ import annotations

import base64
import io
from typing import Any

from ..io.images import ImageDecodeError, decode_image
from ..io.sources import ImageBytesReader
from ..io.tables import SourceError

THUMB_PX = 128
DRAFT = (256, 256)
QUALITY = 72


class Thumbnails:
    """Thumbnail data URIs by uid, each image decoded at most once; a context manager."""

    def __init__(self, image_columns: dict[str, str | None]):
        self._reader = ImageBytesReader(image_columns)
        self._cache: dict[str, str | None] = {}

    def data_uri(self, row: dict[str, Any]) -> str | None:
        uid = row["uid"]
        if uid not in self._cache:
            self._cache[uid] = self._make(row)
        return self._cache[uid]

    def _make(self, row: dict[str, Any]) -> str | None:
        try:
            image = decode_image(self._reader.read(row), draft=DRAFT).image
        except (ImageDecodeError, SourceError, OSError):
            return None
        image.thumbnail((THUMB_PX, THUMB_PX))
        buffer = io.BytesIO()
        image.save(buffer, "JPEG", quality=QUALITY, optimize=True)
        return "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")

    def close(self) -> None:
        self._reader.close()

    def __enter__(self) -> Thumbnails:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
