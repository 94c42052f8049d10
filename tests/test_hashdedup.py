"""Exact and perceptual dedup: real fixtures, scikit-image photo variants, brute-force checks."""

from __future__ import annotations

import hashlib
import io
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import imagehash
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import skimage
from PIL import Image, ImageEnhance, ImageOps

from pairsift.io.images import decode_image
from pairsift.stages import hashdedup
from pairsift.stages.hashdedup import (
    DHASH_MAX_DISTANCE,
    PHASH_MAX_DISTANCE,
    exact_duplicates,
    hamming_distance,
    hamming_pairs,
    image_hashes,
    near_duplicates,
    perceptual_pairs,
)

SKIMAGE_DATA = Path(skimage.__file__).parent / "data"
# Natural and scientific photos (not the synthetic chessboards: see test_chessboard_gray_copy).
PHOTOS = [
    "astronaut.png", "brick.png", "camera.png", "cell.png", "chelsea.png", "clock_motion.png",
    "coffee.png", "coins.png", "color.png", "grass.png", "gravel.png", "horse.png", "ihc.png",
    "hubble_deep_field.jpg", "logo.png", "microaneurysms.png", "moon.png", "motorcycle_left.png",
    "page.png", "phantom.png", "retina.jpg", "rocket.jpg", "text.png",
]  # fmt: skip
# Measured: +30 % brightness moves these past the defaults (pHash 6-12 or dHash 7-11).
BRIGHTNESS_MISSES = {"camera.png", "color.png", "logo.png", "page.png", "retina.jpg"}


def _load(path: Path) -> Image.Image:
    return decode_image(path.read_bytes()).image


def _jpeg(image: Image.Image, quality: int) -> Image.Image:
    buf = io.BytesIO()
    image.save(buf, "JPEG", quality=quality)
    return decode_image(buf.getvalue()).image


def _center_crop(image: Image.Image, keep: float) -> Image.Image:
    dw, dh = round(image.width * (1 - keep) / 2), round(image.height * (1 - keep) / 2)
    return image.crop((dw, dh, image.width - dw, image.height - dh))


VARIANTS = {
    "jpeg_q30": lambda im: _jpeg(im, 30),
    "resize60": lambda im: im.resize((round(im.width * 0.6), round(im.height * 0.6))),
    "gray": lambda im: im.convert("L").convert("RGB"),
    "bright30": lambda im: ImageEnhance.Brightness(im).enhance(1.3),
    "crop90": lambda im: _center_crop(im, 0.9),
    "border5": lambda im: ImageOps.expand(im, round(0.05 * min(im.size)), fill="white"),
}


def _pairs_set(pairs: tuple[np.ndarray, np.ndarray, np.ndarray]) -> set[tuple[int, int]]:
    return set(zip(pairs[0].tolist(), pairs[1].tolist(), strict=True))


# --- exact duplicates -------------------------------------------------------------------------


DJ_FILES = ["blip.jpg", "cat.jpg", "img1.png", "img2.jpg", "img3.jpg", "img4.png", "img5.jpg",
            "img6.jpg", "img7.jpg", "img_pair_1.jpg", "img_pair_2.jpg"]  # fmt: skip
DJ_KEPT = [0, 1, 2, 3, 4, 2, 3, 4, 4, 9, 10]  # img4 -> img1, img5 -> img2, img6/img7 -> img3


def test_data_juicer_byte_identical_groups_by_file_and_pixel_hash(shared_data):
    paths = [shared_data / "data-juicer" / name for name in DJ_FILES]
    file_keys = [hashlib.sha256(p.read_bytes()).hexdigest() for p in paths]
    pixel_keys = [image_hashes(_load(p)).pixel_sha256 for p in paths]
    assert exact_duplicates(file_keys).tolist() == DJ_KEPT
    assert exact_duplicates(pixel_keys).tolist() == DJ_KEPT


def test_pixel_hash_equal_across_lossless_containers(shared_data):
    image = _load(shared_data / "data-juicer" / "img1.png")
    copies = []
    for fmt, options in [("PNG", {}), ("BMP", {}), ("TIFF", {}), ("WEBP", {"lossless": True})]:
        buf = io.BytesIO()
        image.save(buf, fmt, **options)
        copies.append(decode_image(buf.getvalue()).image)
    hashes = {image_hashes(im) for im in [image, *copies]}
    assert len(hashes) == 1
    assert image_hashes(image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)) not in hashes


def test_exact_rule_highest_priority_then_lowest_index():
    keys = ["a", "b", "a", "c", "a", "b"]
    assert exact_duplicates(keys).tolist() == [0, 1, 0, 3, 0, 1]
    priority = np.array([0.1, 0.5, 0.9, 0.0, 0.9, 0.5])  # "a": 2 and 4 tie -> 2; "b" tie -> 1
    assert exact_duplicates(keys, priority).tolist() == [2, 1, 2, 3, 2, 1]
    with_nan = np.array([np.nan, 0.5, 0.2, 0.0, 0.1, 0.7])  # NaN ranks lowest
    assert exact_duplicates(keys, with_nan).tolist() == [2, 5, 2, 3, 2, 5]
    chunked = pa.chunked_array([keys[:3], keys[3:]])
    assert exact_duplicates(chunked, priority).tolist() == [2, 1, 2, 3, 2, 1]
    assert exact_duplicates([]).tolist() == []
    with pytest.raises(ValueError, match="null"):
        exact_duplicates(pa.array(["a", None]))
    with pytest.raises(ValueError, match="shape"):
        exact_duplicates(keys, priority[:2])


# --- hashes -----------------------------------------------------------------------------------


def test_hash_values_are_imagehash_bits_as_int64(shared_data, tmp_path):
    image = _load(shared_data / "imagededup" / "base_images" / "ukbench00120.jpg")
    hashes = image_hashes(image)
    for value, reference in [(hashes.phash, imagehash.phash(image)),
                             (hashes.dhash, imagehash.dhash(image))]:  # fmt: skip
        assert -(2**63) <= value < 2**63
        assert format(value & (2**64 - 1), "016x") == str(reference)
    column = pa.array([hashes.phash, hashes.dhash, -1, -(2**63)], pa.int64())
    path = tmp_path / "h.parquet"
    pq.write_table(pa.table({"h": column}), path)
    assert pq.read_table(path)["h"].to_pylist() == column.to_pylist()
    assert hamming_distance(np.int64(-1), np.int64(0)) == 64  # the uint64 pattern, not |x|


def test_image_hashes_thread_safe(shared_data):
    images = [_load(shared_data / "data-juicer" / n) for n in ("img1.png", "img2.jpg", "cat.jpg")]
    serial = [image_hashes(im) for im in images]
    with ThreadPoolExecutor(4) as pool:
        threaded = list(pool.map(image_hashes, images * 4))
    assert threaded == serial * 4


def test_png_holding_jpeg_and_webp_are_near_not_exact(shared_data):
    folder = shared_data / "imagededup" / "formats_images"
    png, webp = (image_hashes(_load(folder / f"ukbench09380.{ext}")) for ext in ("png", "webp"))
    assert png.pixel_sha256 != webp.pixel_sha256  # WebP is lossy: pixels differ
    assert hamming_distance(png.phash, webp.phash) == 0  # measured: pHash and dHash agree
    assert hamming_distance(png.dhash, webp.dhash) == 0


def test_imagededup_near_duplicates_of_ukbench00120(shared_data):
    root = shared_data / "imagededup"
    names = ["base_images/ukbench00120.jpg", "mixed_images/ukbench00120_resize.jpg",
             "ukbench00120_gray.jpg", "mixed_images/ukbench00120_hflip.jpg",
             "mixed_images/ukbench00120_rotation.jpg"]  # fmt: skip
    names += [f"base_images/{p.name}" for p in sorted((root / "base_images").glob("*.jpg"))[1:]]
    hashes = [image_hashes(_load(root / n)) for n in names]
    phash = np.array([h.phash for h in hashes])
    pairs = _pairs_set(perceptual_pairs(phash, np.array([h.dhash for h in hashes])))
    assert pairs == {(0, 1), (0, 2), (1, 2)}  # resize and gray; the other base photos distinct
    # pHash is not flip/rotation invariant: semantic dedup handles those.
    assert hamming_distance(phash[0], phash[3:5]).min() >= 30


def test_hard_negative_needs_the_dhash_veto(shared_data):
    a, b = (image_hashes(_load(shared_data / "data-juicer" / f"img_pair_{k}.jpg")) for k in (1, 2))
    phash, dhash = np.array([a.phash, b.phash]), np.array([a.dhash, b.dhash])
    assert _pairs_set(hamming_pairs(phash, PHASH_MAX_DISTANCE)) == {(0, 1)}  # same layout
    assert hamming_distance(a.dhash, b.dhash) > DHASH_MAX_DISTANCE
    assert len(perceptual_pairs(phash, dhash)[0]) == 0


# --- photo variants at the default thresholds -------------------------------------------------


@pytest.fixture(scope="module")
def variant_pool(shared_data):
    """Hashes of skimage photos, their variants and distinct fixture photos, with families."""
    families, labels, hashes = [], [], []

    def add(family: str, label: str, image: Image.Image) -> None:
        families.append(family)
        labels.append(label)
        hashes.append(image_hashes(image))

    for name in PHOTOS:
        image = _load(SKIMAGE_DATA / name)
        add(name, "original", image)
        for variant, make in VARIANTS.items():
            add(name, variant, make(image))
    add("motorcycle_right.png", "original", _load(SKIMAGE_DATA / "motorcycle_right.png"))
    fixtures = [
        f"data-juicer/{n}"
        for n in (
            "img1.png",
            "img2.jpg",
            "img3.jpg",
            "cat.jpg",
            "blip.jpg",
            "img_pair_1.jpg",
            "img_pair_2.jpg",
        )
    ]
    fixtures += [
        f"imagededup/base_images/{p.name}"
        for p in sorted((shared_data / "imagededup" / "base_images").glob("*.jpg"))
    ]
    fixtures += ["imagededup/formats_images/ukbench09380.png", "pillow/hopper_gray.jpg"]
    for rel in fixtures:
        add(rel, "original", _load(shared_data / rel))
    phash = np.array([h.phash for h in hashes])
    dhash = np.array([h.dhash for h in hashes])
    return np.array(families), np.array(labels), phash, dhash


def test_no_false_positives_between_distinct_photos(variant_pool):
    families, _, phash, dhash = variant_pool
    i, j, _ = perceptual_pairs(phash, dhash)
    assert np.array_equal(families[i], families[j])  # incl. stereo pair and hard negative


def test_variants_found_at_default_thresholds(variant_pool):
    families, labels, phash, dhash = variant_pool
    pairs = _pairs_set(perceptual_pairs(phash, dhash))
    original = {
        f: k for k, (f, lab) in enumerate(zip(families, labels, strict=True)) if lab == "original"
    }
    found = {v: {f for k, (f, lab) in enumerate(zip(families, labels, strict=True))
                 if lab == v and (original[f], k) in pairs} for v in VARIANTS}  # fmt: skip
    for variant in ("jpeg_q30", "resize60", "gray"):
        assert found[variant] == set(PHOTOS), variant
    assert found["bright30"] == set(PHOTOS) - BRIGHTNESS_MISSES
    # A 90 % crop or a 5 % border moves pHash by 6-24: not a perceptual duplicate here.
    assert found["crop90"] == found["border5"] == set()


def test_near_duplicates_keep_the_original(variant_pool):
    families, labels, phash, dhash = variant_pool
    priority = (labels == "original").astype(float)
    kept, distance = near_duplicates(len(phash), perceptual_pairs(phash, dhash), priority)
    copies = np.isin(labels, ["jpeg_q30", "resize60", "gray"])
    assert np.all(labels[kept[copies]] == "original")
    assert np.array_equal(families[kept], families)
    assert np.all(distance[copies] <= PHASH_MAX_DISTANCE) and np.all(distance[copies] >= 0)


def test_chessboard_gray_copy_is_found():
    rgb, gray = (image_hashes(_load(SKIMAGE_DATA / f"chessboard_{m}.png")) for m in ("RGB", "GRAY"))
    assert (rgb.phash, rgb.dhash) == (gray.phash, gray.dhash)


# --- Hamming search: exact against brute force ------------------------------------------------


def _planted_hashes(n: int, seed: int) -> np.ndarray:
    """Random 64-bit hashes, a third of them copies of others with 0-12 bits flipped."""
    rng = np.random.default_rng(seed)
    hashes = rng.integers(-(2**63), 2**63, n, dtype=np.int64, endpoint=False)
    targets = rng.choice(n, n // 3, replace=False)
    for target, flips in zip(targets, rng.integers(0, 13, len(targets)), strict=True):
        bits = rng.choice(64, flips, replace=False).astype(np.uint64)
        mask = np.bitwise_or.reduce(np.uint64(1) << bits, initial=np.uint64(0))
        hashes[target] = hashes[rng.integers(n)] ^ mask.view(np.int64)
    return hashes


def _brute_force(hashes: np.ndarray, radius: int) -> tuple[np.ndarray, ...]:
    u = hashes.view(np.uint64)
    out = []
    for start in range(0, len(u), 1024):
        dist = np.bitwise_count(u[start : start + 1024, None] ^ u[None, :])
        a, b = np.nonzero(dist <= radius)
        upper = a + start < b
        out.append((a[upper] + start, b[upper], dist[a[upper], b[upper]]))
    i, j, d = (np.concatenate(x) for x in zip(*out, strict=True))
    return i, j, d.astype(np.int32)


def _assert_same(got: tuple[np.ndarray, ...], want: tuple[np.ndarray, ...]) -> None:
    assert [x.dtype for x in got] == [np.int64, np.int64, np.int32]
    for g, w in zip(got, want, strict=True):
        np.testing.assert_array_equal(g, w)


@pytest.fixture(scope="module")
def planted():
    return _planted_hashes(5000, seed=0)


@pytest.mark.parametrize("radius", [0, 1, 2, 3, 4, 6, 8, 12])
def test_hamming_pairs_equal_brute_force(planted, radius):
    want = _brute_force(planted, radius)
    assert len(want[0]) > 100
    _assert_same(hamming_pairs(planted, radius), want)


@pytest.mark.parametrize("radius", [4, 6])
def test_every_multi_hash_plan_is_exact(monkeypatch, radius):
    """Each pigeonhole split faiss may be given (nhash substrings, radius // nhash flips)."""
    hashes = _planted_hashes(2000, seed=radius)
    want = _brute_force(hashes, radius)
    for nhash in range(2, radius + 2):
        monkeypatch.setattr(hashdedup, "_search_plan", lambda n, r, p=(nhash, radius // nhash): p)
        _assert_same(hamming_pairs(hashes, radius), want)


def test_large_collections_use_the_multi_hash_index():
    for n in (10**6, 10**8):
        assert hashdedup._search_plan(n, PHASH_MAX_DISTANCE) is not None


def test_hamming_pairs_edge_cases():
    empty = (np.empty(0, np.int64), np.empty(0, np.int64), np.empty(0, np.int32))
    for n in (0, 1):
        _assert_same(hamming_pairs(np.zeros(n, np.int64), 4), empty)
    same = np.full(40, -(2**63), np.int64)
    i, j, d = hamming_pairs(same, 0)
    assert len(i) == 40 * 39 // 2 and not d.any()
    assert len(hamming_pairs(_planted_hashes(300, 1), 64)[0]) == 300 * 299 // 2
    with pytest.raises(ValueError, match="int64"):
        hamming_pairs(np.zeros(3, np.uint64), 2)
    with pytest.raises(ValueError, match="max_distance"):
        hamming_pairs(np.zeros(3, np.int64), 65)


# --- grouping ---------------------------------------------------------------------------------


def test_near_duplicates_components_and_priority():
    pairs = (np.array([0, 1, 3]), np.array([1, 2, 4]), np.array([3, 5, 2]))
    kept, distance = near_duplicates(6, pairs)
    assert kept.tolist() == [0, 0, 0, 3, 3, 5] and kept.dtype == np.int64
    assert distance.tolist() == [0, 3, -1, 0, 2, 0] and distance.dtype == np.int32
    kept, distance = near_duplicates(6, pairs, np.array([0.1, 0.9, 0.5, 0.2, 0.2, 0.0]))
    assert kept.tolist() == [1, 1, 1, 3, 3, 5]  # 3 and 4 tie: lowest index
    assert distance.tolist() == [3, 0, 5, 0, 2, 0]


def test_near_duplicates_non_transitive_rule():
    pairs = (np.array([0, 1]), np.array([1, 2]), np.array([4, 2]))  # chain 0 - 1 - 2
    priority = np.array([0.9, 0.1, 0.5])
    assert [x.tolist() for x in near_duplicates(3, pairs, priority)] == [[0, 0, 0], [0, 4, -1]]
    kept, distance = near_duplicates(3, pairs, priority, transitive=False)
    assert kept.tolist() == [0, 2, 2] and distance.tolist() == [0, 2, 0]  # 1 -> nearest better


def test_near_duplicates_without_pairs_and_bad_input():
    empty = (np.empty(0, np.int64),) * 3
    for transitive in (True, False):
        kept, distance = near_duplicates(3, empty, transitive=transitive)
        assert kept.tolist() == [0, 1, 2] and distance.tolist() == [0, 0, 0]
    assert near_duplicates(0, empty)[0].tolist() == []
    with pytest.raises(ValueError, match="indices"):
        near_duplicates(2, (np.array([0]), np.array([2]), np.array([1])))
