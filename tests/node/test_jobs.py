"""The job layer between real in-process nodes: results, error codes, limits, isolation."""

from __future__ import annotations

import struct
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import trio
from libp2p.custom_types import TProtocol
from libp2p.peer.id import ID

from calinode.node.daemon import Node
from calinode.node.jobs.server import JobContext
from calinode.protocol.errors import ErrorCode, JobError
from calinode.protocol.ids import JOB_PROTOCOL
from calinode.protocol.messages import ErrorReply, MessageDecoder
from node_harness import open_nodes, wait_until


async def _pair(start: Callable[..., Any], bootstrap_of: Callable[[Node], str],
                **server_overrides: Any) -> tuple[Node, Node]:
    server = await start("server", **server_overrides)
    caller = await start("caller", bootstrap=(bootstrap_of(server),))
    await wait_until(lambda: server.peer_id in {e.peer_id for e in caller.table.alive()})
    return server, caller


async def slow(ctx: JobContext, params: dict[str, Any]) -> dict[str, Any]:
    await trio.sleep(float(params.get("seconds", 10)))
    return {"slept": True}


async def broken(ctx: JobContext, params: dict[str, Any]) -> dict[str, Any]:
    raise RuntimeError("a bug inside a job handler")


async def streaming(ctx: JobContext, params: dict[str, Any]) -> dict[str, Any]:
    for i in range(3):
        await ctx.emit({"token": f"t{i}"})
    return {"done": True}


async def test_ping_and_echo(tmp_path: Path, bootstrap_of: Callable[[Node], str]) -> None:
    async with open_nodes(tmp_path) as start:
        server, caller = await _pair(start, bootstrap_of)
        pong = await caller.ping(server.peer_id, count=2, timeout=5)
        assert pong["served_by"] == server.peer_id and len(pong["rtt_ms"]) == 2
        payload = bytes(range(256)) * 4096  # 1 MiB
        echoed = await caller.run_job(server.peer_id, "echo", {"payload": payload}, timeout=10)
        assert echoed.result["payload"] == payload and echoed.served_by == server.peer_id
        local = await caller.run_job(caller.peer_id, "echo", {"payload": "hi"}, timeout=1)
        assert local.served_by == caller.peer_id


async def test_many_sequential_jobs_release_their_streams(
    tmp_path: Path, bootstrap_of: Callable[[Node], str]
) -> None:
    async with open_nodes(tmp_path) as start:
        server, caller = await _pair(start, bootstrap_of)
        for _ in range(400):
            await caller.client.call(server.peer_id, "ping", {}, timeout=5)
        assert server.server.statistics().served >= 400


@pytest.mark.parametrize(
    ("kind", "params", "code"),
    [
        ("no-such-kind", {}, ErrorCode.UNKNOWN_KIND),
        ("echo", {}, ErrorCode.BAD_REQUEST),
        ("echo", {"payload": 5}, ErrorCode.BAD_REQUEST),
        ("ping", {"unexpected": 1}, ErrorCode.BAD_REQUEST),
        ("broken", {}, ErrorCode.INTERNAL),
    ],
)
async def test_remote_errors_carry_stable_codes(
    tmp_path: Path, bootstrap_of: Callable[[Node], str], kind: str, params: dict[str, Any],
    code: ErrorCode,
) -> None:
    async with open_nodes(tmp_path) as start:
        server, caller = await _pair(start, bootstrap_of)
        server.registry.register("broken", broken)
        with pytest.raises(JobError) as caught:
            await caller.run_job(server.peer_id, kind, params, timeout=5)
        assert caught.value.code == code
        # the node keeps serving
        assert (await caller.ping(server.peer_id, count=1, timeout=5))["rtt_ms"]


async def test_deadline_is_propagated_and_enforced(
    tmp_path: Path, bootstrap_of: Callable[[Node], str]
) -> None:
    async with open_nodes(tmp_path) as start:
        server, caller = await _pair(start, bootstrap_of)
        server.registry.register("slow", slow)
        with pytest.raises(JobError) as caught:
            await caller.run_job(server.peer_id, "slow", {"seconds": 30}, timeout=0.5)
        assert caught.value.code == ErrorCode.DEADLINE_EXCEEDED
        # the server gave up too: nothing stays in flight
        await wait_until(lambda: server.server.in_flight == 0, timeout=5)


async def test_per_peer_limit_answers_overloaded(
    tmp_path: Path, bootstrap_of: Callable[[Node], str]
) -> None:
    async with open_nodes(tmp_path) as start:
        server, caller = await _pair(start, bootstrap_of, max_jobs_per_peer=1)
        server.registry.register("slow", slow)
        outcomes: list[str] = []

        async def call() -> None:
            try:
                await caller.run_job(server.peer_id, "slow", {"seconds": 1}, timeout=5)
                outcomes.append("ok")
            except JobError as exc:
                outcomes.append(exc.code.value)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(call)
            await wait_until(lambda: server.server.in_flight == 1)
            nursery.start_soon(call)
        assert sorted(outcomes) == ["OVERLOADED", "ok"]
        assert server.server.statistics().rejected_overloaded == 1


async def test_stream_chunks_arrive_in_order(
    tmp_path: Path, bootstrap_of: Callable[[Node], str]
) -> None:
    async with open_nodes(tmp_path) as start:
        server, caller = await _pair(start, bootstrap_of)
        server.registry.register("streaming", streaming)
        seen: list[str] = []

        async def on_chunk(data: dict[str, Any]) -> None:
            seen.append(data["token"])

        result = await caller.client.call(server.peer_id, "streaming", {}, timeout=5,
                                          on_chunk=on_chunk)
        assert seen == ["t0", "t1", "t2"] and result.result == {"done": True}


@pytest.mark.parametrize(
    "garbage",
    [
        b"\xff\xff\xff\xff" + b"x" * 100,  # a 4 GiB length prefix
        struct.pack(">I", 5) + b"\x93\x01\x02\x03\x04",  # a msgpack array, not a map
        struct.pack(">I", 3) + b"\xc1\xc1\xc1",  # reserved bytes
        struct.pack(">I", 2) + b"\x81\xa1",  # truncated map inside a complete frame
    ],
)
async def test_garbage_on_the_job_protocol_gets_an_error_and_the_node_survives(
    tmp_path: Path, bootstrap_of: Callable[[Node], str], garbage: bytes
) -> None:
    async with open_nodes(tmp_path) as start:
        server, caller = await _pair(start, bootstrap_of)
        stream = await caller.host.new_stream(ID.from_base58(server.peer_id),
                                              [TProtocol(JOB_PROTOCOL)])
        await stream.write(garbage)
        decoder = MessageDecoder()
        reply = None
        with trio.fail_after(5):
            while reply is None:
                try:
                    data = await stream.read(65536)
                except Exception:
                    break
                decoder.feed(data)
                message = decoder.next_message()
                if isinstance(message, ErrorReply):
                    reply = message
        assert reply is not None
        assert reply.code in (ErrorCode.FRAME_TOO_LARGE, ErrorCode.MALFORMED_FRAME,
                              ErrorCode.BAD_REQUEST, ErrorCode.UNKNOWN_KIND)
        assert server.server.statistics().bad_frames == 1
        assert (await caller.ping(server.peer_id, count=1, timeout=5))["rtt_ms"]


async def test_metrics_and_activity_count_the_same_outcomes(
    tmp_path: Path, bootstrap_of: Callable[[Node], str]
) -> None:
    """One place counts a job's outcome for both tallies: a served job, a refused one and one
    past its deadline move the metrics and the dashboard's counters alike."""
    async with open_nodes(tmp_path) as start:
        server, caller = await _pair(start, bootstrap_of)
        await caller.run_job(server.peer_id, "echo", {"payload": "hi"}, timeout=5)
        with pytest.raises(JobError):
            await caller.run_job(server.peer_id, "echo", {"payload": 5}, timeout=5)
        with pytest.raises(JobError):
            await caller.run_job(server.peer_id, "ping", {"unexpected": 1}, timeout=5)
        registry = server.metrics.registry

        def jobs(kind: str, outcome: str) -> float:
            return registry.get_sample_value(
                "calinode_jobs_total", {"kind": kind, "hop": "remote", "outcome": outcome}) or 0

        kinds = server.server.activity.snapshot()["kinds"]
        assert (kinds["echo"]["served"], kinds["echo"]["failed"]) == (1, 1)
        assert (jobs("echo", "served"), jobs("echo", "failed")) == (1, 1)
        assert (kinds["ping"]["served"], kinds["ping"]["failed"]) == (0, 1)
        assert jobs("ping", "failed") == 1
