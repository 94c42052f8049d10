"""pairsift.io.images against the real files in tests/data: docs/design.md §7 (reliability rules)
and the expected outcome of each file in tests/data/README.md."""

from __future__ import annotations

import contextlib
import io
import pickle
import time
import zlib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageFile

from pairsift.io import images
from pairsift.io.images import (
    DEFAULT_MAX_PIXELS,
    DecodedImage,
    ImageDecodeError,
    decode_image,
    image_extension,
    probe_image,
)

DATA = Path(__file__).resolve().parent / "data"  # see data/README.md
BAD_EXIF = pytest.mark.filterwarnings("ignore:Corrupt EXIF data")  # Pillow warns; not a failure

# tests/data/README.md: "error" fixtures and their reason.
ERRORS = [
    ("pillow/truncated_jpeg.jpg", "truncated"),
    ("pillow/truncated_image.png", "truncated"),
    ("pillow/truncated_end_chunk.png", "truncated"),
    ("pillow/broken_data_stream.png", "corrupt"),
    ("pillow/broken.png", "unidentified"),
    ("pillow/zero_width.gif", "unidentified"),
    ("pillow/decompression_bomb.gif", "decompression_bomb"),
    ("imagededup/mixed_images/ukbench09268_corrupt.jpg", "unidentified"),
]

# tests/data/README.md: "readable" fixtures, with their upright size and format from bytes.
READABLE = [
    ("pillow/pil_sample_cmyk.jpg", (100, 100), "JPEG"),
    ("pillow/hopper_gray.jpg", (128, 128), "JPEG"),
    ("pillow/hopper_orientation_3.jpg", (128, 128), "JPEG"),
    ("pillow/hopper_orientation_6.jpg", (128, 128), "JPEG"),
    ("pillow/hopper_orientation_8.jpg", (128, 128), "JPEG"),
    pytest.param("pillow/hopper_bad_exif.jpg", (500, 500), "JPEG", marks=BAD_EXIF),
    ("pillow/truncated_app14.jpg", (100, 100), "JPEG"),
    ("pillow/hopper_idat_after_image_end.png", (128, 128), "PNG"),
    ("pillow/16bit.cropped.tif", (64, 64), "TIFF"),
    ("pillow/tiff_16bit_RGB.tiff", (100, 40), "TIFF"),
    ("pillow/p_trns_single.png", (64, 64), "PNG"),
    ("pillow/uncompressed_la.png", (128, 128), "PNG"),
    ("pillow/pil123rgba.png", (162, 150), "PNG"),
    ("pillow/iss634.gif", (245, 245), "GIF"),
    ("pillow/tiny.png", (4, 4), "PNG"),
    ("imagededup/base_images/ukbench00120.jpg", (640, 480), "JPEG"),
    ("imagededup/base_images/ukbench01380.jpg", (640, 480), "JPEG"),
    ("imagededup/base_images/ukbench08976.jpg", (640, 480), "JPEG"),
    ("imagededup/base_images/ukbench09012.jpg", (640, 480), "JPEG"),
    ("imagededup/base_images/ukbench09268.jpg", (480, 640), "JPEG"),
    ("imagededup/mixed_images/ukbench00120_hflip.jpg", (640, 480), "JPEG"),
    ("imagededup/mixed_images/ukbench00120_resize.jpg", (300, 300), "JPEG"),
    ("imagededup/mixed_images/ukbench00120_rotation.jpg", (640, 480), "JPEG"),
    ("imagededup/ukbench00120_gray.jpg", (640, 480), "JPEG"),
    ("imagededup/formats_images/ukbench09380.png", (640, 480), "JPEG"),
    ("imagededup/formats_images/ukbench09380.webp", (640, 480), "WEBP"),
    ("imagededup/formats_images/baboon.pgm", (512, 512), "PPM"),
    ("imagededup/formats_images/copyleft.tiff", (220, 220), "TIFF"),
    ("imagededup/formats_images/giphy.gif", (314, 400), "GIF"),
    ("imagededup/alpha_channel_image.png", (640, 480), "PNG"),
    ("data-juicer/img1.png", (336, 336), "PNG"),
    ("data-juicer/img2.jpg", (640, 480), "JPEG"),
    ("data-juicer/img3.jpg", (342, 500), "JPEG"),
    ("data-juicer/img_pair_1.jpg", (1024, 1024), "JPEG"),
    ("data-juicer/cat.jpg", (640, 480), "JPEG"),
    ("data-juicer/blip.jpg", (2048, 1365), "JPEG"),
]


def read(name: str) -> bytes:
    return (DATA / name).read_bytes()


def pixels(decoded: DecodedImage) -> np.ndarray:
    return np.asarray(decoded.image).astype(np.int64)


def raw(name: str) -> Image.Image:
    """The file as Pillow opens it: no orientation, no mode conversion."""
    return Image.open(io.BytesIO(read(name)))


def encode(im: Image.Image, fmt: str = "PNG") -> bytes:
    buf = io.BytesIO()
    im.save(buf, fmt)
    return buf.getvalue()


def reason_of(data: bytes, **kwargs: object) -> str:
    with pytest.raises(ImageDecodeError) as caught:
        decode_image(data, **kwargs)  # type: ignore[arg-type]
    return caught.value.reason


@pytest.mark.parametrize(("name", "reason"), ERRORS)
def test_error_fixture_gets_its_reason(name: str, reason: str) -> None:
    """tests/data/README.md: every error fixture gets its reason, from decode and probe."""
    data = read(name)
    assert reason_of(data) == reason
    assert reason_of(data, draft=(64, 64)) == reason
    with pytest.raises(ImageDecodeError) as caught:
        probe_image(data)
    assert caught.value.reason == reason
    assert caught.value.message  # the underlying exception text travels with it


@pytest.mark.parametrize(("name", "size", "fmt"), READABLE)
def test_readable_fixture_is_upright_rgb(name: str, size: tuple[int, int], fmt: str) -> None:
    """tests/data/README.md: readable fixtures decode to loaded RGB of the upright size."""
    decoded = decode_image(read(name))
    assert decoded.image.mode == "RGB"
    assert (decoded.width, decoded.height) == size == decoded.image.size
    assert decoded.format == fmt
    assert np.asarray(decoded.image).shape == (size[1], size[0], 3)


@pytest.mark.parametrize(("name", "size", "fmt"), READABLE)
def test_probe_reports_full_size(name: str, size: tuple[int, int], fmt: str) -> None:
    """Probe accepts what decode accepts and reports the full upright size, not the draft's."""
    probed = probe_image(read(name))
    assert (probed.width, probed.height) == size
    assert probed.format == fmt
    assert probed.image.mode == "RGB"
    assert probed.image.width <= size[0] and probed.image.height <= size[1]


def test_empty_bytes() -> None:
    """docs/design.md §7: zero bytes is a reason, not a crash."""
    assert reason_of(b"") == "empty"
    with pytest.raises(ImageDecodeError, match="empty"):
        probe_image(b"")


def test_message_names_no_buffer() -> None:
    """Pillow names the BytesIO it was given (``<_io.BytesIO object at 0x7f…>``): that says
    nothing about the file and differs between identical runs, so it is left out."""
    with pytest.raises(ImageDecodeError) as caught:
        probe_image(b"not an image at all")
    assert caught.value.message == "UnidentifiedImageError: cannot identify image file"


@pytest.mark.parametrize("orientation", [3, 6, 8])
def test_exif_orientation_matches_upright_hopper(orientation: int) -> None:
    """docs/design.md §7: EXIF orientation applied; the upright hopper PNG is the reference."""
    reference = pixels(decode_image(read("pillow/hopper_idat_after_image_end.png")))
    name = f"pillow/hopper_orientation_{orientation}.jpg"
    upright = pixels(decode_image(read(name)))
    stored = np.asarray(raw(name).convert("RGB")).astype(np.int64)
    assert np.abs(upright - reference).mean() < 10  # JPEG noise only
    assert np.abs(stored - reference).mean() > 40  # the test means something


def test_orientation_6_is_stored_pixels_rotated_clockwise() -> None:
    """EXIF orientation 6 = rotate the stored pixels 90° clockwise (docs/design.md §7)."""
    name = "pillow/hopper_orientation_6.jpg"
    stored = np.asarray(raw(name).convert("RGB"))
    np.testing.assert_array_equal(np.asarray(decode_image(read(name)).image), np.rot90(stored, -1))


def test_ukbench09268_is_portrait_after_orientation() -> None:
    """tests/data/README.md: ukbench09268.jpg is stored 640x480, upright 480x640."""
    name = "imagededup/base_images/ukbench09268.jpg"
    assert raw(name).size == (640, 480)
    assert decode_image(read(name)).image.size == (480, 640)
    probed = probe_image(read(name))
    assert (probed.width, probed.height) == (480, 640)
    assert probed.image.width < probed.image.height  # the draft image is upright too


@pytest.mark.filterwarnings("error")
def test_bad_exif_does_not_fail_even_when_warnings_are_errors() -> None:
    """tests/data/README.md: Pillow's "Corrupt EXIF data" warning must not fail the sample."""
    decoded = decode_image(read("pillow/hopper_bad_exif.jpg"))
    assert decoded.image.size == (500, 500)


def test_16bit_grey_tiff_keeps_high_byte() -> None:
    """docs/design.md §7: I;16 is scaled (v >> 8), not clipped at 255 as Pillow's convert does."""
    name = "pillow/16bit.cropped.tif"
    source = np.asarray(raw(name)).astype(np.int64)
    assert raw(name).mode == "I;16" and source.max() > 255
    out = pixels(decode_image(read(name)))
    for channel in range(3):
        np.testing.assert_array_equal(out[..., channel], source >> 8)
    assert out.max() < 255  # clipping would have made this image all white


@pytest.mark.parametrize(("mode", "fmt"), [("I;16", "PNG"), ("I;16B", "TIFF"), ("I", "TIFF")])
def test_16bit_full_range_gradient(mode: str, fmt: str) -> None:
    """Every 16-bit integer mode maps 0..65535 onto 0..255 by v >> 8 (docs/design.md §7)."""
    values = np.linspace(0, 65535, 256 * 4).round().astype(np.int64).reshape(4, 256)
    im = Image.fromarray(values.astype(np.int32), "I").convert(mode)
    out = pixels(decode_image(encode(im, fmt)))
    np.testing.assert_array_equal(out[..., 0], values >> 8)
    assert out.min() == 0 and out.max() == 255


def test_16bit_pgm_uses_full_range() -> None:
    """A 16-bit PGM (mode I in Pillow) comes out scaled, 65535 -> 255 and 32768 -> 128."""
    data = b"P5 3 1 65535\n" + np.array([0, 32768, 65535], ">u2").tobytes()
    np.testing.assert_array_equal(pixels(decode_image(data))[0, :, 0], [0, 128, 255])


def test_16bit_rgb_tiff_matches_its_samples() -> None:
    """tiff_16bit_RGB.tiff: each 8-bit channel is the high byte of the stored 16-bit sample
    (the file holds one deflate-compressed 256x256 tile, read here without Pillow)."""
    name = "pillow/tiff_16bit_RGB.tiff"
    tags = raw(name).tag_v2
    offset, length = tags[324][0], tags[325][0]  # TileOffsets, TileByteCounts
    tile = zlib.decompress(read(name)[offset : offset + length])
    samples = np.frombuffer(tile, "<u2").reshape(tags[323], tags[322], 3)[:40, :100]
    out = pixels(decode_image(read(name)))
    np.testing.assert_array_equal(out, samples.astype(np.int64) >> 8)
    assert 10 < out.mean() < 245  # a real picture, neither black nor saturated


def test_palette_transparency_becomes_white() -> None:
    """docs/design.md §7: P with transparency is composited over white."""
    name = "pillow/p_trns_single.png"
    source = raw(name)
    transparent = np.asarray(source) == source.info["transparency"]
    assert transparent.any() and not transparent.all()
    out = np.asarray(decode_image(read(name)).image)
    assert (out[transparent] == 255).all()
    opaque = np.asarray(source.convert("RGB"))[~transparent]
    np.testing.assert_array_equal(out[~transparent], opaque)


@pytest.mark.parametrize("name", ["pillow/uncompressed_la.png", "pillow/pil123rgba.png"])
def test_alpha_modes_over_white(name: str) -> None:
    """LA and RGBA fixtures: fully transparent pixels white, opaque ones unchanged."""
    source = raw(name).convert("RGBA")
    alpha = np.asarray(source)[..., 3]
    out = np.asarray(decode_image(read(name)).image)
    assert (out[alpha == 0] == 255).all()
    opaque = alpha == 255
    np.testing.assert_array_equal(out[opaque], np.asarray(source)[..., :3][opaque])


def test_half_alpha_blends_with_white() -> None:
    """Composited, not dropped: 50% black over white is mid grey (docs/design.md §7)."""
    data = encode(Image.new("RGBA", (2, 2), (0, 0, 0, 128)))
    value = decode_image(data).image.getpixel((0, 0))
    assert value == pytest.approx((127, 127, 127), abs=1)


@pytest.mark.parametrize("mode", ["PA", "LA", "RGBA"])
def test_transparent_pixel_is_white_in_every_alpha_mode(mode: str) -> None:
    """PA (TIFF), LA and RGBA: a fully transparent pixel comes out white."""
    im = Image.new("RGBA", (2, 1), (10, 200, 30, 0)).convert(mode)
    assert decode_image(encode(im, "TIFF")).image.getpixel((0, 0)) == (255, 255, 255)


def test_cmyk_jpeg_converted() -> None:
    """pil_sample_cmyk.jpg: Pillow's own test says its corner pixel is red (c=0, m, y > .8)."""
    out = decode_image(read("pillow/pil_sample_cmyk.jpg")).image
    red, green, blue = out.getpixel((0, 0))
    assert red > 200 and green < 60 and blue < 60


def test_one_bit_image() -> None:
    """Mode 1 becomes black and white RGB."""
    im = Image.fromarray(np.array([[0, 255]], np.uint8)).convert("1")
    np.testing.assert_array_equal(pixels(decode_image(encode(im)))[0], [[0, 0, 0], [255] * 3])


def test_float_image_in_unit_range() -> None:
    """Mode F in [0, 1] is scaled by 255 (a TIFF of floats)."""
    im = Image.fromarray(np.array([[0.0, 0.5, 1.0]], np.float32), "F")
    np.testing.assert_array_equal(pixels(decode_image(encode(im, "TIFF")))[0, :, 0], [0, 128, 255])


def test_unconvertible_mode_is_a_reason() -> None:
    """A mode Pillow cannot convert is ``unsupported_mode`` (no file format stores "La", so
    the private converter is called directly)."""
    with pytest.raises(ImageDecodeError) as caught:
        images._to_rgb(Image.new("La", (2, 2)), 1)
    assert caught.value.reason == "unsupported_mode"


def test_animated_gif_gives_first_frame() -> None:
    """docs/design.md §7: animated images use the first frame."""
    name = "pillow/iss634.gif"
    animation = raw(name)
    assert animation.n_frames == 42
    first = np.asarray(animation.convert("RGB")).astype(np.int64)
    animation.seek(1)
    second = np.asarray(animation.convert("RGB")).astype(np.int64)
    out = pixels(decode_image(read(name)))
    np.testing.assert_array_equal(out, first)
    assert np.abs(out - second).sum() > 0


def test_format_comes_from_bytes_not_extension() -> None:
    """tests/data/README.md: ukbench09380.png holds JPEG bytes; the .webp is the same photo."""
    as_png = decode_image(read("imagededup/formats_images/ukbench09380.png"))
    as_webp = decode_image(read("imagededup/formats_images/ukbench09380.webp"))
    assert as_png.format == "JPEG" and image_extension(as_png.format) == "jpg"
    assert np.abs(pixels(as_png) - pixels(as_webp)).mean() < 5


@pytest.mark.parametrize(
    ("fmt", "ext"),
    [("JPEG", "jpg"), ("MPO", "jpg"), ("PNG", "png"), ("WEBP", "webp"), ("GIF", "gif")]
    + [("TIFF", "tiff"), ("PPM", "ppm"), ("JPEG2000", "jp2"), ("BMP", "bmp"), ("AVIF", "avif")],
)
def test_image_extension(fmt: str, ext: str) -> None:
    assert image_extension(fmt) == ext


def test_bomb_refused_fast_without_pillows_global(monkeypatch: pytest.MonkeyPatch) -> None:
    """docs/design.md §7: the limit is ours, checked from the header; with Pillow's own limit off
    the 4.3-Gpixel GIF is still refused at once, nothing allocated."""
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", None)
    start = time.perf_counter()
    assert reason_of(read("pillow/decompression_bomb.gif")) == "decompression_bomb"
    assert time.perf_counter() - start < 1.0  # allocating 4.3 GB of pixels would not be


def test_max_pixels_is_enforced_per_call() -> None:
    """max_pixels is a per-call limit: exactly at the limit passes, one pixel less fails."""
    data = read("pillow/hopper_gray.jpg")  # 128 x 128
    assert reason_of(data, max_pixels=128 * 128 - 1) == "decompression_bomb"
    with pytest.raises(ImageDecodeError, match="decompression_bomb"):
        probe_image(data, max_pixels=100)
    assert decode_image(data, max_pixels=128 * 128).width == 128
    assert DEFAULT_MAX_PIXELS == 89_478_485


def test_pillow_globals_untouched() -> None:
    """Thread safety (docs/design.md §7): decoding never changes Pillow's global settings."""
    before = (Image.MAX_IMAGE_PIXELS, ImageFile.LOAD_TRUNCATED_IMAGES)
    for name, _ in ERRORS:
        with pytest.raises(ImageDecodeError):
            decode_image(read(name))
    decode_image(read("pillow/hopper_gray.jpg"))
    assert before == (Image.MAX_IMAGE_PIXELS, ImageFile.LOAD_TRUNCATED_IMAGES)
    assert ImageFile.LOAD_TRUNCATED_IMAGES is False


def test_draft_reduces_jpeg_but_not_below_request() -> None:
    """draft is a speed hint: smaller DCT scale, still at least the requested size."""
    decoded = decode_image(read("data-juicer/blip.jpg"), draft=(224, 224))  # 2048 x 1365
    assert 224 <= decoded.height < 1365 and 224 <= decoded.width < 2048
    assert decoded.image.size == (decoded.width, decoded.height)
    assert decode_image(read("pillow/tiny.png"), draft=(1, 1)).width == 4  # not JPEG: ignored
    with pytest.raises(ValueError):  # a caller bug is not reported as bad data
        decode_image(read("pillow/tiny.png"), draft=(0, 0))


def test_draft_request_is_upright() -> None:
    """A portrait request on a portrait (orientation 6) photo keeps both sides >= request."""
    decoded = decode_image(read("imagededup/base_images/ukbench09268.jpg"), draft=(240, 320))
    assert decoded.width >= 240 and decoded.height >= 320
    assert decoded.width < decoded.height


@pytest.mark.parametrize(
    "name",
    [
        "imagededup/base_images/ukbench00120.jpg",
        "data-juicer/img1.png",
        "imagededup/formats_images/ukbench09380.webp",
        "imagededup/formats_images/baboon.pgm",
    ],
)
@pytest.mark.parametrize("fraction", [0.2, 0.5, 0.9, 0.99])
def test_cut_files_are_truncated(name: str, fraction: float) -> None:
    """docs/design.md §7: a file cut short is ``truncated``, never padded, with or without draft."""
    data = read(name)
    cut = data[: int(len(data) * fraction)]
    assert reason_of(cut) == "truncated"
    assert reason_of(cut, draft=(32, 32)) == "truncated"
    with pytest.raises(ImageDecodeError, match="truncated"):
        probe_image(cut)


def test_garbage_never_escapes_as_another_exception() -> None:
    """docs/design.md §7: bad input never crashes: random bytes after a valid header only ever
    raise ImageDecodeError."""
    rng = np.random.default_rng(0)
    for name in ["pillow/hopper_gray.jpg", "pillow/tiny.png", "pillow/iss634.gif"]:
        data = bytearray(read(name)[:4096])
        for _ in range(20):
            spot = int(rng.integers(16, len(data)))
            data[spot] = int(rng.integers(0, 256))
            with contextlib.suppress(ImageDecodeError):  # anything else fails the test
                decode_image(bytes(data))


def _first(entry: object) -> str:
    """File name of a READABLE row, plain tuple or pytest.param."""
    values = getattr(entry, "values", entry)
    return values[0]  # type: ignore[index]


def _outcome(name: str) -> tuple[str, bytes]:
    try:
        return "ok", decode_image(read(name), draft=(64, 64)).image.tobytes()
    except ImageDecodeError as exc:
        return exc.reason, b""


@pytest.mark.filterwarnings("ignore:Corrupt EXIF data")
def test_thread_pool_gives_the_sequential_results() -> None:
    """docs/design.md §7 / decode runs in a thread pool: same outcome as one thread, every time."""
    names = [name for name, _ in ERRORS] + [_first(entry) for entry in READABLE]
    expected = [_outcome(name) for name in names]
    with ThreadPoolExecutor(max_workers=8) as pool:
        for _ in range(3):
            assert list(pool.map(_outcome, names)) == expected


def test_error_is_picklable_and_readable() -> None:
    """Errors cross process boundaries to errors.parquet with reason and message intact."""
    error = ImageDecodeError("truncated", "image file is truncated")
    copy = pickle.loads(pickle.dumps(error))
    assert (copy.reason, copy.message) == ("truncated", "image file is truncated")
    assert str(copy) == "truncated: image file is truncated"
