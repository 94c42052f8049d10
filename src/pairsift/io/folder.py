"""A folder of images, with captions from a table and/or sidecar ``.txt`` files.

Also reads img2dataset's ``output_format=files`` layout (``00000/000000001.jpg`` + ``.txt`` +
``.json``). A sample's key is its path relative to the folder without the extension, written
by :func:`~pairsift.io.records.path_text` (a name that is not UTF-8 keeps a stable key); when
two images share a stem (``a.png`` and ``a.webp``) both keep their extension in the key
(``a_png``, ``a_webp``) so no key names two samples.

Every entry named like an image is a sample or an error, and nothing outside the folder is
read: a file (image or sidecar) whose real path is outside is ``outside_source``; a FIFO, a
directory, a link that leads nowhere is ``not_a_file`` (and is never opened: a FIFO would
block); a file that cannot be read is ``unreadable_file``; a directory that cannot be listed is
``unreadable_dir``. Linked directories are not entered.
"""

from __future__ import annotations

import errno
import json
import os
import stat
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from .records import (
    CAPTION_EXTENSIONS,
    IMAGE_EXTENSIONS,
    MAX_CAPTION_BYTES,
    RawSample,
    SampleError,
    decode_caption,
    path_text,
    valid_uid,
)
from .tables import CaptionTable, TableRow

_FILE_TYPES = {stat.S_IFDIR: "a directory", stat.S_IFIFO: "a FIFO", stat.S_IFSOCK: "a socket",
               stat.S_IFCHR: "a character device", stat.S_IFBLK: "a block device"}


@dataclass(frozen=True)
class FolderEntry:
    key: str
    image: str  # path relative to the folder, as the file system names it
    sidecars: dict[str, str]  # extension -> relative path
    row: TableRow | None = None


class _Refused(Exception):
    def __init__(self, reason: str, message: str):
        super().__init__(reason, message)
        self.reason = reason
        self.message = message


def list_folder(root: Path, table: CaptionTable | None
                ) -> tuple[list[FolderEntry | SampleError], int]:
    """Samples of a folder in a stable order, then the errors known before reading any file
    (directories that cannot be listed, caption table rows naming no usable image), and how
    many files are not samples."""
    paths, unlisted = _walk(str(root))
    by_stem: dict[str, dict[str, str]] = defaultdict(dict)
    for rel in paths:
        if table is not None and os.path.join(root, rel) == str(table.path):
            continue
        name = PurePosixPath(rel)
        by_stem[str(name.with_suffix(""))][name.suffix.lstrip(".").lower()] = rel
    samples: list[FolderEntry] = []
    ignored = 0
    for stem, files in by_stem.items():
        images = [e for e in files if e in IMAGE_EXTENSIONS]
        sidecars = {e: p for e, p in files.items() if e not in IMAGE_EXTENSIONS}
        ignored += sum(e not in CAPTION_EXTENSIONS and e != "json" for e in sidecars)
        for ext in images:
            key = path_text(stem if len(images) == 1 else f"{stem}_{ext}")
            row = table.take(files[ext]) if table else None
            samples.append(FolderEntry(key, files[ext], sidecars, row))
    table_errors = table.unmatched() + table.issues if table else []
    return [*samples, *unlisted, *table_errors], ignored


def _walk(root: str) -> tuple[list[str], list[SampleError]]:
    """Relative paths of every entry but directories (a directory named like an image is
    kept, it is an error to report), in sorted path order; and the directories that cannot
    be listed."""
    paths: list[str] = []
    errors: list[SampleError] = []
    pending = [iter(_list_dir(root, "", errors))]
    while pending:
        found = next(pending[-1], None)
        if found is None:
            pending.pop()
            continue
        rel, is_dir, leads_to_dir = found
        if not leads_to_dir or PurePosixPath(rel).suffix.lstrip(".").lower() in IMAGE_EXTENSIONS:
            paths.append(rel)
        if is_dir:
            pending.append(iter(_list_dir(root, rel, errors)))
    return paths, errors


def _list_dir(root: str, rel: str, errors: list[SampleError]
              ) -> list[tuple[str, bool, bool]]:
    """(relative path, is a directory, is a directory or a link to one) of a directory's
    entries, sorted by name."""
    path = os.path.join(root, rel)
    try:
        with os.scandir(path) as it:
            found = sorted((e.name, e.is_dir(follow_symlinks=False), _leads_to_dir(e))
                           for e in it)
    except OSError as exc:
        errors.append(SampleError(path_text(rel), path_text(path), "unreadable_dir",
                                  f"{path_text(path)}: {exc.strerror}"))
        return []
    return [(os.path.join(rel, name) if rel else name, *kind) for name, *kind in found]


def _leads_to_dir(entry: os.DirEntry) -> bool:
    try:
        return entry.is_dir()
    except OSError:  # a link in a loop: an error to report when it is read
        return False


def read_entries(root: Path, entries: list[FolderEntry | SampleError]
                 ) -> Iterator[RawSample | SampleError]:
    for entry in entries:
        if isinstance(entry, SampleError):
            yield entry
            continue
        try:
            yield _read_entry(str(root), entry)
        except _Refused as refused:
            yield SampleError(entry.key, path_text(os.path.join(root, entry.image)),
                              refused.reason, refused.message)


def _read_entry(root: str, entry: FolderEntry) -> RawSample:
    image = os.path.join(root, entry.image)
    data, _ = _read_inside(image, root)
    caption, issue = _caption(root, entry)
    meta_path = entry.sidecars.get("json")
    meta = (_read_inside(os.path.join(root, meta_path), root)[0].decode("utf-8", "replace")
            if meta_path else None)
    return RawSample(key=entry.key, shard=path_text(image), container="file", offset=0,
                     data=data, caption=caption, caption_issue=issue,
                     uid=(entry.row.uid if entry.row else None) or _json_uid(meta), meta=meta)


def _caption(root: str, entry: FolderEntry) -> tuple[str | None, str | None]:
    if entry.row is not None and entry.row.caption is not None:
        return decode_caption(entry.row.caption)
    for ext in CAPTION_EXTENSIONS:
        if ext in entry.sidecars:
            data, complete = _read_inside(os.path.join(root, entry.sidecars[ext]), root,
                                          MAX_CAPTION_BYTES)
            return decode_caption(data, complete=complete)
    return decode_caption(None)


def _read_inside(path: str, root: str, limit: int = -1) -> tuple[bytes, bool]:
    """The bytes of a regular file whose real path is inside ``root`` (at most ``limit``),
    and whether they are the whole file; :class:`_Refused` otherwise. The walk enters no
    linked directory, so only the file itself can be a link."""
    shown = path_text(path)
    try:
        mode = os.lstat(path).st_mode
        if stat.S_ISLNK(mode):
            real = os.path.realpath(path)
            if not real.startswith(root + os.sep):
                raise _Refused("outside_source", f"{shown} leads to {path_text(real)}, "
                                                 f"outside the source {path_text(root)}")
            mode = os.stat(path).st_mode
        if not stat.S_ISREG(mode):
            kind = _FILE_TYPES.get(stat.S_IFMT(mode), "not a regular file")
            raise _Refused("not_a_file", f"{shown}: {kind}, not a file")
        # O_NONBLOCK: should the file become a FIFO since the check, opening it cannot block
        with open(os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC), "rb") as f:
            return f.read(limit), limit < 0 or os.fstat(f.fileno()).st_size <= limit
    except OSError as exc:  # a link in a loop or to nothing is no file; anything else unreadable
        gone = isinstance(exc, FileNotFoundError | NotADirectoryError) or exc.errno == errno.ELOOP
        raise _Refused("not_a_file" if gone else "unreadable_file",
                       f"{shown}: {exc.strerror}") from None


def _json_uid(meta: str | None) -> str | None:
    if not meta or '"uid"' not in meta:
        return None
    try:
        return valid_uid(json.loads(meta).get("uid"))
    except (ValueError, AttributeError):
        return None
