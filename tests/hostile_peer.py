"""A hostile peer for tests: a real py-libp2p host that speaks calinode's wire protocol, but
sends whatever a test wants (records with poisoned capabilities, floods of relayed records,
oversize frames, raw bytes on a job stream).

It is *not* a calinode node: it has no membership, no job server, no checks of its own. It
signs what it sends with its own key, so its records pass signature checks and only
calinode's validation stands between them and the node under attack.

    async with open_hostile_peer() as evil:
        await evil.connect(bootstrap_addr)
        record = evil.record(capabilities={"collections": 1})
        await evil.exchange(node.peer_id, evil.exchange_wire(record))
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgpack
import trio
from libp2p.abc import IHost, INetStream
from libp2p.crypto.ed25519 import create_new_key_pair
from libp2p.crypto.keys import KeyPair
from libp2p.custom_types import TProtocol
from libp2p.peer.id import ID
from libp2p.peer.peerinfo import info_from_p2p_addr
from multiaddr import Multiaddr

from calinode.node.identity import read_swarm_key
from calinode.node.p2p.host import build_host
from calinode.protocol.codec import pack
from calinode.protocol.framing import encode_frame
from calinode.protocol.ids import JOB_PROTOCOL, META_PROTOCOL, PROTOCOL_VERSION
from calinode.protocol.limits import Limits
from calinode.protocol.records import CapabilityRecord, Load, _canonical

#: Limits loose enough to build frames calinode's own encoder would refuse.
NO_LIMITS = Limits(max_frame=2**31, max_objects=2**31 - 1, max_str=2**31 - 1,
                   max_bin=2**31 - 1, max_array=2**31 - 1, max_map=2**31 - 1,
                   max_expansion=10**6)


def signed_wire_record(key_pair: KeyPair, wire: dict[str, Any]) -> dict[str, Any]:
    """``wire`` (a record map without ``signature``) signed over its canonical bytes, whatever
    its contents: no calinode validation runs on it."""
    unsigned = {k: v for k, v in wire.items() if k != "signature"}
    payload = msgpack.packb(_canonical(unsigned, -1, "record"), use_bin_type=True)
    return {**unsigned, "signature": key_pair.private_key.sign(payload)}


def record_wire(key_pair: KeyPair, *, capabilities: Any = None, addrs: list[str] | None = None,
                seq: int | None = None, issued_at_ms: int | None = None,
                peer_id: str | None = None) -> dict[str, Any]:
    """A signed record map of ``key_pair``'s peer with the given (unchecked) fields."""
    now_ms = int(time.time() * 1000)
    wire = {
        "t": CapabilityRecord.TAG,
        "peer_id": peer_id or ID.from_pubkey(key_pair.public_key).to_base58(),
        "public_key": key_pair.public_key.serialize(),
        "addrs": addrs if addrs is not None else [],
        "version": "0.1.0",
        "protocol_version": PROTOCOL_VERSION,
        "capabilities": {"jobs": []} if capabilities is None else capabilities,
        "load": Load(in_flight=0, queue_depth=0).to_wire(),
        "seq": seq if seq is not None else now_ms,
        "issued_at_ms": issued_at_ms if issued_at_ms is not None else now_ms,
    }
    return signed_wire_record(key_pair, wire)


def frame(obj: Any) -> bytes:
    """One length-prefixed frame of ``obj`` packed without calinode's limits."""
    return encode_frame(pack(obj, limits=NO_LIMITS), NO_LIMITS)


@dataclass
class HostilePeer:
    host: IHost
    key_pair: KeyPair
    peer_id: str
    addr: str = ""
    sent_records: list[dict[str, Any]] = field(default_factory=list)

    def record(self, **fields: Any) -> dict[str, Any]:
        """A signed record of this peer (see :func:`record_wire`)."""
        fields.setdefault("addrs", [self.addr] if self.addr else [])
        return record_wire(self.key_pair, **fields)

    def exchange_wire(self, record: dict[str, Any] | None = None,
                      known: list[dict[str, Any]] | None = None) -> dict[str, Any]:
        return {"t": "px", "record": record or self.record(), "known": known or []}

    async def connect(self, addr: str) -> str:
        """Dial ``/ip4/.../p2p/ID``; returns the peer id dialled."""
        info = info_from_p2p_addr(Multiaddr(addr))
        with trio.fail_after(60):
            await self.host.connect(info)
        return info.peer_id.to_base58()

    async def open(self, peer_id: str, protocol: str) -> INetStream:
        with trio.fail_after(60):
            return await self.host.new_stream(ID.from_base58(peer_id), [TProtocol(protocol)])

    async def send_raw(self, peer_id: str, protocol: str, data: bytes, *,
                       read_reply: bool = True, timeout: float = 60) -> bytes:
        """Open a stream, write ``data``, half-close, and read until the node closes it."""
        stream = await self.open(peer_id, protocol)
        with trio.move_on_after(timeout):
            await stream.write(data)
            await stream.close()
            if read_reply:
                return await read_all(stream)
        return b""

    async def exchange(self, peer_id: str, px: dict[str, Any]) -> bytes:
        """Send one peer exchange map on the meta protocol; the raw reply bytes."""
        return await self.send_raw(peer_id, META_PROTOCOL, frame(px))

    async def job(self, peer_id: str, kind: str, params: dict[str, Any], *,
                  deadline_ms: int = 30_000) -> dict[str, Any]:
        """One job request; the node's reply map (``res`` or ``err``)."""
        request = {"t": "req", "id": "evil-1", "kind": kind, "deadline_ms": deadline_ms,
                   "params": params}
        raw = await self.send_raw(peer_id, JOB_PROTOCOL, frame(request))
        return decode_last(raw)


async def read_all(stream: INetStream) -> bytes:
    """Everything the node writes until it closes or resets the stream."""
    raw = bytearray()
    while True:
        try:
            chunk = await stream.read(65536)
        except Exception:  # StreamEOF, StreamReset: the node is done
            break
        if not chunk:
            break
        raw += chunk
    return bytes(raw)


def decode_last(raw: bytes) -> dict[str, Any]:
    """The last frame's map in ``raw`` (a whole reply read off a stream)."""
    last: dict[str, Any] = {}
    pos = 0
    while pos + 4 <= len(raw):
        size = int.from_bytes(raw[pos:pos + 4], "big")
        last = msgpack.unpackb(raw[pos + 4:pos + 4 + size], raw=False, strict_map_key=False)
        pos += 4 + size
    return last


@asynccontextmanager
async def open_hostile_peer(swarm_key: Path | None = None,
                            key_pair: KeyPair | None = None) -> AsyncIterator[HostilePeer]:
    """A running hostile peer on 127.0.0.1 (with ``swarm_key``, a member of that swarm)."""
    key_pair = key_pair or create_new_key_pair()
    psk = read_swarm_key(swarm_key) if swarm_key is not None else None
    host = build_host(key_pair, psk=psk)
    async with host.run(listen_addrs=[Multiaddr("/ip4/127.0.0.1/tcp/0")]):
        peer_id = ID.from_pubkey(key_pair.public_key).to_base58()
        addr = str(host.get_addrs()[0])
        yield HostilePeer(host=host, key_pair=key_pair, peer_id=peer_id, addr=addr)


def flood_records(senders: int, per_sender: int) -> list[list[dict[str, Any]]]:
    """``per_sender`` signed records of fresh peers for each sender, with dead addresses."""
    batches = []
    for _ in range(senders):
        batch = []
        for i in range(per_sender):
            key = create_new_key_pair()
            peer = ID.from_pubkey(key.public_key).to_base58()
            batch.append(record_wire(key, addrs=[f"/ip4/127.0.0.1/tcp/{1 + i % 8}/p2p/{peer}"]))
        batches.append(batch)
    return batches


@asynccontextmanager
async def open_hostile_peers(count: int, **kwargs: Any) -> AsyncIterator[list[HostilePeer]]:
    """``count`` hostile peers, each run by its own task (so a failing test body is not wrapped
    in ``count`` nested exception groups)."""
    peers: list[HostilePeer] = []
    done = trio.Event()

    async def run_one(task_status: trio.TaskStatus[None]) -> None:
        async with open_hostile_peer(**kwargs) as evil:
            peers.append(evil)
            task_status.started()
            await done.wait()

    async with trio.open_nursery() as nursery:
        for _ in range(count):
            await nursery.start(run_one)
        try:
            yield peers
        finally:
            done.set()
