"""The node's side of ``calinode doctor`` and ``calinode bench`` (node/api/doctor_routes.py)
between real in-process nodes (libp2p hosts on 127.0.0.1).

A peer's ``ping`` reply carries its clock, and ``echo`` its payload: both are peer input. A
peer that answers with a clock that is not a clock, or echoes something else, is counted
(``bad_reply``), gets no clock estimate (so no verdict is made of garbage), and the asking
node keeps serving.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import trio

from calinode.node.api.doctor_routes import ECHO_BYTES, bench_one, doctor_facts
from calinode.node.doctor_rules import judge
from calinode.node.jobs.server import JobContext
from calinode.protocol.errors import JobError
from node_harness import open_nodes, wait_until


async def test_facts_carry_each_peer_clock_and_connection(tmp_path: Path) -> None:
    async with open_nodes(tmp_path) as start:
        a = await start("a")
        b = await start("b", bootstrap=(next(x for x in a.addrs if "127.0.0.1" in x),))
        await wait_until(lambda: b.peer_id in a.table and a.table.get(b.peer_id).alive)
        facts = await doctor_facts(a)
        [row] = facts["peers"]
        assert row["peer_id"] == b.peer_id and row["alive"]
        assert row["protocol_version"] == facts["protocol_version"]
        assert abs(row["clock"]["skew_ms"]) < 2_000 and row["clock"]["uncertainty_ms"] >= 1
        # b dialled a (its bootstrap): an inbound connection on a's side
        assert facts["network"]["connections"][b.peer_id]["inbound"] >= 1
        assert facts["network"]["handshake_failures"]["failed"] == 0
        assert judge(facts, {}) == []


@pytest.mark.parametrize("reply", [
    {"pong": True, "time_ms": 1 << 62},        # not a clock (after the year 2200)
    {"pong": True, "time_ms": "now"},
    {"pong": True},
    {"pong": "yes", "time_ms": 1_764_540_000_000},
    {"pong": True, "time_ms": 1_764_540_000_000, "extra": [0] * 500},
])
async def test_a_peer_answering_ping_with_garbage_gets_no_clock_and_is_counted(
        tmp_path: Path, reply: dict[str, Any]) -> None:
    async with open_nodes(tmp_path) as start:
        a = await start("a")
        b = await start("b", bootstrap=(next(x for x in a.addrs if "127.0.0.1" in x),))
        await wait_until(lambda: b.peer_id in a.table and a.table.get(b.peer_id).alive)

        async def hostile_ping(ctx: JobContext, params: dict[str, Any]) -> dict[str, Any]:
            return reply

        b.registry.handlers["ping"] = hostile_ping
        facts = await doctor_facts(a)
        [row] = facts["peers"]
        assert "error" in row["clock"] and "skew_ms" not in row["clock"]
        assert a.rejections.counts["bad_reply"] == 1
        found = judge(facts, {})
        assert [(f.check, f.subject) for f in found] == [("refused_input", "bad_reply")]
        # a still serves: an echo job to b and back
        result = await a.client.call(b.peer_id, "echo", {"payload": "still here"}, timeout=10)
        assert result.result == {"payload": "still here"}


async def test_bench_measures_rtt_and_echo_and_refuses_a_wrong_echo(tmp_path: Path) -> None:
    async with open_nodes(tmp_path) as start:
        a = await start("a")
        b = await start("b", bootstrap=(next(x for x in a.addrs if "127.0.0.1" in x),))
        await wait_until(lambda: b.peer_id in a.table and a.table.get(b.peer_id).alive)
        rtt = await bench_one(a, "rtt", b.peer_id, None, 0.2)
        assert rtt["count"] >= 1 and 0 < rtt["rtt_ms"]["min"] <= rtt["rtt_ms"]["max"]
        echo = await bench_one(a, "echo", b.peer_id, None, 0.2)
        assert echo["bytes"] == 2 * ECHO_BYTES * echo["count"] and echo["mib_per_s"] > 0

        async def short_echo(ctx: JobContext, params: dict[str, Any]) -> dict[str, Any]:
            return {"payload": params["payload"][:10]}

        b.registry.handlers["echo"] = short_echo
        with pytest.raises(JobError, match="invalid echo reply"):
            await bench_one(a, "echo", b.peer_id, None, 0.2)
        assert a.rejections.counts["bad_reply"] == 1
        with trio.fail_after(30):
            assert (await bench_one(a, "rtt", b.peer_id, None, 0.2))["count"] >= 1
