"""The local HTTP API (Starlette app served by hypercorn under trio, on 127.0.0.1).

Routes: ``GET /healthz``, ``GET /v1/status``, ``GET /v1/peers``, ``POST /v1/ping``
(``{"peer_id", "count"}``), ``POST /v1/jobs`` (``{"peer_id", "kind", "params", "timeout"}``).
Errors are ``{"error": {"code", "message"}}`` with an HTTP status derived from the code.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from hypercorn.config import Config
from hypercorn.trio import serve
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from calinode.node.inference_api import inference_routes
from calinode.node.rag_api import rag_routes
from calinode.protocol.errors import CalinodeError, ErrorCode

if TYPE_CHECKING:
    from trio_typing import TaskStatus

    from calinode.node.daemon import Node

log = logging.getLogger(__name__)

HTTP_STATUS: dict[ErrorCode, int] = {
    ErrorCode.BAD_REQUEST: 400,
    ErrorCode.UNKNOWN_KIND: 400,
    ErrorCode.UNKNOWN_MODEL: 404,
    ErrorCode.UNKNOWN_COLLECTION: 404,
    ErrorCode.UNKNOWN_PEER: 404,
    ErrorCode.UNAUTHORIZED: 403,
    ErrorCode.OVERLOADED: 503,
    ErrorCode.NO_CAPABLE_PEER: 503,
    ErrorCode.SHARD_UNAVAILABLE: 503,
    ErrorCode.PEER_UNREACHABLE: 502,
    ErrorCode.DEADLINE_EXCEEDED: 504,
}
MAX_TIMEOUT = 300.0


def error_response(code: ErrorCode, message: str) -> JSONResponse:
    status = HTTP_STATUS.get(code, 500)
    kind = "invalid_request_error" if status < 500 else "server_error"  # OpenAI clients read it
    return JSONResponse({"error": {"code": code.value, "message": message, "type": kind}},
                        status_code=status)


async def _json_body(request: Request) -> dict[str, Any]:
    try:
        body = await request.json()
    except ValueError:
        raise CalinodeError("request body must be JSON", code=ErrorCode.BAD_REQUEST) from None
    if not isinstance(body, dict):
        raise CalinodeError("request body must be a JSON object", code=ErrorCode.BAD_REQUEST)
    return body


def _field(body: dict[str, Any], name: str, kind: type, default: Any = ...) -> Any:
    value = body.get(name, default)
    if value is ...:
        raise CalinodeError(f"missing field {name!r}", code=ErrorCode.BAD_REQUEST)
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if not isinstance(value, kind) or (isinstance(value, bool) and kind is not bool):
        raise CalinodeError(f"field {name!r} must be {kind.__name__}", code=ErrorCode.BAD_REQUEST)
    return value


def _timeout(body: dict[str, Any], default: float) -> float:
    timeout = _field(body, "timeout", float, default)
    if not 0 < timeout <= MAX_TIMEOUT:
        raise CalinodeError(f"timeout must be in (0, {MAX_TIMEOUT:.0f}] seconds",
                            code=ErrorCode.BAD_REQUEST)
    return float(timeout)


def build_app(node: Node) -> Starlette:
    async def healthz(request: Request) -> JSONResponse:
        return JSONResponse({"ok": True, "peer_id": node.peer_id})

    async def status(request: Request) -> JSONResponse:
        return JSONResponse(node.status())

    async def peers(request: Request) -> JSONResponse:
        return JSONResponse(node.peers())

    async def ping(request: Request) -> JSONResponse:
        body = await _json_body(request)
        count = _field(body, "count", int, 1)
        if not 1 <= count <= 1000:
            raise CalinodeError("count must be 1..1000", code=ErrorCode.BAD_REQUEST)
        return JSONResponse(await node.ping(_field(body, "peer_id", str), count=count,
                                            timeout=_timeout(body, 5.0)))

    async def jobs(request: Request) -> JSONResponse:
        body = await _json_body(request)
        result = await node.run_job(
            _field(body, "peer_id", str, node.peer_id), _field(body, "kind", str),
            _field(body, "params", dict, {}), timeout=_timeout(body, 30.0))
        return JSONResponse({"result": result.result, "served_by": result.served_by,
                             "elapsed_ms": round(result.elapsed_ms, 3)})

    async def on_calinode_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, CalinodeError)
        return error_response(exc.code, exc.message)

    return Starlette(
        routes=[
            Route("/healthz", healthz),
            Route("/v1/status", status),
            Route("/v1/peers", peers),
            Route("/v1/ping", ping, methods=["POST"]),
            Route("/v1/jobs", jobs, methods=["POST"]),
            *inference_routes(node),
            *rag_routes(node),
        ],
        exception_handlers={CalinodeError: on_calinode_error},
    )


async def serve_api(node: Node, *, task_status: TaskStatus[list[str]]) -> None:
    config = Config()
    config.bind = [node.config.api]
    config.accesslog = None
    config.errorlog = logging.getLogger("calinode.api")
    config.graceful_timeout = 1.0
    await serve(build_app(node), config, task_status=task_status)  # type: ignore[arg-type]
