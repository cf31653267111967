"""Job kinds every node serves: ``ping`` (liveness and round trip) and ``echo`` (payload
round trip, used by tests and the benchmark)."""

from __future__ import annotations

import time
from typing import Any

from calinode.node.jobs.server import JobContext, JobRegistry
from calinode.protocol.job_params import EchoParams, PingParams


async def ping(ctx: JobContext, params: dict[str, Any]) -> dict[str, Any]:
    PingParams.from_wire(params)
    return {"pong": True, "time_ms": int(time.time() * 1000)}


async def echo(ctx: JobContext, params: dict[str, Any]) -> dict[str, Any]:
    return {"payload": EchoParams.from_wire(params).payload}


def register_builtin_jobs(registry: JobRegistry) -> None:
    registry.register("ping", ping)
    registry.register("echo", echo)
