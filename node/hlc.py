"""Hybrid logical clock: document versions that order writes without trusting one wall clock.

A version is one 63-bit int, ``physical_ms << 16 | counter``: the wall-clock milliseconds the
clock has seen (its own or a peer's, whichever is later) and a counter that orders events
within one millisecond. :meth:`HybridClock.tick` issues a version greater than every version
issued or observed before (so a node whose clock steps back keeps ordering its own writes
after its earlier ones); :meth:`HybridClock.observe` takes in a version a peer sent and refuses
one whose physical part is further ahead of our clock than ``max_skew_ms``: a version chosen
at 2^63 - 1 would otherwise win over every later write for ever.

Versions written before hybrid clocks (plain milliseconds, ~1.7e12) are far below any hybrid
version (~1.1e17), so new writes replace them, as they should. Pure logic: the wall clock is
handed in.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from calinode.protocol.errors import BadRequest

__all__ = ["COUNTER_BITS", "MAX_SKEW_MS", "HybridClock", "physical_ms"]

COUNTER_BITS = 16
_COUNTER_MASK = (1 << COUNTER_BITS) - 1
#: How far ahead of our clock a peer's version may be: larger than any sane clock skew between
#: machines that sync with NTP, small enough that a forged version loses its lead in minutes.
MAX_SKEW_MS = 5 * 60 * 1000


def physical_ms(version: int) -> int:
    return version >> COUNTER_BITS


def _wall_ms() -> int:
    return int(time.time() * 1000)


class HybridClock:
    def __init__(self, *, now_ms: Callable[[], int] = _wall_ms,
                 max_skew_ms: int = MAX_SKEW_MS) -> None:
        self.now_ms = now_ms
        self.max_skew_ms = max_skew_ms
        self.last = 0

    def tick(self) -> int:
        """A version above every version issued or observed so far."""
        candidate = self.now_ms() << COUNTER_BITS
        self.last = max(self.last + 1, candidate)
        return self.last

    def check(self, version: int) -> None:
        """Refuse a version too far in the future (``BAD_REQUEST``)."""
        ahead = physical_ms(version) - self.now_ms()
        if ahead > self.max_skew_ms:
            raise BadRequest(f"version {version} is {ahead / 1000:.0f} s ahead of this node's "
                             f"clock (at most {self.max_skew_ms // 1000} s allowed); check "
                             "the writer's clock")

    def observe(self, version: int) -> None:
        """Take in a peer's version (after :meth:`check`): later ticks come after it."""
        self.check(version)
        self.last = max(self.last, version)
