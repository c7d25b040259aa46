"""The anchors a fine-tune brings: the model's own captions, and mmr-mini's labelled scenes."""

from __future__ import annotations

from models.synth.world.vocabulary import parse_caption
from models.training.anchors import (
    anchor_captions,
    general_captions,
    is_mini,
    mini_scenes,
    photo_captions,
)


def test_mmr_mini_brings_distinct_captions_of_its_world() -> None:
    assert is_mini("mmr-mini") and is_mini("mmr-mini@/models/mini") and not is_mini("open_clip:x")
    captions = anchor_captions("mmr-mini", 500)
    assert len(captions) == len(set(captions)) == 500
    assert all(parse_caption(c).mentions for c in captions)  # words of its world only
    assert anchor_captions("mmr-mini", 500) == captions != anchor_captions("mmr-mini", 500, seed=1)
    assert anchor_captions("mmr-mini", 0) == []


def test_other_models_bring_the_general_list() -> None:
    photos, general = photo_captions(), general_captions()
    assert len(photos) > 3000 and len(set(photos)) == len(photos)
    assert general[: len(photos)] == photos and len(general) > len(photos) + 2000
    picked = anchor_captions("open_clip:ViT-B-32/laion2b_s34b_b79k", 300)
    assert len(set(picked)) == 300 and set(picked) <= set(general)
    # Any prefix samples the whole list: photo captions and sound captions both.
    assert set(picked[:100]) & set(photos) and set(picked[:100]) - set(photos)
    assert len(anchor_captions("open_clip:x", 10**6)) == len(general)  # all of it, no more


def test_mmr_mini_scenes_say_which_render_each_caption_describes() -> None:
    scenes = mini_scenes(40)
    assert len(scenes.captions) == len(scenes.images) == 40
    assert scenes.relevant.shape == (40, 40) and scenes.relevant.diagonal().all()
    assert all(image.mode == "RGB" for image in scenes.images)
    # Relevance is the world's own matcher: look-alike renders count, not only the caption's own.
    assert scenes.relevant.sum() > 40
    assert mini_scenes(40).relevant.tolist() == scenes.relevant.tolist()
