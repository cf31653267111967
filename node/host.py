"""Building the libp2p host safely, and the guards every stream handler runs behind.

py-libp2p 0.8.1 needs help (see ``shared/notes/py-libp2p-0.8.1.md``):

- it offers and accepts plaintext and secio by default: :func:`build_host` passes a Noise-only
  security option;
- it stalls 250 ms after every dial: importing this module zeroes ``_HAPPY_EYEBALLS_DELAY``;
- its yamux answers every read with a window update: importing this module installs
  credit in 16 KiB steps (:mod:`calinode.node.yamux_credit`);
- one raising stream handler kills the whole host: :func:`guarded` catches everything, logs
  it and resets the stream;
- its connection gate filters IPs only: :class:`PeerGate` closes connections from peers that
  are not on the allowlist, and :func:`guarded` re-checks the remote peer id per stream.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass

import libp2p.network.swarm as _swarm
import trio
from libp2p import new_host
from libp2p.abc import IHost, INetConn, INetStream, INetwork, INotifee
from libp2p.crypto.keys import KeyPair
from libp2p.crypto.x25519 import create_new_key_pair as create_x25519_key_pair
from libp2p.custom_types import TProtocol
from libp2p.network.config import ConnectionConfig
from libp2p.peer.id import ID
from libp2p.security.noise.transport import PROTOCOL_ID as NOISE_PROTOCOL_ID
from libp2p.security.noise.transport import Transport as NoiseTransport
from multiaddr import Multiaddr

from calinode.node import yamux_credit

_swarm._HAPPY_EYEBALLS_DELAY = 0.0  # defect 2: a fixed 250 ms stall after every dial
yamux_credit.install()  # one window update per read, a write and a wake-up per token streamed

log = logging.getLogger(__name__)

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


def build_host(key_pair: KeyPair, *, psk: str | None = None) -> IHost:
    """A TCP + Noise-only + yamux host; ``psk`` (64 hex digits) makes it a private swarm."""
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
    return host


async def _no_auto_connect() -> None:
    return None


def remote_peer_id(stream: INetStream) -> str:
    return str(stream.muxed_conn.peer_id.to_base58())


def guarded(handler: StreamHandler, policy: PeerPolicy, name: str) -> StreamHandler:
    """Wrap a stream handler so that nothing it does can take the host down."""

    async def run(stream: INetStream) -> None:
        try:
            peer = remote_peer_id(stream)
            if not policy.permits(peer):
                log.warning("%s: refused stream from peer %s (not on the allowlist)", name, peer)
                await stream.reset()
                return
            await handler(stream)
        except trio.Cancelled:
            raise
        except Exception:
            log.exception("%s: handler failed; resetting the stream", name)
            with trio.move_on_after(1):
                try:
                    await stream.reset()
                except Exception:
                    log.debug("%s: reset after failure also failed", name, exc_info=True)

    return run


class PeerGate(INotifee):
    """Closes every connection from a peer the policy does not permit."""

    def __init__(self, policy: PeerPolicy) -> None:
        self.policy = policy
        self.refused = 0

    async def connected(self, network: INetwork, conn: INetConn) -> None:
        peer = conn.muxed_conn.peer_id.to_base58()
        if not self.policy.permits(peer):
            self.refused += 1
            log.warning("closing connection from %s: not on the allowlist", peer)
            with trio.move_on_after(2):
                await conn.close()

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


def peer_id_from_str(peer_id: str) -> ID:
    return ID.from_base58(peer_id)
