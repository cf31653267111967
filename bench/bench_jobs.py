"""Job-layer overhead: calinode jobs vs a raw py-libp2p stream, between two OS processes.

    python bench/bench_jobs.py [--pings 300] [--echoes 40]

The server process runs a real calinode node plus a raw echo handler on the same host, so
both paths share one connection, one process and one machine; the client measures, in one
run, a ping round trip and a 1 MiB echo each way (new stream per request on both paths) and
prints medians, p95 and the ratio calinode / raw.
"""

from __future__ import annotations

import argparse
import json
import statistics
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import trio
from libp2p.abc import INetStream
from libp2p.custom_types import TProtocol
from libp2p.peer.id import ID
from libp2p.peer.peerinfo import info_from_p2p_addr
from multiaddr import Multiaddr

from calinode.node.config import NodeConfig
from calinode.node.daemon import Node, run_node

RAW_PROTOCOL = TProtocol("/calinode-bench/raw-echo/1.0.0")
MIB = 1024 * 1024


async def read_exact(stream: INetStream, n: int) -> bytes:
    buf = bytearray()
    while len(buf) < n:
        buf += await stream.read(n - len(buf))
    return bytes(buf)


async def raw_echo_handler(stream: INetStream) -> None:
    with trio.move_on_after(30):  # a stuck client costs a stream, not the benchmark
        (size,) = struct.unpack(">I", await read_exact(stream, 4))
        data = await read_exact(stream, size)
        await stream.write(struct.pack(">I", size) + data)
    await stream.close()


async def serve(home: Path) -> None:
    config = NodeConfig(home=home, listen=("/ip4/127.0.0.1/tcp/0",), api="127.0.0.1:0",
                        no_models=True)
    async with trio.open_nursery() as nursery:
        node: Node = await nursery.start(lambda task_status: run_node(
            config, announce=False, task_status=task_status))
        node.host.set_stream_handler(RAW_PROTOCOL, raw_echo_handler)
        print(json.dumps({"addr": next(a for a in node.addrs if "127.0.0.1" in a)}), flush=True)


async def raw_round_trip(node: Node, peer: ID, payload: bytes) -> None:
    stream = await node.host.new_stream(peer, [RAW_PROTOCOL])
    await stream.write(struct.pack(">I", len(payload)) + payload)
    (size,) = struct.unpack(">I", await read_exact(stream, 4))
    assert await read_exact(stream, size) == payload
    await stream.close()


def summary(samples: list[float]) -> tuple[float, float]:
    ordered = sorted(samples)
    return statistics.median(ordered), ordered[max(0, int(len(ordered) * 0.95) - 1)]


Row = tuple[str, float, float, float, float]


async def measure(addr: str, pings: int, echoes: int) -> list[Row]:
    with tempfile.TemporaryDirectory() as home:
        config = NodeConfig(home=Path(home), listen=("/ip4/127.0.0.1/tcp/0",), api="127.0.0.1:0",
                            bootstrap=(addr,), no_models=True)
        async with trio.open_nursery() as nursery:
            node: Node = await nursery.start(lambda task_status: run_node(
                config, handle_signals=False, announce=False, task_status=task_status))
            info = info_from_p2p_addr(Multiaddr(addr))
            server = info.peer_id.to_base58()
            while server not in node.table:  # noqa: ASYNC110 - polling the table is the point
                await trio.sleep(0.05)
            small, big = b"x" * 8, bytes(range(256)) * (MIB // 256)
            rows = []
            for label, count, payload in (("ping round trip", pings, small),
                                          ("1 MiB echo", echoes, big)):
                raw, job = [], []
                for _ in range(count):  # interleaved so both see the same machine noise
                    t0 = time.perf_counter()
                    await raw_round_trip(node, info.peer_id, payload)
                    raw.append((time.perf_counter() - t0) * 1000)
                    t0 = time.perf_counter()
                    if payload is small:
                        await node.client.call(server, "ping", {}, timeout=10)
                    else:
                        result = await node.client.call(server, "echo", {"payload": payload},
                                                        timeout=10)
                        assert result.result["payload"] == payload
                    job.append((time.perf_counter() - t0) * 1000)
                raw_med, raw_p95 = summary(raw)
                job_med, job_p95 = summary(job)
                rows.append((label, raw_med, raw_p95, job_med, job_p95))
            nursery.cancel_scope.cancel()
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pings", type=int, default=300)
    parser.add_argument("--echoes", type=int, default=40)
    parser.add_argument("--serve", metavar="HOME", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        trio.run(serve, Path(args.serve))
        return
    with tempfile.TemporaryDirectory() as home:
        server = subprocess.Popen([sys.executable, __file__, "--serve", home],
                                  stdout=subprocess.PIPE, text=True)
        try:
            assert server.stdout is not None
            addr = json.loads(server.stdout.readline())["addr"]
            rows = trio.run(measure, addr, args.pings, args.echoes)
        finally:
            server.terminate()
            server.wait(15)
    print(f"job layer vs raw py-libp2p stream, new stream per request, {args.pings} pings / "
          f"{args.echoes} echoes, two processes on 127.0.0.1\n")
    print("| what | raw stream p50 ms | raw p95 ms | calinode job p50 ms | job p95 ms "
          "| p50 ratio |")
    print("|---|---:|---:|---:|---:|---:|")
    for label, raw_med, raw_p95, job_med, job_p95 in rows:
        print(f"| {label} | {raw_med:.2f} | {raw_p95:.2f} | {job_med:.2f} | {job_p95:.2f} | "
              f"{job_med / raw_med:.2f}x |")


if __name__ == "__main__":
    main()
