"""Running a blocking iterator (llama.cpp token streaming) in a worker thread, consuming its
items on the trio side, with cancellation in both directions.

The iterator gets a ``threading.Event``; it is set as soon as the trio side stops listening
(its task cancelled, a deadline hit, the consumer failing), and the iterator is expected to
check it between items. Errors raised inside the thread are re-raised in trio as they are.

Items are handed over in batches: the thread appends to a buffer and wakes the trio side only
when the consumer is waiting for an empty buffer, and the consumer takes everything buffered at
once. An idle consumer gets each item as soon as it exists; a busy one (or a busy CPU) gets
several at a time, so the per-item cost of crossing threads, and of what the consumer does per
call (a network write per token), shrinks exactly when it matters. With ``min_interval`` the
consumer pauses that long after each batch and the thread does not wake it meanwhile: a fast
producer's items travel in groups, with one wake-up of the event loop per group at most, and
the producer's end cuts the pause short. At most ``max_buffer`` items wait; past that the
producer blocks (back pressure).
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Awaitable, Callable, Iterator
from typing import Generic, TypeVar

import trio

T = TypeVar("T")


class _Handoff(Generic[T]):
    def __init__(self, token: trio.lowlevel.TrioToken, max_buffer: int) -> None:
        self.token = token
        self.items: deque[T] = deque()
        self.lock = threading.Lock()
        self.room = threading.Condition(self.lock)
        self.max_buffer = max_buffer
        self.finished = False
        self.closed = False  # the consumer is gone
        self.waiting = False  # the consumer found the buffer empty and waits for `ready`
        self.ready = trio.Event()
        self.done = trio.Event()  # set by the producer's last wake

    def _wake(self, *, last: bool = False) -> None:
        def set_events() -> None:
            self.ready.set()
            if last:
                self.done.set()

        try:
            trio.from_thread.run_sync(set_events, trio_token=self.token)
        except trio.RunFinishedError:
            self.closed = True

    def put(self, item: T) -> bool:
        """From the thread. False when the consumer is gone."""
        with self.lock:
            while len(self.items) >= self.max_buffer and not self.closed:
                self.room.wait(0.1)
            if self.closed:
                return False
            self.items.append(item)
            wake, self.waiting = self.waiting, False
        if wake:
            self._wake()
        return not self.closed

    def finish(self) -> None:
        with self.lock:
            self.finished = True
            self.waiting = False
        self._wake(last=True)

    def take(self) -> tuple[list[T], bool]:
        """From trio: everything buffered, and whether the producer is done. An empty take
        of an unfinished producer marks the consumer waiting: the next item wakes it."""
        with self.lock:
            items = list(self.items)
            self.items.clear()
            done = self.finished
            if not items and not done:
                self.waiting = True
                self.ready = trio.Event()
            self.room.notify_all()
        return items, done

    def close(self) -> None:
        with self.lock:
            self.closed = True
            self.room.notify_all()


async def run_streaming(
    make_iter: Callable[[threading.Event], Iterator[T]],
    on_batch: Callable[[list[T]], Awaitable[None]],
    *,
    limiter: trio.CapacityLimiter | None = None,
    max_buffer: int = 256,
    min_interval: float = 0.0,
) -> None:
    """Run ``make_iter(cancel)`` in a worker thread; ``on_batch`` gets its items in order.

    With ``min_interval``, batches after the first are handed over at most that often, so a
    steady producer's items travel in groups (fewer network writes per token); the first item
    still goes out as soon as it exists."""
    handoff: _Handoff[T] = _Handoff(trio.lowlevel.current_trio_token(), max_buffer)
    cancel = threading.Event()
    failure: list[BaseException] = []

    def pump() -> None:
        items = make_iter(cancel)
        try:
            for item in items:
                if not handoff.put(item):
                    cancel.set()
                    break
        except BaseException as exc:  # re-raised on the trio side below
            failure.append(exc)
        finally:
            close = getattr(items, "close", None)
            if close is not None:
                close()  # runs the iterator's cleanup (releasing model locks) in this thread
            handoff.finish()

    async def consume() -> None:
        try:
            while True:
                items, done = handoff.take()
                if items:
                    await on_batch(items)
                if done:
                    items, _ = handoff.take()  # anything put during the last call
                    if items:
                        await on_batch(items)
                    return
                if not items:
                    await handoff.ready.wait()
                elif min_interval:
                    with trio.move_on_after(min_interval):  # the last items go at once
                        await handoff.done.wait()
        finally:
            cancel.set()
            handoff.close()

    async def run_pump() -> None:
        await trio.to_thread.run_sync(pump, limiter=limiter)

    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(run_pump)
            await consume()
    except BaseExceptionGroup as group:  # the pump never raises: only the consumer's error
        if len(group.exceptions) == 1:
            raise group.exceptions[0] from None
        raise
    if failure:
        raise failure[0]
