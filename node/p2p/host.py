"""Building the libp2p host safely, and the guards every stream handler runs behind.

py-libp2p 0.8.1 needs help (see ``shared/notes/py-libp2p-0.8.1.md``):

- it offers and accepts plaintext and secio by default: :func:`build_host` passes a Noise-only
  security option;
- it stalls 250 ms after every dial: importing this module zeroes ``_HAPPY_EYEBALLS_DELAY``;
- its yamux answers every read with a window update: importing this module installs
  credit in 16 KiB steps (:mod:`calinode.node.p2p.yamux_credit`);
- one raising stream handler kills the whole host: :func:`guarded` catches everything, logs
  it (rate limited) and resets the stream; :func:`build_host` wraps py-libp2p's own handlers
  (identify, identify-push, ping) the same way;
- its connection gate filters IPs only: :class:`PeerGate` closes connections from peers that
  are not on the allowlist, and :func:`guarded` re-checks the remote peer id per stream;
- its peer store evicts peers past 1000, emptiest first, and the host's OWN entry (keys, no
  addresses) goes first: the next connection then dies in identify (``PeerStoreError``).
  :class:`PeerStoreGuard` replaces that eviction with one that never evicts this node's key,
  connected peers, or the peers membership asks to keep.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field

import libp2p.network.swarm as _swarm
import trio
from libp2p import new_host
from libp2p.abc import IHost, INetConn, INetStream, INetwork, INotifee
from libp2p.crypto.keys import KeyPair
from libp2p.crypto.x25519 import create_new_key_pair as create_x25519_key_pair
from libp2p.custom_types import TProtocol
from libp2p.network.config import ConnectionConfig
from libp2p.peer.id import ID
from libp2p.peer.peerstore import PeerStore
from libp2p.security.noise.transport import PROTOCOL_ID as NOISE_PROTOCOL_ID
from libp2p.security.noise.transport import Transport as NoiseTransport
from multiaddr import Multiaddr

from calinode.node.p2p import yamux_credit
from calinode.node.rejections import RateLimitedLog, Rejections

_swarm._HAPPY_EYEBALLS_DELAY = 0.0  # defect 2: a fixed 250 ms stall after every dial
yamux_credit.install()  # one window update per read, a write and a wake-up per token streamed

log = logging.getLogger(__name__)
_limited = RateLimitedLog(log)

StreamHandler = Callable[[INetStream], Awaitable[None]]


@dataclass(frozen=True)
class PeerPolicy:
    """Who may talk to this node: everyone (empty allowlist) or the listed peer ids."""

    allow: frozenset[str] = frozenset()

    def permits(self, peer_id: str) -> bool:
        return not self.allow or peer_id in self.allow

    @classmethod
    def from_ids(cls, ids: Iterable[str]) -> PeerPolicy:
        return cls(frozenset(ids))


MAX_ENTERED_PEERS = 1024


@dataclass
class GuardStats:
    """What the guards saw, per handler name: streams handled, refused, failed."""

    entered: Counter[str] = field(default_factory=Counter)
    refused: Counter[str] = field(default_factory=Counter)
    failed: Counter[str] = field(default_factory=Counter)
    #: peers whose streams reached a handler (the first ``MAX_ENTERED_PEERS`` of them)
    entered_peers: set[str] = field(default_factory=set)

    def note_entered(self, name: str, peer: str) -> None:
        self.entered[name] += 1
        if len(self.entered_peers) < MAX_ENTERED_PEERS:
            self.entered_peers.add(peer)


def build_host(key_pair: KeyPair, *, psk: str | None = None,
               policy: PeerPolicy | None = None, stats: GuardStats | None = None,
               rejections: Rejections | None = None) -> IHost:
    """A TCP + Noise-only + yamux host; ``psk`` (64 hex digits) makes it a private swarm.

    py-libp2p's built-in handlers run behind :func:`guarded` (with ``policy``), and its peer
    store behind a :class:`PeerStoreGuard` (see the module docstring).
    """
    noise = NoiseTransport(key_pair, noise_privkey=create_x25519_key_pair().private_key)
    host = new_host(
        key_pair=key_pair,
        sec_opt={TProtocol(NOISE_PROTOCOL_ID): noise},
        muxer_preference="YAMUX",
        psk=psk,
        connection_config=ConnectionConfig(min_connections=0, low_watermark=0),
    )
    # Membership decides whom to dial. py-libp2p's auto-connector aims at half its high
    # watermark (150 connections) and dials every address in the peer store to get there,
    # including peers we consider dead; it has no switch, so it is turned off here.
    connector = getattr(host.get_network(), "auto_connector", None)
    if connector is not None:
        connector.maybe_connect = _no_auto_connect
    guard_builtin_handlers(host, policy or PeerPolicy(), stats=stats, rejections=rejections)
    PeerStoreGuard.install(host)
    return host


def guard_builtin_handlers(host: IHost, policy: PeerPolicy, *, stats: GuardStats | None = None,
                           rejections: Rejections | None = None) -> None:
    """Wrap the handlers ``new_host`` installed (identify, identify-push, ping) in :func:`guarded`.

    They live in the host's multistream-select table; one raising there (identify raised
    ``PeerStoreError`` once the peer store had lost our own key) would kill the host.
    """
    multiselect = getattr(host, "multiselect", None)
    handlers = getattr(multiselect, "handlers", {})
    for protocol, handler in list(handlers.items()):
        if protocol is None or handler is None:
            continue
        host.set_stream_handler(protocol, guarded(handler, policy, f"libp2p {protocol}",
                                                  stats=stats, rejections=rejections))


class PeerStoreGuard:
    """py-libp2p's peer-store eviction, minus the peers this node must keep (module docstring).

    ``keep`` (set by membership) says which other peers to keep: members we contacted
    directly. Connected peers and this node's own id are always kept. When more are kept than
    the cap, the store may exceed it by that much: the caller bounds what it keeps.
    """

    def __init__(self, store: PeerStore, own: ID, network: INetwork) -> None:
        self.store = store
        self.own = own
        self.network = network
        self.keep: Callable[[ID], bool] = lambda peer_id: False
        self.evicted = 0

    @classmethod
    def install(cls, host: IHost) -> PeerStoreGuard | None:
        store = host.get_peerstore()
        if not isinstance(store, PeerStore):
            return None
        guard = cls(store, host.get_id(), host.get_network())
        store._enforce_peer_limit = guard.enforce  # type: ignore[method-assign]
        store.calinode_guard = guard  # type: ignore[attr-defined]
        return guard

    @staticmethod
    def of(host: IHost) -> PeerStoreGuard | None:
        guard = getattr(host.get_peerstore(), "calinode_guard", None)
        return guard if isinstance(guard, PeerStoreGuard) else None

    def protected(self, peer_id: ID) -> bool:
        if peer_id == self.own or self.keep(peer_id):
            return True
        return bool(self.network.connections.get(peer_id))

    def enforce(self) -> None:
        """Evict the excess over ``max_peers``: empty and expired entries first, as py-libp2p
        does, but never a protected peer."""
        data = self.store.peer_data_map
        excess = len(data) - self.store.max_peers
        if excess <= 0:
            return
        evictable = [(pid, pd) for pid, pd in data.items() if not self.protected(pid)]
        evictable.sort(key=lambda item: (not item[1].get_addrs(), item[1].is_expired()),
                       reverse=True)
        for peer_id, _ in evictable[:excess]:
            self.store.peer_record_map.pop(peer_id, None)
            del data[peer_id]
            self.evicted += 1

    def forget(self, peer_id: ID) -> None:
        """Remove an unprotected peer's entry (the addresses of a dial that failed)."""
        if not self.protected(peer_id) and peer_id in self.store.peer_data_map:
            self.store.clear_peerdata(peer_id)


async def _no_auto_connect() -> None:
    return None


def remote_peer_id(stream: INetStream) -> str:
    return str(stream.muxed_conn.peer_id.to_base58())


def guarded(handler: StreamHandler, policy: PeerPolicy, name: str, *,
            stats: GuardStats | None = None,
            rejections: Rejections | None = None) -> StreamHandler:
    """Wrap a stream handler so that nothing it does can take the host down.

    A stream from a peer outside ``policy`` is reset before the handler runs (counted as
    ``not_allowed``); a handler that raises gets its stream reset and one rate-limited log
    line with the traceback per handler name, so a peer cannot flood the log with them.
    """
    stats = stats if stats is not None else GuardStats()

    async def run(stream: INetStream) -> None:
        try:
            peer = remote_peer_id(stream)
            if not policy.permits(peer):
                stats.refused[name] += 1
                if rejections is not None:
                    rejections.reject("not_allowed", peer, f"{name} stream refused")
                else:
                    _limited.warning(f"refused:{name}", "%s: refused stream from peer %s "
                                     "(not on the allowlist)", name, peer)
                await stream.reset()
                return
            stats.note_entered(name, peer)
            await handler(stream)
        except trio.Cancelled:
            raise
        except Exception:
            stats.failed[name] += 1
            _limited.exception(f"failed:{name}", "%s: handler failed; resetting the stream",
                               name)
            with trio.move_on_after(1):
                try:
                    await stream.reset()
                except Exception:
                    log.debug("%s: reset after failure also failed", name, exc_info=True)

    return run


class ConnectionWatch(INotifee):
    """A notifee that only cares about new connections (``connected``); the other events of
    py-libp2p's ``INotifee`` are ignored."""

    async def opened_stream(self, network: INetwork, stream: INetStream) -> None:
        return None

    async def closed_stream(self, network: INetwork, stream: INetStream) -> None:
        return None

    async def disconnected(self, network: INetwork, conn: INetConn) -> None:
        return None

    async def listen(self, network: INetwork, multiaddr: Multiaddr) -> None:
        return None

    async def listen_close(self, network: INetwork, multiaddr: Multiaddr) -> None:
        return None


class PeerGate(ConnectionWatch):
    """Closes every connection from a peer the policy does not permit."""

    def __init__(self, policy: PeerPolicy, rejections: Rejections | None = None) -> None:
        self.policy = policy
        self.rejections = rejections
        self.refused = 0

    async def connected(self, network: INetwork, conn: INetConn) -> None:
        peer = conn.muxed_conn.peer_id.to_base58()
        if not self.policy.permits(peer):
            self.refused += 1
            if self.rejections is not None:
                self.rejections.reject("not_allowed", peer, "connection closed")
            else:
                _limited.warning("gate", "closing connection from %s: not on the allowlist",
                                 peer)
            with trio.move_on_after(2):
                await conn.close()


def peer_id_from_str(peer_id: str) -> ID:
    return ID.from_base58(peer_id)
