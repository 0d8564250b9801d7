"""The fetch thread, against a fake consumer (the real one is exercised by the integration suite)."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest

from k2.ingest.fetcher import Fetcher


class FakeConsumer:
    """Hands out pre-made batches; records which thread calls it."""

    def __init__(self, batches: list[list[Any]], fail_after: int | None = None) -> None:
        self.batches = list(batches)
        self.threads: set[str] = set()
        self.fail_after = fail_after
        self.calls = 0

    def consume(self, num: int, timeout: float) -> list[Any]:
        self.threads.add(threading.current_thread().name)
        self.calls += 1
        if self.fail_after is not None and self.calls > self.fail_after:
            raise RuntimeError("broker gone")
        if self.batches:
            return self.batches.pop(0)
        time.sleep(timeout)
        return []

    def get_watermark_offsets(self, tp: Any, cached: bool = False) -> tuple[int, int]:
        return 0, 100 + tp.partition


def drain(f: Fetcher, n: int) -> list[Any]:
    out = []
    deadline = time.monotonic() + 5
    while len(out) < n and time.monotonic() < deadline:
        got = f.get(0.05)
        if got is not None:
            out.append(got)
    return out


def test_batches_arrive_in_order_with_their_generation_and_watermarks() -> None:
    generations = iter(range(100))
    consumer = FakeConsumer([["a"], ["b", "c"], ["d"]])
    f = Fetcher(consumer, 10, 0.01, lambda: {("t", 0): next(generations), ("t", 3): "x"})  # type: ignore[arg-type]
    f.start()
    try:
        got = drain(f, 3)
    finally:
        f.stop()
    assert [b.messages for b in got] == [["a"], ["b", "c"], ["d"]]
    assert [b.generation[("t", 0)] for b in got] == [0, 1, 2]  # snapshot taken per batch
    assert got[0].high_watermarks == {("t", 0): 100, ("t", 3): 103}
    assert consumer.threads == {"k2-fetch"}


def test_calls_run_on_the_fetch_thread_while_it_runs_and_inline_after_stop() -> None:
    consumer = FakeConsumer([])
    f = Fetcher(consumer, 10, 0.01, dict)  # type: ignore[arg-type]
    f.start()
    on = f.call(lambda c: threading.current_thread().name, wait=5)
    f.stop()
    after = f.call(lambda c: threading.current_thread().name, wait=5)
    assert on == "k2-fetch"
    assert after == threading.current_thread().name


def test_a_call_is_served_while_the_queue_is_full() -> None:
    # The processing thread may wait on a call while the fetch thread waits to hand over a batch.
    consumer = FakeConsumer([["a"], ["b"], ["c"]])
    f = Fetcher(consumer, 10, 0.01, dict, depth=1)  # type: ignore[arg-type]
    f.start()
    try:
        time.sleep(0.2)  # "a" queued, "b" waiting to be put
        assert f.call(lambda c: "served", wait=2) == "served"
    finally:
        f.stop()


def test_stop_discards_a_queued_batch() -> None:
    consumer = FakeConsumer([["a"], ["b"]])
    f = Fetcher(consumer, 10, 0.01, dict)  # type: ignore[arg-type]
    f.start()
    time.sleep(0.2)
    f.stop()
    assert f.get(0.01) is None


def test_an_error_on_the_fetch_thread_surfaces_in_get() -> None:
    consumer = FakeConsumer([["a"]], fail_after=1)
    f = Fetcher(consumer, 10, 0.01, dict)  # type: ignore[arg-type]
    f.start()
    try:
        assert drain(f, 1)[0].messages == ["a"]
        with pytest.raises(RuntimeError, match="broker gone"):
            for _ in range(100):
                f.get(0.02)
    finally:
        f.stop()
