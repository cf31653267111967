"""A pull-based work queue: a large batch spread over peers in proportion to their speed.

Pure decisions, no I/O (``dispatch.py`` runs the peers): the work is cut into contiguous
:class:`Batch` es; each peer asks for the next one when it has a free slot
(:meth:`WorkQueue.next_for`), so a peer twice as fast asks twice as often and serves twice as
many; near the end a peer known to be slow declines a batch the others would finish sooner
(:meth:`WorkQueue.next_for` returns None), so the request never waits for its last batch.
Equal parts, one per peer (what the dispatcher did before), made every request as slow as its
slowest peer: one worker 5x slower made the whole batch 5x slower.

Once nothing is left to hand out, an idle peer may *hedge* a batch that has been running on
another peer much longer than that peer's expected time (``HEDGE_FACTOR`` times its measured
or advertised rate, and at least ``MIN_HEDGE_SECONDS``): the batch then runs on both, and
whichever answers first wins (:meth:`WorkQueue.finished` says whether a reply was the first).
A peer that fails (dies, times out, refuses) takes no more batches of this queue; its batch
goes back to the front of the queue unless another peer is still running it.

Rates are texts per second, an exponential average of the batches a peer finished here,
seeded by the rate the peer advertises (``ModelOffer.rate``).

Batches shrink toward the end (guided self-scheduling, :func:`cut_batches`): a batch is at most
the texts left over ``TAIL_SPLIT`` times the peers, so the last ones are ``MIN_BATCH`` texts and
the peers finish within a small batch of each other. With fixed batches of ``MAX_BATCH`` a
2048-text request on two equal one-core peers ended with one of them idle for about one
batch (2.3 s of 36 here: 1.77x instead of 1.9x in ``bench/bench_scale.py``).
"""

from __future__ import annotations

import contextlib
import math
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import TypeVar

T = TypeVar("T")

#: Texts per batch: the smallest batch is still worth a round trip (a job costs ~5-10 ms of
#: framing and scheduling per hop), the largest keeps the tail short (the last batch is what
#: a fast peer may wait for). See ``batch_size``.
MIN_BATCH = 32
MAX_BATCH = 128
#: Batches per peer a request is cut into at least (more batches: finer proportional share).
BATCHES_PER_PEER = 8
#: Batches a peer has at once: one being computed, one waiting in its queue, so the model
#: never waits for a round trip. A peer advertising less than ``SLOW_PEER_SHARE`` of the
#: fastest peer's rate gets one slot: its second batch would only wait there.
SLOTS_PER_PEER = 2
SLOW_PEER_SHARE = 0.25
#: Texts/s assumed when no peer's rate is known yet (a slow CPU, one text per call).
UNMEASURED_RATE = 20.0
#: A batch is stalled once it has run this many times its peer's expected time.
HEDGE_FACTOR = 3.0
MIN_HEDGE_SECONDS = 2.0
#: A batch that failed on this many peers fails the request (it is the batch, not the peers).
MAX_FAILURES = 3
#: Weight of the newest batch in a peer's measured rate.
RATE_WEIGHT = 0.5
#: A batch is at most the texts left over this many times the peers (see :func:`cut_batches`).
TAIL_SPLIT = 2


def batch_size(count: int, peers: int) -> int:
    """Texts per batch for ``count`` texts over ``peers`` peers (see the constants)."""
    per = math.ceil(count / max(1, peers * BATCHES_PER_PEER))
    return max(MIN_BATCH, min(MAX_BATCH, per))


def cut_batches(count: int, size: int, peers: int = 0) -> list[tuple[int, int]]:
    """``(start, stop)`` of each batch of ``count`` texts: ``size`` texts each (the last one
    less) when ``peers`` is 0; else guided: each batch at most the texts left over
    ``TAIL_SPLIT * peers``, never below ``MIN_BATCH`` (nor above ``size``)."""
    bounds: list[tuple[int, int]] = []
    start = 0
    while start < count:
        step = size
        if peers > 0:
            step = max(min(MIN_BATCH, size), min(size, math.ceil(
                (count - start) / (TAIL_SPLIT * peers))))
        if count - start - step < MIN_BATCH // 2:  # no crumb of a batch at the very end
            step = count - start
        bounds.append((start, min(start + step, count)))
        start += step
    return bounds


@dataclass(frozen=True, slots=True)
class Batch:
    """Texts ``start:stop`` of the request, the ``index``-th batch in order."""

    index: int
    start: int
    stop: int

    @property
    def size(self) -> int:
        return self.stop - self.start


@dataclass(slots=True)
class _Attempt:
    peer: str
    started: float


@dataclass
class WorkQueue:
    """The batches of one request and who runs, ran or failed which (module docstring)."""

    count: int
    size: int
    #: texts/s each peer advertised (None or missing: unknown)
    advertised: Mapping[str, float | None] = field(default_factory=dict)
    #: the peers the batches are cut for: 0 cuts them all ``size`` long, else they shrink
    #: toward the end (:func:`cut_batches`)
    peers: int = 0
    batches: list[Batch] = field(init=False)
    #: the peer whose reply was kept, per batch index
    served_by: dict[int, str] = field(init=False, default_factory=dict)
    hedged: int = field(init=False, default=0)

    def __post_init__(self) -> None:
        if self.count < 0 or self.size < 1:
            raise ValueError("a work queue needs count >= 0 and size >= 1")
        self.batches = [Batch(n, start, stop) for n, (start, stop)
                        in enumerate(cut_batches(self.count, self.size, self.peers))]
        self._pending: deque[int] = deque(range(len(self.batches)))
        self._running: dict[int, list[_Attempt]] = {}
        self._failures: dict[int, int] = {}
        self._failed_peers: set[str] = set()
        self._rates: dict[str, float] = {p: r for p, r in self.advertised.items()
                                         if r is not None and r > 0}

    # -- state ---------------------------------------------------------------------------

    @property
    def complete(self) -> bool:
        return len(self.served_by) == len(self.batches)

    def is_out(self, peer: str) -> bool:
        """True once ``peer`` failed a batch of this queue: it takes no more."""
        return peer in self._failed_peers

    def running_on(self, peer: str) -> int:
        return sum(1 for attempts in self._running.values() for a in attempts if a.peer == peer)

    def rate(self, peer: str) -> float | None:
        """Texts/s of ``peer``: measured here, else advertised, else None."""
        return self._rates.get(peer)

    def slots(self, peer: str) -> int:
        """Batches ``peer`` may run at once (see ``SLOTS_PER_PEER``)."""
        fastest = max(self._rates.values(), default=0.0)
        mine = self._rates.get(peer)
        if mine is not None and fastest > 0 and mine < SLOW_PEER_SHARE * fastest:
            return 1
        return SLOTS_PER_PEER

    def expected_seconds(self, peer: str, batch: Batch) -> float | None:
        rate = self._rates.get(peer)
        return None if rate is None else batch.size / rate

    def shares(self) -> dict[str, int]:
        """Batches served per peer (the replies kept)."""
        out: dict[str, int] = {}
        for peer in self.served_by.values():
            out[peer] = out.get(peer, 0) + 1
        return out

    # -- decisions -----------------------------------------------------------------------

    def next_for(self, peer: str, now: float) -> Batch | None:
        """The batch ``peer`` should run now, or None (nothing for it: wait or stop)."""
        if peer in self._failed_peers or self.running_on(peer) >= self.slots(peer):
            return None
        if self._pending:
            if not self._worth_taking(peer, self.batches[self._pending[0]]):
                return None
            index = self._pending.popleft()
            self._running.setdefault(index, []).append(_Attempt(peer, now))
            return self.batches[index]
        stalled = self._stalled(peer, now)
        if stalled is None:
            return None
        self._running[stalled].append(_Attempt(peer, now))
        self.hedged += 1
        return self.batches[stalled]

    def _worth_taking(self, peer: str, batch: Batch) -> bool:
        """False when another peer would finish ``batch`` sooner than ``peer`` (after what
        each runs already): near the end a slow peer taking the last batch would make the
        whole request wait for it. The others finish it no sooner than their combined rate
        allows for all the work left, nor than the fastest of them alone can run it: a batch
        runs on one peer (comparing with the combined rate only, no peer of three with equal
        rates ever took a request's single batch, and the request ran to its deadline)."""
        mine = self._rates.get(peer)
        others = {p: r for p, r in self._rates.items()
                  if p != peer and p not in self._failed_peers}
        if mine is None or not others:
            return True
        left = sum(self.batches[i].size for i in self._pending) + sum(
            self.batches[i].size for i, attempts in self._running.items()
            if any(a.peer in others for a in attempts))
        together = left / sum(others.values())
        alone = min((self._texts_running_on(p) + batch.size) / r for p, r in others.items())
        return (self._texts_running_on(peer) + batch.size) / mine <= max(together, alone)

    def _texts_running_on(self, peer: str) -> int:
        return sum(self.batches[i].size for i, attempts in self._running.items()
                   for a in attempts if a.peer == peer)

    def _stalled(self, peer: str, now: float) -> int | None:
        """The longest-running batch that runs once, on another peer, far past its time."""
        worst: tuple[float, int] | None = None
        for index, attempts in self._running.items():
            if len(attempts) != 1 or attempts[0].peer == peer:
                continue
            attempt = attempts[0]
            elapsed = now - attempt.started
            if elapsed < self._stall_limit(attempt.peer, self.batches[index]):
                continue
            if worst is None or elapsed > worst[0]:
                worst = (elapsed, index)
        return None if worst is None else worst[1]

    def _stall_limit(self, peer: str, batch: Batch) -> float:
        expected = self.expected_seconds(peer, batch)
        if expected is None:  # never measured: compare with the fastest peer measured
            fastest = max(self._rates.values(), default=0.0)
            # nothing measured at all (a swarm that only embedded search queries, a peer just
            # restarted): a slow CPU's rate, so a batch stuck on a half-dead connection is
            # still hedged well inside the request's deadline instead of spending all of it
            expected = batch.size / (fastest if fastest > 0 else UNMEASURED_RATE)
        return max(MIN_HEDGE_SECONDS, HEDGE_FACTOR * expected)

    def finished(self, batch: Batch, peer: str, now: float) -> bool:
        """``peer`` answered ``batch``: True if this is the reply to keep (the first); the
        other peers still running it are in :meth:`others_running`."""
        attempts = self._running.get(batch.index, [])
        mine = next((a for a in attempts if a.peer == peer), None)
        if mine is not None:
            attempts.remove(mine)
            seconds = max(1e-6, now - mine.started)
            measured = batch.size / seconds
            old = self._rates.get(peer)
            self._rates[peer] = measured if old is None else (
                RATE_WEIGHT * measured + (1 - RATE_WEIGHT) * old)
        if batch.index in self.served_by:
            return False
        self.served_by[batch.index] = peer
        self._running.pop(batch.index, None)
        return True

    def others_running(self, batch: Batch) -> list[str]:
        return [a.peer for a in self._running.get(batch.index, [])]

    def failed(self, batch: Batch, peer: str) -> bool:
        """``peer`` could not run ``batch``: it takes no more batches; the batch goes back to
        the front of the queue unless done or still running elsewhere. False when the batch
        failed ``MAX_FAILURES`` times (the request should fail)."""
        self._failed_peers.add(peer)
        attempts = self._running.get(batch.index, [])
        self._running[batch.index] = [a for a in attempts if a.peer != peer]
        if batch.index in self.served_by:
            return True
        self._failures[batch.index] = self._failures.get(batch.index, 0) + 1
        if self._failures[batch.index] >= MAX_FAILURES:
            return False
        if not self._running[batch.index]:
            del self._running[batch.index]
            self._pending.appendleft(batch.index)
        return True

    def stranded(self, peers: Iterable[str]) -> bool:
        """True when work is left and every one of ``peers`` is out: nobody can finish it."""
        return not self.complete and all(p in self._failed_peers for p in peers)


def soonest_first(ranked: list[T], rates: Mapping[str, float | None],
                  peer_of: Callable[[T], str], load: Callable[[T], int]) -> list[T]:
    """``ranked`` by when each would finish one more job: ``(load + 1) / rate``, a peer of
    unknown rate counted at the median known rate (all unknown: by load alone); the rank
    breaks ties, so equal peers keep the dispatcher's order (this node first when idle)."""
    known = sorted(r for r in rates.values() if r is not None and r > 0)
    typical = known[len(known) // 2] if known else 1.0

    def finish(candidate: T) -> float:
        return (load(candidate) + 1) / (rates.get(peer_of(candidate)) or typical)

    return sorted(ranked, key=finish)  # stable: ties keep their rank


class RatedSpread:
    """Where the next of a stream of batches goes when the batches come one by one (an
    ingest cuts and writes as it goes, so it cannot hand a :class:`WorkQueue` all its work
    up front): to the peer that would finish it soonest, its batches in flight and its rate
    counted (``(running + 1) / rate``); a peer of unknown rate counts as the median known.
    The dispatcher's rank breaks ties and stays the order of the fallbacks."""

    def __init__(self) -> None:
        self._running: dict[str, int] = {}

    def count(self, peer: str) -> int:
        return self._running.get(peer, 0)

    def order(self, ranked: list[T], rates: Mapping[str, float | None],
              peer_of: Callable[[T], str]) -> list[T]:
        return soonest_first(ranked, rates, peer_of, load=lambda c: self.count(peer_of(c)))

    @contextlib.contextmanager
    def running(self, peer: str) -> Iterator[None]:
        self._running[peer] = self.count(peer) + 1
        try:
            yield
        finally:
            self._running[peer] -= 1
            if not self._running[peer]:
                del self._running[peer]
