"""open_clip's eval transform split into per-image PIL steps and per-batch arithmetic gives
the very numbers of the whole transform; a transform of another shape is not split."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from open_clip.transform import MaybeConvertMode, image_transform
from PIL import Image
from torchvision import transforms

from models.media.pixels import Pixels
from tests.factories import image_pattern


def images() -> list[Image.Image]:
    sizes = [(64, 64), (256, 224), (97, 301), (640, 480), (33, 20)]
    out = [Image.fromarray(image_pattern(size, seed=i)) for i, size in enumerate(sizes)]
    out.append(out[1].convert("L"))  # a mode the transform converts
    return out


@pytest.mark.parametrize("resize_mode", ["shortest", "squash", "longest"])
@pytest.mark.parametrize("size", [64, (48, 80)])
def test_split_transform_gives_the_same_numbers(
    resize_mode: str, size: int | tuple[int, int]
) -> None:
    transform = image_transform(size, is_train=False, resize_mode=resize_mode)
    pixels = Pixels.of(transform)
    assert pixels is not None
    for image in images():
        whole = transform(image)[None]
        packed = pixels.pack([image])
        assert packed.dtype == torch.uint8
        assert torch.equal(pixels.normalize(packed), whole)
    # A batch is normalised at once, rows in order.
    batch = [im for im in images() if resize_mode != "longest" or im.size == images()[0].size]
    wholes = torch.stack([transform(im) for im in batch])
    assert torch.equal(pixels.normalize(pixels.pack(batch)), wholes)


def test_other_transforms_are_not_split() -> None:
    norm = transforms.Normalize((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))
    rgb = MaybeConvertMode("RGB")
    assert Pixels.of(transforms.Compose([transforms.Resize(8), rgb, transforms.ToTensor(), norm]))
    others = [
        transforms.Compose([transforms.Resize(8), transforms.ToTensor(), norm]),  # no RGB step
        transforms.Compose(
            [transforms.Resize(8), transforms.Grayscale(3), transforms.ToTensor(), norm]
        ),
        transforms.Compose(
            [transforms.Resize(8), MaybeConvertMode("L"), transforms.ToTensor(), norm]
        ),
        transforms.Compose(
            [transforms.RandomCrop(8), rgb, transforms.ToTensor(), norm]  # not geometry
        ),
        transforms.Compose([transforms.Resize(8), rgb, transforms.ToTensor()]),  # no Normalize
        transforms.Compose(
            [
                transforms.Resize(8),
                rgb,
                transforms.ToTensor(),
                transforms.Normalize((0.5, 0.5, 0.5), (0.5, 0.5, 0.5), inplace=True),
            ]
        ),
        lambda image: image,  # not a Compose
    ]
    for transform in others:
        assert Pixels.of(transform) is None


def test_batches_of_pixels_are_a_quarter_of_floats() -> None:
    transform = image_transform(64, is_train=False)
    pixels = Pixels.of(transform)
    assert pixels is not None
    packed = pixels.pack(images()[:3])
    floats = pixels.normalize(packed)
    assert packed.shape == floats.shape == (3, 3, 64, 64)
    assert packed.element_size() * 4 == floats.element_size()
    assert np.isfinite(floats.numpy()).all()


def test_an_encoder_batches_pixels_and_embeds_as_the_whole_transform_would() -> None:
    from models.encoders.registry import load_model

    encoder = load_model("random:mmr-tiny", device="cpu").encoder
    try:
        assert encoder.pack_images(images()[:2]).dtype == torch.uint8
        wholes = torch.stack([encoder.preprocess(im) for im in images()])
        want = encoder.forward("image", wholes)
        got = encoder.encode_images(images())  # packed, through the batcher
        np.testing.assert_array_equal(got, want)
    finally:
        encoder.close()
