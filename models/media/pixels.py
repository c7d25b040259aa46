"""An open_clip eval transform split where it costs least: geometry per image, arithmetic
per batch.

open_clip preprocesses one image at a time: PIL resizes and crops it, then ``ToTensor`` and
``Normalize`` turn it into floats in a dozen small tensor operations and Python checks. For
a small model that Python costs as much as the forward, and it holds the GIL that every
other request waits for. :class:`Pixels` runs the transform's PIL steps per image as they
are (the same objects, so every resize mode and interpolation is kept), packs the result as
8-bit pixels, and does ``ToTensor``'s scaling and ``Normalize`` once per batch, where the
encoder's batcher has gathered the requests: the same operations in the same order on each
number, so the same floats. The queued batches are a quarter of the size, too.

A transform it does not recognise (anything but PIL steps followed by an RGB conversion,
``ToTensor`` and ``Normalize``) is not split: :meth:`Pixels.of` returns None and the caller
runs it whole.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from PIL import Image
from torchvision import transforms

Step = Callable[[Any], Any]


class Pixels:
    """The PIL steps of a transform (per image) and its normalisation (per batch)."""

    def __init__(self, geometry: Sequence[Step], mean: Sequence[float], std: Sequence[float]):
        self.geometry = list(geometry)
        # Shaped (1, 3, 1, 1) for (n, 3, H, W) batches; Normalize's own constants are float32.
        self.mean = torch.as_tensor(mean, dtype=torch.float32).view(1, -1, 1, 1)
        self.std = torch.as_tensor(std, dtype=torch.float32).view(1, -1, 1, 1)

    @classmethod
    def of(cls, transform: Any) -> Pixels | None:
        """Split an eval transform, or None when it is not one of the known shape."""
        steps = list(getattr(transform, "transforms", None) or [])
        if len(steps) < 3:
            return None
        *geometry, convert, to_tensor, normalize = steps
        if not (
            isinstance(normalize, transforms.Normalize)
            and not normalize.inplace
            and type(to_tensor).__name__ in ("ToTensor", "MaybeToTensor")
            and _converts_to_rgb(convert)
            and len(normalize.mean) == len(normalize.std) == 3
            and all(_is_pil_step(step) for step in geometry)
        ):
            return None
        return cls(geometry, normalize.mean, normalize.std)

    def pack(self, images: Sequence[Image.Image]) -> torch.Tensor:
        """Images after the PIL steps, as (n, 3, H, W) uint8 (a view of (n, H, W, 3))."""
        arrays = []
        for image in images:
            for step in self.geometry:
                image = step(image)
            if image.mode != "RGB":  # the transform's own conversion; RGB needs no copy
                image = image.convert("RGB")
            arrays.append(np.asarray(image))
        return torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2)

    def normalize(self, batch: torch.Tensor) -> torch.Tensor:
        """Packed uint8 pixels -> the tower's float32 input: ToTensor's ``/ 255``, then
        Normalize's ``(x - mean) / std``, as those transforms compute them."""
        mean, std = self.mean.to(batch.device), self.std.to(batch.device)
        return batch.contiguous().to(torch.float32).div(255).sub_(mean).div_(std)


def _converts_to_rgb(step: Any) -> bool:
    """open_clip's RGB conversion: ``MaybeConvertMode("RGB")`` or ``_convert_to_rgb``."""
    if type(step).__name__ == "MaybeConvertMode":
        return getattr(step, "mode", None) == "RGB"
    return getattr(step, "__name__", "") == "_convert_to_rgb"


def _is_pil_step(step: Any) -> bool:
    """Geometry that maps a PIL image to a PIL image: resizes, crops, pads (torchvision's or
    open_clip's own)."""
    known = (transforms.Resize, transforms.CenterCrop)
    return isinstance(step, known) or type(step).__name__ in ("ResizeKeepRatio", "CenterCropOrPad")
