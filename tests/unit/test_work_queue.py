"""The pull-based embed work queue (node/jobs/work_queue.py), driven by fake peers.

``FakePeers`` is a discrete-event simulation: each fake peer computes a batch in
``size / speed`` simulated seconds, takes the next batch whenever one of its slots is free
(as the dispatcher's workers do), and may die at a given time. No network, no clock.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field

import pytest

from calinode.node.jobs.work_queue import (
    MAX_BATCH,
    MIN_BATCH,
    Batch,
    RatedSpread,
    WorkQueue,
    batch_size,
    cut_batches,
    soonest_first,
)

POLL = 0.25  # an idle fake worker looks again this often (the dispatcher's HEDGE_POLL_SECONDS)


@dataclass
class FakePeers:
    """Fake peers of given speeds (texts/s); ``dies_at``: when a fake peer stops answering
    (its running batches fail then); ``stalls``: batch indexes a fake peer never answers."""

    speeds: dict[str, float]
    dies_at: dict[str, float] = field(default_factory=dict)
    stalls: dict[str, set[int]] = field(default_factory=dict)
    failed_requests: bool = False

    def run(self, queue: WorkQueue, limit: float = 10_000.0) -> float:
        now = 0.0
        busy_until = dict.fromkeys(self.speeds, 0.0)  # a fake peer computes one batch at a time
        running: list[tuple[float, str, Batch, bool]] = []  # (when, peer, batch, fails)
        while not queue.complete:
            for peer, speed in self.speeds.items():
                while True:
                    dead = self.dies_at.get(peer, limit) <= now
                    if dead or queue.is_out(peer):
                        break
                    batch = queue.next_for(peer, now)
                    if batch is None:
                        break
                    ends = max(now, busy_until[peer]) + batch.size / speed
                    busy_until[peer] = ends
                    death = self.dies_at.get(peer, limit)
                    if batch.index in self.stalls.get(peer, set()):
                        ends = limit
                    running.append((min(ends, death), peer, batch, death <= ends))
            if not running:
                if queue.stranded(self.speeds):
                    self.failed_requests = True
                    return now
                now += POLL
                continue
            running.sort(key=lambda item: item[0])
            next_event = running[0][0]
            if next_event > now + POLL and not any(
                    queue.running_on(p) < queue.slots(p) for p in self.speeds
                    if not queue.is_out(p) and self.dies_at.get(p, limit) > now):
                now = next_event
            else:
                now = min(next_event, now + POLL)
            while running and running[0][0] <= now:
                _, peer, batch, fails = running.pop(0)
                if fails:
                    if not queue.failed(batch, peer):
                        self.failed_requests = True
                        return now
                elif queue.finished(batch, peer, now):
                    # the other attempts of a finished batch are cancelled (dispatcher)
                    running = [r for r in running if r[2].index != batch.index]
            assert now < limit, "the fake run never finished"
        return now


def test_batches_cover_the_request_in_order() -> None:
    queue = WorkQueue(1000, 128)
    assert queue.batches[0] == Batch(0, 0, 128)
    assert queue.batches[-1] == Batch(7, 896, 1000)
    assert all(a.stop == b.start for a, b in zip(queue.batches, queue.batches[1:], strict=False))
    assert WorkQueue(0, 64).complete


def test_guided_batches_shrink_toward_the_end_and_cover_the_request() -> None:
    for count, size, peers in [(2048, 128, 2), (2048, 86, 3), (300, 32, 2), (4096, 128, 8),
                               (33, 32, 2), (1, 32, 2), (0, 32, 2)]:
        bounds = cut_batches(count, size, peers)
        assert [start for start, _ in bounds] == [0, *[stop for _, stop in bounds]][:len(bounds)]
        assert (bounds[-1][1] if bounds else 0) == count
        sizes = [stop - start for start, stop in bounds]
        assert all(s <= max(size, MIN_BATCH + MIN_BATCH // 2) for s in sizes), sizes
        assert sizes[:-1] == sorted(sizes[:-1], reverse=True), sizes
    guided = [stop - start for start, stop in cut_batches(2048, 128, 2)]
    assert guided[0] == 128 and guided[-1] <= MIN_BATCH + MIN_BATCH // 2
    assert cut_batches(1000, 128) == [(s, min(s + 128, 1000)) for s in range(0, 1000, 128)]


def test_guided_batches_end_two_peers_within_a_small_batch() -> None:
    """Simulated time: two peers of 50 and 42 texts/s (one shares its core with the
    coordinator) on 2048 texts. Fixed batches of 128 leave one idle for most of a batch at
    the end; guided ones end within about a small batch's time of the ideal."""
    speeds = {"a": 50.0, "b": 42.0}
    ideal = 2048 / sum(speeds.values())
    fixed = FakePeers(speeds).run(WorkQueue(2048, 128))
    guided = FakePeers(speeds).run(WorkQueue(2048, 128, peers=2))
    assert guided - ideal <= (MIN_BATCH + MIN_BATCH // 2) / min(speeds.values()) + POLL
    assert guided < fixed


@pytest.mark.parametrize("rates", [
    {"a": 31.0, "b": 28.0, "c": 54.0},  # three nodes after a restart (CI: a search ran out)
    {"a": 100.0, "b": 100.0, "c": 100.0},
    {"a": 100.0, "b": 100.0, "c": 20.0},
    {"a": 5.0, "b": 5.0, "c": 5.0, "d": 5.0, "e": 5.0},
])
def test_a_single_batch_is_always_taken_by_someone(rates: dict[str, float]) -> None:
    queue = WorkQueue(40, 40, advertised=rates)
    taken = [p for p in rates if queue.next_for(p, 0.0) is not None]
    assert len(taken) == 1 and rates[taken[0]] == max(rates.values())
    queue = WorkQueue(300, 32, advertised=rates, peers=len(rates))
    FakePeers(rates).run(queue, limit=600.0)
    assert queue.complete and not queue.hedged


def test_batch_size_is_bounded() -> None:
    assert batch_size(40, 2) == MIN_BATCH
    assert batch_size(4096, 2) == MAX_BATCH
    assert MIN_BATCH <= batch_size(1000, 3) <= MAX_BATCH


def test_a_fast_peer_serves_in_proportion_to_its_speed() -> None:
    queue = WorkQueue(4096, 64)
    FakePeers({"fast": 300.0, "slow": 100.0}).run(queue)
    shares = queue.shares()
    assert sum(shares.values()) == len(queue.batches)
    assert shares["fast"] == pytest.approx(3 * shares["slow"], rel=0.25)


def test_a_5x_slower_peer_takes_a_small_share_and_costs_no_time() -> None:
    two_fast = FakePeers({"a": 250.0, "b": 250.0}).run(WorkQueue(4096, 128))
    queue = WorkQueue(4096, 128)
    three = FakePeers({"a": 250.0, "b": 250.0, "slow": 50.0}).run(queue)
    assert queue.shares().get("slow", 0) <= 0.15 * len(queue.batches)
    assert three <= two_fast


def test_an_advertised_slow_peer_gets_one_slot() -> None:
    queue = WorkQueue(1024, 64, advertised={"fast": 400.0, "slow": 40.0, "new": None})
    assert queue.slots("slow") == 1 and queue.slots("fast") == 2 and queue.slots("new") == 2


def test_a_stalled_batch_is_hedged_on_an_idle_peer_and_the_first_answer_wins() -> None:
    queue = WorkQueue(512, 64, advertised={"a": 200.0, "b": 200.0})
    peers = FakePeers({"a": 200.0, "b": 200.0}, stalls={"b": {2}})
    peers.run(queue)
    assert queue.complete and not peers.failed_requests
    assert queue.hedged >= 1 and queue.served_by[2] == "a"


def test_no_hedge_before_the_stall_limit() -> None:
    queue = WorkQueue(128, 64, advertised={"a": 100.0, "b": 100.0})
    first, second = queue.next_for("a", 0.0), queue.next_for("b", 0.0)
    assert first is not None and second is not None
    assert queue.finished(first, "a", 0.6)
    assert queue.next_for("a", 1.0) is None  # b's batch is not late yet (expected 0.64 s)
    hedge = queue.next_for("a", 30.0)
    assert hedge == second and queue.hedged == 1
    assert queue.finished(second, "a", 30.5) and not queue.finished(second, "b", 31.0)
    assert queue.served_by == {0: "a", 1: "a"}


def test_a_batch_stuck_when_no_rate_is_known_is_still_hedged() -> None:
    """Nothing measured yet (a swarm that only embedded search queries): a batch stuck on a
    half-dead connection is hedged after a slow CPU's time, not left to the deadline."""
    queue = WorkQueue(40, 20)
    first, second = queue.next_for("a", 0.0), queue.next_for("b", 0.0)
    assert first is not None and second is not None
    assert queue.finished(first, "a", 0.5)
    assert queue.next_for("a", 1.0) is None  # b is not late yet
    assert queue.next_for("a", 20.0) == second and queue.hedged == 1
    assert queue.finished(second, "a", 20.5)


def test_a_peer_dying_mid_batch_gives_its_batches_to_the_others() -> None:
    queue = WorkQueue(2048, 64)
    peers = FakePeers({"a": 200.0, "b": 200.0, "c": 200.0}, dies_at={"b": 1.0})
    peers.run(queue)
    assert queue.complete and not peers.failed_requests
    assert queue.is_out("b")
    assert set(queue.served_by) == set(range(len(queue.batches)))
    assert queue.shares().get("b", 0) <= 6  # what it finished before it died


def test_every_peer_dead_strands_the_request() -> None:
    queue = WorkQueue(1024, 64)
    peers = FakePeers({"a": 100.0, "b": 100.0}, dies_at={"a": 0.5, "b": 0.7})
    peers.run(queue)
    assert peers.failed_requests and not queue.complete and queue.stranded(["a", "b"])


def test_a_batch_that_fails_everywhere_fails_the_request() -> None:
    queue = WorkQueue(64, 64)
    results = []
    for peer in ("a", "b", "c"):
        batch = queue.next_for(peer, 0.0)
        assert batch is not None
        results.append(queue.failed(batch, peer))
    assert results == [True, True, False]


def test_measured_rate_replaces_the_advertised_one() -> None:
    queue = WorkQueue(256, 64, advertised={"a": 1000.0})
    batch = queue.next_for("a", 0.0)
    assert batch is not None and queue.finished(batch, "a", 1.0)
    rate = queue.rate("a")
    assert rate is not None and 64 < rate < 1000


def test_rated_spread_sends_the_next_batch_where_it_finishes_soonest() -> None:
    spread = RatedSpread()
    rates = {"fast": 250.0, "slow": 50.0, "new": None}
    ranked = ["slow", "fast", "new"]
    picked: list[str] = []
    with contextlib.ExitStack() as stack:
        for _ in range(8):  # batches handed out while none has finished
            peer = spread.order(ranked, rates, lambda p: p)[0]
            picked.append(peer)
            stack.enter_context(spread.running(peer))
    counts = {p: picked.count(p) for p in ranked}
    assert counts["slow"] <= 1 and counts["fast"] >= 3  # "new" counts as the median (250)
    assert spread.count("fast") == 0  # every batch ended


def test_soonest_first_sends_a_slow_peer_a_share_by_its_rate() -> None:
    """Concurrent generations routed one by one, each to the soonest finisher, the load
    counting the ones sent before: a 5x slower peer gets one in six, equal peers alternate."""
    rates: dict[str, float | None] = {"fast": 50.0, "slow": 10.0}
    load = dict.fromkeys(rates, 0)
    for _ in range(12):
        first = soonest_first(list(rates), rates, lambda p: p, load=load.__getitem__)[0]
        load[first] += 1
    assert load == {"fast": 10, "slow": 2}
    equal: dict[str, float | None] = {"a": 30.0, "b": 30.0}
    load = dict.fromkeys(equal, 0)
    picks = []
    for _ in range(4):
        picks.append(soonest_first(["a", "b"], equal, lambda p: p, load=load.__getitem__)[0])
        load[picks[-1]] += 1
    assert picks == ["a", "b", "a", "b"]  # ties keep the dispatcher's rank


def test_soonest_first_counts_an_unknown_rate_as_the_median() -> None:
    rates: dict[str, float | None] = {"a": 10.0, "new": None, "b": 40.0, "c": 20.0}
    order = soonest_first(["new", "a", "b", "c"], rates, lambda p: p, load=lambda p: 0)
    assert order == ["b", "new", "c", "a"]  # "new" as the median, 20, and ranked before "c"
    assert soonest_first(["x", "y"], {}, lambda p: p, load={"x": 2, "y": 0}.__getitem__) == [
        "y", "x"]
