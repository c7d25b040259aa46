"""Which anchors a fine-tune job brings and how it checks them (app.services.finetune)."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import numpy as np

from app.services.finetune import BROUGHT_IMAGES, BROUGHT_TEXTS, CHECK_QUERIES, with_model_anchors
from models.training.finetune import FinetuneConfig, Pairs

DIM = 8


class Towers:
    """Stand-in frozen towers: one row per input, counted."""

    def __init__(self) -> None:
        self.texts: list[str] = []
        self.images = 0

    def encode_texts(self, texts: list[str]) -> np.ndarray:
        self.texts += texts
        return (
            np.random.default_rng(len(self.texts)).normal(size=(len(texts), DIM)).astype(np.float32)
        )

    def encode_images(self, images: list[Any]) -> np.ndarray:
        self.images += len(images)
        return np.ones((len(images), DIM), np.float32)


def run(model: str, a: str, b: str, stored: dict[str, int]) -> tuple[Pairs, dict[str, Any], Towers]:
    towers = Towers()
    embedder: Any = SimpleNamespace(encoder=towers)
    row: Any = SimpleNamespace(model=model)
    rows = np.ones((30, DIM), np.float32)
    anchors = {m: np.zeros((n, DIM), np.float32) for m, n in stored.items()}
    pairs, brought = with_model_anchors(
        Pairs(a, b, rows, rows, anchors), embedder, row, FinetuneConfig()
    )
    return pairs, brought, towers


def test_mmr_mini_brings_its_captions_and_checks_on_its_scenes() -> None:
    pairs, brought, towers = run("mmr-mini", "image", "text", {"text": 48})
    assert brought["anchors_brought"] == {"text": BROUGHT_TEXTS - 48}
    assert len(pairs.anchors["text"]) == BROUGHT_TEXTS  # the stored ones first
    assert not pairs.anchors["text"][:48].any()
    assert brought["anchor_check"] == {
        "queries": CHECK_QUERIES,
        "gallery": CHECK_QUERIES,
        "labelled": True,
    }
    assert pairs.check is not None and pairs.check.relevant is not None
    assert (
        len(towers.texts) == BROUGHT_TEXTS - 48 + CHECK_QUERIES and towers.images == CHECK_QUERIES
    )
    trained, checked = towers.texts[: BROUGHT_TEXTS - 48], towers.texts[BROUGHT_TEXTS - 48 :]
    assert not set(trained) & set(checked)  # the check's captions are never trained on


def test_another_model_holds_out_general_captions_for_the_check() -> None:
    pairs, brought, towers = run("open_clip:ViT-B-32/x", "image", "text", {"image": 100})
    assert brought["anchors_brought"] == {"text": BROUGHT_TEXTS}
    check = pairs.check
    assert check is not None and check.relevant is None and len(check.queries) == CHECK_QUERIES
    assert check.gallery_modality == "image" and len(check.gallery) == 130  # stored + paired
    # The check's captions are not among the trained anchors.
    trained = {tuple(r) for r in pairs.anchors["text"]}
    assert not any(tuple(q) in trained for q in check.queries)
    # Enough texts stored: only the check's captions are encoded, all of them for the check.
    pairs, brought, towers = run("open_clip:ViT-B-32/x", "image", "text", {"text": 3000})
    assert len(towers.texts) == CHECK_QUERIES and pairs.check is not None
    assert len(pairs.check.queries) == CHECK_QUERIES and len(pairs.anchors["text"]) == 3000


def test_a_learning_image_head_of_mmr_mini_gets_generated_pictures() -> None:
    pairs, brought, towers = run("mmr-mini", "audio", "image", {"image": 24})
    assert brought["anchors_brought"] == {"image": BROUGHT_IMAGES - 24}
    assert towers.images == BROUGHT_IMAGES - 24 and len(pairs.anchors["image"]) == BROUGHT_IMAGES
    assert not towers.texts  # no text head learns


def test_mmr_minis_text_against_sounds_is_checked_on_held_out_captions() -> None:
    pairs, brought, towers = run("mmr-mini", "audio", "text", {"audio": 50})
    check = pairs.check
    assert check is not None and check.relevant is None and check.gallery_modality == "audio"
    assert len(check.queries) == CHECK_QUERIES and brought["anchors_brought"] == {"text": 2048}
    assert towers.images == 0  # no scenes rendered: this check needs none
