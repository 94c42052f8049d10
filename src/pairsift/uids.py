"""uids as 16 bytes: how global stages and the DataComp export hold a uid per sample.

A uid is 32 lowercase hex characters (DataComp's convention, docs/design.md §2). As an Arrow string
it costs 36 bytes per sample, as a Python str ~80; as two big-endian uint64 words it costs 16,
which is what a 100M-sample collection can afford, and sorting the words sorts the uids.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

UID_DTYPE = np.dtype([("hi", ">u8"), ("lo", ">u8")])  # DataComp's uid .npy layout
_HEX = np.frombuffer(b"0123456789abcdef", np.uint8)


def uid_codes(uids: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """32-hex-character uids → structured (hi, lo) uint64 pairs, vectorised."""
    if isinstance(uids, pa.ChunkedArray):
        uids = uids.combine_chunks()
    n = len(uids)
    if n == 0:
        return np.zeros(0, UID_DTYPE)
    if uids.null_count or pc.any(pc.not_equal(pc.utf8_length(uids), 32)).as_py():
        raise ValueError("uids must be 32 hex characters")
    offsets = np.frombuffer(uids.buffers()[1], np.int32)[uids.offset:uids.offset + n + 1]
    chars = np.frombuffer(uids.buffers()[2], np.uint8)[offsets[0]:offsets[-1]].reshape(n, 32)
    nibbles = chars - np.where(chars >= ord("a"), ord("a") - 10, ord("0")).astype(np.uint8)
    if (nibbles > 15).any():
        raise ValueError("uids must be lowercase hex")
    packed = (nibbles[:, 0::2] << 4) | nibbles[:, 1::2]  # (n, 16) bytes, big-endian order
    return np.ascontiguousarray(packed).view(UID_DTYPE).reshape(n)


def uid_strings(codes: np.ndarray) -> pa.Array:
    """The inverse of :func:`uid_codes`."""
    return hex_strings(np.ascontiguousarray(codes, UID_DTYPE).view(np.uint8).reshape(-1, 16))


def hex_strings(raw: np.ndarray) -> pa.Array:
    """Rows of bytes (an (n, k) uint8 array) as lowercase hex strings, vectorised."""
    n, k = raw.shape
    chars = np.empty((n, 2 * k), np.uint8)
    chars[:, 0::2] = _HEX[raw >> 4]
    chars[:, 1::2] = _HEX[raw & 15]
    offsets = np.arange(0, 2 * k * n + 1, 2 * k, dtype=np.int32)
    return pa.StringArray.from_buffers(n, pa.py_buffer(offsets), pa.py_buffer(chars))


class UidSet:
    """Membership of uids seen so far, 16 bytes each, for collections of any size.

    Two sorted levels (a large base and a small recent one, merged when recent reaches an
    eighth of base), so adding N uids in batches costs O(N log N) overall, not a copy of
    everything per batch as one growing sorted array would.
    """

    def __init__(self, codes: np.ndarray | None = None):
        self._base = np.sort(codes) if codes is not None else np.zeros(0, UID_DTYPE)
        self._recent = np.zeros(0, UID_DTYPE)

    def __len__(self) -> int:
        return len(self._base) + len(self._recent)

    def contains(self, codes: np.ndarray) -> np.ndarray:
        return _isin(codes, self._base) | _isin(codes, self._recent)

    def add(self, codes: np.ndarray) -> None:
        self._recent = np.sort(np.concatenate([self._recent, codes]))
        if len(self._recent) * 8 >= len(self._base):
            self._base = np.sort(np.concatenate([self._base, self._recent]))
            self._recent = np.zeros(0, UID_DTYPE)


def _isin(codes: np.ndarray, sorted_codes: np.ndarray) -> np.ndarray:
    if not len(sorted_codes):
        return np.zeros(len(codes), bool)
    at = np.minimum(np.searchsorted(sorted_codes, codes), len(sorted_codes) - 1)
    return sorted_codes[at] == codes
