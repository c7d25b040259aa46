"""Scene sampling of a video's frames: which frames stand for the video, and for how long.

Every decoded frame is shrunk to a small colour thumbnail and compared with the last kept
one. A frame is kept when enough of the thumbnail changed (a cut, or a thing that appears,
moves or leaves) or when ``max_interval_s`` passed since the last kept frame; past ``cap``
kept frames, the one that changed least from the one before it is merged into that one.
"""

from __future__ import annotations

import math

import numpy as np
from PIL import Image

# The thumbnail every decoded frame is compared on (in colour: a red thing that turns blue
# barely changes in grey).
THUMB_SIDE = 32
# A thumbnail pixel whose largest channel moved by more than this share of the range has
# changed (codec noise, averaged over a thumbnail pixel's many source pixels, stays under).
PIXEL_CHANGE = 0.1
# The share of changed thumbnail pixels that counts as a new scene: a small thing that
# appears, leaves or moves (a mean difference over the picture would miss it).
SCENE_CHANGE = 0.01


class FrameSampler:
    """Keeps frames at scene changes and at least every ``max_interval_s``, at most ``cap``:
    over the cap, the kept frame that changed least from the one before goes."""

    def __init__(self, cap: int, max_interval_s: float, threshold: float = SCENE_CHANGE) -> None:
        if cap < 1 or max_interval_s <= 0:
            raise ValueError("keep at least one frame, at a positive interval")
        self.cap = cap
        self.max_interval_s = max_interval_s
        self.threshold = threshold
        self._times: list[float] = []
        self._changes: list[float] = []  # how much each kept frame differs from the one before
        self._images: list[Image.Image | None] = []
        self._last_thumb: np.ndarray | None = None

    def offer(self, t: float, thumb: np.ndarray) -> bool:
        """Whether the frame at ``t`` (its thumbnail) is kept: then ``attach`` its image."""
        small = thumb.astype(np.float32) / 255.0
        if self._last_thumb is None:
            change = math.inf  # the first frame is always kept, never merged away
        else:
            moved = np.abs(small - self._last_thumb)
            per_pixel = moved.max(axis=-1) if moved.ndim == 3 else moved  # (h, w, rgb) or grey
            change = float((per_pixel > PIXEL_CHANGE).mean())
            long_since = t - self._times[-1] >= self.max_interval_s
            if change < self.threshold and not long_since:
                return False
        self._last_thumb = small
        self._times.append(t)
        self._changes.append(change)
        self._images.append(None)
        return True

    def attach(self, image: Image.Image) -> None:
        """The image of the frame ``offer`` just kept; the least changed goes over the cap."""
        self._images[-1] = image
        if len(self._times) > self.cap:
            drop = int(np.argmin(self._changes[1:])) + 1
            if drop + 1 < len(self._changes):
                # The next frame now follows the one before the dropped: it changed at least
                # as much from that one, as far as we know.
                self._changes[drop + 1] = max(self._changes[drop + 1], self._changes[drop])
            del self._times[drop], self._changes[drop], self._images[drop]

    def result(self) -> tuple[list[float], list[Image.Image]]:
        """Times and images of the kept frames, in order."""
        images = [i for i in self._images if i is not None]
        if len(images) != len(self._times):
            raise RuntimeError("a kept frame has no image: attach follows every True offer")
        return list(self._times), images
