"""decode_image and sniff_image against every image case, broken files and oversized headers."""

from __future__ import annotations

import io
import os
import warnings
import wave

import numpy as np
import pytest
from PIL import Image, ImageFile

from models.errors import MediaTooLargeError, UnsupportedMediaError
from models.media.image import IMAGE_CONTENT_TYPES, _to_rgb, decode_image, sniff_image
from tests.factories import (
    ANIMATED_IMAGE_CASES,
    HIGH_BIT_RANGES,
    IMAGE_MODES,
    IMAGE_SIZE,
    TRANSPARENT_IMAGE_CASES,
    alpha_mask,
    high_bit_values,
    image_bytes,
    image_case,
    image_case_format,
    image_case_size,
    image_pattern,
    png_header_bytes,
    truncated,
)

LIMIT = 1_000_000


def decode(data: bytes, max_pixels: int = LIMIT) -> np.ndarray:
    """Decode and return the pixels, after checking the result is a loaded RGB image."""
    image = decode_image(data, max_pixels=max_pixels)
    assert image.mode == "RGB"
    return np.asarray(image)


def wav_bytes() -> bytes:
    """Return a short silent mono WAV file."""
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(16000)
        out.writeframes(b"\x00\x00" * 1600)
    return buffer.getvalue()


NOT_IMAGES = {
    "empty": b"",
    "text": b"hello, this is a plain text file\n" * 20,
    "bm_text": b"BMW and other brands of car, a text file that starts with BM\n",
    "wav": wav_bytes(),
    "garbage": np.random.default_rng(7).integers(0, 256, 4096, dtype=np.uint8).tobytes(),
}


@pytest.mark.parametrize("name", IMAGE_MODES)
def test_every_case_decodes_to_loaded_rgb_of_expected_size(name: str) -> None:
    image = decode_image(image_case(name), max_pixels=LIMIT)
    assert image.mode == "RGB"
    assert image.size == image_case_size(name)
    # Fully loaded and detached from the upload's buffer.
    assert getattr(image, "fp", None) is None
    pixels = np.asarray(image)
    assert pixels.std() > 10, "the factory images are non-uniform and must stay so"


@pytest.mark.parametrize("name", ["rgb_png", "p_png", "bmp", "cmyk_tiff"])
def test_lossless_cases_keep_their_pixels(name: str) -> None:
    # P is quantised and CMYK goes through Pillow's naive conversion: close, not exact.
    expected = image_pattern().astype(int)
    assert np.abs(decode(image_case(name)).astype(int) - expected).mean() < 3


@pytest.mark.parametrize(
    ("name", "tolerance"), [("rgb_jpeg", 12), ("cmyk_jpeg", 12), ("ycbcr_tiff", 3), ("webp", 25)]
)
def test_lossy_and_converted_cases_are_close_to_the_source(name: str, tolerance: int) -> None:
    # Mean absolute error per channel; a wrong colour conversion is off by far more.
    expected = image_pattern().astype(int)
    assert np.abs(decode(image_case(name)).astype(int) - expected).mean() < tolerance


def test_seeds_give_different_images() -> None:
    assert not np.array_equal(decode(image_case("rgb_png")), decode(image_case("rgb_png", seed=1)))


def test_exif_orientation_is_applied() -> None:
    pixels = decode(image_case("exif_rotated_jpeg"))
    width, height = IMAGE_SIZE
    assert pixels.shape == (width, height, 3)  # rows = stored width: the size is swapped
    # Orientation 6 = rotate 90 degrees clockwise: the stored top-left block lands top-right.
    corner = pixels[2:14, -14:-2].mean(axis=(0, 1))
    assert corner[0] > 200 and corner[1] < 60 and corner[2] < 60


@pytest.mark.parametrize(
    ("name", "mode"),
    [("i16_png", "I;16"), ("i16b_tiff", "I;16B"), ("i32_tiff", "I"), ("f_tiff", "F")],
)
def test_high_bit_depth_is_scaled_by_its_range_not_clipped(name: str, mode: str) -> None:
    pixels = decode(image_case(name))
    assert (pixels[..., 0] == pixels[..., 1]).all() and (pixels[..., 1] == pixels[..., 2]).all()
    grey = pixels[..., 0].astype(float)
    low, high = HIGH_BIT_RANGES[mode]
    expected = (high_bit_values(mode).astype(float) - low) * 255 / (high - low)
    assert np.abs(grey - expected).max() <= 1
    # Not saturated: a real spread of values, both ends reached.
    assert grey.std() > 30 and grey.min() == 0 and grey.max() == 255


def test_narrow_range_16_bit_png_is_stretched() -> None:
    # A 12-bit sensor's values in a 16-bit container: clipping or /257 would give near-black.
    values = 1000 + (high_bit_values("I;16").astype(np.int64) * 3000 // 65535)
    buffer = io.BytesIO()
    Image.fromarray(values.astype(np.uint16)).save(buffer, "PNG")
    grey = decode(buffer.getvalue())[..., 0]
    assert grey.min() == 0 and grey.max() == 255


@pytest.mark.parametrize(("value", "expected"), [(0, 0), (65535, 255), (32768, 128)])
def test_flat_16_bit_image_uses_the_full_scale(value: int, expected: int) -> None:
    buffer = io.BytesIO()
    Image.fromarray(np.full((48, 64), value, dtype=np.uint16)).save(buffer, "PNG")
    assert (decode(buffer.getvalue()) == expected).all()


def test_float_image_with_nan_and_inf_uses_the_finite_range() -> None:
    values = high_bit_values("F")
    values[0, :3] = (np.nan, np.inf, -np.inf)
    buffer = io.BytesIO()
    Image.fromarray(values).save(buffer, "TIFF")
    grey = decode(buffer.getvalue())[..., 0]
    assert grey.std() > 30
    assert tuple(grey[0, :3]) == (0, 255, 0)


@pytest.mark.parametrize("name", TRANSPARENT_IMAGE_CASES)
def test_transparent_areas_become_white(name: str) -> None:
    pixels = decode(image_case(name))
    hidden = alpha_mask() == 0
    # Under the transparent quarter the stored colour is black: white means it was composited.
    assert pixels[hidden].min() >= 250
    assert pixels[~hidden].mean() < 200


def test_opaque_pixels_survive_compositing() -> None:
    pixels = decode(image_case("rgba_png"))
    opaque = alpha_mask() == 255
    assert np.array_equal(pixels[opaque], image_pattern()[opaque])


def test_palette_transparency_given_per_entry_is_applied() -> None:
    indices = np.zeros((48, 64), np.uint8)
    indices[:, 16:32] = 1
    indices[:, 32:] = 2
    image = Image.frombytes("P", (64, 48), indices.tobytes())
    image.putpalette([0, 0, 0, 0, 0, 0, 200, 10, 10])
    buffer = io.BytesIO()
    image.save(buffer, "PNG", transparency=bytes([0, 128, 255]))  # clear, half, opaque
    pixels = decode(buffer.getvalue())
    assert tuple(pixels[0, 0]) == (255, 255, 255)
    assert all(abs(int(v) - 127) <= 1 for v in pixels[0, 20])
    assert tuple(pixels[0, 40]) == (200, 10, 10)


@pytest.mark.parametrize("mode", ["L", "RGB"])
def test_transparent_key_colour_becomes_white(mode: str) -> None:
    grey = np.where(alpha_mask() == 0, 0, 120).astype(np.uint8)
    image = Image.fromarray(grey).convert(mode)
    buffer = io.BytesIO()
    image.save(buffer, "PNG", transparency=0 if mode == "L" else (0, 0, 0))
    pixels = decode(buffer.getvalue())
    assert (pixels[alpha_mask() == 0] == 255).all()
    assert (pixels[alpha_mask() == 255] == 120).all()


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        (Image.new("LA", (4, 4), (200, 0)).convert("La"), (255, 255, 255)),
        (Image.new("LA", (4, 4), (200, 128)).convert("La"), (227, 227, 227)),
        (Image.new("RGBA", (4, 4), (200, 0, 0, 128)).convert("RGBa"), (227, 127, 127)),
    ],
)
def test_premultiplied_alpha_is_composited(
    source: Image.Image, expected: tuple[int, int, int]
) -> None:
    # No accepted file format stores La/RGBa; the converter still has to handle them.
    result = _to_rgb(source).getpixel((0, 0))
    assert isinstance(result, tuple)
    assert all(abs(a - b) <= 2 for a, b in zip(result, expected, strict=True))


@pytest.mark.parametrize("name", ANIMATED_IMAGE_CASES)
def test_animated_images_give_the_first_frame(name: str) -> None:
    red, green, blue = decode(image_case(name)).reshape(-1, 3).mean(axis=0)
    assert red > 150 and green < 100 and blue < 100


# Animated cases are left out: cut after their first frame they still decode, correctly.
@pytest.mark.parametrize("name", [n for n in IMAGE_MODES if n not in ANIMATED_IMAGE_CASES])
def test_truncated_files_are_refused(name: str) -> None:
    with pytest.raises(UnsupportedMediaError, match="could not decode the image"):
        decode_image(truncated(image_case(name)), max_pixels=LIMIT)


def test_truncation_is_not_papered_over_globally() -> None:
    assert ImageFile.LOAD_TRUNCATED_IMAGES is False


@pytest.mark.parametrize("name", sorted(NOT_IMAGES))
def test_non_images_are_refused(name: str) -> None:
    with pytest.raises(UnsupportedMediaError) as caught:
        decode_image(NOT_IMAGES[name], max_pixels=LIMIT)
    message = str(caught.value)
    assert "could not decode the image" in message
    assert all(mime in message for mime in IMAGE_CONTENT_TYPES.values())


@pytest.mark.parametrize("fmt", ["PPM", "PCX", "ICO", "TGA"])
def test_formats_pillow_reads_but_we_do_not_accept_are_refused(fmt: str) -> None:
    buffer = io.BytesIO()
    Image.fromarray(image_pattern()).save(buffer, fmt)
    with pytest.raises(UnsupportedMediaError):
        decode_image(buffer.getvalue(), max_pixels=LIMIT)


def test_image_over_the_limit_is_refused_with_size_and_limit() -> None:
    with pytest.raises(MediaTooLargeError, match=r"64x48 = 3072 pixels.*limit of 3071 pixels"):
        decode_image(image_case("rgb_png"), max_pixels=3071)
    assert decode_image(image_case("rgb_png"), max_pixels=3072).size == (64, 48)


def test_limit_is_checked_from_the_header_before_decoding() -> None:
    data = png_header_bytes(5000, 5000)
    with pytest.raises(MediaTooLargeError, match="5000x5000"):
        decode_image(data, max_pixels=LIMIT)
    # The body is junk: had the pixels been decoded, the answer would have been a 415.
    with pytest.raises(UnsupportedMediaError):
        decode_image(data, max_pixels=5000 * 5000)


def test_limit_check_does_not_load_pixels(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_load(self: ImageFile.ImageFile) -> None:
        raise AssertionError("load() called for an image over the limit")

    monkeypatch.setattr(ImageFile.ImageFile, "load", no_load)
    for name in IMAGE_MODES:
        with pytest.raises(MediaTooLargeError):
            decode_image(image_case(name), max_pixels=100)


@pytest.mark.parametrize("side", [10_000, 20_000, 100_000])
def test_pillow_bomb_warning_and_error_become_media_too_large(side: int) -> None:
    # 10k^2 is past Pillow's warning threshold, 20k^2 and 100k^2 past its own hard error.
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(MediaTooLargeError):
            decode_image(png_header_bytes(side, side), max_pixels=LIMIT)


def test_pillow_bomb_warning_never_escapes_within_our_limit(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # 3072 pixels: over a lowered Pillow warning threshold, under its error threshold and ours.
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 2000)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert decode_image(image_case("rgb_png"), max_pixels=10_000).size == (64, 48)


@pytest.mark.parametrize("name", IMAGE_MODES)
def test_sniff_recognises_each_case(name: str) -> None:
    assert sniff_image(image_case(name)) == IMAGE_CONTENT_TYPES[image_case_format(name)]


@pytest.mark.parametrize("name", sorted(NOT_IMAGES))
def test_sniff_returns_none_for_non_images(name: str) -> None:
    assert sniff_image(NOT_IMAGES[name]) is None


def test_sniff_does_not_decode() -> None:
    assert sniff_image(png_header_bytes(100_000, 100_000)) == "image/png"
    assert sniff_image(truncated(image_case("rgb_jpeg"))) == "image/jpeg"


def test_image_bytes_defaults_cover_every_mode() -> None:
    for mode in ["1", "L", "P", "LA", "RGB", "RGBA", "PA", "CMYK", "YCbCr", "I;16", "I", "F"]:
        data = image_bytes(mode, size=(80, 64), seed=3)
        assert Image.open(io.BytesIO(data)).mode == mode
        assert decode_image(data, max_pixels=LIMIT).size == (80, 64)


def test_garbage_after_a_valid_magic_is_refused() -> None:
    data = b"\x89PNG\r\n\x1a\n" + os.urandom(512)
    assert sniff_image(data) == "image/png"
    with pytest.raises(UnsupportedMediaError):
        decode_image(data, max_pixels=LIMIT)


def _big_jpeg(seed: int = 0) -> bytes:
    """A 12-megapixel JPEG of a shapes scene (smooth regions and sharp edges, like a photo)."""
    from models.synth.world.images import render_scene, sample_scene

    rng = np.random.default_rng(seed)
    scene = render_scene(sample_scene(rng, two_shapes=1.0), rng, style="shifted", clean=True)
    buffer = io.BytesIO()
    scene.resize((4000, 3000), Image.Resampling.BICUBIC).save(buffer, "JPEG", quality=90)
    return buffer.getvalue()


def test_a_large_jpeg_decodes_at_a_reduced_scale_with_the_same_embedding() -> None:
    from models.encoders.registry import load_model

    data = _big_jpeg()
    full = decode_image(data, max_pixels=64_000_000)
    reduced = decode_image(data, max_pixels=64_000_000, min_side=128)
    assert full.size == (4000, 3000)
    assert reduced.size == (500, 375)  # the 1/8 DCT scale: the smallest with a side >= 128
    encoder = load_model("mmr-mini", device="cpu").encoder
    a, b = encoder.encode_images([full, reduced])
    assert float(a @ b / np.linalg.norm(a) / np.linalg.norm(b)) >= 0.99


def test_reduced_decoding_keeps_at_least_the_requested_side() -> None:
    data = _big_jpeg(1)
    assert min(decode_image(data, max_pixels=64_000_000, min_side=448).size) >= 448
    assert decode_image(data, max_pixels=64_000_000, min_side=5000).size == (4000, 3000)
    png = image_bytes("RGB", fmt="PNG")  # only JPEG has DCT scales: others decode in full
    assert decode_image(png, max_pixels=64_000_000, min_side=8).size == IMAGE_SIZE
