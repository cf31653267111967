"""Membership: bootstrap, peer exchange and heartbeats on ``/calinode/meta/1.0.0``.

Every ``heartbeat_interval`` seconds the node sends a ``PeerExchange`` (its freshly signed
capability record plus the records of the peers it believes alive) to every peer it knows and
to every bootstrap address, and reads the peer's ``PeerExchange`` back. So:

- one bootstrap address is enough: the first exchange reveals the rest of the swarm, and the
  node dials the new peers on the next round (peer exchange);
- every exchange answered within its deadline marks the peer seen; a peer that stops
  answering (killed, SIGSTOPped, cut off) is marked dead after ``dead_after`` seconds by
  :meth:`PeerTable.sweep`, and dropped after ``drop_after``;
- a dead peer is still dialled every round (after clearing py-libp2p's 60 s negative dial
  cache), so a restarted peer rejoins as soon as it listens again.

What a peer sends is refused, counted (``Rejections``) and never relayed when it does not hold:

- a record over ``MAX_RECORD_BYTES`` (``oversize_record``, before any signature check; a meta
  frame over ``META_LIMITS.max_frame`` counts the same), a forged or unsigned one
  (``forged_record``), a stale relayed one (``stale_record``), one whose capabilities fail their
  typed view (``bad_capabilities``), a frame that is not a peer exchange (``bad_frame``);
- a relayed record of a peer we never talked to enters neither the peer table nor py-libp2p's
  peer store: it waits in a capped :class:`RelayedCandidates` table (``relay_cap`` counts what
  the caps refuse or push out) until a peer exchange with that peer succeeds; candidates are
  dialled under a :class:`DialBudget` (a few per second in all), and a failed dial's addresses
  are removed from the peer store again;
- a record of our own peer id that we did not issue, an exchange from our own id, or a
  bootstrap address of our own peer id that answers (dialled every ``TWIN_PROBE_INTERVAL``) is
  a copied home: :class:`IdentityConflicts` counts it and logs it loudly;
- the exchange we send carries our own record first and known records within
  ``MAX_EXCHANGE_BYTES``, so our heartbeat always fits whatever records we hold.

Cheap checks come first, so that a flood of relayed records costs little more than reading it
(a real daemon flooded with 5000 relayed records a second by 50 senders spent 68% of a core,
mostly checking signatures of records the caps then pushed out, again every round). Before any
signature check, a relayed record is skipped when it brings nothing new (a member's record no
newer than the one held, or newer while that member answered us directly within a heartbeat;
a candidate held with that seq or refreshed within ``REFRESH_AFTER``), and refused
(``relay_cap``) when its sender has no room left among the candidates. A signature check's
outcome is remembered (:class:`RecordVerdicts`, keyed by a digest of the whole record), so
the same bytes are never checked twice while remembered; a remembered refusal is counted again
but not logged again. In one exchange, only the first relayed record of our own peer id is
looked at, and the first forged relayed record ends the reading of that exchange's relayed
records (an honest peer relays only records it verified).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING

import trio
from libp2p.abc import IHost, INetStream
from libp2p.custom_types import TProtocol
from libp2p.network.swarm import Swarm
from libp2p.peer.id import ID
from libp2p.peer.peerinfo import PeerInfo

from calinode.node.metrics import NodeMetrics
from calinode.node.p2p.candidates import DialBudget, RelayedCandidates, Want
from calinode.node.p2p.framed_stream import FramedStream
from calinode.node.p2p.host import PeerPolicy, PeerStoreGuard, remote_peer_id
from calinode.node.p2p.identity_conflict import IdentityConflicts, TwinProbes
from calinode.node.p2p.membership_rules import (
    heartbeat_targets,
    member_record_is_news,
    parse_bootstrap,
    peer_addrs,
    refusal_reason,
)
from calinode.node.p2p.peer_table import MAX_RELAY_AGE_MS, PeerTable, parse_capabilities
from calinode.node.p2p.record_verdicts import VALID, RecordVerdicts, Verdict
from calinode.node.p2p.records import verify_record
from calinode.node.rejections import RateLimitedLog, Rejections
from calinode.protocol.codec import pack
from calinode.protocol.errors import (
    CalinodeError,
    ErrorCode,
    RecordError,
    RemoteProtocolError,
)
from calinode.protocol.ids import META_PROTOCOL
from calinode.protocol.messages import CapabilityRecord, PeerExchange
from calinode.protocol.records import MAX_RECORD_BYTES, META_LIMITS, record_size

if TYPE_CHECKING:  # trio-typing (a py-libp2p dependency) shadows trio's own types
    from trio_typing import TaskStatus

log = logging.getLogger(__name__)
_limited = RateLimitedLog(log)

ADDR_TTL = 3600
#: Most peers found out of band (mDNS) waiting for their first exchange.
MAX_DISCOVERED = 256


class RefusedRecord(RecordError):
    """A record or exchange refused and already counted (do not count it again)."""

    def __init__(self, message: str, *, reason: str = "") -> None:
        super().__init__(message)
        #: the rejection reason it was counted under ("" when it was not counted)
        self.reason = reason


class Membership:
    def __init__(
        self,
        host: IHost,
        table: PeerTable,
        policy: PeerPolicy,
        own_record: Callable[[], CapabilityRecord],
        *,
        bootstrap: tuple[str, ...],
        heartbeat_interval: float,
        exchange_timeout: float | None = None,
        rejections: Rejections | None = None,
        candidates: RelayedCandidates | None = None,
        dial_budget: DialBudget | None = None,
        identity: IdentityConflicts | None = None,
        verdicts: RecordVerdicts | None = None,
        metrics: NodeMetrics | None = None,
    ) -> None:
        self.host = host
        self.table = table
        self.policy = policy
        self.own_record = own_record
        self.bootstrap = [parse_bootstrap(addr) for addr in bootstrap]
        self.heartbeat_interval = heartbeat_interval
        self.exchange_timeout = exchange_timeout or max(2.0, 2 * heartbeat_interval)
        self.rejections = rejections if rejections is not None else Rejections()
        self.candidates = candidates if candidates is not None else RelayedCandidates()
        self.dial_budget = dial_budget if dial_budget is not None else DialBudget()
        #: signature verdicts of records seen lately (a resent record is not checked again)
        self.verdicts = verdicts if verdicts is not None else RecordVerdicts()
        #: where records and exchanges of our own peer id from another node are noted
        self.identity = identity
        #: the node's metrics: exchange round trips, bytes on the meta protocol
        self.metrics = metrics if metrics is not None else NodeMetrics()
        self.rejected_records = 0
        #: heartbeat rounds completed: after two, every live peer a bootstrap address leads
        #: to has been asked (a restarted replica waits for this before it serves again)
        self.rounds = 0
        #: relayed candidates dialled so far (the dial budget bounds how fast this grows)
        self.candidate_dials = 0
        self._wake = trio.Event()
        self._discovered: dict[str, PeerInfo] = {}
        #: dials of addresses that claim our own peer id (a copied home)
        self.twins = (TwinProbes(host, identity, self_id=table.self_id,
                                 timeout=self.exchange_timeout)
                      if identity is not None else None)
        self.peerstore_guard = PeerStoreGuard.of(host)
        if self.peerstore_guard is not None:  # members keep their peer-store entries
            self.peerstore_guard.keep = lambda pid: pid.to_base58() in self.table

    # -- refusing --------------------------------------------------------------------------

    def _refuse(self, reason: str, peer: str, detail: str) -> RefusedRecord:
        """Count one refused input; returns the error for the caller to raise."""
        self.rejected_records += 1
        self.rejections.reject(reason, peer, detail)
        return RefusedRecord(detail, reason=reason)

    def _refuse_again(self, reason: str, detail: str) -> RefusedRecord:
        """Count a refusal already logged for the same bytes (a resent record), unlogged."""
        self.rejected_records += 1
        self.rejections.counts[reason] += 1
        return RefusedRecord(detail, reason=reason)

    def _check_record(self, record: CapabilityRecord, sender: str) -> None:
        """Size first (cheap, before any signature work), then signature and peer id, whose
        verdict is remembered for these exact bytes (:class:`RecordVerdicts`)."""
        encoded = pack(record.to_wire())  # what record_size() measures
        if len(encoded) > MAX_RECORD_BYTES:
            raise self._refuse("oversize_record", sender,
                               f"record of {record.peer_id} is {len(encoded)} bytes "
                               f"(cap {MAX_RECORD_BYTES})")
        key = self.verdicts.key(record, encoded)
        verdict = self.verdicts.get(key)
        if verdict is not None:
            if verdict.reason is not None:
                raise self._refuse_again(verdict.reason, verdict.detail)
            return
        try:
            verify_record(record)
            verdict = VALID
        except RecordError as exc:
            verdict = Verdict("forged_record", exc.message)
        self.verdicts.put(key, verdict)
        if verdict.reason is not None:
            raise self._refuse(verdict.reason, sender, verdict.detail)

    # -- receiving -------------------------------------------------------------------------

    def absorb(self, message: PeerExchange, sender: str, *, rtt_ms: float | None = None) -> None:
        """Take in a peer exchange received directly from ``sender``.

        Raises :class:`RefusedRecord` (counted) when the sender's own record is refused; a
        refused relayed record is counted and skipped.
        """
        now, now_ms = trio.current_time(), int(time.time() * 1000)
        record = message.record
        if record.peer_id != sender:
            raise self._refuse("forged_record", sender,
                               f"{sender} sent a record of {record.peer_id} as its own")
        if not self.policy.permits(sender):
            raise self._refuse("not_allowed", sender, f"peer {sender} is not on the allowlist")
        if sender == self.table.self_id:  # authenticated: the other end holds our key
            if self.identity is not None:
                self.identity.note(record.addrs, "a peer exchange from this node's own id")
            raise RefusedRecord(f"peer exchange from our own id {sender}")
        self._check_record(record, sender)
        try:
            self._learn(record, now=now, now_ms=now_ms, direct=True)
        except RecordError as exc:
            raise self._refuse(refusal_reason(exc), sender, exc.message) from None
        self.candidates.discard(sender)
        self.table.mark_seen(sender, now, rtt_ms)
        own_looked_at = False
        for relayed in message.known:
            if relayed.peer_id == self.table.self_id:
                if self.identity is not None and not own_looked_at:
                    self.identity.check_record(relayed, sender)  # ours relayed back, or a copy's
                own_looked_at = True
                continue
            try:
                self._consider_relayed(relayed, sender, now=now, now_ms=now_ms)
            except RefusedRecord as exc:
                if exc.reason == "forged_record":
                    break  # an honest peer relays only what it verified: read no further
                continue

    def _consider_relayed(self, record: CapabilityRecord, sender: str, *, now: float,
                          now_ms: int) -> None:
        """A record ``sender`` relayed: update a member, or hold a candidate (module doc).

        Every check that needs no signature comes first (module docstring)."""
        peer = record.peer_id
        if peer == sender or not self.policy.permits(peer):
            return
        entry = self.table.get(peer)
        if entry is not None:
            if not member_record_is_news(entry, record, now, self.heartbeat_interval):
                return
        else:
            want = self.candidates.wants(record, sender, now)
            if want is Want.SEEN:
                return
            if want is Want.FULL:
                raise self._refuse("relay_cap", sender,
                                   f"no room for candidate {peer} relayed by {sender[:20]} "
                                   f"(caps {self.candidates.per_sender}/"
                                   f"{self.candidates.total})")
        if abs(now_ms - record.issued_at_ms) > MAX_RELAY_AGE_MS:
            raise self._refuse("stale_record", sender, f"relayed record of {peer} is stale")
        self._check_record(record, sender)
        try:
            if entry is not None:
                self._learn(record, now=now, now_ms=now_ms, direct=False)
                return
            caps = parse_capabilities(record)
        except RecordError as exc:
            raise self._refuse(refusal_reason(exc), sender, exc.message) from None
        for pushed in self.candidates.offer(record, caps, sender=sender, now=now):
            self._refuse("relay_cap", sender,
                         f"candidate {pushed.peer_id} relayed by {pushed.sender[:20]} "
                         f"dropped (caps {self.candidates.per_sender}/"
                         f"{self.candidates.total})")

    def _learn(self, record: CapabilityRecord, *, now: float, now_ms: int, direct: bool) -> None:
        previous = self.table.get(record.peer_id)
        old_addrs = previous.record.addrs if previous else None
        if self.table.accept(record, now=now, now_ms=now_ms, direct=direct):
            if previous is None:
                _limited.log(logging.INFO, "learned", "learned peer %s (%s)", record.peer_id,
                             ", ".join(record.addrs[:2]))
            if record.addrs != old_addrs:
                peerstore = self.host.get_peerstore()
                pid = ID.from_base58(record.peer_id)
                peerstore.clear_addrs(pid)
                peerstore.add_addrs(pid, peer_addrs(record), ADDR_TTL)

    def add_discovered(self, info: PeerInfo) -> None:
        """A peer found out of band (mDNS): exchange with it on the next round."""
        peer_id = info.peer_id.to_base58()
        if peer_id not in self._discovered and len(self._discovered) >= MAX_DISCOVERED:
            del self._discovered[next(iter(self._discovered))]  # the oldest goes
        self._discovered[peer_id] = info
        self._wake.set()

    def _count_bad_frame(self, exc: RemoteProtocolError, peer: str) -> None:
        reason = "oversize_record" if exc.code == ErrorCode.FRAME_TOO_LARGE else "bad_frame"
        self._refuse(reason, peer, exc.message)

    async def rpc_meta(self, stream: INetStream) -> None:
        """Stream handler for ``META_PROTOCOL`` (install it behind ``host.guarded``)."""
        sender = remote_peer_id(stream)
        channel = FramedStream(stream, META_LIMITS, meter=self.metrics.traffic(META_PROTOCOL))
        try:
            message = await channel.receive(timeout=self.exchange_timeout)
            if not isinstance(message, PeerExchange):
                raise self._refuse("bad_frame", sender,
                                   f"{type(message).__name__} on the meta protocol")
            self.absorb(message, sender)
            await channel.send(self._outgoing(), timeout=self.exchange_timeout)
            await channel.finish()
        except RefusedRecord:
            await channel.reset()
        except RemoteProtocolError as exc:
            self._count_bad_frame(exc, sender)
            await channel.reset()
        except CalinodeError as exc:
            log.debug("meta exchange from %s failed: %s", sender, exc)
            await channel.reset()

    # -- sending ---------------------------------------------------------------------------

    def _outgoing(self) -> PeerExchange:
        """Our fresh record, then the records of live members while the budget allows."""
        def size_of(record: CapabilityRecord) -> int:
            entry = self.table.get(record.peer_id)
            return entry.size if entry is not None and entry.size else record_size(record)

        known: Iterable[CapabilityRecord] = (e.record for e in self.table.alive())
        return PeerExchange.within_budget(self.own_record(), known, size_of=size_of)

    async def exchange(self, peer_id: str, info: PeerInfo | None = None) -> bool:
        """One peer exchange with ``peer_id``; True when it answered in time."""
        pid = ID.from_base58(peer_id)
        network = self.host.get_network()
        started = trio.current_time()
        try:
            with trio.fail_after(self.exchange_timeout):
                if not network.get_connections(pid):
                    if isinstance(network, Swarm):  # defect 6: forget a failed dial of this peer
                        network.unblock_peer(pid)
                    target = info or PeerInfo(pid, self.host.get_peerstore().addrs(pid))
                    await self.host.connect(target)
                stream = await self.host.new_stream(pid, [TProtocol(META_PROTOCOL)])
                channel = FramedStream(stream, META_LIMITS,
                                       meter=self.metrics.traffic(META_PROTOCOL))
                try:
                    await channel.send(self._outgoing(), timeout=self.exchange_timeout)
                    await channel.close()
                    reply = await channel.receive(timeout=self.exchange_timeout)
                except BaseException:
                    await channel.reset()
                    raise
            if not isinstance(reply, PeerExchange):
                raise self._refuse("bad_frame", peer_id,
                                   f"{type(reply).__name__} answered on the meta protocol")
            self.absorb(reply, peer_id, rtt_ms=(trio.current_time() - started) * 1000)
            self.metrics.exchange(trio.current_time() - started)
            return True
        except RefusedRecord:
            pass
        except RemoteProtocolError as exc:
            self._count_bad_frame(exc, peer_id)
        except trio.TooSlowError:
            log.debug("peer exchange with %s timed out", peer_id)
        except CalinodeError as exc:
            log.debug("peer exchange with %s failed: %s", peer_id, exc)
        except Exception as exc:  # dial errors of every kind from py-libp2p
            log.debug("peer exchange with %s failed: %r", peer_id, exc)
        self._after_failure(peer_id, pid)
        self.metrics.exchange(None)
        return False

    def _after_failure(self, peer_id: str, pid: ID) -> None:
        """A candidate waits before its next dial; a stranger's addresses leave the peer store."""
        self.candidates.dial_failed(peer_id, trio.current_time())
        if peer_id in self.table or self.host.get_network().get_connections(pid):
            return
        if self.peerstore_guard is not None:
            self.peerstore_guard.forget(pid)

    def _targets(self) -> dict[str, PeerInfo | None]:
        targets = heartbeat_targets(self.table, [*self.bootstrap, *self._discovered.values()])
        now = trio.current_time()
        due = [c for c in self.candidates.due(now, self.dial_budget.available(now))
               if c.peer_id not in targets]
        self.candidate_dials += self.dial_budget.take(now, len(due))
        for candidate in due:
            addrs = peer_addrs(candidate.record)
            if not addrs:
                self.candidates.discard(candidate.peer_id)
                continue
            targets[candidate.peer_id] = PeerInfo(ID.from_base58(candidate.peer_id), addrs)
        return targets

    async def run(self, *, task_status: TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Heartbeat forever: exchange with every target, then sweep the table."""
        task_status.started()
        while True:
            self._wake = trio.Event()
            async with trio.open_nursery() as nursery:
                for peer_id, info in self._targets().items():
                    nursery.start_soon(self.exchange, peer_id, info)
                if self.twins is not None:
                    for twin in self.twins.due([*self.bootstrap, *self._discovered.values()]):
                        nursery.start_soon(self.twins.probe, twin)
            self.rounds += 1
            result = self.table.sweep(trio.current_time())
            for peer_id in result.died:
                _limited.warning("died", "peer %s is dead (silent for %.0f s)", peer_id,
                                 self.table.dead_after)
            for peer_id in result.dropped:
                log.debug("dropped peer %s", peer_id)
            self.candidates.expire(before_ms=int(time.time() * 1000) - MAX_RELAY_AGE_MS)
            with trio.move_on_after(self.heartbeat_interval):
                await self._wake.wait()
