"""Sources on object storage (``s3://bucket/shards/{00000..00009}.tar``, ``gs://…``) through
fsspec: listing, globbing and reading, with each store's usual credentials — for S3 the AWS
environment variables or files (``AWS_ACCESS_KEY_ID``, ``AWS_PROFILE``, …) and
``AWS_ENDPOINT_URL`` for an S3-compatible server (MinIO, Ceph, R2).

A location is either a local path (``Path`` or ``str``) or a URL (``str`` with ``://``); the
readers call these functions and never care which.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import IO, Any

from braceexpand import braceexpand


def is_url(location: str | os.PathLike) -> bool:
    return isinstance(location, str) and "://" in location


def _filesystem(url: str) -> tuple[Any, str]:
    from fsspec.core import url_to_fs

    return url_to_fs(url)


def _url(fs: Any, path: str) -> str:
    return fs.unstrip_protocol(path)


def open_binary(location: str | os.PathLike) -> IO[bytes]:
    """A seekable binary file: a local one, or a buffered remote one (range requests)."""
    if not is_url(location):
        return open(location, "rb")  # noqa: SIM115 - the caller closes it
    fs, path = _filesystem(location)
    return fs.open(path, "rb")


def exists(location: str | os.PathLike) -> bool:
    if not is_url(location):
        return Path(location).exists()
    fs, path = _filesystem(location)
    return fs.exists(path)


def name(location: str | os.PathLike) -> str:
    """The last component: ``s3://b/shards/00001.tar`` → ``00001.tar``."""
    return location.rstrip("/").rsplit("/", 1)[-1] if is_url(location) else Path(location).name


def with_suffix(location: str | Path, suffix: str) -> str | Path:
    if not is_url(location):
        return Path(location).with_suffix(suffix)
    stem, dot, ext = location.rpartition(".")
    return f"{stem}{suffix}" if dot and "/" not in ext else f"{location}{suffix}"


def expand_url(spec: str) -> list[str]:
    """The objects a URL names, sorted: brace patterns, globs, and a prefix ("folder") as the
    objects directly under it. Missing objects are left out."""
    urls: list[str] = []
    for pattern in braceexpand(spec):
        fs, path = _filesystem(pattern)
        matches = sorted(fs.glob(path)) if any(c in path for c in "*?[") else [path]
        for match in matches:
            try:
                kind = fs.info(match)["type"]  # one request an object (not isdir + exists)
            except FileNotFoundError:
                continue
            if kind == "directory":
                urls += [_url(fs, p) for p in sorted(fs.find(match, maxdepth=1))]
            else:
                urls.append(_url(fs, match))
    return urls
