"""The local HTTP API (Starlette app served by hypercorn under trio, on 127.0.0.1).

Routes: ``GET /healthz`` (liveness), ``GET /readyz`` (200 when ready, else 503 with the
reasons; ``node/readiness.py``), ``GET /metrics`` (Prometheus text, token needed;
``node/metrics.py``), ``GET /v1/status``, ``GET /v1/peers``, ``POST /v1/ping``
(``{"peer_id", "count"}``), ``POST /v1/jobs`` (``{"peer_id", "kind", "params", "timeout"}``),
the model files for the browser (``node/api/model_files_routes.py``) and the dashboard
(``node/dashboard/routes.py``: ``/``, ``/login``, ``/static/*``, ``/v1/activity``),
``GET /v1/doctor`` and ``POST /v1/bench`` (``doctor_routes.py``), and the OpenAI-compatible
routes (``inference_routes.py``, ``openai_routes.py``).
Every error is JSON, ``{"error": {"code", "message", "type"}}``, an unknown route (404
``NOT_FOUND``) and a wrong method (405 ``METHOD_NOT_ALLOWED``) included, with an HTTP status
derived from the code (``node/api/errors.py``): an exception group is collapsed into its
``CalinodeError`` (``protocol/errors.py``), and a bug is a 500 ``INTERNAL`` with a JSON body too.
"""

from __future__ import annotations

import ipaddress
import logging
from typing import TYPE_CHECKING

from hypercorn.config import Config
from hypercorn.trio import serve
from prometheus_client import CONTENT_TYPE_LATEST
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from calinode.node.api.bodies import field, timeout_of
from calinode.node.api.doctor_routes import doctor_routes
from calinode.node.api.errors import error_response
from calinode.node.api.guard import ApiGuard, read_json
from calinode.node.api.inference_routes import inference_routes
from calinode.node.api.model_files_routes import model_files_routes
from calinode.node.api.model_pull_routes import model_pull_routes
from calinode.node.api.openai_routes import openai_routes
from calinode.node.api.rag_routes import rag_routes
from calinode.node.dashboard.routes import dashboard_routes
from calinode.node.dashboard.sessions import DashboardSessions
from calinode.protocol.errors import BadRequest, CalinodeError, ErrorCode, collapse_group

if TYPE_CHECKING:
    from trio_typing import TaskStatus

    from calinode.node.api.node_view import ApiNode

log = logging.getLogger(__name__)

#: The Prometheus text format (prometheus_client's CONTENT_TYPE_LATEST).
METRICS_CONTENT_TYPE = CONTENT_TYPE_LATEST


async def on_calinode_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, CalinodeError)
    return error_response(exc.code, exc.message)


async def on_group(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ExceptionGroup)
    collapsed = collapse_group(exc)
    if not isinstance(collapsed, CalinodeError):
        raise exc
    if collapsed.code is ErrorCode.INTERNAL:
        log.error("%s %s failed", request.method, request.url.path, exc_info=exc)
    return error_response(collapsed.code, collapsed.message)


async def on_bug(request: Request, exc: Exception) -> JSONResponse:
    # Starlette logs the traceback after this answer (the error is re-raised)
    return error_response(ErrorCode.INTERNAL, f"internal error: {type(exc).__name__}")


async def on_http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, HTTPException)
    if exc.status_code == 405:
        return error_response(ErrorCode.METHOD_NOT_ALLOWED,
                              f"{request.method} is not allowed on {request.url.path}")
    if exc.status_code == 404:
        return error_response(ErrorCode.NOT_FOUND, f"no route {request.url.path}")
    return error_response(ErrorCode.BAD_REQUEST, str(exc.detail))


def build_app(node: ApiNode, sessions: DashboardSessions | None = None) -> Starlette:
    """The routes; ``sessions`` are the dashboard's logins, shared with the guard."""
    sessions = sessions if sessions is not None else DashboardSessions()

    async def healthz(request: Request) -> JSONResponse:
        return JSONResponse({"ok": True, "peer_id": node.peer_id})

    async def readyz(request: Request) -> JSONResponse:
        state = node.readiness()
        return JSONResponse(dict(state.to_wire(), peer_id=node.peer_id),
                            status_code=200 if state.ready else 503)

    async def metrics(request: Request) -> Response:
        return Response(await node.scrape(), media_type=METRICS_CONTENT_TYPE)

    async def status(request: Request) -> JSONResponse:
        return JSONResponse(node.status())

    async def peers(request: Request) -> JSONResponse:
        return JSONResponse(node.peers())

    async def invite(request: Request) -> JSONResponse:
        if not node.routable_addrs():  # the API starts before the host listens (/readyz)
            raise CalinodeError("the node is still starting: its listen addresses are not "
                                "known yet; try again in a moment", code=ErrorCode.OVERLOADED)
        if node.swarm_key is None:
            return JSONResponse({"invite": None, "swarm": node.swarm_mode,
                                 "bootstrap": node.routable_addrs()[:1]})
        return JSONResponse({"invite": node.invite(), "swarm": node.swarm_mode})

    async def ping(request: Request) -> JSONResponse:
        body = await read_json(request)
        count = field(body, "count", int, 1)
        if not 1 <= count <= 1000:
            raise BadRequest("count must be 1..1000")
        return JSONResponse(await node.ping(field(body, "peer_id", str), count=count,
                                            timeout=timeout_of(body, 5.0)))

    async def jobs(request: Request) -> JSONResponse:
        body = await read_json(request)
        result = await node.run_job(
            field(body, "peer_id", str, node.peer_id), field(body, "kind", str),
            field(body, "params", dict, {}), timeout=timeout_of(body, 30.0))
        return JSONResponse({"result": result.result, "served_by": result.served_by,
                             "elapsed_ms": round(result.elapsed_ms, 3)})

    return Starlette(
        routes=[
            Route("/healthz", healthz),
            Route("/readyz", readyz),
            Route("/metrics", metrics),
            Route("/v1/status", status),
            Route("/v1/peers", peers),
            Route("/v1/invite", invite),
            Route("/v1/ping", ping, methods=["POST"]),
            Route("/v1/jobs", jobs, methods=["POST"]),
            *inference_routes(node),
            *openai_routes(node),
            *rag_routes(node),
            *model_files_routes(node),
            *model_pull_routes(node),
            *dashboard_routes(node, sessions),
            *doctor_routes(node),
        ],
        exception_handlers={CalinodeError: on_calinode_error, HTTPException: on_http_error,
                            ExceptionGroup: on_group, Exception: on_bug},
    )


async def serve_api(node: ApiNode, *, task_status: TaskStatus[list[str]]) -> None:
    config = Config()
    config.bind = [node.config.api]
    config.accesslog = None
    config.errorlog = logging.getLogger("calinode.api")
    config.graceful_timeout = 1.0
    if not _loopback(node.config.api_host):
        log.warning("the local API listens on %s, beyond this machine: anyone who can reach "
                    "it and holds the token in %s can use this node", node.config.api,
                    node.config.home / "api.token")
    sessions = DashboardSessions()
    app = ApiGuard(build_app(node, sessions), token=node.api_token, sessions=sessions)
    await serve(app, config, task_status=task_status)  # type: ignore[arg-type]


def _loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return host == "localhost"
