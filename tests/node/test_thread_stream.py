"""run_streaming with fake blocking iterators (no model needed)."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest
import trio

from calinode.node.inference.thread_stream import run_streaming
from calinode.protocol.errors import ErrorCode, JobError


def counting(n: int, seen_cancel: list[bool]) -> object:
    def make(cancel: threading.Event) -> Iterator[int]:
        try:
            for i in range(n):
                if cancel.is_set():
                    return
                time.sleep(0.01)  # blocking work, as llama.cpp would do
                yield i
        finally:
            seen_cancel.append(True)  # the iterator was closed, whatever stopped it

    return make


async def test_items_arrive_in_order() -> None:
    got: list[int] = []

    async def on_item(items: list[int]) -> None:
        got.extend(items)

    await run_streaming(counting(20, []), on_item)  # type: ignore[arg-type]
    assert got == list(range(20))


async def test_trio_cancellation_stops_the_thread() -> None:
    seen_cancel: list[bool] = []
    got: list[int] = []

    async def on_item(items: list[int]) -> None:
        got.extend(items)

    with trio.move_on_after(0.2):
        await run_streaming(counting(10_000, seen_cancel), on_item)  # type: ignore[arg-type]
    assert 0 < len(got) < 10_000 and seen_cancel == [True]


async def test_consumer_failure_stops_the_thread() -> None:
    seen_cancel: list[bool] = []

    async def on_item(items: list[int]) -> None:
        if 3 in items:
            raise JobError("client went away", code=ErrorCode.PEER_UNREACHABLE)

    with pytest.raises(JobError, match="went away"):
        await run_streaming(counting(10_000, seen_cancel), on_item)  # type: ignore[arg-type]
    assert seen_cancel == [True]


async def test_thread_errors_are_reraised() -> None:
    def make(cancel: threading.Event) -> Iterator[int]:
        yield 1
        raise JobError("bad prompt", code=ErrorCode.BAD_REQUEST)

    async def on_item(items: list[int]) -> None:
        return None

    with pytest.raises(JobError, match="bad prompt"):
        await run_streaming(make, on_item)


async def test_a_slow_consumer_gets_items_in_batches_without_loss() -> None:
    batches: list[list[int]] = []

    def make(cancel: threading.Event) -> Iterator[int]:
        yield from range(500)  # a fast producer

    async def on_batch(items: list[int]) -> None:
        batches.append(items)
        await trio.sleep(0.01)  # a slow consumer (a network write per call)

    await run_streaming(make, on_batch, max_buffer=64)
    assert [i for batch in batches for i in batch] == list(range(500))
    assert len(batches) < 100 and max(len(b) for b in batches) <= 64


async def test_grouped_items_go_together_and_the_last_group_is_not_held_back() -> None:
    batches: list[list[int]] = []
    release = threading.Event()

    def make(cancel: threading.Event) -> Iterator[int]:
        yield 0  # alone: the first item goes out as soon as it exists
        release.wait(10)
        yield from range(1, 6)  # produced within one interval: one group
        time.sleep(0.05)
        yield 6  # then the producer finishes

    async def on_batch(items: list[int]) -> None:
        batches.append(items)
        release.set()

    # an interval far longer than the deadline: if the end of the stream waited it out, the
    # deadline would fire; the finished producer ends the interval at once
    with trio.fail_after(20):
        await run_streaming(make, on_batch, min_interval=60.0)
    assert batches == [[0], [1, 2, 3, 4, 5, 6]]
