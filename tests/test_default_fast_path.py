"""The default model on ONNX Runtime: same embeddings as PyTorch fp32 eager, and a fallback."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torchvision.transforms.functional as TF
from PIL import Image

from pairsift.models import load_encoder, onnxrt
from pairsift.models.base import encode_images
from pairsift.models.default import (
    IMAGE_SIZE,
    PIXEL_MEAN,
    PIXEL_STD,
    DefaultEncoder,
    OnnxImageNet,
    OnnxTextNet,
    TorchImageNet,
    TorchTextNet,
)

MIN_COSINE = 0.999  # the bound the fast path must hold against fp32 eager, per image and caption
CAPTIONS = ["a tabby cat asleep on a sofa", "espresso in a white cup", "", "x" * 10_000,
            "Ünïcödé café 東京 😀", "a red rocket on the launch pad at dusk"]


@pytest.fixture(scope="module")
def eager() -> DefaultEncoder:
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(onnxrt.ENV, "0")
        return DefaultEncoder()


@pytest.fixture(scope="module")
def images(demo_corpus) -> list[Image.Image]:
    """The demo corpus's readable images (it also holds planted corrupt files)."""
    readable = []
    for path in sorted((demo_corpus / "images").iterdir()):
        try:
            readable.append(Image.open(path).convert("RGB"))
        except (OSError, ValueError):
            continue
    return readable


def _row_cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(axis=1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)


@pytest.mark.parametrize("size", [(224, 224), (225, 224), (300, 171), (171, 300), (640, 480),
                                  (37, 1000), (1000, 37), (223, 224)])
def test_preprocess_equals_torchvision(size: tuple[int, int]) -> None:
    rng = np.random.default_rng(sum(size))
    image = Image.fromarray(rng.integers(0, 256, (*size[::-1], 3), np.uint8))
    resized = TF.center_crop(TF.resize(image, IMAGE_SIZE,
                                       interpolation=TF.InterpolationMode.BICUBIC), IMAGE_SIZE)
    expected = TF.normalize(TF.to_tensor(resized), PIXEL_MEAN, PIXEL_STD)
    torch.testing.assert_close(load_encoder().preprocess(image), expected, rtol=0, atol=1e-6)


def test_cpu_default_runs_both_networks_on_onnx_runtime() -> None:
    encoder = load_encoder()
    assert isinstance(encoder._image, OnnxImageNet) and isinstance(encoder._text, OnnxTextNet)


def test_onnx_runtime_agrees_with_fp32_eager(eager, images) -> None:
    fast = load_encoder()
    assert isinstance(eager._image, TorchImageNet) and isinstance(eager._text, TorchTextNet)
    pixels = torch.stack([fast.preprocess(im) for im in images])
    got, want = fast.embed_pixels(pixels), eager.embed_pixels(pixels)
    assert _row_cosines(got.visual, want.visual).min() >= MIN_COSINE
    assert _row_cosines(got.joint, want.joint).min() >= MIN_COSINE
    texts = [c for c in CAPTIONS if c]
    assert _row_cosines(fast.encode_texts(texts), eager.encode_texts(texts)).min() >= MIN_COSINE
    np.testing.assert_allclose(fast._class_text, eager._class_text, atol=1e-5)


def test_onnx_runtime_batches_equal_single_images(images) -> None:
    fast = load_encoder()
    batch = encode_images(fast, images[:4])
    singles = np.concatenate([encode_images(fast, [im]).visual for im in images[:4]])
    np.testing.assert_allclose(singles, batch.visual, atol=1e-5)


def test_unusable_onnx_runtime_falls_back_to_eager_with_a_warning(eager, images, monkeypatch):
    def no_runtime(*args, **kwargs):
        raise ImportError("No module named 'onnxruntime'")

    monkeypatch.setattr(onnxrt, "session", no_runtime)
    with pytest.warns(UserWarning, match="PyTorch eager"):
        fallback = DefaultEncoder()
    assert isinstance(fallback._image, TorchImageNet) and isinstance(fallback._text, TorchTextNet)
    got, want = encode_images(fallback, images[:4]), encode_images(eager, images[:4])
    np.testing.assert_array_equal(got.joint, want.joint)
    np.testing.assert_array_equal(fallback.encode_texts(CAPTIONS[:2]), eager.encode_texts(
        CAPTIONS[:2]))


@pytest.mark.parametrize("value", ["0", "off", "false"])
def test_pairsift_onnx_0_turns_the_fast_path_off(monkeypatch, value) -> None:
    monkeypatch.setenv(onnxrt.ENV, value)
    assert not onnxrt.enabled("cpu")
    monkeypatch.delenv(onnxrt.ENV)
    assert onnxrt.enabled("cpu") and not onnxrt.enabled("cuda")
