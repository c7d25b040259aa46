"""A video's raw rows: frames through the image head, sound through the audio head, each row
tagged by its kind, so stored features re-project under any aligner version."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from models.encoders.aligner import VIDEO, Aligner, AlignerHead, pack_video
from models.errors import UnsupportedMediaError

DIM = 8


def aligner(image_in: int = 6, audio_in: int | None = 4, seed: int = 0) -> Aligner:
    rng = np.random.default_rng(seed)

    def head(width: int) -> AlignerHead:
        weight = rng.normal(size=(DIM, width)).astype(np.float32)
        return AlignerHead.linear(weight, np.zeros(DIM, np.float32))

    heads = {"image": head(image_in), "text": head(image_in)}
    encoders = {"image": "img", "text": "txt"}
    if audio_in is not None:
        heads["audio"], encoders["audio"] = head(audio_in), "snd"
    return Aligner(DIM, heads, encoders)


@given(
    frames=st.integers(1, 6),
    sounds=st.integers(0, 5),
    seed=st.integers(0, 2**16),
)
def test_video_rows_project_as_their_parts_do(frames: int, sounds: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    images = rng.normal(size=(frames, 6)).astype(np.float32)
    audio = rng.normal(size=(sounds, 4)).astype(np.float32) if sounds else None
    rows = pack_video(images, audio, width=7)
    assert rows.shape == (frames + sounds, 7)
    for version in (0, 1):  # a new aligner version re-projects the same stored rows
        heads = aligner(seed=version)
        got = heads.project(VIDEO, rows)
        want = heads.project("image", images)
        if audio is not None:
            want = np.concatenate([want, heads.project("audio", audio)])
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def test_sound_rows_without_an_audio_head_are_refused_and_frames_alone_are_fine() -> None:
    images = np.ones((2, 6), np.float32)
    deaf = aligner(audio_in=None)
    assert deaf.project(VIDEO, pack_video(images, None, width=7)).shape == (2, DIM)
    with pytest.raises(UnsupportedMediaError, match="no audio head"):
        deaf.project(VIDEO, pack_video(images, np.ones((1, 4), np.float32), width=7))


def test_a_feature_wider_than_the_rows_is_a_bug_not_a_silent_cut() -> None:
    with pytest.raises(ValueError, match="does not fit"):
        pack_video(np.ones((1, 9), np.float32), None, width=7)
