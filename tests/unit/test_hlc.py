from __future__ import annotations

import pytest

from calinode.node.hlc import COUNTER_BITS, MAX_SKEW_MS, HybridClock, physical_ms
from calinode.protocol.errors import JobError


class FakeWallClock:
    """A wall clock a test sets by hand (a fake, for the pure clock logic)."""

    def __init__(self, ms: int) -> None:
        self.ms = ms

    def __call__(self) -> int:
        return self.ms


def test_versions_grow_even_when_the_wall_clock_steps_back() -> None:
    wall = FakeWallClock(1_700_000_000_000)
    clock = HybridClock(now_ms=wall)
    first = clock.tick()
    assert physical_ms(first) == wall.ms
    wall.ms -= 10 * 60 * 1000  # NTP steps the clock back ten minutes
    later = [clock.tick() for _ in range(1000)]
    assert later == sorted(later) and later[0] > first and len(set(later)) == 1000
    wall.ms += 20 * 60 * 1000
    assert physical_ms(clock.tick()) == wall.ms


def test_observed_versions_order_later_ticks() -> None:
    wall = FakeWallClock(1_700_000_000_000)
    clock = HybridClock(now_ms=wall)
    peer = (wall.ms + 60_000) << COUNTER_BITS  # a peer whose clock is a minute ahead
    clock.observe(peer)
    assert clock.tick() > peer


@pytest.mark.parametrize("ahead_ms", [MAX_SKEW_MS + 1, 10**9])
def test_far_future_versions_are_refused(ahead_ms: int) -> None:
    wall = FakeWallClock(1_700_000_000_000)
    clock = HybridClock(now_ms=wall)
    with pytest.raises(JobError) as err:
        clock.observe((wall.ms + ahead_ms) << COUNTER_BITS)
    assert err.value.code.value == "BAD_REQUEST"
    with pytest.raises(JobError):
        clock.check(2**63 - 1)
    clock.check(wall.ms << COUNTER_BITS)
    clock.check(1_700_000_000_000)  # a version of the wall-clock era: far in the past
