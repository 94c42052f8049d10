"""The on-disk cache of slow model constants (issue 15 item 9: 15-25 s per command)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from pairsift.models import onnxrt
from pairsift.models.cache import cache_dir, cache_path, cached_array, cached_bytes
from pairsift.models.default import DefaultEncoder

KEY = {"template": "a photo of a {}", "classes": ["cat", "dog"], "packages": {"x": "1.0"}}
SHAPE = (2, 3)


@pytest.fixture
def cache(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv("PAIRSIFT_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


class Counting:
    """A compute function that counts its calls."""

    def __init__(self, value: np.ndarray):
        self.value, self.calls = value, 0

    def __call__(self) -> np.ndarray:
        self.calls += 1
        return self.value


def _values() -> np.ndarray:
    return np.arange(6, dtype=np.float32).reshape(SHAPE) / 7


def test_cache_dir_follows_pairsift_cache_then_xdg_then_home(tmp_path, monkeypatch):
    monkeypatch.delenv("PAIRSIFT_CACHE", raising=False)
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert cache_dir() == tmp_path / "home" / ".cache" / "pairsift"
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache_dir() == tmp_path / "xdg" / "pairsift"
    monkeypatch.setenv("PAIRSIFT_CACHE", str(tmp_path / "mine"))
    assert cache_dir() == tmp_path / "mine"


def test_cached_array_computes_once_then_reads_the_file(cache):
    compute = Counting(_values())
    first = cached_array("t", KEY, compute, shape=SHAPE)
    second = cached_array("t", KEY, compute, shape=SHAPE)
    assert compute.calls == 1
    np.testing.assert_array_equal(first, second)
    assert [p.name for p in cache.iterdir()] == [cache_path("t", KEY).name]  # no temp file left


def test_every_input_is_part_of_the_key(cache):
    compute = Counting(_values())
    cached_array("t", KEY, compute, shape=SHAPE)
    for changed in ({**KEY, "classes": ["cat", "wolf"]}, {**KEY, "template": "{}"},
                    {**KEY, "packages": {"x": "1.1"}}):
        assert cache_path("t", changed) != cache_path("t", KEY)
        cached_array("t", changed, compute, shape=SHAPE)
    assert compute.calls == 4


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[:-40])


def _flip_a_data_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    offset = data.index(_values().tobytes()[4:12])  # inside the stored array
    data[offset] ^= 0xFF
    path.write_bytes(bytes(data))


def _garbage(path: Path) -> None:
    path.write_bytes(b"not a cache file")


@pytest.mark.parametrize("damage", [_truncate, _flip_a_data_byte, _garbage])
def test_a_corrupt_entry_is_recomputed_and_replaced(cache, damage):
    compute = Counting(_values())
    cached_array("t", KEY, compute, shape=SHAPE)
    damage(cache_path("t", KEY))
    np.testing.assert_array_equal(cached_array("t", KEY, compute, shape=SHAPE), _values())
    assert compute.calls == 2
    np.testing.assert_array_equal(cached_array("t", KEY, compute, shape=SHAPE), _values())
    assert compute.calls == 2  # the entry was repaired


@pytest.mark.parametrize(("shape", "dtype"), [((3, 2), np.float32), (SHAPE, np.float64)])
def test_an_entry_of_another_shape_or_dtype_is_not_trusted(cache, shape, dtype):
    cached_array("t", KEY, Counting(np.zeros(shape, dtype)), shape=shape, dtype=dtype)
    compute = Counting(_values())
    np.testing.assert_array_equal(cached_array("t", KEY, compute, shape=SHAPE), _values())
    assert compute.calls == 1


def test_an_unwritable_cache_folder_only_warns(tmp_path, monkeypatch):
    blocker = tmp_path / "file"
    blocker.write_text("a file where the cache folder should be")
    monkeypatch.setenv("PAIRSIFT_CACHE", str(blocker / "cache"))
    with pytest.warns(UserWarning, match="PAIRSIFT_CACHE"):
        value = cached_array("t", KEY, Counting(_values()), shape=SHAPE)
    np.testing.assert_array_equal(value, _values())


def test_cached_bytes_computes_once_and_repairs_a_corrupt_entry(cache):
    blob = bytes(range(256)) * 4
    compute = Counting(blob)
    assert cached_bytes("b", KEY, compute) == blob
    assert cached_bytes("b", KEY, compute) == blob and compute.calls == 1
    _truncate(cache_path("b", KEY))
    assert cached_bytes("b", KEY, compute) == blob and compute.calls == 2


def test_default_encoder_reads_class_prompt_embeddings_from_the_cache(cache, monkeypatch):
    """The 1000 ImageNet prompt embeddings and the ONNX graphs are computed at the first load
    only."""
    encoded: list[int] = []
    encode = DefaultEncoder.encode_texts
    monkeypatch.setattr(DefaultEncoder, "encode_texts",
                        lambda self, texts: encoded.append(len(texts)) or encode(self, texts))
    exported: list[str] = []
    export = onnxrt.export
    monkeypatch.setattr(onnxrt, "export",
                        lambda module, *args: exported.append(type(module).__name__) or export(
                            module, *args))
    cold = DefaultEncoder()
    assert encoded == [1000] and len(list(cache.glob("conse-class-text-*.npz"))) == 1
    assert sorted(exported) == ["Classifier", "TokenEmbeddings"]
    assert len(list(cache.glob("onnx-*.npz"))) == 2
    warm = DefaultEncoder()
    assert encoded == [1000] and len(exported) == 2
    torch.testing.assert_close(warm._class_text, cold._class_text, rtol=0, atol=0)
