"""`python -m bench --merge`: a partial run keeps what it did not measure."""

from __future__ import annotations

from typing import Any

from bench.__main__ import merge_embed


def _rows(model: str, precision: str, rate: float) -> dict[str, Any]:
    http = [{"model": model, "precision": precision, "clients": 16, "images_per_s": rate}]
    raw = [
        {"model": model, "precision": precision, "batch": b, "images_per_s": rate * f}
        for b, f in ((1, 0.5), (16, 1.2))
    ]
    return {"http": http, "raw": raw}


def test_an_embed_run_of_one_model_keeps_the_other_models_rows() -> None:
    vit, mini_old, mini_new = (
        _rows("random:ViT-B-32", "auto", 50.0),
        _rows("mmr-mini", "auto", 300.0),
        _rows("mmr-mini", "auto", 330.0),
    )
    earlier = {key: vit[key] + mini_old[key] for key in ("http", "raw")}
    now = {**mini_new, "summary": []}
    assert merge_embed(now, earlier) == ["random:ViT-B-32 auto"]
    assert now["http"] == vit["http"] + mini_new["http"]  # the older mmr-mini rows are gone
    assert now["raw"] == vit["raw"] + mini_new["raw"]
    summary = {(s["model"], s["precision"]): s for s in now["summary"]}
    assert set(summary) == {("random:ViT-B-32", "auto"), ("mmr-mini", "auto")}
    assert summary[("mmr-mini", "auto")]["vs_raw_best"] == 330.0 / 396.0
