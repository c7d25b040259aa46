"""Forward streams: a lone forward takes every thread, concurrent ones a share each."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import torch

from models.encoders.registry import load_model
from models.runtime import streams as streams_module
from models.runtime import threads as thread_settings
from models.runtime.batcher import BatchConfig
from models.runtime.streams import Streams, crowded, default_count, in_flight


@pytest.fixture(autouse=True)
def keep_torch_threads() -> Iterator[None]:
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


@pytest.fixture(autouse=True)
def quiet_process(monkeypatch: pytest.MonkeyPatch) -> None:
    """No other request ran a moment ago (another test's units count for nothing here)."""
    monkeypatch.setattr(streams_module, "_crowded_at", float("-inf"))


def _seen(threads: int) -> tuple[str, int]:
    assert threads == torch.get_num_threads()  # told what torch was given
    return threading.current_thread().name, threads


def test_a_lone_forward_gets_every_thread_on_the_wide_thread() -> None:
    streams = Streams(threads=2, count=2)
    try:
        name, threads = streams.run(_seen, alone=True)
        assert name.startswith("mmr-wide") and threads == 2
        assert streams.run(_seen, alone=True)[0] == name  # always the same thread
        assert streams.running == 0
    finally:
        streams.close()


def test_forwards_under_load_get_a_share_each_in_their_own_thread() -> None:
    streams = Streams(threads=4, count=2)
    inside = threading.Barrier(2, timeout=5)

    def one() -> tuple[str, int]:
        def forward(threads: int) -> tuple[str, int]:
            inside.wait()  # both at once
            return _seen(threads)

        return streams.run(forward, alone=False)

    with ThreadPoolExecutor(2, thread_name_prefix="caller") as pool:
        got = [done.result(5) for done in [pool.submit(one), pool.submit(one)]]
    assert all(name.startswith("caller") and threads == 2 for name, threads in got)


def test_a_forward_beside_another_gets_a_share_though_it_thinks_it_is_alone() -> None:
    streams = Streams(threads=4, count=2)
    started, release = threading.Event(), threading.Event()

    def hold(threads: int) -> None:
        started.set()
        release.wait(5)

    with ThreadPoolExecutor(2) as pool:
        held = pool.submit(streams.run, hold, alone=False)
        assert started.wait(5)
        assert pool.submit(streams.run, _seen, alone=True).result(5)[1] == 2
        release.set()
        held.result(5)


def test_a_forward_beside_another_request_keeps_to_its_share(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Another unit of work in flight (a request writing, decoding or answering) keeps a lone
    forward off the cores it works on, and so does one that ran a moment ago; a forward whose
    own unit has run alone for QUIET_S takes every thread again."""
    monkeypatch.setattr(streams_module, "QUIET_S", 0.2)
    streams = Streams(threads=2, count=2)
    try:
        with in_flight():  # this forward's own request
            assert streams.run(_seen, alone=True)[1] == 2
            with in_flight():  # another request beside it
                name, threads = streams.run(_seen, alone=True)
                assert not name.startswith("mmr-wide") and threads == 1
            assert crowded()  # the other one ended a moment ago
            assert streams.run(_seen, alone=True)[1] == 1
            time.sleep(0.25)
            assert not crowded()
            assert streams.run(_seen, alone=True)[1] == 2
    finally:
        streams.close()


def test_units_in_flight_are_counted_whatever_ends_them() -> None:
    with pytest.raises(RuntimeError), in_flight(), in_flight():
        raise RuntimeError("a request that failed")
    assert streams_module._units == 0


def test_one_stream_runs_every_forward_on_the_wide_thread() -> None:
    streams = Streams(threads=2, count=1)
    try:
        assert streams.run(_seen, alone=False)[0].startswith("mmr-wide")
    finally:
        streams.close()


def test_a_wide_forward_holds_every_slot_until_it_ends() -> None:
    streams = Streams(threads=2, count=2)
    order: list[str] = []

    def wide(threads: int) -> None:
        time.sleep(0.2)
        order.append("wide done")

    def narrow(threads: int) -> None:
        order.append("narrow ran")

    try:
        with ThreadPoolExecutor(2) as pool:
            first = pool.submit(streams.run, wide, alone=True)
            time.sleep(0.05)
            later = pool.submit(streams.run, narrow, alone=False)
            first.result(5)
            later.result(5)
        assert order == ["wide done", "narrow ran"]
    finally:
        streams.close()


def test_exclusive_waits_for_running_forwards() -> None:
    streams = Streams(threads=2, count=2)
    order: list[str] = []
    started = threading.Event()

    def forward(threads: int) -> None:
        started.set()
        time.sleep(0.2)
        order.append("forward done")

    def swap() -> None:
        with streams.exclusive():
            order.append("swap")

    with ThreadPoolExecutor(2) as pool:
        running = pool.submit(streams.run, forward, alone=False)
        assert started.wait(5)
        done = pool.submit(swap)
        running.result(5)
        done.result(5)
    assert order == ["forward done", "swap"]
    assert streams.running == 0


def test_no_more_streams_than_threads_and_auto_by_device() -> None:
    assert Streams(threads=1, count=2).count == 1
    assert default_count("cpu", 2) == 2
    assert default_count("cpu", 1) == 1
    assert default_count("cuda", 16) == 1


def test_an_encoder_gives_a_lone_forward_every_thread_and_concurrent_ones_a_share(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(thread_settings, "_threads", 2)
    encoder = load_model("random:mmr-tiny", device="cpu", batching=BatchConfig(streams=2)).encoder
    assert encoder.streams.count == 2
    model = encoder.model
    inner = model.encode_text
    seen: list[int] = []
    pairs = threading.Barrier(2, timeout=5)

    def recording(tokens: torch.Tensor) -> torch.Tensor:
        seen.append(torch.get_num_threads())
        assert torch.is_inference_mode_enabled()  # entered in the thread that runs it
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


def test_a_runtime_tower_runs_as_streams_told_its_threads(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(thread_settings, "_threads", 2)  # MMR_TORCH_THREADS=2, whatever the machine
    encoder = load_model("random:mmr-tiny", device="cpu", batching=BatchConfig(streams=2)).encoder
    assert encoder.streams.threads == 2
    reference = encoder.forward("text", encoder.prepare_texts(["a"]))
    running, most = [0], [0]
    told: list[int | None] = []
    lock = threading.Lock()
    pairs = threading.Barrier(2, timeout=5)

    def tower(tokens: torch.Tensor, threads: int | None = None) -> np.ndarray:
        with lock:
            running[0] += 1
            most[0] = max(most[0], running[0])
            told.append(threads)
        if threads == 1:
            pairs.wait()  # narrow forwards run two at once
        with lock:
            running[0] -= 1
        return np.repeat(reference, len(tokens), axis=0)

    encoder.use_runtimes({"text": tower})
    try:
        lone = encoder.forward("text", encoder.prepare_texts(["a"]))
        assert told == [2]  # alone: the session on every thread
        told.clear()
        start = threading.Barrier(2)

        def one(_: int) -> np.ndarray:
            start.wait()
            return encoder.forward("text", encoder.prepare_texts(["a"]), alone=False)

        with ThreadPoolExecutor(2) as pool:
            got = list(pool.map(one, range(2)))
        assert told == [1, 1] and most[0] == 2
        np.testing.assert_array_equal(np.concatenate([lone, *got]), np.repeat(reference, 3, 0))
    finally:
        encoder.close()


def test_inputs_are_prepared_on_one_torch_thread() -> None:
    encoder = load_model("random:mmr-tiny", device="cpu").encoder
    seen: list[int] = []

    def prepare() -> torch.Tensor:
        seen.append(torch.get_num_threads())
        return encoder.prepare_texts(["a"])

    try:
        with ThreadPoolExecutor(1, initializer=torch.set_num_threads, initargs=(2,)) as pool:
            pool.submit(encoder.submit, "text", prepare).result(30)
        assert seen == [1]
    finally:
        encoder.close()


def test_configure_runs_torch_on_one_thread_outside_forwards(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(thread_settings, "_threads", 0)
    assert thread_settings.configure_torch_threads(3) == 3
    assert thread_settings.torch_threads() == 3
    assert torch.get_num_threads() == 1


def test_a_run_in_its_own_thread_has_the_threads_and_hands_back_errors() -> None:
    here = threading.current_thread().name
    name, threads = thread_settings.in_thread_with_threads(
        lambda: (threading.current_thread().name, torch.get_num_threads()), threads=2
    )
    assert name != here and threads == 2

    def broken() -> None:
        raise ValueError("bad job")

    with pytest.raises(ValueError, match="bad job"):
        thread_settings.in_thread_with_threads(broken)
