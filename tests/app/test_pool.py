"""The model pool: models loaded on demand, once, within a memory budget, least recently
used unloaded first, never under a user, the start-up model never.

Real models through the server's own loader: two checkpoints of the tiny open_clip
architecture (two model ids) saved here.
"""

from __future__ import annotations

import threading
from pathlib import Path

import open_clip
import pytest
import torch

from app.lifespan import embedder_loader
from app.services.embedding import Embedder
from app.services.errors import SpaceMismatch
from app.services.pool import ModelPool, model_bytes
from app.settings import Settings
from models.encoders.architectures import register_project_configs
from tests.conftest import TEST_MODEL


@pytest.fixture
def ids(tmp_path: Path) -> list[str]:
    register_project_configs()
    found = []
    for name in ("a", "b"):
        path = tmp_path / f"{name}.pt"
        torch.manual_seed(len(found))
        torch.save(open_clip.create_model("mmr-tiny").state_dict(), path)
        found.append(f"open_clip:mmr-tiny@{path}")
    return found


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    """The loader's settings (no database: the pool needs none)."""
    return Settings(
        data_dir=tmp_path / "data", model=TEST_MODEL, device="cpu", precision="fp32", _env_file=None
    )


def closed(embedder: Embedder) -> bool:
    try:
        embedder.texts(["still open?"])
    except RuntimeError as exc:
        return "closed" in str(exc)
    return False


def pool_of(settings: Settings, models_in_budget: float) -> tuple[ModelPool, list[str]]:
    """A pool whose budget holds the start-up model and about ``models_in_budget`` more;
    the loads it made, in order."""
    load = embedder_loader(settings)
    loads: list[str] = []

    def counted(model: str, audio: str) -> Embedder:
        loads.append(model)
        return load(model, audio)

    default = load(TEST_MODEL, "")
    size_mb = model_bytes(default) / 2**20
    return ModelPool(default, load=counted, budget_mb=size_mb * (1 + models_in_budget)), loads


def test_the_least_recently_used_idle_model_is_unloaded_past_the_budget(
    settings: Settings, ids: list[str]
) -> None:
    pool, loads = pool_of(settings, 1.5)
    a, b = ids
    with pool.use(a, None) as first:
        assert first.model_id == a
    with pool.use(a, None):
        pass
    assert loads == [a]  # loaded once, used twice
    with pool.use(b, None) as second:
        assert second.texts(["x"])[0].raw.shape[1] == 64
    assert [m.model for m in pool.loaded()] == [b, TEST_MODEL]
    assert closed(first) and not closed(pool.default)
    with pool.use(a, None):
        pass
    assert loads == [a, b, a]


def test_a_model_in_use_is_never_unloaded(settings: Settings, ids: list[str]) -> None:
    pool, _ = pool_of(settings, 1.5)
    a, b = ids
    with pool.use(a, None) as held:
        with pool.use(b, None) as other:
            pass  # over budget, but a is in use: both stay for now
        assert {m.model for m in pool.loaded()} == {a, b, TEST_MODEL}
        assert held.texts(["still served"])[0].raw.shape == (1, 64)
    # a is idle again: the pool goes back within its budget, b (used longer ago) unloaded.
    assert [m.model for m in pool.loaded()] == [a, TEST_MODEL]
    assert closed(other) and not closed(held)


def test_concurrent_first_uses_load_a_model_once(settings: Settings, ids: list[str]) -> None:
    pool, loads = pool_of(settings, 4)
    dims: list[int] = []

    def use() -> None:
        with pool.use(ids[0], None) as embedder:
            dims.append(embedder.dim)

    threads = [threading.Thread(target=use) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert dims == [64] * 6 and loads == [ids[0]]
    assert [m.in_use for m in pool.loaded()] == [0, 0]


def test_a_model_that_cannot_be_loaded_is_refused_and_remembered(
    settings: Settings, tmp_path: Path
) -> None:
    pool, _ = pool_of(settings, 1)
    missing = f"open_clip:mmr-tiny@{tmp_path / 'gone.pt'}"
    with pytest.raises(SpaceMismatch, match="cannot be loaded here"), pool.use(missing, None):
        pass
    assert list(pool.failed) == [(missing, None)]
