"""Peers we have only heard of: relayed records waiting for direct contact. Pure logic, no I/O.

A peer exchange carries records of third peers. Those records are signed by their peers, but
nothing says the peers exist or want to hear from us: a hostile member can relay thousands of
self-made records. So a relayed record of a peer we have never talked to does not enter the
:class:`~calinode.node.peer_table.PeerTable` (nor py-libp2p's peer store); it waits here as a
*candidate* until a peer exchange with that peer succeeds. The table is capped twice:

- per sender (``per_sender``, default 32): one peer cannot fill the table alone; its own oldest
  candidates go first;
- in total (``total``, default 512): when full, the sender holding the most candidates loses
  its least useful one (failed dials first, then the oldest).

Every candidate pushed out or refused is returned to the caller, which counts it
(``relay_cap``). Which candidates to dial, and how fast, is :class:`DialBudget`'s business: a
token bucket shared by all candidates, so relayed addresses cannot make the node dial more
than a few times per second whatever peers send.

Times are plain floats from a monotonic clock handed in by the caller.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

from calinode.protocol.capabilities import Capabilities
from calinode.protocol.records import CapabilityRecord

__all__ = ["Candidate", "DialBudget", "RelayedCandidates"]

#: How long a candidate whose dial failed waits before it is dialled again (py-libp2p keeps a
#: failed peer 60 s in its own negative dial cache anyway).
RETRY_AFTER = 60.0


@dataclass
class Candidate:
    """A verified, fresh record of a peer not yet contacted, and who relayed it."""

    record: CapabilityRecord
    caps: Capabilities
    sender: str
    received_at: float
    failed_dials: int = 0
    next_dial_at: float = 0.0

    @property
    def peer_id(self) -> str:
        return self.record.peer_id

    def usefulness(self) -> tuple[int, float]:
        """Sort key, least useful first: most failed dials, then oldest."""
        return (-self.failed_dials, self.received_at)


class RelayedCandidates:
    """Capped table of candidates (see module docstring)."""

    def __init__(self, *, per_sender: int = 32, total: int = 512) -> None:
        self.per_sender = per_sender
        self.total = total
        self._by_peer: dict[str, Candidate] = {}
        self._per_sender: Counter[str] = Counter()

    def __len__(self) -> int:
        return len(self._by_peer)

    def __contains__(self, peer_id: object) -> bool:
        return peer_id in self._by_peer

    def get(self, peer_id: str) -> Candidate | None:
        return self._by_peer.get(peer_id)

    def senders(self) -> dict[str, int]:
        return dict(self._per_sender)

    def has_seen(self, record: CapabilityRecord) -> bool:
        """True when we hold this record of its peer or a newer one (nothing new to check)."""
        held = self._by_peer.get(record.peer_id)
        return held is not None and record.seq <= held.record.seq

    def offer(self, record: CapabilityRecord, caps: Capabilities, *, sender: str,
              now: float) -> list[Candidate]:
        """Hold ``record`` (relayed by ``sender``); returns the candidates pushed out.

        The returned list may hold the new candidate itself (refused: its sender is at its cap
        and every other candidate of that sender is more useful). A newer record of a peer we
        already hold replaces the old one and keeps its dial history.
        """
        held = self._by_peer.get(record.peer_id)
        if held is not None:
            if record.seq <= held.record.seq:
                return []
            self._remove(held)
            candidate = Candidate(record=record, caps=caps, sender=sender, received_at=now,
                                  failed_dials=held.failed_dials, next_dial_at=held.next_dial_at)
        else:
            candidate = Candidate(record=record, caps=caps, sender=sender, received_at=now)
        self._add(candidate)
        pushed: list[Candidate] = []
        while self._per_sender[sender] > self.per_sender:
            pushed.append(self._evict_from(sender))
        while len(self._by_peer) > self.total:
            biggest = max(self._per_sender.items(), key=lambda item: (item[1], item[0]))[0]
            pushed.append(self._evict_from(biggest))
        return pushed

    def discard(self, peer_id: str) -> Candidate | None:
        """Forget ``peer_id`` (contacted directly, or no longer wanted)."""
        held = self._by_peer.get(peer_id)
        if held is not None:
            self._remove(held)
        return held

    def expire(self, *, before_ms: int) -> list[Candidate]:
        """Drop candidates whose record was issued before ``before_ms`` (too old to trust)."""
        old = [c for c in self._by_peer.values() if c.record.issued_at_ms < before_ms]
        for candidate in old:
            self._remove(candidate)
        return old

    def due(self, now: float, limit: int) -> list[Candidate]:
        """Up to ``limit`` candidates to dial now: never-failed first, then the oldest."""
        if limit <= 0:
            return []
        ready = [c for c in self._by_peer.values() if c.next_dial_at <= now]
        ready.sort(key=lambda c: (c.failed_dials, c.received_at))
        return ready[:limit]

    def dial_failed(self, peer_id: str, now: float) -> None:
        held = self._by_peer.get(peer_id)
        if held is not None:
            held.failed_dials += 1
            held.next_dial_at = now + RETRY_AFTER

    def _add(self, candidate: Candidate) -> None:
        self._by_peer[candidate.peer_id] = candidate
        self._per_sender[candidate.sender] += 1

    def _remove(self, candidate: Candidate) -> None:
        del self._by_peer[candidate.peer_id]
        self._per_sender[candidate.sender] -= 1
        if self._per_sender[candidate.sender] <= 0:
            del self._per_sender[candidate.sender]

    def _evict_from(self, sender: str) -> Candidate:
        victim = min((c for c in self._by_peer.values() if c.sender == sender),
                     key=Candidate.usefulness)
        self._remove(victim)
        return victim


class DialBudget:
    """A token bucket: at most ``rate`` dials per second on average, ``burst`` at once."""

    def __init__(self, *, rate: float = 4.0, burst: int = 8, now: float = 0.0) -> None:
        self.rate = rate
        self.burst = burst
        self._tokens = float(burst)
        self._at = now

    def available(self, now: float) -> int:
        """Whole tokens available at ``now`` (refilling since the last call)."""
        self._tokens = min(float(self.burst), self._tokens + (now - self._at) * self.rate)
        self._at = max(self._at, now)
        return int(self._tokens)

    def take(self, now: float, wanted: int) -> int:
        """Take up to ``wanted`` tokens; returns how many were granted."""
        granted = min(wanted, self.available(now))
        self._tokens -= granted
        return granted
