"""Job kinds every node serves: ``ping`` (liveness and round trip) and ``echo`` (payload
round trip, used by tests and the benchmark)."""

from __future__ import annotations

import time
from typing import Any

from calinode.node.job_server import JobContext, JobRegistry
from calinode.protocol.errors import ErrorCode, JobError


async def ping(ctx: JobContext, params: dict[str, Any]) -> dict[str, Any]:
    if params:
        raise JobError(f"ping takes no params, got {sorted(params)}", code=ErrorCode.BAD_REQUEST)
    return {"pong": True, "time_ms": int(time.time() * 1000)}


async def echo(ctx: JobContext, params: dict[str, Any]) -> dict[str, Any]:
    if set(params) != {"payload"}:
        raise JobError("echo takes exactly one param: payload (bytes or str)",
                       code=ErrorCode.BAD_REQUEST)
    payload = params["payload"]
    if not isinstance(payload, bytes | str):
        raise JobError(f"echo payload must be bytes or str, not {type(payload).__name__}",
                       code=ErrorCode.BAD_REQUEST)
    return {"payload": payload}


def register_builtin_jobs(registry: JobRegistry) -> None:
    registry.register("ping", ping)
    registry.register("echo", echo)
