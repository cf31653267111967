"""What the network layer knows about reaching this node, for ``calinode doctor``.

Two questions a user cannot answer from ``calinode peers``:

- *Who failed to get in?* A peer with another swarm key (or none) never becomes a peer: its
  connection dies in the handshake (the private-network layer turns its bytes into noise),
  after up to py-libp2p's 10 s inbound upgrade limit, and py-libp2p only logs that at debug
  level. :func:`watch_inbound_handshakes` wraps the swarm's inbound upgrade so that each such
  failure is counted as refused peer input (``bad_handshake``, ``node/rejections.py``) and its
  source IP kept (:class:`HandshakeFailures`, capped), so the doctor can name the machine.
- *How do peers see us?* :func:`connection_facts` lists, per connected peer, the direction
  of its connections (a peer that dialled in proves our listen address reachable from it) and
  the remote IP, plus the addresses identify says peers observed for us (py-libp2p drops
  loopback observations; a non-loopback one that is not ours means NAT in between).
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

from libp2p.abc import IHost, IRawConnection
from libp2p.network.exceptions import SwarmException
from multiaddr import Multiaddr

from calinode.node.rejections import Rejections

__all__ = ["HandshakeFailures", "connection_facts", "watch_inbound_handshakes"]

log = logging.getLogger(__name__)

#: Most source IPs remembered (the most recent ones); the count goes on beyond it.
MAX_SOURCES = 16
#: Most connected peers described by :func:`connection_facts`.
MAX_DESCRIBED = 256


class HandshakeFailures:
    """Inbound connections that failed their handshake: a count and the latest source IPs."""

    def __init__(self, rejections: Rejections, *, max_sources: int = MAX_SOURCES,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.rejections = rejections
        self.max_sources = max_sources
        self.clock = clock
        self.failed = 0
        self.sources: OrderedDict[str, int] = OrderedDict()
        self.last_failed: float | None = None

    def note(self, remote_ip: str | None, error: BaseException) -> None:
        ip = (remote_ip or "unknown")[:64]
        self.failed += 1
        self.last_failed = self.clock()
        self.sources[ip] = self.sources.pop(ip, 0) + 1  # most recent last
        while len(self.sources) > self.max_sources:
            self.sources.popitem(last=False)
        self.rejections.reject("bad_handshake", ip, f"inbound connection failed its handshake "
                               f"(another swarm key, or none?): {error}")

    def snapshot(self) -> dict[str, Any]:
        """The count, the latest source IPs, and how long ago the last failure was (None:
        never), so that one old failure (a peer cut off mid-handshake) is not news forever."""
        ago = None if self.last_failed is None else round(self.clock() - self.last_failed, 1)
        return {"failed": self.failed, "sources": dict(self.sources), "last_s_ago": ago}


def _remote_ip(conn: object) -> str | None:
    try:
        remote = conn.get_remote_address()  # type: ignore[attr-defined]
    except Exception:
        return None
    return str(remote[0]) if remote else None


def watch_inbound_handshakes(host: IHost, failures: HandshakeFailures) -> None:
    """Count every inbound connection whose security or muxer upgrade fails (module doc).

    A refusal because the node is at its connection cap is not the peer's fault and is not
    counted."""
    network = host.get_network()
    original = getattr(network, "upgrade_inbound_raw_conn", None)
    if original is None:  # another py-libp2p: nothing to watch (the doctor shows no count)
        log.warning("cannot watch inbound handshakes with this py-libp2p")
        return

    async def upgrade(raw_conn: IRawConnection, maddr: Multiaddr) -> Any:
        remote_ip = _remote_ip(raw_conn)
        try:
            return await original(raw_conn, maddr)
        except SwarmException as exc:
            if "Maximum connections" not in str(exc):
                failures.note(remote_ip, exc.__cause__ or exc)
            raise

    network.upgrade_inbound_raw_conn = upgrade  # type: ignore[method-assign]


def connection_facts(host: IHost) -> dict[str, Any]:
    """Per connected peer: ``{"inbound", "outbound", "remote_ips"}``; and ``observed_addrs``,
    what identify says peers see us as (any number of observers)."""
    peers: dict[str, dict[str, Any]] = {}
    network = host.get_network()
    for pid, conns in list(network.connections.items())[:MAX_DESCRIBED]:
        inbound = outbound = 0
        remote_ips: list[str] = []
        for conn in conns if isinstance(conns, list) else [conns]:
            direction = str(getattr(conn, "direction", "")).lower()  # an enum: "inbound"
            if direction == "inbound":
                inbound += 1
            elif direction == "outbound":
                outbound += 1
            ip = _remote_ip(getattr(conn, "muxed_conn", conn))
            if ip is not None and ip not in remote_ips:
                remote_ips.append(ip)
        peers[pid.to_base58()] = {"inbound": inbound, "outbound": outbound,
                                  "remote_ips": remote_ips}
    manager = getattr(host, "_observed_addr_manager", None)
    observed: list[str] = []
    if manager is not None:
        try:
            observed = [str(a) for a in manager.addrs(min_observers=1)][:32]
        except Exception:  # a private helper of py-libp2p: never fail the doctor over it
            observed = []
    return {"connections": peers, "observed_addrs": observed}
