"""Forward streams: a lone forward takes every thread, concurrent ones a share each."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import torch

from models.batcher import BatchConfig
from models.registry import load_model
from models.streams import Streams, default_count


@pytest.fixture(autouse=True)
def keep_torch_threads() -> Iterator[None]:
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


def test_a_lone_forward_gets_every_thread() -> None:
    streams = Streams(threads=2, count=2)
    with streams.forward(alone=True) as threads:
        assert threads == 2 and torch.get_num_threads() == 2
        assert streams.running == 2  # it holds every slot


def test_forwards_under_load_get_a_share_each() -> None:
    streams = Streams(threads=4, count=2)
    inside = threading.Barrier(2, timeout=5)
    seen: list[tuple[int, int]] = []

    def one() -> None:
        with streams.forward(alone=False) as threads:
            seen.append((threads, torch.get_num_threads()))
            inside.wait()  # both at once

    with ThreadPoolExecutor(2) as pool:
        for done in [pool.submit(one), pool.submit(one)]:
            done.result(5)
    assert seen == [(2, 2), (2, 2)]


def test_a_forward_beside_another_gets_a_share_though_it_thinks_it_is_alone() -> None:
    streams = Streams(threads=4, count=2)
    with streams.forward(alone=False), ThreadPoolExecutor(1) as pool:
        assert pool.submit(_threads_of, streams).result(5) == 2


def _threads_of(streams: Streams) -> int:
    with streams.forward(alone=True) as threads:
        return threads


def test_a_wide_forward_holds_every_slot_until_it_ends() -> None:
    streams = Streams(threads=2, count=2)
    order: list[str] = []

    def narrow() -> None:
        with streams.forward(alone=False):
            order.append("narrow ran")

    with ThreadPoolExecutor(1) as pool:
        with streams.forward(alone=True):
            later = pool.submit(narrow)
            time.sleep(0.2)
            order.append("wide done")
        later.result(5)
    assert order == ["wide done", "narrow ran"]


def test_exclusive_waits_for_running_forwards() -> None:
    streams = Streams(threads=2, count=2)
    order: list[str] = []

    def swap() -> None:
        with streams.exclusive():
            order.append("swap")

    with ThreadPoolExecutor(1) as pool:
        with streams.forward(alone=False):
            done = pool.submit(swap)
            time.sleep(0.2)
            order.append("forward done")
        done.result(5)
    assert order == ["forward done", "swap"]
    assert streams.running == 0


def test_no_more_streams_than_threads_and_auto_by_device() -> None:
    assert Streams(threads=1, count=2).count == 1
    assert default_count("cpu", 2) == 2
    assert default_count("cpu", 1) == 1
    assert default_count("cuda", 16) == 1


def test_an_encoder_gives_a_lone_forward_every_thread_and_concurrent_ones_a_share() -> None:
    torch.set_num_threads(2)
    encoder = load_model("random:mmr-tiny", device="cpu", batching=BatchConfig(streams=2)).encoder
    assert encoder.streams.count == 2
    model = encoder.model
    inner = model.encode_text
    seen: list[int] = []
    pairs = threading.Barrier(2, timeout=5)

    def recording(tokens: torch.Tensor) -> torch.Tensor:
        seen.append(torch.get_num_threads())
        if len(tokens) == 1:
            pairs.wait()  # the single-text forwards below run two at once
        return inner(tokens)

    model.encode_text = recording  # type: ignore[method-assign]
    try:
        texts = ["a red square", "a blue circle"]
        direct = encoder.forward("text", encoder.prepare_texts(texts))  # alone: every thread
        assert seen == [2]
        seen.clear()
        start = threading.Barrier(2)

        def one(text: str) -> np.ndarray:
            start.wait()
            return encoder.forward("text", encoder.prepare_texts([text]), alone=False)

        with ThreadPoolExecutor(2) as pool:
            got = list(pool.map(one, texts))
        assert seen == [1, 1]
        np.testing.assert_allclose(np.concatenate(got), direct, rtol=1e-4, atol=1e-5)
    finally:
        model.encode_text = inner  # type: ignore[method-assign]
        encoder.close()


def test_a_runtime_tower_runs_one_forward_at_a_time() -> None:
    encoder = load_model("random:mmr-tiny", device="cpu", batching=BatchConfig(streams=2)).encoder
    reference = encoder.forward("text", encoder.prepare_texts(["a"]))
    running, most = [0], [0]
    lock = threading.Lock()

    def runtime(tokens: torch.Tensor) -> np.ndarray:
        with lock:
            running[0] += 1
            most[0] = max(most[0], running[0])
        time.sleep(0.02)
        with lock:
            running[0] -= 1
        return np.repeat(reference, len(tokens), axis=0)

    encoder.use_runtimes({"text": runtime})
    try:
        with ThreadPoolExecutor(8) as pool:
            got = list(pool.map(lambda _: encoder.encode_texts(["a"]), range(16)))
        assert most[0] == 1
        np.testing.assert_allclose(np.concatenate(got), np.repeat(reference, 16, axis=0))
    finally:
        encoder.close()
