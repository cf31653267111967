"""The per-kind job counters behind the dashboard's ``/v1/activity`` (node/jobs/activity.py),
and that the job server moves them by exactly the jobs it ran."""

from __future__ import annotations

from typing import Any

import pytest
import trio

from calinode.node.jobs.activity import LATENCY_BUCKETS_MS, JobActivity
from calinode.node.jobs.server import JobContext, JobRegistry, JobServer
from calinode.protocol.errors import BadRequest, JobError
from calinode.protocol.messages import JobRequest


def test_counts_land_in_their_kind_and_latency_bucket() -> None:
    activity = JobActivity()
    activity.record("embed", 0.0015, {"vectors": b""})            # 1.5 ms: the (1, 2] bucket
    activity.record("embed", 0.0015, None)                          # failed, same bucket
    activity.record("generate", 3.0, {"usage": {"completion_tokens": 17}})  # (2000, 5000]
    activity.record("generate", 120.0, {"usage": {"completion_tokens": True}})  # above all
    snap = activity.snapshot()
    assert snap["buckets_ms"] == list(LATENCY_BUCKETS_MS)
    embed, generate = snap["kinds"]["embed"], snap["kinds"]["generate"]
    assert (embed["served"], embed["failed"], embed["tokens"]) == (1, 1, 0)
    assert embed["latency"][LATENCY_BUCKETS_MS.index(2)] == 2
    assert (generate["served"], generate["tokens"]) == (2, 17)  # a bool is not a count
    assert generate["latency"][LATENCY_BUCKETS_MS.index(5000)] == 1
    assert generate["latency"][-1] == 1
    assert sum(generate["latency"]) == 2


@pytest.mark.parametrize("usage", [None, 5, {"completion_tokens": -3},
                                   {"completion_tokens": "9"}, {"completion_tokens": 2.5}])
def test_odd_usage_counts_no_tokens(usage: Any) -> None:
    activity = JobActivity()
    activity.record("generate", 0.1, {"usage": usage})
    assert activity.snapshot()["kinds"]["generate"]["tokens"] == 0


async def test_the_server_counts_every_job_it_ran_and_only_those() -> None:
    registry = JobRegistry()

    async def echo(ctx: JobContext, params: dict[str, Any]) -> dict[str, Any]:
        return {"usage": {"completion_tokens": 4}}

    async def broken(ctx: JobContext, params: dict[str, Any]) -> dict[str, Any]:
        raise BadRequest("no")

    registry.register("echo", echo)
    registry.register("broken", broken)
    server = JobServer(registry, peer_id="self", max_total=4, max_per_peer=4)

    async def emit(data: dict[str, Any]) -> None:
        await trio.lowlevel.checkpoint()

    for n in range(3):
        await server.execute(JobRequest(id=f"e{n}", kind="echo", deadline_ms=5000, params={}),
                             "self", emit)
    with pytest.raises(JobError):
        await server.execute(JobRequest(id="b", kind="broken", deadline_ms=5000, params={}),
                             "self", emit)
    with pytest.raises(JobError):  # an unknown kind is refused before it runs: not a row
        await server.execute(JobRequest(id="u", kind="nope", deadline_ms=5000, params={}),
                             "self", emit)
    kinds = server.activity.snapshot()["kinds"]
    assert set(kinds) == {"echo", "broken"}
    assert (kinds["echo"]["served"], kinds["echo"]["failed"], kinds["echo"]["tokens"]) == (3, 0, 12)
    assert (kinds["broken"]["served"], kinds["broken"]["failed"]) == (0, 1)
    assert sum(kinds["echo"]["latency"]) == 3
