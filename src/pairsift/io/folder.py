"""A folder of images, with captions from a table and/or sidecar ``.txt`` files.

Also reads img2dataset's ``output_format=files`` layout (``00000/000000001.jpg`` + ``.txt`` +
``.json``). A sample's key is its path relative to the folder without the extension; when two
images share a stem (``a.png`` and ``a.webp``) both keep their extension in the key
(``a_png``, ``a_webp``) so no key names two samples.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from .records import (
    CAPTION_EXTENSIONS,
    IMAGE_EXTENSIONS,
    RawSample,
    SampleError,
    decode_caption,
    valid_uid,
)
from .tables import CaptionTable


@dataclass(frozen=True)
class FolderEntry:
    key: str
    image: Path | None  # None: the caption table names a file that is not there
    sidecars: dict[str, Path]
    table_caption: str | None = None
    table_uid: str | None = None


def list_folder(root: Path, table: CaptionTable | None) -> tuple[list[FolderEntry], int]:
    """Samples of a folder in a stable order, and how many files were not samples."""
    by_stem: dict[Path, dict[str, Path]] = defaultdict(dict)
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        if table is not None and path.resolve() == table.path:
            continue
        by_stem[path.with_suffix("")][path.suffix.lstrip(".").lower()] = path
    entries, ignored, seen = [], 0, set()
    for stem, files in by_stem.items():
        images = [e for e in files if e in IMAGE_EXTENSIONS]
        sidecars = {e: p for e, p in files.items() if e not in IMAGE_EXTENSIONS}
        ignored += sum(e not in CAPTION_EXTENSIONS and e != "json" for e in sidecars)
        rel = stem.relative_to(root).as_posix()
        for ext in images:
            key = rel if len(images) == 1 else f"{rel}_{ext}"
            row = table.lookup(files[ext]) if table else None
            seen.add(files[ext].resolve())
            entries.append(FolderEntry(key, files[ext], sidecars,
                                       row.caption if row else None, row.uid if row else None))
    if table is not None:
        for missing in table.unmatched(seen):
            entries.append(FolderEntry(missing, None, {}))
    return entries, ignored


def read_entries(root: Path, entries: list[FolderEntry]) -> Iterator[RawSample | SampleError]:
    for entry in entries:
        if entry.image is None:
            yield SampleError(entry.key, str(root), "missing_image",
                              f"caption table names {entry.key!r} but no such file is in {root}")
            continue
        try:
            data = entry.image.read_bytes()
        except OSError as exc:
            yield SampleError(entry.key, str(entry.image), "unreadable_file", str(exc))
            continue
        caption, issue = _caption(entry)
        meta_path = entry.sidecars.get("json")
        meta = meta_path.read_text("utf-8", "replace") if meta_path else None
        yield RawSample(key=entry.key, shard=str(entry.image), container="file", offset=0,
                        data=data, caption=caption, caption_issue=issue,
                        uid=entry.table_uid or _json_uid(meta), meta=meta)


def _caption(entry: FolderEntry) -> tuple[str | None, str | None]:
    if entry.table_caption is not None:
        return decode_caption(entry.table_caption)
    for ext in CAPTION_EXTENSIONS:
        if ext in entry.sidecars:
            return decode_caption(entry.sidecars[ext].read_bytes())
    return decode_caption(None)


def _json_uid(meta: str | None) -> str | None:
    if not meta or '"uid"' not in meta:
        return None
    try:
        return valid_uid(json.loads(meta).get("uid"))
    except (ValueError, AttributeError):
        return None
