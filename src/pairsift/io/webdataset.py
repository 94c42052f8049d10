"""WebDataset tar shards, including img2dataset output with its per-shard status parquet.

Read with :mod:`tarfile` rather than the ``webdataset`` loader because ingest needs what that
loader hides: each member's byte offset (exports copy the original bytes without re-encoding),
grouping of members that are not adjacent, and a precise error for every member it cannot use.
Each key is one sample: a repeated member is recorded (``duplicate_member``) and dropped, the
first copy used. A shard the scan cannot finish is also a ``broken_shard`` error (a shard-level
error, not a sample). Keys are written by :func:`~pairsift.io.records.path_text`.
"""

from __future__ import annotations

import json
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from .records import (
    CAPTION_EXTENSIONS,
    IMAGE_EXTENSIONS,
    MAX_CAPTION_BYTES,
    RawSample,
    SampleError,
    arrow_file,
    decode_caption,
    path_text,
    valid_uid,
)
from .storage import exists, open_binary, with_suffix

Location = Path | str  # a local path or an object-storage URL


@dataclass
class _Member:
    offset: int
    size: int


@dataclass
class _Group:
    members: dict[str, _Member] = field(default_factory=dict)
    duplicates: list[str] = field(default_factory=list)


def split_member_name(name: str) -> tuple[str, str]:
    """``dir/key.ext`` -> (``dir/key``, ``ext``); split at the LAST dot so keys may hold dots."""
    stem, dot, ext = name.rpartition(".")
    if not dot or "/" in ext:
        return name, ""
    return stem, ext.lower()


def _scan(f) -> tuple[dict[str, _Group], str | None]:
    """Member offsets grouped by key, and the error that stopped the scan (if any)."""
    groups: dict[str, _Group] = {}
    try:
        with tarfile.open(fileobj=f, mode="r:") as tf:
            for info in tf:
                if not info.isfile():
                    continue  # directories, links: not sample members
                key, ext = split_member_name(path_text(info.name))
                group = groups.setdefault(key, _Group())
                if ext in group.members:
                    group.duplicates.append(info.name)
                else:
                    group.members[ext] = _Member(info.offset_data, info.size)
    except (tarfile.TarError, EOFError, OSError) as exc:
        return groups, f"{type(exc).__name__}: {exc}"
    return groups, None


def _read(f, member: _Member, limit: int | None = None) -> bytes | None:
    """The member's bytes (at most ``limit``), None if the shard ends before them."""
    size = member.size if limit is None else min(member.size, limit)
    f.seek(member.offset)
    data = f.read(size)
    return data if len(data) == size else None


def _failed_downloads(tar_path: Location) -> Iterator[SampleError]:
    """img2dataset writes ``NNNNN.parquet`` beside each shard; failed rows never reach the tar."""
    status_path = with_suffix(tar_path, ".parquet")
    if not exists(status_path):
        return
    try:
        with arrow_file(status_path) as f:
            table = pq.read_table(f)
    except (pa.ArrowException, OSError) as exc:  # the shard itself may still be fine
        shard = path_text(status_path)
        yield SampleError("", shard, "broken_shard", f"{shard}: {type(exc).__name__}: {exc}")
        return
    if "status" not in table.column_names:
        return
    keys = table.column("key").to_pylist() if "key" in table.column_names else None
    msgs = (table.column("error_message").to_pylist()
            if "error_message" in table.column_names else None)
    for i, status in enumerate(table.column("status").to_pylist()):
        if status != "success":
            yield SampleError(
                key=str(keys[i]) if keys else str(i),
                shard=path_text(tar_path),
                reason="download_failed",
                message=f"img2dataset status {status!r}: {msgs[i] if msgs else ''}",
            )


def read_tar(tar_path: Location) -> Iterator[RawSample | SampleError]:
    """Every sample of one shard, or an error for each key (or the shard) it cannot use."""
    shard = path_text(tar_path)
    yield from _failed_downloads(tar_path)
    try:
        f = open_binary(tar_path)  # once: the scan's reads are the members' (remote: ranges)
    except OSError as exc:
        yield SampleError(key="", shard=shard, reason="broken_shard",
                          message=f"{shard}: {type(exc).__name__}: {exc}")
        return
    with f:
        groups, scan_error = _scan(f)
        if scan_error:
            yield SampleError(key="", shard=shard, reason="broken_shard",
                              message=f"{shard}: {scan_error}")
        for key, group in groups.items():
            yield from _sample(f, shard, key, group)


def _sample(f, shard: str, key: str, group: _Group) -> Iterator[RawSample | SampleError]:
    for name in group.duplicates:
        yield SampleError(key, shard, "duplicate_member",
                          f"{shard}: {path_text(name)} repeats a member name and was dropped; "
                          "the first copy was used")
    meta_member = group.members.get("json")
    meta_bytes = _read(f, meta_member) if meta_member else None
    meta = _parse_json(meta_bytes)
    uid = valid_uid(meta.get("uid")) if meta else None
    image_ext = next((e for e in group.members if e in IMAGE_EXTENSIONS), None)
    if image_ext is None:
        yield SampleError(key, shard, "missing_image",
                          f"{shard}: members {sorted(group.members)} of {key} include no image",
                          uid)
        return
    member = group.members[image_ext]
    data = _read(f, member)
    if data is None:
        yield SampleError(key, shard, "truncated",
                          f"{shard}: {key}.{image_ext} ends before its {member.size} bytes", uid)
        return
    caption, issue = _caption(f, group, meta)
    yield RawSample(key=key, shard=shard, container="tar", offset=member.offset, data=data,
                    caption=caption, caption_issue=issue, uid=uid,
                    meta=meta_bytes.decode("utf-8", "replace") if meta_bytes else None)


def _caption(f, group: _Group, meta: dict | None) -> tuple[str | None, str | None]:
    ext = next((e for e in CAPTION_EXTENSIONS if e in group.members), None)
    if ext is not None:
        member = group.members[ext]
        raw = _read(f, member, MAX_CAPTION_BYTES)
        if raw is not None:
            return decode_caption(raw, complete=member.size <= MAX_CAPTION_BYTES)
    if meta and isinstance(meta.get("caption"), str):
        return decode_caption(meta["caption"])
    return decode_caption(None)


def _parse_json(raw: bytes | None) -> dict | None:
    if not raw:
        return None
    try:
        value = json.loads(raw)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None
