"""Optional LAN discovery with mDNS (``--mdns``).

Each node registers ``<peer id>._calinode._tcp.local.`` with its multiaddrs in the TXT record
and browses for the others. zeroconf calls back on its own thread, so the callback only hands
the service name to trio (``trio.from_thread.run_sync`` with the node's trio token); resolving
runs in a worker thread, and a discovered peer goes to :meth:`Membership.add_discovered`, which
dials it on the next heartbeat round. ``--mdns-interface IP`` restricts the interfaces used.
"""

from __future__ import annotations

import contextlib
import logging
import socket
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Protocol

import trio
from libp2p.peer.peerinfo import info_from_p2p_addr
from multiaddr import Multiaddr
from zeroconf import IPVersion, ServiceBrowser, ServiceInfo, ServiceStateChange, Zeroconf

from calinode.node.p2p.host import PeerPolicy
from calinode.node.p2p.membership import Membership

if TYPE_CHECKING:
    from trio_typing import TaskStatus

log = logging.getLogger(__name__)

SERVICE_TYPE = "_calinode._tcp.local."
RESOLVE_TIMEOUT_MS = 3000


class MdnsSettings(Protocol):
    """The settings mDNS reads (``NodeConfig`` has them)."""

    @property
    def mdns_interfaces(self) -> Sequence[str]: ...


class MdnsNode(Protocol):
    """What :func:`run_mdns` reads of the node: the daemon's ``Node`` satisfies it
    structurally, so this layer never imports the daemon."""

    @property
    def config(self) -> MdnsSettings: ...

    @property
    def peer_id(self) -> str: ...

    @property
    def addrs(self) -> Sequence[str]: ...

    @property
    def policy(self) -> PeerPolicy: ...

    @property
    def membership(self) -> Membership | None: ...


def _service_info(node: MdnsNode) -> ServiceInfo:
    ips = sorted({addr.split("/")[2] for addr in node.addrs if addr.startswith("/ip4/")})
    port = next((int(addr.split("/")[4]) for addr in node.addrs if "/tcp/" in addr), 0)
    properties = {f"a{i}": addr for i, addr in enumerate(node.addrs[:8])}
    properties["id"] = node.peer_id
    return ServiceInfo(
        SERVICE_TYPE, f"{node.peer_id}.{SERVICE_TYPE}",
        addresses=[socket.inet_aton(ip) for ip in ips], port=port, properties=properties)


def _addrs_from(info: ServiceInfo) -> list[str]:
    props: dict[Any, Any] = info.properties or {}
    out = []
    for key, value in props.items():
        name = key.decode() if isinstance(key, bytes) else str(key)
        if name.startswith("a") and value:
            out.append(value.decode() if isinstance(value, bytes) else str(value))
    return out


async def run_mdns(node: MdnsNode, *,
                   task_status: TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
    interfaces: Any = list(node.config.mdns_interfaces) or None
    zc = await trio.to_thread.run_sync(
        lambda: Zeroconf(interfaces=interfaces, ip_version=IPVersion.V4Only)
        if interfaces else Zeroconf(ip_version=IPVersion.V4Only))
    send, receive = trio.open_memory_channel[str](64)
    token = trio.lowlevel.current_trio_token()

    def on_change(zeroconf: Zeroconf, service_type: str, name: str,
                  state_change: ServiceStateChange) -> None:
        if state_change is ServiceStateChange.Added or state_change is ServiceStateChange.Updated:
            with contextlib.suppress(trio.WouldBlock, trio.RunFinishedError):
                trio.from_thread.run_sync(send.send_nowait, name, trio_token=token)

    own = _service_info(node)
    browser: ServiceBrowser | None = None
    try:
        await trio.to_thread.run_sync(zc.register_service, own)
        browser = ServiceBrowser(zc, SERVICE_TYPE, handlers=[on_change])
        task_status.started()
        async for name in receive:
            if name.startswith(node.peer_id):
                continue
            info = await trio.to_thread.run_sync(zc.get_service_info, SERVICE_TYPE, name,
                                                 RESOLVE_TIMEOUT_MS)
            if info is None or node.membership is None:
                continue
            for addr in _addrs_from(info):
                try:
                    peer = info_from_p2p_addr(Multiaddr(addr))
                except Exception:
                    continue
                if node.policy.permits(peer.peer_id.to_base58()):
                    log.info("mDNS found %s at %s", peer.peer_id, addr)
                    node.membership.add_discovered(peer)
                    break
    finally:
        with trio.CancelScope(shield=True):
            if browser is not None:
                await trio.to_thread.run_sync(browser.cancel)
            await trio.to_thread.run_sync(zc.unregister_service, own)
            await trio.to_thread.run_sync(zc.close)
