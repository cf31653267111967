"""Running a blocking iterator (llama.cpp token streaming) in a worker thread, consuming its
items on the trio side, with cancellation in both directions.

The iterator gets a ``threading.Event``; it is set as soon as the trio side stops listening
(its task cancelled, a deadline hit, the consumer failing), and the iterator is expected to
check it between items. Errors raised inside the thread are re-raised in trio as they are.
"""

from __future__ import annotations

import contextlib
import functools
import threading
from collections.abc import Awaitable, Callable, Iterator
from typing import TypeVar

import trio

T = TypeVar("T")


async def run_streaming(
    make_iter: Callable[[threading.Event], Iterator[T]],
    on_item: Callable[[T], Awaitable[None]],
    *,
    limiter: trio.CapacityLimiter | None = None,
) -> None:
    send, receive = trio.open_memory_channel[T](16)
    cancel = threading.Event()
    failure: list[BaseException] = []

    def pump() -> None:
        items = make_iter(cancel)
        try:
            for item in items:
                trio.from_thread.run(send.send, item)
        except (trio.BrokenResourceError, trio.Cancelled, trio.RunFinishedError):
            cancel.set()
        except BaseException as exc:  # re-raised on the trio side below
            failure.append(exc)
        finally:
            close = getattr(items, "close", None)
            if close is not None:
                close()  # runs the iterator's cleanup (releasing model locks) in this thread
            with contextlib.suppress(trio.RunFinishedError):
                trio.from_thread.run_sync(send.close)

    async def consume() -> None:
        try:
            async with receive:
                async for item in receive:
                    await on_item(item)
        finally:
            cancel.set()

    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(functools.partial(trio.to_thread.run_sync, pump, limiter=limiter))
            await consume()
    except BaseExceptionGroup as group:  # the pump never raises: only the consumer's error
        if len(group.exceptions) == 1:
            raise group.exceptions[0] from None
        raise
    if failure:
        raise failure[0]
