"""Peers we have only heard of: relayed records waiting for direct contact. Pure logic, no I/O.

A peer exchange carries records of third peers. Those records are signed by their peers, but
nothing says the peers exist or want to hear from us: a hostile member can relay thousands of
self-made records. So a relayed record of a peer we have never talked to does not enter the
:class:`~calinode.node.p2p.peer_table.PeerTable` (nor py-libp2p's peer store); it waits here as a
*candidate* until a peer exchange with that peer succeeds. The table is capped twice:

- per sender (``per_sender``, default 32): one peer cannot fill the table alone;
- in total (``total``, default 512): when full, a sender holding at least two candidates more
  than the newcomer's sender loses its least useful one (failed dials first, then the oldest),
  so the senders' shares even out and then stay put.

A slot, once taken, is kept until its candidate is contacted, fails a dial, or expires: a
sender at its cap (or at its share of a full table) can replace only one of its own
candidates whose dial failed, never one still waiting for its first dial. That is what makes
a flood cheap: :meth:`RelayedCandidates.admits` answers, before the caller spends a signature
check, whether a new record from that sender could be held at all, and a flood that resends
the same records every round is refused there. (Letting a sender's newest records push out its
own older ones, as a first version did, made every resent record cost a signature check and
a table walk each round.) Records of a peer already held replace the held one when newer, at
most every ``refresh_after`` seconds (:meth:`RelayedCandidates.wants`); they keep its slot,
its sender and its dial history.

Every candidate pushed out or refused is returned to the caller, which counts it
(``relay_cap``). Which candidates to dial, and how fast, is :class:`DialBudget`'s business: a
token bucket shared by all candidates, so relayed addresses cannot make the node dial more
than a few times per second whatever peers send.

Times are plain floats from a monotonic clock handed in by the caller.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from calinode.protocol.capabilities import Capabilities
from calinode.protocol.records import CapabilityRecord

__all__ = ["Candidate", "DialBudget", "RelayedCandidates", "Want"]

#: How long a candidate whose dial failed waits before it is dialled again (py-libp2p keeps a
#: failed peer 60 s in its own negative dial cache anyway).
RETRY_AFTER = 60.0
#: Least seconds between two replacements of a held candidate's record by newer ones (its
#: record only has to stay fresh enough to be dialled; the direct exchange brings the rest).
REFRESH_AFTER = 60.0


class Want(enum.Enum):
    """What :meth:`RelayedCandidates.wants` says of a relayed record, before any signature."""

    NEW = "new"          # a peer not held, and its sender has room: worth a signature check
    REFRESH = "refresh"  # a newer record of a held candidate, due for a refresh
    SEEN = "seen"        # nothing new (held with this seq or newer, or refreshed recently)
    FULL = "full"        # a peer not held, and its sender has no room: refuse (relay_cap)


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

    def __init__(self, *, per_sender: int = 32, total: int = 512,
                 refresh_after: float = REFRESH_AFTER) -> None:
        self.per_sender = per_sender
        self.total = total
        self.refresh_after = refresh_after
        self._by_peer: dict[str, Candidate] = {}
        #: each sender's candidates (never an empty dict)
        self._by_sender: dict[str, dict[str, Candidate]] = {}
        #: the most candidates any sender holds; None: to be recomputed (after a change)
        self._biggest: int | None = 0

    def __len__(self) -> int:
        return len(self._by_peer)

    def __contains__(self, peer_id: object) -> bool:
        return peer_id in self._by_peer

    def get(self, peer_id: str) -> Candidate | None:
        return self._by_peer.get(peer_id)

    def senders(self) -> dict[str, int]:
        return {sender: len(held) for sender, held in self._by_sender.items()}

    def has_seen(self, record: CapabilityRecord) -> bool:
        """True when we hold this record of its peer or a newer one (nothing new to check)."""
        held = self._by_peer.get(record.peer_id)
        return held is not None and record.seq <= held.record.seq

    def wants(self, record: CapabilityRecord, sender: str, now: float) -> Want:
        """Whether ``record`` relayed by ``sender`` could change the table (a few dict
        lookups: the caller asks before it spends a signature check on the record)."""
        held = self._by_peer.get(record.peer_id)
        if held is not None:
            if record.seq <= held.record.seq or now - held.received_at < self.refresh_after:
                return Want.SEEN
            return Want.REFRESH
        return Want.NEW if self.admits(sender) else Want.FULL

    def admits(self, sender: str) -> bool:
        """Whether a new candidate relayed by ``sender`` would be held (module docstring)."""
        return self._room_for(sender)[0]

    def offer(self, record: CapabilityRecord, caps: Capabilities, *, sender: str,
              now: float) -> list[Candidate]:
        """Hold ``record`` (relayed by ``sender``); returns the candidates pushed out.

        The returned list holds the new candidate itself when it is refused (its sender has no
        room: see :meth:`admits`). A newer record of a peer we already hold replaces the old
        one in its slot (same sender, same dial history); an older one is ignored.
        """
        held = self._by_peer.get(record.peer_id)
        if held is not None:
            if record.seq > held.record.seq:
                held.record, held.caps, held.received_at = record, caps, now
            return []
        candidate = Candidate(record=record, caps=caps, sender=sender, received_at=now)
        fits, victim = self._room_for(sender)
        if not fits:
            return [candidate]
        if victim is not None:
            self._remove(victim)
        self._add(candidate)
        return [victim] if victim is not None else []

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

    # -- slots -------------------------------------------------------------------------------

    def _room_for(self, sender: str) -> tuple[bool, Candidate | None]:
        """Whether a new candidate of ``sender`` fits, and which candidate it would push out.

        Costs a few dict lookups while nothing changes, so a refused flood stays cheap."""
        own = self._by_sender.get(sender)
        count = len(own) if own is not None else 0
        if count < self.per_sender:
            if len(self._by_peer) < self.total:
                return True, None
            if self._biggest_share() > count + 1:
                biggest = max(self._by_sender.items(), key=lambda item: (len(item[1]), item[0]))
                return True, min(biggest[1].values(), key=Candidate.usefulness)
        if own is None:
            return False, None
        weakest = min(own.values(), key=Candidate.usefulness)
        return (True, weakest) if weakest.failed_dials > 0 else (False, None)

    def _biggest_share(self) -> int:
        if self._biggest is None:
            self._biggest = max((len(held) for held in self._by_sender.values()), default=0)
        return self._biggest

    def _add(self, candidate: Candidate) -> None:
        self._by_peer[candidate.peer_id] = candidate
        self._by_sender.setdefault(candidate.sender, {})[candidate.peer_id] = candidate
        self._biggest = None

    def _remove(self, candidate: Candidate) -> None:
        del self._by_peer[candidate.peer_id]
        own = self._by_sender[candidate.sender]
        del own[candidate.peer_id]
        if not own:
            del self._by_sender[candidate.sender]
        self._biggest = None


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
