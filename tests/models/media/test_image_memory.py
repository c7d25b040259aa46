"""What decoding an image really takes, measured, against what ``peak_bytes`` reserves.

Each case decodes in a fresh process, whose peak resident memory (VmHWM, reset just
before the decode) is what the decode took: Pillow's pixels are not Python objects, so
tracemalloc cannot see them.
"""

from __future__ import annotations

import io
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from models.media.budget import MB

SIZE = (3000, 2000)

CHILD = """
import io, sys
from PIL import Image
from models.media.image import decode_image, peak_bytes, shrink_factor

def hwm():
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM"):
            return int(line.split()[1]) * 1024

data = sys.stdin.buffer.read()
with Image.open(io.BytesIO(data)) as img:
    estimate = peak_bytes(img, shrink_factor(img.size, 224))
with open("/proc/self/clear_refs", "w") as refs:
    refs.write("5")  # the high-water mark starts again from what is resident now
before = hwm()
image = decode_image(data, max_pixels=10**8, min_side=448, shrink_to=224)
print(estimate, hwm() - before)
"""


def _gradient(mode: str) -> Image.Image:
    """A smooth SIZE image in ``mode`` (compresses fast, decodes in full)."""
    rng = np.random.default_rng(0)
    small = Image.fromarray(rng.integers(0, 256, (SIZE[1] // 50, SIZE[0] // 50, 3), np.uint8))
    if mode == "P":  # quantised small: quantising millions of pixels takes seconds
        return small.quantize(64).resize(SIZE, Image.Resampling.NEAREST)
    rgb = small.resize(SIZE, Image.Resampling.BILINEAR)
    if mode == "I;16B":
        return Image.fromarray(np.asarray(rgb.convert("L")).astype(">u2") * 257)
    return rgb.convert(mode)


CASES = {
    "rgb_png": ("RGB", "PNG", {"compress_level": 1}),
    "rgba_png": ("RGBA", "PNG", {"compress_level": 1}),
    "p_transparent_png": ("P", "PNG", {"transparency": 0, "compress_level": 1}),
    "l_png": ("L", "PNG", {"compress_level": 1}),
    "webp": ("RGB", "WEBP", {"quality": 80}),
    "i16b_tiff": ("I;16B", "TIFF", {}),
    "gif": ("P", "GIF", {}),
    "bmp": ("RGB", "BMP", {}),
}


def _measure(data: bytes) -> tuple[int, int]:
    """(estimated, measured) peak bytes of decoding ``data`` in a fresh process."""
    root = Path(__file__).resolve().parents[3]
    done = subprocess.run(
        [sys.executable, "-c", CHILD],
        input=data,
        capture_output=True,
        cwd=root,
        check=True,
        timeout=120,
    )
    estimate, measured = done.stdout.split()
    return int(estimate), int(measured)


@pytest.mark.skipif(not Path("/proc/self/clear_refs").exists(), reason="Linux /proc needed")
@pytest.mark.parametrize("case", CASES)
def test_peak_bytes_covers_what_decoding_takes(case: str) -> None:
    mode, fmt, params = CASES[case]
    buffer = io.BytesIO()
    _gradient(mode).save(buffer, fmt, **params)
    estimate, measured = _measure(buffer.getvalue())
    # Pages the interpreter touches on its way count too: a few MB of slack.
    assert measured <= estimate * 1.1 + 4 * MB, (case, estimate / MB, measured / MB)
    # Not a blanket over-estimate either: that would turn away images that fit.
    assert estimate <= measured * 1.6 + 4 * MB, (case, estimate / MB, measured / MB)
