"""Yamux credit in steps (node/p2p/yamux_credit.py) between two real py-libp2p hosts."""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
import trio
from libp2p.abc import IHost, INetStream
from libp2p.crypto.ed25519 import create_new_key_pair
from libp2p.custom_types import TProtocol
from libp2p.peer.peerinfo import info_from_p2p_addr
from libp2p.stream_muxer.yamux.yamux import YamuxStream
from multiaddr import Multiaddr

from calinode.node.p2p import yamux_credit
from calinode.node.p2p.host import build_host

SINK = TProtocol("/calinode-test/sink/1")


@asynccontextmanager
async def host_pair(updates: list[int]) -> AsyncIterator[tuple[IHost, IHost, dict[str, Any]]]:
    """A dialer and a listener whose sink handler digests what it reads and answers it; it
    reads 4 bytes first and notes how many window updates had been sent right after."""
    received: dict[str, Any] = {"reads": 0}
    listener = build_host(create_new_key_pair())
    dialer = build_host(create_new_key_pair())

    async def sink(stream: INetStream) -> None:
        digest = hashlib.sha256()
        while True:
            try:
                data = await stream.read(4 if not received["reads"] else 1 << 20)
            except Exception:  # end of stream
                break
            if not data:
                break
            received["reads"] += 1
            received.setdefault("updates_after_first_read", len(updates))
            digest.update(data)
        await stream.write(digest.digest())
        await stream.close()

    listener.set_stream_handler(SINK, sink)
    loopback = [Multiaddr("/ip4/127.0.0.1/tcp/0")]
    async with listener.run(loopback), dialer.run(loopback):
        addr = f"{listener.get_addrs()[0]}"
        if "/p2p/" not in addr:
            addr = f"{addr}/p2p/{listener.get_id().to_base58()}"
        with trio.fail_after(10):
            await dialer.connect(info_from_p2p_addr(Multiaddr(addr)))
        yield dialer, listener, received


@pytest.fixture
def window_updates(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Every WINDOW_UPDATE increment sent by any yamux stream of this process."""
    sent: list[int] = []
    original = YamuxStream.send_window_update

    async def counting(self: YamuxStream, increment: int, skip_lock: bool = False) -> None:
        sent.append(increment)
        await original(self, increment, skip_lock)

    monkeypatch.setattr(YamuxStream, "send_window_update", counting)
    return sent


async def send_and_digest(dialer: IHost, listener: IHost, pieces: list[bytes]) -> bytes:
    """Write ``pieces`` one write each on a new sink stream; the sink's sha256 of them."""
    with trio.fail_after(60):
        stream = await dialer.new_stream(listener.get_id(), [SINK])
        for piece in pieces:
            await stream.write(piece)
        await stream.close()
        answer = b""
        while len(answer) < 32:
            answer += await stream.read(32 - len(answer))
    return answer


async def small_messages_cost(window_updates: list[int]) -> tuple[int, int]:
    pieces = [bytes([i % 256]) * 100 for i in range(400)]  # tokens streamed one by one
    async with host_pair(window_updates) as (dialer, listener, received):
        before = len(window_updates)
        digest = await send_and_digest(dialer, listener, pieces)
        assert digest == hashlib.sha256(b"".join(pieces)).digest()
        return len(window_updates) - before, received["reads"]


async def test_small_messages_cost_one_window_update_per_16_kib(
    window_updates: list[int],
) -> None:
    yamux_credit.install()  # as importing calinode.node.p2p.host does
    updates, reads = await small_messages_cost(window_updates)
    assert reads > 100 and updates <= 400 * 100 // yamux_credit.MIN_CREDIT + 1


async def test_py_libp2p_alone_answers_every_read(window_updates: list[int]) -> None:
    """The defect the module works around, so that the test above can fail."""
    yamux_credit.uninstall()
    try:
        updates, reads = await small_messages_cost(window_updates)
    finally:
        yamux_credit.install()
    assert reads > 100 and updates >= reads // 2


async def test_bulk_transfer_gets_credit_from_its_first_read(window_updates: list[int]) -> None:
    """py-libp2p's writer polls every 10 ms once its window is empty: credit for a big message
    must not wait for half a window to be read (a 1 MiB echo between two processes took 8x
    longer that way)."""
    yamux_credit.install()
    blob = hashlib.sha256(b"seed").digest() * (3 * (1 << 20) // 32)  # 3 MiB: 12 windows
    async with host_pair(window_updates) as (dialer, listener, received):
        before = len(window_updates)
        with trio.fail_after(60):
            stream = await dialer.new_stream(listener.get_id(), [SINK])
            await stream.write(blob)  # 64 KiB frames; the sink's first read takes 4 bytes
            await stream.close()
            answer = b""
            while len(answer) < 32:
                answer += await stream.read(32 - len(answer))
        assert answer == hashlib.sha256(blob).digest()
        assert received["updates_after_first_read"] > before
    # and the window grew past its initial 256 KiB (py-libp2p's auto-tuning is kept)
    assert max(window_updates[before:]) > 256 * 1024
