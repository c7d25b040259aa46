"""decode_image's shrinking right after decoding, and its budgets of decoded bytes."""

from __future__ import annotations

import gc
import io

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from PIL import Image, ImageFile

from models.errors import MediaTooLargeError, Overloaded
from models.media.budget import MB, DecodeBudget, RequestBudget
from models.media.image import KEPT_SIDES, decode_image, held_bytes, kept_size, shrink_factor
from tests.factories import IMAGE_MODES, TRANSPARENT_IMAGE_CASES, alpha_mask, image_case

LIMIT = 64_000_000


def bomb(side: int = 8000, mode: str = "L") -> bytes:
    """A PNG of side x side zeros: tens of KB that decode to side² pixels."""
    buffer = io.BytesIO()
    Image.new(mode, (side, side)).save(buffer, "PNG", optimize=True)
    return buffer.getvalue()


def budget(
    capacity_mb: float = 512, request_mb: float = 512, wait_s: float = 0.05
) -> RequestBudget:
    """A request's budget in a process budget of its own."""
    process = DecodeBudget(int(capacity_mb * MB), wait_s=wait_s)
    return RequestBudget(process, int(request_mb * MB))


# --- shrinking ---


def test_a_pixel_bomb_is_shrunk_right_after_decoding() -> None:
    data = bomb()
    assert len(data) < 100_000
    image = decode_image(data, max_pixels=LIMIT, min_side=448, shrink_to=224)
    assert image.mode == "RGB"
    assert image.size == (229, 229)  # 8000 / 35: the largest factor that keeps 224
    assert held_bytes(image) < MB  # 8000 x 8000 in RGB would hold 256 MB


@given(
    width=st.integers(1, 40_000),
    height=st.integers(1, 40_000),
    side=st.integers(8, 600),
)
def test_shrinking_keeps_the_shorter_side_and_bounds_the_longer(
    width: int, height: int, side: int
) -> None:
    short, long = sorted((width, height))
    factor = shrink_factor((width, height), side)
    kept_short, kept_long = sorted(kept_size((width, height), factor))
    assert factor >= 1
    assert kept_long <= max(KEPT_SIDES * side, 1)
    if short < 2 * side and long <= KEPT_SIDES * side:
        assert factor == 1  # nothing to gain: kept as decoded
    if short >= side and long <= KEPT_SIDES * side * (short // side):
        # Not a long panorama: the shorter side stays at least `side`, under twice it.
        assert side <= kept_short < 2 * side + 1


@pytest.mark.parametrize("name", IMAGE_MODES)
def test_every_case_shrinks_like_its_full_decode_averaged(name: str) -> None:
    # 64 x 48 by 4: palettes, key colours, alpha, 16 bits and EXIF all shrink as they decode.
    data = image_case(name)
    full = decode_image(data, max_pixels=LIMIT)
    small = decode_image(data, max_pixels=LIMIT, shrink_to=12)
    assert small.mode == "RGB"
    assert small.size == kept_size(full.size, 4)
    expected = np.asarray(full.reduce(4)).astype(int)
    assert np.abs(np.asarray(small).astype(int) - expected).mean() < 4


@pytest.mark.parametrize("name", TRANSPARENT_IMAGE_CASES)
def test_transparent_areas_stay_white_when_shrunk(name: str) -> None:
    pixels = np.asarray(decode_image(image_case(name), max_pixels=LIMIT, shrink_to=12))
    hidden = alpha_mask()[::4, ::4] == 0  # the left quarter: whole 4 x 4 boxes
    assert pixels[hidden].min() >= 250


def test_a_long_panorama_keeps_a_bounded_longer_side() -> None:
    buffer = io.BytesIO()
    Image.new("RGB", (60_000, 300)).save(buffer, "PNG")
    image = decode_image(buffer.getvalue(), max_pixels=LIMIT, shrink_to=224)
    # By 17, the least factor that brings 60000 under 16 x 224 = 3584.
    assert image.size == (3530, 18)
    assert KEPT_SIDES * 224 == 3584


def test_without_shrink_to_nothing_is_shrunk() -> None:
    assert decode_image(bomb(1000), max_pixels=LIMIT, min_side=8).size == (1000, 1000)


# --- budgets ---


def test_the_image_keeps_its_bytes_reserved_until_it_is_dropped() -> None:
    request = budget()
    image = decode_image(bomb(), max_pixels=LIMIT, shrink_to=224, budget=request)
    assert request.process.used == held_bytes(image) == request.used
    del image
    gc.collect()
    assert request.process.used == 0


def test_a_request_over_its_budget_is_refused_before_decoding(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    data = bomb()
    request = budget(request_mb=0.5)  # two 229 x 229 images (210 KB each) fit, not three
    kept = [decode_image(data, max_pixels=LIMIT, shrink_to=224, budget=request) for _ in "ab"]

    def refuse(self: Image.Image) -> None:
        raise AssertionError("pixels were decoded")

    monkeypatch.setattr(ImageFile.ImageFile, "load", refuse)
    with pytest.raises(MediaTooLargeError, match=r"with the 2 input\(s\) before it.*fewer"):
        decode_image(data, max_pixels=LIMIT, shrink_to=224, budget=request)
    assert request.inputs == 2
    assert request.process.used == sum(held_bytes(image) for image in kept)


def test_a_decode_that_could_never_fit_the_process_is_413() -> None:
    # The full-size L pixels alone are 64 MB.
    with pytest.raises(MediaTooLargeError, match="more than the 32 MB this server decodes"):
        decode_image(bomb(), max_pixels=LIMIT, shrink_to=224, budget=budget(capacity_mb=32))


def test_a_full_process_budget_answers_overloaded_and_keeps_nothing() -> None:
    request = budget(capacity_mb=100)
    request.process._take(60 * MB, 60 * MB, "another request")
    with pytest.raises(Overloaded, match="retry shortly"):
        decode_image(bomb(), max_pixels=LIMIT, shrink_to=224, budget=request)
    assert request.process.used == 60 * MB
    assert request.used == 0


def test_a_failed_decode_gives_its_bytes_back() -> None:
    request = budget()
    with pytest.raises(Exception):  # noqa: B017 - whatever a cut-off PNG raises
        decode_image(bomb()[:-40], max_pixels=LIMIT, shrink_to=224, budget=request)
    assert request.process.used == 0
    assert request.used == 0


def test_a_shrunk_image_embeds_like_its_full_decode() -> None:
    from models.encoders.registry import load_model
    from models.synth.world.images import render_scene, sample_scene

    encoder = load_model("mmr-mini", device="cpu").encoder
    rng = np.random.default_rng(3)
    scene = render_scene(sample_scene(rng, two_shapes=1.0), rng, style="shifted", clean=True)
    buffer = io.BytesIO()
    scene.resize((2400, 1800), Image.Resampling.BICUBIC).save(buffer, "PNG", compress_level=1)
    full = decode_image(buffer.getvalue(), max_pixels=LIMIT)
    small = decode_image(buffer.getvalue(), max_pixels=LIMIT, shrink_to=encoder.image_size)
    assert small.size == (86, 65)  # by 28: 1800 / 28 >= 64 > 1800 / 29
    a, b = encoder.encode_images([full, small])
    assert float(a @ b / np.linalg.norm(a) / np.linalg.norm(b)) >= 0.99
