"""Noticing a copied home: another node running with this node's identity.

Two machines started from one home (``identity.key`` copied) share a peer id. Peers cannot
tell them apart: each keeps whichever record has the higher ``seq`` and dials whichever address
that record names, so jobs and replicas go to one machine or the other at random. Nothing in
the protocol can fix that (both hold the key); what this node can do is notice and say so
loudly, so that the operator gives one of them its own home.

The evidence, all of it authenticated (only a holder of the key can produce it):

- a record that names this node's peer id, signed with its key, that this run did not issue:
  a seq issued during this run (at or above the first seq of this run) with addresses that are
  not ours, or a seq above the last one we issued. Peers relay it in their peer exchanges;
- a connection or a meta stream whose remote peer is this node's own id (the copy dialled us).

Each new piece of evidence is counted (``seen``), its addresses kept (a bounded list), refused
as ``identity_conflict`` (``Rejections``) and logged at ERROR at most once a minute.
:class:`TwinProbes` dials the addresses given for this node's own peer id (membership runs it
every heartbeat round) to find a copy that listens there.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

import trio
from libp2p.abc import IHost, INetConn, INetwork
from libp2p.peer.peerinfo import PeerInfo

from calinode.node.p2p.host import ConnectionWatch
from calinode.node.p2p.membership_rules import twin_probes_due
from calinode.node.p2p.records import RecordSigner, verify_record
from calinode.node.rejections import RateLimitedLog, Rejections
from calinode.protocol.errors import RecordError
from calinode.protocol.messages import CapabilityRecord

log = logging.getLogger(__name__)
_loud = RateLimitedLog(log, interval=60.0)

#: Most foreign addresses kept (the latest ones).
MAX_CONFLICT_ADDRS = 16


class IdentityConflicts:
    """What this node saw of another node with its identity (module docstring)."""

    def __init__(self, signer: RecordSigner, rejections: Rejections | None = None) -> None:
        self.signer = signer
        self.rejections = rejections if rejections is not None else Rejections()
        self.seen = 0
        self.addrs: list[str] = []
        self._highest_foreign_seq = -1

    @property
    def peer_id(self) -> str:
        return self.signer.peer_id

    def snapshot(self) -> dict[str, object]:
        return {"seen": self.seen, "addrs": list(self.addrs)}

    def note(self, addrs: Iterable[str], how: str) -> None:
        """One more piece of evidence, seen ``how`` (for the log line)."""
        self.seen += 1
        for addr in addrs:
            if addr in self.addrs:
                self.addrs.remove(addr)
            self.addrs.append(addr)
        del self.addrs[:-MAX_CONFLICT_ADDRS]
        self.rejections.reject("identity_conflict", self.peer_id, how)
        _loud.log(logging.ERROR, "conflict",
                  "ANOTHER NODE RUNS WITH THIS NODE'S IDENTITY (peer id %s): %s, at %s. Was "
                  "this home (identity.key) copied to another machine? Give each machine its "
                  "own home (seen %d times so far; see calinode status)", self.peer_id, how,
                  ", ".join(self.addrs[-4:]) or "an unknown address", self.seen)

    def _foreign(self, record: CapabilityRecord) -> bool:
        """True for a record of our peer id that this run did not issue."""
        signer = self.signer
        if record.seq > signer.last_seq:
            return True
        if signer.first_seq is None or record.seq < signer.first_seq:
            return False  # issued before this run started: ours from an earlier run, say
        return bool(set(record.addrs) - set(signer.last_addrs))

    def check_record(self, record: CapabilityRecord, sender: str) -> bool:
        """A relayed record naming our peer id: True (counted) when another node issued it.

        Only a record newer than the foreign ones already counted costs a signature check,
        so relays of one record are counted once."""
        if record.peer_id != self.peer_id or record.seq <= self._highest_foreign_seq:
            return False
        if not self._foreign(record):
            return False
        try:
            verify_record(record)
        except RecordError:
            return False  # a forgery, not a copy: the caller counts it as such
        self._highest_foreign_seq = record.seq
        self.note(record.addrs, f"a record with seq {record.seq} this node never issued "
                                f"(relayed by {sender})")
        return True


class OwnIdWatch(ConnectionWatch):
    """Notes a connection whose remote peer is this node's own id (the copy dialled us)."""

    def __init__(self, conflicts: IdentityConflicts) -> None:
        self.conflicts = conflicts

    async def connected(self, network: INetwork, conn: INetConn) -> None:
        if conn.muxed_conn.peer_id.to_base58() != self.conflicts.peer_id:
            return
        addrs: list[str] = []
        try:
            addrs = [str(a) if "/p2p/" in str(a) else f"{a}/p2p/{self.conflicts.peer_id}"
                     for a in conn.get_transport_addresses()]
        except Exception:
            log.debug("no address for a connection from our own peer id", exc_info=True)
        self.conflicts.note(addrs, "a connection from a peer with this node's id")
        with trio.move_on_after(2):
            await conn.close()


#: Seconds between two dials of one address that claims our own peer id (a copied home).
TWIN_PROBE_INTERVAL = 10.0


class TwinProbes:
    """Bootstrap or discovered addresses that claim this node's peer id, dialled by membership
    every round they are due: an answer (the Noise handshake proves the other end holds our
    key) is evidence of a copied home, noted in :class:`IdentityConflicts`."""

    def __init__(self, host: IHost, identity: IdentityConflicts, *, self_id: str,
                 timeout: float) -> None:
        self.host = host
        self.identity = identity
        self.self_id = self_id
        self.timeout = timeout
        self._probed: dict[str, float] = {}

    def due(self, addresses: Iterable[PeerInfo]) -> list[PeerInfo]:
        """Bootstrap or discovered addresses that name our own peer id but are not ours: a
        copied home started elsewhere, or our own invite pasted back. Each is dialled at most
        every ``TWIN_PROBE_INTERVAL`` seconds, and only once we know our own addresses."""
        if not self.identity.signer.last_addrs:
            return []
        return twin_probes_due(addresses, self.self_id, self.identity.signer.last_addrs,
                               self._probed, trio.current_time(), TWIN_PROBE_INTERVAL)

    async def probe(self, info: PeerInfo) -> None:
        """Dial an address that claims our peer id: if it answers (the Noise handshake proves
        it holds our key), another node runs with our identity."""
        seen = self.identity.seen
        try:
            with trio.fail_after(self.timeout):
                await self.host.connect(info)
        except Exception as exc:  # nobody there, or not our key: nothing to report
            log.debug("no twin at %s: %r", info.addrs, exc)
            return
        if self.identity.seen == seen:  # the connection watch may have noted it already
            self.identity.note([f"{a}/p2p/{self.self_id}" for a in info.addrs],
                               "an address given for this node's peer id answered with it")
        with trio.move_on_after(2):
            await self.host.get_network().close_peer(info.peer_id)
