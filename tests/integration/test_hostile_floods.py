"""Request floods against a real daemon (an OS process), from a real py-libp2p peer.

The 40 x 32 MiB flood: one hostile peer opens 40 job streams at once and writes a request
frame of the largest size (32 MiB - 1 bytes) on each. Admission takes a stream's slot before
reading anything and charges the frame's length prefix before its body is read, so the daemon
buffers at most the per-peer byte budget of requests (``default_bytes_per_peer``: two largest
frames + 1 MiB) and the rest stay unread in the peer's yamux window (256 KiB each) until they
are refused.

The bound on the peak RSS growth (``VmHWM`` after minus ``VmRSS`` before):

- per admitted request, at most ~5 copies of its frame are alive at once (the decoder's buffer,
  the frame bytes, the decoded bin, and for ``echo`` the encoded reply and its frame): with the
  per-peer budget of ~65 MiB that is 5 x 65 = 325 MiB;
- 40 streams x one 256 KiB yamux receive window = 10 MiB;
- 64 MiB of slack for the allocator, trio and py-libp2p bookkeeping.

So 240 MiB; before admission the same flood grew the daemon by ~950 MB (142 MB -> 1.09 GB).
"""

from __future__ import annotations

from pathlib import Path

import msgpack
import pytest
import trio

from calinode.node.jobs.server import default_bytes_per_peer
from calinode.protocol.framing import encode_frame
from calinode.protocol.ids import JOB_PROTOCOL
from calinode.protocol.limits import DEFAULT_LIMITS
from daemon_harness import Swarm
from hostile_peer import NO_LIMITS, HostilePeer, decode_last, open_hostile_peer, read_all

MIB = 1024 * 1024
STREAMS = 40
PAYLOAD_BYTES = DEFAULT_LIMITS.max_frame - 1
WINDOW = 256 * 1024
BOUND = 5 * default_bytes_per_peer(DEFAULT_LIMITS) + STREAMS * WINDOW + 64 * MIB


def proc_status(pid: int) -> dict[str, int]:
    """VmRSS and VmHWM of ``pid``, in bytes."""
    out = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            out[key] = int(value.split()[0]) * 1024
    return out


def big_request(n: int) -> bytes:
    """A job request frame whose payload is exactly ``PAYLOAD_BYTES`` long."""
    def packed(size: int) -> bytes:
        return bytes(msgpack.packb({"t": "req", "id": f"flood-{n:02d}", "kind": "echo",
                                    "deadline_ms": 30_000, "params": {"payload": b"x" * size}},
                                   use_bin_type=True))
    size = PAYLOAD_BYTES - len(packed(1 << 20)) + (1 << 20)
    payload = packed(size)
    assert len(payload) == PAYLOAD_BYTES
    return encode_frame(payload, NO_LIMITS)


async def ping(peer: HostilePeer, target: str) -> dict[str, object]:
    with trio.fail_after(60):
        return await peer.job(target, "ping", {})


@pytest.mark.slow
async def test_forty_streams_of_largest_frame_requests_stay_within_the_byte_budget(
    swarm: Swarm
) -> None:
    daemon = swarm.daemon("victim").start()
    assert daemon.proc is not None
    pid = daemon.proc.pid
    frame = big_request(0)  # one bytes object shared by every stream: the test stays small
    outcomes = {"reset": 0, "overloaded": 0, "other": 0}
    async with open_hostile_peer() as evil, open_hostile_peer() as honest:
        await evil.connect(daemon.addr)
        await honest.connect(daemon.addr)
        assert (await ping(honest, daemon.peer_id))["t"] == "res"
        await trio.sleep(1)
        before = proc_status(pid)
        peak_rss = before["VmRSS"]
        flooding = True

        async def sample() -> None:
            nonlocal peak_rss
            while flooding:
                peak_rss = max(peak_rss, proc_status(pid)["VmRSS"])
                await trio.sleep(0.05)

        async def flood_one() -> None:
            stream = await evil.open(daemon.peer_id, JOB_PROTOCOL)
            raw = bytearray()
            with trio.move_on_after(90):
                try:
                    await stream.write(frame)
                    await stream.close()
                except Exception:
                    outcomes["reset"] += 1
                    return
                raw += await read_all(stream)
            reply = decode_last(bytes(raw)) if raw else {}
            key = "overloaded" if reply.get("code") == "OVERLOADED" else "other"
            outcomes["reset" if not raw else key] += 1

        during: dict[str, object] = {}
        async with trio.open_nursery() as nursery:
            nursery.start_soon(sample)
            async with trio.open_nursery() as flood:
                for _ in range(STREAMS):
                    flood.start_soon(flood_one)
                await trio.sleep(0.5)
                during = await ping(honest, daemon.peer_id)  # another peer, mid-flood
            flooding = False
        after_ping = await ping(honest, daemon.peer_id)
        await trio.sleep(2)
        after = proc_status(pid)
    growth = after["VmHWM"] - before["VmRSS"]
    print(f"\nRSS before {before['VmRSS'] / MIB:.0f} MiB, peak sampled {peak_rss / MIB:.0f} MiB, "
          f"VmHWM {after['VmHWM'] / MIB:.0f} MiB, after {after['VmRSS'] / MIB:.0f} MiB; "
          f"peak growth {growth / MIB:.0f} MiB (bound {BOUND / MIB:.0f} MiB); {outcomes}")
    assert during["t"] == "res" and after_ping["t"] == "res"
    assert outcomes["overloaded"] + outcomes["reset"] >= STREAMS - 16  # most were refused
    assert growth < BOUND
    assert daemon.proc.poll() is None
