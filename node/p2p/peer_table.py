"""The peer table: what this node believes about every other peer. Pure logic, no I/O.

Records arrive already signature-checked (see ``records.py``). The table decides freshness
and liveness:

- a record older than (or as old as) the one held is *stale* and ignored;
- a record relayed by a third peer (peer exchange) must have been issued recently;
- a peer is *alive* only while this node heard from it directly within ``dead_after``
  seconds; a peer silent for longer is marked dead, and dropped after ``drop_after``;
- the table holds at most ``max_peers`` peers (peers with the swarm key can make up
  identities): a new peer takes the place of the longest-dead one, or is refused
  (:class:`TableFull`) when every peer is alive.

Membership puts a peer here only after direct contact (a peer exchange with that peer);
records relayed by third peers wait in ``candidates.py`` until then. A relayed *newer* record
of a peer already here still updates it (that is how load and capabilities spread).

Refusals are :class:`~calinode.protocol.errors.RecordError` subclasses, so the caller can count
them by reason: :class:`StaleRecord`, :class:`BadCapabilities`, :class:`TableFull`.

Times are plain floats from a monotonic clock handed in by the caller, so tests need no sleep.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from calinode.protocol.capabilities import Capabilities
from calinode.protocol.errors import RecordError, RemoteProtocolError
from calinode.protocol.messages import CapabilityRecord
from calinode.protocol.records import record_size

MAX_RELAY_AGE_MS = 5 * 60 * 1000
#: Most peers in the table (below py-libp2p's 1000-peer store, whose guard keeps these).
MAX_PEERS = 900


class StaleRecord(RecordError):
    """A relayed record issued longer than ``MAX_RELAY_AGE_MS`` ago."""


class BadCapabilities(RecordError):
    """A record whose capabilities fail their typed view."""


class TableFull(RecordError):
    """A new peer while the table is full of live peers."""


@dataclass
class PeerEntry:
    record: CapabilityRecord
    #: the typed view of ``record.capabilities``: what every other module reads
    caps: Capabilities
    last_seen: float | None = None  # monotonic time of the last direct contact
    first_known: float = 0.0
    alive: bool = False
    rtt_ms: float | None = None
    #: bytes of the record's msgpack encoding (what relaying it costs)
    size: int = 0
    #: trio time the current record was accepted (its load is as old as that, or older)
    record_at: float = 0.0

    @property
    def peer_id(self) -> str:
        return self.record.peer_id


@dataclass
class SweepResult:
    died: list[str] = field(default_factory=list)
    dropped: list[str] = field(default_factory=list)


class PeerTable:
    def __init__(self, self_id: str, *, dead_after: float, drop_after: float,
                 max_peers: int = MAX_PEERS) -> None:
        self.self_id = self_id
        self.dead_after = dead_after
        self.drop_after = drop_after
        self.max_peers = max_peers
        self._entries: dict[str, PeerEntry] = {}

    def __contains__(self, peer_id: object) -> bool:
        return peer_id in self._entries

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, peer_id: str) -> PeerEntry | None:
        return self._entries.get(peer_id)

    def entries(self) -> list[PeerEntry]:
        return sorted(self._entries.values(), key=lambda e: e.peer_id)

    def alive(self) -> list[PeerEntry]:
        return [e for e in self.entries() if e.alive]

    def records(self) -> list[CapabilityRecord]:
        return [e.record for e in self.entries()]

    def accept(
        self, record: CapabilityRecord, *, now: float, now_ms: int, direct: bool
    ) -> bool:
        """Store ``record`` if it is newer than what we hold. Returns True when it is new.

        ``direct`` means the record came from its own peer over an authenticated stream;
        a relayed record older than ``MAX_RELAY_AGE_MS`` (by its issue time) is refused so
        that an old record cannot be replayed to a node that never saw the peer.
        """
        if record.peer_id == self.self_id:
            return False
        if not direct and abs(now_ms - record.issued_at_ms) > MAX_RELAY_AGE_MS:
            raise StaleRecord(f"relayed record of {record.peer_id} is stale (issued too long ago)")
        entry = self._entries.get(record.peer_id)
        if entry is not None and record.seq <= entry.record.seq:
            if direct:
                self.mark_seen(record.peer_id, now)
            return False
        caps = parse_capabilities(record)
        if entry is None:
            self._make_room(record.peer_id)
            self._entries[record.peer_id] = PeerEntry(record=record, caps=caps, first_known=now,
                                                      size=record_size(record), record_at=now)
            if direct:
                self.mark_seen(record.peer_id, now)
            return True
        entry.record = record
        entry.caps = caps
        entry.size = record_size(record)
        entry.record_at = now
        if direct:
            self.mark_seen(record.peer_id, now)
        return True

    def _make_room(self, newcomer: str) -> None:
        if len(self._entries) < self.max_peers:
            return
        dead = [e for e in self._entries.values() if not e.alive]
        if not dead:
            raise TableFull(f"peer table full ({self.max_peers} live peers): "
                            f"not adding {newcomer}")
        oldest = min(dead, key=lambda e: e.last_seen if e.last_seen is not None
                     else e.first_known)
        del self._entries[oldest.peer_id]

    def mark_seen(self, peer_id: str, now: float, rtt_ms: float | None = None) -> None:
        entry = self._entries.get(peer_id)
        if entry is None:
            return
        entry.last_seen = now
        entry.alive = True
        if rtt_ms is not None:
            entry.rtt_ms = rtt_ms if entry.rtt_ms is None else 0.7 * entry.rtt_ms + 0.3 * rtt_ms

    def sweep(self, now: float) -> SweepResult:
        """Mark silent peers dead and forget long-dead ones."""
        result = SweepResult()
        for peer_id, entry in list(self._entries.items()):
            reference = entry.last_seen if entry.last_seen is not None else entry.first_known
            silent = now - reference
            if entry.alive and silent > self.dead_after:
                entry.alive = False
                result.died.append(peer_id)
            if not entry.alive and silent > self.drop_after:
                del self._entries[peer_id]
                result.dropped.append(peer_id)
        return result


def parse_capabilities(record: CapabilityRecord) -> Capabilities:
    """The typed view of a record's capabilities; ``RecordError`` (BAD_RECORD) if it has none."""
    try:
        return Capabilities.from_wire(record.capabilities)
    except RemoteProtocolError as exc:
        raise BadCapabilities(f"record of {record.peer_id}: {exc.message}") from None
