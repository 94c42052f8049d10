"""Model backends: the offline default (real pretrained weights) and the open_clip code path.

The default model is loaded once per module (about 8 s) and checked on scikit-image's bundled
sample photos, read straight from the package so nothing is downloaded.
"""

from __future__ import annotations

import io
import itertools
import os
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import skimage
import torch
from PIL import Image, ImageEnhance

from pairsift.engine.runner import model_inputs
from pairsift.models import ImageEmbeddings, ImageTextEncoder, load_encoder, model_slug
from pairsift.models.base import encode_images

SKIMAGE_DATA = os.path.join(os.path.dirname(skimage.__file__), "data")
# The distinct colour photographs among scikit-image's samples (no synthetic or binary images).
PHOTOS = {
    "astronaut": "astronaut.png",
    "cat": "chelsea.png",
    "coffee": "coffee.png",
    "rocket": "rocket.jpg",
    "motorcycle": "motorcycle_left.png",
    "galaxies": "hubble_deep_field.jpg",
    "tissue": "ihc.png",
    "retina": "retina.jpg",
}
PHOTO_KEYS = list(PHOTOS)
NEAR_DUP_MIN_COS = 0.78
DIFFERENT_MAX_COS = 0.33


@pytest.fixture(scope="module")
def encoder() -> ImageTextEncoder:
    return load_encoder("default")


@pytest.fixture(scope="module")
def photos() -> dict[str, Image.Image]:
    return {k: Image.open(os.path.join(SKIMAGE_DATA, f)).convert("RGB") for k, f in PHOTOS.items()}


@pytest.fixture(scope="module")
def photo_embeddings(encoder: ImageTextEncoder, photos: dict[str, Image.Image]) -> ImageEmbeddings:
    return encode_images(encoder, list(photos.values()))


def _jpeg_q30(image: Image.Image) -> Image.Image:
    buf = io.BytesIO()
    image.save(buf, format="JPEG", quality=30)
    return Image.open(io.BytesIO(buf.getvalue())).convert("RGB")


def _centre_crop_90(image: Image.Image) -> Image.Image:
    w, h = image.size
    dx, dy = round(w * 0.05), round(h * 0.05)
    return image.crop((dx, dy, w - dx, h - dy))


def _brighter_30(image: Image.Image) -> Image.Image:
    return ImageEnhance.Brightness(image).enhance(1.3)


EDITS: dict[str, Callable[[Image.Image], Image.Image]] = {
    "jpeg_q30": _jpeg_q30,
    "crop_90": _centre_crop_90,
    "bright_130": _brighter_30,
}


def _assert_unit_rows(x: np.ndarray) -> None:
    assert x.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(x, axis=1), 1.0, atol=1e-5)


# --- the offline default model ------------------------------------------------------------------


def test_default_encoder_is_cached_and_follows_protocol(encoder: ImageTextEncoder) -> None:
    assert load_encoder("default") is load_encoder("default")
    assert isinstance(encoder, ImageTextEncoder)
    assert (encoder.name, encoder.dim, encoder.visual_dim, encoder.device) == (
        "default",
        384,
        1280,
        "cpu",
    )


@pytest.mark.parametrize(
    ("query", "expected"), [("a photo of a cat", "cat"), ("a cup of coffee", "coffee")]
)
def test_text_query_ranks_matching_photo_first(
    encoder: ImageTextEncoder, photo_embeddings: ImageEmbeddings, query: str, expected: str
) -> None:
    scores = photo_embeddings.joint @ encoder.encode_texts([query])[0]
    ranking = [PHOTO_KEYS[i] for i in np.argsort(-scores)]
    assert ranking[0] == expected, dict(zip(PHOTOS, scores.round(3), strict=True))


def test_near_duplicates_stay_close_in_visual_space(
    encoder: ImageTextEncoder, photos: dict[str, Image.Image], photo_embeddings: ImageEmbeddings
) -> None:
    cosines = {}
    for edit_name, edit in EDITS.items():
        edited = encode_images(encoder, [edit(im) for im in photos.values()]).visual
        for name, cos in zip(photos, (edited * photo_embeddings.visual).sum(axis=1), strict=True):
            cosines[f"{name}/{edit_name}"] = round(float(cos), 3)
    assert min(cosines.values()) >= NEAR_DUP_MIN_COS, cosines


def test_different_photos_stay_apart_in_visual_space(photo_embeddings: ImageEmbeddings) -> None:
    sims = photo_embeddings.visual @ photo_embeddings.visual.T
    pairs = {
        f"{PHOTO_KEYS[i]}~{PHOTO_KEYS[j]}": round(float(sims[i, j]), 3)
        for i, j in itertools.combinations(range(len(PHOTO_KEYS)), 2)
    }
    assert max(pairs.values()) <= DIFFERENT_MAX_COS, pairs


def test_embeddings_have_right_shapes_dtypes_and_unit_norm(
    encoder: ImageTextEncoder, photo_embeddings: ImageEmbeddings
) -> None:
    n = len(PHOTOS)
    assert photo_embeddings.joint.shape == (n, 384)
    assert photo_embeddings.visual is not None and photo_embeddings.visual.shape == (n, 1280)
    _assert_unit_rows(photo_embeddings.joint)
    _assert_unit_rows(photo_embeddings.visual)
    texts = encoder.encode_texts(["a photo of a cat", "a cup of coffee", ""])
    assert texts.shape == (3, 384)
    _assert_unit_rows(texts)
    assert encoder.encode_texts([]).shape == (0, 384)


def test_default_is_deterministic_and_batch_equals_single(
    encoder: ImageTextEncoder, photos: dict[str, Image.Image], photo_embeddings: ImageEmbeddings
) -> None:
    images = list(photos.values())
    again = encode_images(encoder, images)
    np.testing.assert_array_equal(again.joint, photo_embeddings.joint)
    np.testing.assert_array_equal(again.visual, photo_embeddings.visual)
    singles = [encode_images(encoder, [im]) for im in images[:3]]
    np.testing.assert_allclose(
        np.concatenate([s.joint for s in singles]), photo_embeddings.joint[:3], atol=1e-5
    )
    np.testing.assert_allclose(
        np.concatenate([s.visual for s in singles]), photo_embeddings.visual[:3], atol=1e-5
    )


def test_default_preprocess_accepts_any_mode_and_is_thread_safe(
    encoder: ImageTextEncoder, photos: dict[str, Image.Image]
) -> None:
    images = list(photos.values()) + [photos["cat"].convert("L"), photos["cat"].convert("RGBA")]
    serial = [encoder.preprocess(im) for im in images]
    with ThreadPoolExecutor(max_workers=4) as pool:
        threaded = list(pool.map(encoder.preprocess, images * 3))
    for i, tensor in enumerate(threaded):
        torch.testing.assert_close(tensor, serial[i % len(images)], rtol=0, atol=0)
    assert all(t.shape == (3, 224, 224) and t.dtype == torch.float32 for t in serial)


# --- open_clip (no weights offline: random weights only exercise the code path) ----------------


@pytest.fixture(scope="module")
def random_openclip() -> ImageTextEncoder:
    from pairsift.models.openclip import OpenClipEncoder

    return OpenClipEncoder("ViT-B-32", pretrained=None)


def test_openclip_random_weights_code_path(
    random_openclip: ImageTextEncoder, photos: dict[str, Image.Image]
) -> None:
    assert isinstance(random_openclip, ImageTextEncoder)
    assert random_openclip.name == "open_clip:ViT-B-32/random-init"
    assert (random_openclip.dim, random_openclip.visual_dim) == (512, None)
    images = list(photos.values())[:4]
    with ThreadPoolExecutor(max_workers=4) as pool:
        threaded = list(pool.map(random_openclip.preprocess, images))
    for image, tensor in zip(images, threaded, strict=True):
        torch.testing.assert_close(tensor, random_openclip.preprocess(image), rtol=0, atol=0)
    emb = random_openclip.embed_pixels(torch.stack(threaded))
    assert emb.joint.shape == (4, 512) and emb.visual is None
    _assert_unit_rows(emb.joint)
    texts = random_openclip.encode_texts(["a photo of a cat", "a cup of coffee"])
    assert texts.shape == (2, 512)
    _assert_unit_rows(texts)
    assert random_openclip.encode_texts([]).shape == (0, 512)


def test_openclip_random_weights_text_batches_match_one_batch(
    random_openclip: ImageTextEncoder, monkeypatch: pytest.MonkeyPatch
) -> None:
    texts = [f"caption number {i}" for i in range(5)]
    whole = random_openclip.encode_texts(texts)
    monkeypatch.setattr("pairsift.models.openclip.TEXT_BATCH", 2)
    np.testing.assert_allclose(random_openclip.encode_texts(texts), whole, atol=1e-5)


# --- captions longer than the context ----------------------------------------------------------

HUGE_CAPTION = ("a tabby cat asleep on a red sofa next to a window, " * 100_000)[:5_000_000]


@pytest.mark.parametrize("model", ["encoder", "random_openclip"])
def test_a_5mb_caption_is_embedded_fast_as_its_first_characters(
    model: str, request: pytest.FixtureRequest
) -> None:
    """Issue 14 item 8: tokenising a whole 100 MB caption took 81 s and 7.3 GB; only the first
    context's worth of tokens is ever used (5 MB took 16 s on MiniLM before the fix)."""
    encoder = request.getfixturevalue(model)
    encoder.encode_texts(["a warm-up caption"])
    huge, huge_s = _timed(encoder.encode_texts, [HUGE_CAPTION])
    head, head_s = _timed(encoder.encode_texts, [HUGE_CAPTION[:5000]])
    np.testing.assert_allclose(huge, head, atol=1e-6)
    # as fast as the first 5000 characters, with slack for a busy machine
    assert huge_s < 3 * head_s + 1.0, f"{huge_s:.1f} s for 5 MB, {head_s:.2f} s for 5 kB"


def _timed(fn: Callable, *args: object) -> tuple[object, float]:
    start = time.perf_counter()
    return fn(*args), time.perf_counter() - start


# --- names --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "arch", "pretrained"),
    [
        ("open_clip:ViT-B-32/laion2b_s34b_b79k", "ViT-B-32", "laion2b_s34b_b79k"),
        ("open_clip:ViT-B-32/ckpts/epoch_3.pt", "ViT-B-32", "ckpts/epoch_3.pt"),
        ("open_clip:RN50//abs/path/model.safetensors", "RN50", "/abs/path/model.safetensors"),
    ],
)
def test_load_encoder_routes_open_clip_names(
    monkeypatch: pytest.MonkeyPatch, name: str, arch: str, pretrained: str
) -> None:
    calls = []

    def fake_encoder(*args: object, **kwargs: object) -> object:
        calls.append((args, kwargs))
        return object()

    monkeypatch.setattr("pairsift.models.openclip.OpenClipEncoder", fake_encoder)
    load_encoder.cache_clear()
    try:
        load_encoder(name, device="cpu")
    finally:
        load_encoder.cache_clear()
    assert calls == [((arch, pretrained), {"device": "cpu"})]


def test_a_checkpoint_rewritten_in_place_gets_a_new_slug_and_is_loaded_again(
        monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    checkpoint = tmp_path / "epoch_2.pt"
    checkpoint.write_bytes(b"first weights")
    name = f"open_clip:ViT-B-32/{checkpoint}"
    loads = []
    monkeypatch.setattr("pairsift.models.openclip.OpenClipEncoder",
                        lambda *args, **kwargs: loads.append(args) or object())
    load_encoder.cache_clear()
    try:
        slug, first, inputs = model_slug(name), load_encoder(name), model_inputs(name)
        assert model_slug(name) == slug and load_encoder(name) is first  # unchanged: cached
        assert inputs["model"] == name and len(inputs["weights"]) == 16
        assert model_inputs("default") == {"model": "default"}  # no file: run ids as before
        checkpoint.write_bytes(b"retrained weights")
        assert model_slug(name) != slug and model_slug(name).startswith("open_clip-ViT-B-32-")
        assert model_inputs(name)["weights"] != inputs["weights"]  # every reader re-runs
        assert load_encoder(name) is not first and len(loads) == 2
        os.utime(checkpoint, ns=(1, 1))  # a copy with other times: the same weights
        assert model_inputs(name) == model_inputs(name) and model_slug(name) == model_slug(name)
        touched = model_inputs(name)["weights"]
        checkpoint.write_bytes(b"retrained weights")
        assert model_inputs(name)["weights"] == touched
    finally:
        load_encoder.cache_clear()


@pytest.mark.parametrize(
    "name",
    [
        "",
        "clip",
        "Default",
        "openclip:ViT-B-32/openai",
        "open_clip:ViT-B-32",
        "open_clip:/openai",
        "open_clip:ViT-B-32/",
    ],
)
def test_bad_model_names_raise_listing_accepted_forms(name: str) -> None:
    with pytest.raises(ValueError, match="accepted forms"):
        load_encoder(name)
    with pytest.raises(ValueError, match="accepted forms"):
        model_slug(name)


@pytest.mark.parametrize(
    ("name", "match"),
    [
        ("open_clip:ViT-B-32/no_such_tag", "laion2b_s34b_b79k"),
        ("open_clip:ViT-B-32/missing/dir/ckpt.pt", "neither an existing checkpoint"),
        ("open_clip:ViT-Nope-1/openai", "unknown open_clip architecture"),
    ],
)
def test_bad_open_clip_weights_raise_before_loading(name: str, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        load_encoder(name)


def test_model_slug_is_filesystem_safe(tmp_path) -> None:
    assert model_slug("default") == "default"
    assert model_slug("open_clip:ViT-B-32/laion2b_s34b_b79k") == (
        "open_clip-ViT-B-32-laion2b_s34b_b79k"
    )
    a = model_slug(f"open_clip:ViT-B-32/{tmp_path}/a/my ckpt.pt")
    b = model_slug(f"open_clip:ViT-B-32/{tmp_path}/b/my ckpt.pt")
    assert a.startswith("open_clip-ViT-B-32-my-ckpt-") and a != b
    assert all(c.isalnum() or c in "._-" for c in a + b)


def test_run_record_is_read_once_per_version(tmp_path) -> None:
    """``run:RUN`` reads the training record once while it is unchanged (model_slug resolves
    the name for every part read), and again once the run is re-trained."""
    import json

    record = tmp_path / "pairsift-train.json"
    record.write_text(json.dumps({"arch": "pairsift-tiny", "checkpoint": "epoch_1.pt"}))
    first = model_slug(f"run:{tmp_path}")
    assert first.startswith("open_clip-pairsift-tiny-epoch_1-")
    stat = record.stat()
    record.write_text(json.dumps({"arch": "pairsift-tiny", "checkpoint": "epoch_2.pt"}))
    os.utime(record, ns=(stat.st_atime_ns, stat.st_mtime_ns))  # same version: not read
    assert model_slug(f"run:{tmp_path}") == first
    os.utime(record, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))  # re-trained
    assert model_slug(f"run:{tmp_path}").startswith("open_clip-pairsift-tiny-epoch_2-")
