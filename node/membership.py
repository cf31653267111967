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
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

import trio
from libp2p.abc import IHost, INetStream
from libp2p.custom_types import TProtocol
from libp2p.network.swarm import Swarm
from libp2p.peer.id import ID
from libp2p.peer.peerinfo import PeerInfo, info_from_p2p_addr
from multiaddr import Multiaddr

from calinode.node.framed_stream import FramedStream
from calinode.node.host import PeerPolicy, remote_peer_id
from calinode.node.peer_table import PeerTable
from calinode.node.records import verify_record
from calinode.protocol.errors import CalinodeError, RecordError
from calinode.protocol.ids import META_PROTOCOL
from calinode.protocol.messages import CapabilityRecord, PeerExchange

if TYPE_CHECKING:  # trio-typing (a py-libp2p dependency) shadows trio's own types
    from trio_typing import TaskStatus

log = logging.getLogger(__name__)

MAX_KNOWN_RELAYED = 256
ADDR_TTL = 3600


def parse_bootstrap(addr: str) -> PeerInfo:
    """``/ip4/HOST/tcp/PORT/p2p/PEER_ID`` -> PeerInfo, with an error that says what is wrong."""
    try:
        return info_from_p2p_addr(Multiaddr(addr))
    except Exception as exc:
        raise CalinodeError(
            f"bad bootstrap address {addr!r}: expected /ip4/HOST/tcp/PORT/p2p/PEER_ID "
            f"(copy the --bootstrap line another node printed) ({exc})"
        ) from exc


def _peer_infos(record: CapabilityRecord) -> list[Multiaddr]:
    addrs: list[Multiaddr] = []
    for text in record.addrs:
        try:
            addrs.extend(info_from_p2p_addr(Multiaddr(text)).addrs)
        except Exception:
            try:
                addrs.append(Multiaddr(text))
            except Exception:
                log.debug("ignoring unparsable address %r of %s", text, record.peer_id)
    return addrs


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
    ) -> None:
        self.host = host
        self.table = table
        self.policy = policy
        self.own_record = own_record
        self.bootstrap = [parse_bootstrap(addr) for addr in bootstrap]
        self.heartbeat_interval = heartbeat_interval
        self.exchange_timeout = exchange_timeout or max(2.0, 2 * heartbeat_interval)
        self.rejected_records = 0
        self._wake = trio.Event()
        self._discovered: dict[str, PeerInfo] = {}

    # -- receiving -------------------------------------------------------------------------

    def absorb(self, message: PeerExchange, sender: str, *, rtt_ms: float | None = None) -> None:
        """Take in a peer exchange received directly from ``sender``."""
        now, now_ms = trio.current_time(), int(time.time() * 1000)
        if message.record.peer_id != sender:
            self.rejected_records += 1
            raise RecordError(f"{sender} sent a record of {message.record.peer_id} as its own")
        verify_record(message.record)
        self._learn(message.record, now=now, now_ms=now_ms, direct=True)
        self.table.mark_seen(sender, now, rtt_ms)
        for record in message.known:
            if record.peer_id == self.table.self_id or not self.policy.permits(record.peer_id):
                continue
            try:
                verify_record(record)
                self._learn(record, now=now, now_ms=now_ms, direct=False)
            except RecordError as exc:
                self.rejected_records += 1
                log.warning("rejected a record relayed by %s: %s", sender, exc.message)

    def _learn(self, record: CapabilityRecord, *, now: float, now_ms: int, direct: bool) -> None:
        if not self.policy.permits(record.peer_id):
            raise RecordError(f"peer {record.peer_id} is not on the allowlist")
        previous = self.table.get(record.peer_id)
        old_addrs = previous.record.addrs if previous else None
        if self.table.accept(record, now=now, now_ms=now_ms, direct=direct):
            if previous is None:
                log.info("learned peer %s (%s)", record.peer_id, ", ".join(record.addrs[:2]))
                self._wake.set()
            if record.addrs != old_addrs:
                peerstore = self.host.get_peerstore()
                pid = ID.from_base58(record.peer_id)
                peerstore.clear_addrs(pid)
                peerstore.add_addrs(pid, _peer_infos(record), ADDR_TTL)

    def add_discovered(self, info: PeerInfo) -> None:
        """A peer found out of band (mDNS): exchange with it on the next round."""
        self._discovered[info.peer_id.to_base58()] = info
        self._wake.set()

    async def rpc_meta(self, stream: INetStream) -> None:
        """Stream handler for ``META_PROTOCOL`` (install it behind ``host.guarded``)."""
        sender = remote_peer_id(stream)
        channel = FramedStream(stream)
        try:
            message = await channel.receive(timeout=self.exchange_timeout)
            if not isinstance(message, PeerExchange):
                raise RecordError(f"{sender} sent {type(message).__name__} on the meta protocol")
            self.absorb(message, sender)
            await channel.send(self._outgoing(), timeout=self.exchange_timeout)
            await channel.finish()
        except CalinodeError as exc:
            log.debug("meta exchange from %s failed: %s", sender, exc)
            await channel.reset()

    # -- sending ---------------------------------------------------------------------------

    def _outgoing(self) -> PeerExchange:
        known = tuple(e.record for e in self.table.alive()[:MAX_KNOWN_RELAYED])
        return PeerExchange(record=self.own_record(), known=known)

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
                channel = FramedStream(stream)
                try:
                    await channel.send(self._outgoing(), timeout=self.exchange_timeout)
                    await channel.close()
                    reply = await channel.receive(timeout=self.exchange_timeout)
                except BaseException:
                    await channel.reset()
                    raise
            if not isinstance(reply, PeerExchange):
                raise RecordError(f"{peer_id} answered {type(reply).__name__} on the meta protocol")
            self.absorb(reply, peer_id, rtt_ms=(trio.current_time() - started) * 1000)
            return True
        except trio.TooSlowError:
            log.debug("peer exchange with %s timed out", peer_id)
        except CalinodeError as exc:
            log.debug("peer exchange with %s failed: %s", peer_id, exc)
        except Exception as exc:  # dial errors of every kind from py-libp2p
            log.debug("peer exchange with %s failed: %r", peer_id, exc)
        return False

    def _targets(self) -> dict[str, PeerInfo | None]:
        targets: dict[str, PeerInfo | None] = {e.peer_id: None for e in self.table.entries()}
        for info in [*self.bootstrap, *self._discovered.values()]:
            peer_id = info.peer_id.to_base58()
            entry = self.table.get(peer_id)
            if (entry is None or not entry.alive) and peer_id != self.table.self_id:
                targets[peer_id] = info
        return targets

    async def run(self, *, task_status: TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Heartbeat forever: exchange with every target, then sweep the table."""
        task_status.started()
        while True:
            self._wake = trio.Event()
            async with trio.open_nursery() as nursery:
                for peer_id, info in self._targets().items():
                    nursery.start_soon(self.exchange, peer_id, info)
            result = self.table.sweep(trio.current_time())
            for peer_id in result.died:
                log.warning("peer %s is dead (silent for %.0f s)", peer_id, self.table.dead_after)
            for peer_id in result.dropped:
                log.info("dropped peer %s", peer_id)
            with trio.move_on_after(self.heartbeat_interval):
                await self._wake.wait()
