"""Background loops that nothing from outside can end.

Every background loop of the daemon (membership heartbeats, replica sync) handles each peer and
each item on its own: a failing item is logged (rate limited) and skipped. What is left is a
bug in the loop's own bookkeeping; :func:`supervised` catches that too, logs it with its
traceback (rate limited), and starts the loop again after a back-off that doubles from
``backoff`` up to ``max_backoff`` seconds, so a broken loop costs a log line a minute instead
of cancelling the daemon's root nursery. Cancellation still ends it at once.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

import trio

from calinode.node.rejections import RateLimitedLog

if TYPE_CHECKING:
    from trio_typing import TaskStatus

log = logging.getLogger(__name__)
_quiet = RateLimitedLog(log, interval=60.0)


async def supervised(
    name: str,
    loop: Callable[[], Awaitable[object]],
    *,
    backoff: float = 1.0,
    max_backoff: float = 60.0,
    task_status: TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Run ``loop()`` until it returns; restart it with back-off whenever it raises."""
    task_status.started()
    delay = backoff
    while True:
        began = trio.current_time()
        try:
            await loop()
            return
        except Exception:  # a bug in the loop itself: never the node's end
            _quiet.exception(name, "background loop %r failed; restarting it in %.0f s",
                             name, delay)
        if trio.current_time() - began > 2 * max_backoff:
            delay = backoff  # it ran well for a while: start the back-off over
        await trio.sleep(delay)
        delay = min(delay * 2, max_backoff)
