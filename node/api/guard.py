"""What stands between the local HTTP API and everything else on the machine or the web.

The API runs jobs, reads and deletes documents: any web page the user visits could try a
cross-site POST to ``http://127.0.0.1:7412`` (CSRF), and a hostile DNS name that resolves to
127.0.0.1 could read its answers (DNS rebinding). So every request passes :class:`ApiGuard`
(a raw ASGI middleware, headers only, before any route runs):

- ``Host`` must name this API's port on an IP literal or ``localhost``: a rebinding attack
  needs a DNS name, which is refused (403 ``UNAUTHORIZED``);
- an ``Origin`` header, which browsers send on cross-site requests, must name the same kind
  of address (403 ``UNAUTHORIZED``); the CLI and scripts send none;
- every route but ``/healthz``, ``/readyz`` (probes) and ``/login`` needs ``Authorization:
  Bearer <token>``, the token in the node's home (``api.token``, mode 0600; the CLI and
  :class:`~calinode.node.client.CalinodeClient` read it from there): 401
  ``UNAUTHENTICATED`` without it. ``/metrics`` too: Prometheus sends it from a file
  (``authorization: {credentials_file: ...}``);
- or, for the dashboard in a browser, the session cookie (``calinode_session_<port>``, HttpOnly,
  SameSite=Strict) that ``/login`` gave for a one-time code minted with the token
  (``node/dashboard/sessions.py``). A cookie rides along on any request the browser makes, so
  it gets less than the token: the Host and Origin checks above still apply, and a request
  authenticated by the cookie must be same-origin: its ``Origin``, when present, is exactly
  ``http://`` + its ``Host``, and one that changes something (not GET/HEAD) must carry an
  ``Origin`` (every browser sends one on a POST from the page). A form or a fetch from any
  other origin, even another loopback address or port, is refused (403 ``UNAUTHORIZED``).
  An unauthenticated ``GET /`` gets a short HTML page saying how to log in.

Bodies are checked where they are read (:func:`read_json`): ``application/json`` only (415
``UNSUPPORTED_MEDIA_TYPE``; a ``text/plain`` cross-site form post is thereby refused too),
at most :data:`MAX_BODY` bytes, counted while reading (413 ``PAYLOAD_TOO_LARGE``), and JSON
nested deeper than orjson's 1024 levels is a 400, never a 500.
"""

from __future__ import annotations

import hmac
import ipaddress
from typing import Any

import orjson
from starlette.requests import Request, cookie_parser
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.types import ASGIApp, Receive, Scope, Send

from calinode.node.dashboard.sessions import DashboardSessions, cookie_name
from calinode.protocol.errors import BadRequest, CalinodeError, ErrorCode

__all__ = ["MAX_BODY", "OPEN_PATHS", "ApiGuard", "cookie_request_allowed", "host_allowed",
           "read_json"]

#: Largest request body (bytes): far above the CLI's ingest batches (a few MB).
MAX_BODY = 64 * 1024 * 1024
#: Routes that answer without the token: liveness and readiness probes, and the dashboard's
#: login (its one-time code is the credential).
OPEN_PATHS = frozenset({"/healthz", "/readyz", "/login"})
#: Methods that change nothing: a cookie-authenticated one may come without an ``Origin``.
SAFE_METHODS = frozenset({"GET", "HEAD"})
JSON_TYPES = ("application/json", "application/x-ndjson")


def host_allowed(host: str, port: int) -> bool:
    """``host`` (a ``Host`` header value) names ``port`` on an IP literal or ``localhost``."""
    name, sep, given = host.rpartition(":")
    if not sep or given != str(port):
        return False
    name = name.removeprefix("[").removesuffix("]")
    if name == "localhost":
        return True
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True


def origin_allowed(origin: str, port: int) -> bool:
    scheme, sep, rest = origin.partition("://")
    return bool(sep) and scheme in ("http", "https") and host_allowed(rest.rstrip("/"), port)


def _refusal(status: int, code: ErrorCode, message: str) -> JSONResponse:
    return JSONResponse({"error": {"code": code.value, "message": message,
                                   "type": "invalid_request_error"}}, status_code=status)


def cookie_request_allowed(method: str, origin: str | None, host: str) -> bool:
    """A request authenticated by the session cookie is same-origin (module docstring)."""
    if origin is None:
        return method.upper() in SAFE_METHODS
    return origin.rstrip("/") == f"http://{host}"


LOGIN_PAGE = """<!doctype html><meta charset="utf-8"><title>calinode: log in</title>
<body style="font-family:sans-serif;max-width:40em;margin:3em auto">
<h1>calinode dashboard</h1><p>This browser is not logged in to this node. Run
<code>calinode dashboard</code> (or <code>calinode dashboard --open</code>) on this machine and
open the link it prints: it logs this browser in once.</p></body>"""


class ApiGuard:
    """ASGI middleware: Host, Origin, bearer token and dashboard session checks (see module
    docstring)."""

    def __init__(self, app: ASGIApp, *, token: str,
                 sessions: DashboardSessions | None = None) -> None:
        self.app = app
        self.token = token.encode()
        self.sessions = sessions if sessions is not None else DashboardSessions()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        refusal = self.check(scope)
        if refusal is not None:
            await refusal(scope, receive, send)
            return
        await self.app(scope, receive, send)

    def check(self, scope: Scope) -> Response | None:
        """The refusal for this request, or None when it may pass."""
        port = int((scope.get("server") or ("", 0))[1] or 0)  # the socket that accepted it
        headers = {k.lower(): v for k, v in scope.get("headers", [])}
        host = headers.get(b"host", b"").decode("latin-1")
        if not host_allowed(host, port):
            return _refusal(403, ErrorCode.UNAUTHORIZED,
                            f"Host {host[:80]!r} is not this node's API address; use "
                            f"http://127.0.0.1:{port}")
        origin = headers.get(b"origin")
        if origin is not None and not origin_allowed(origin.decode("latin-1"), port):
            return _refusal(403, ErrorCode.UNAUTHORIZED,
                            "cross-origin requests are refused (Origin "
                            f"{origin.decode('latin-1')[:80]!r})")
        if scope.get("path") in OPEN_PATHS:
            return None
        auth = headers.get(b"authorization", b"")
        scheme, _, given = auth.partition(b" ")
        if scheme.lower() == b"bearer" and hmac.compare_digest(given.strip(), self.token):
            return None
        cookies = cookie_parser(headers.get(b"cookie", b"").decode("latin-1"))
        session = cookies.get(cookie_name(port))
        if session and self.sessions.valid(session):
            if cookie_request_allowed(str(scope.get("method", "GET")),
                                      None if origin is None else origin.decode("latin-1"),
                                      host):
                return None
            return _refusal(403, ErrorCode.UNAUTHORIZED,
                            "a dashboard session works only from the dashboard's own page "
                            "(same origin)")
        if scope.get("path") == "/" and scope.get("method") in SAFE_METHODS:
            return HTMLResponse(LOGIN_PAGE, status_code=401)
        return _refusal(401, ErrorCode.UNAUTHENTICATED,
                        "missing or wrong API token: send 'Authorization: Bearer <token>' "
                        "with the token from the node's home (calinode token --home HOME)")


async def read_json(request: Request, *, max_bytes: int = MAX_BODY) -> dict[str, Any]:
    """The request's JSON object body, checked as the module docstring says."""
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if kind not in JSON_TYPES:
        raise CalinodeError(f"request body must be application/json, not {kind or 'untyped'}",
                            code=ErrorCode.UNSUPPORTED_MEDIA_TYPE)
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > max_bytes:
        raise _too_large(max_bytes)
    body = bytearray()
    async for piece in request.stream():
        body += piece
        if len(body) > max_bytes:
            raise _too_large(max_bytes)
    try:
        data = orjson.loads(bytes(body))
    except orjson.JSONDecodeError as exc:
        raise BadRequest(f"request body is not valid JSON: {exc}"[:300]) from None
    if not isinstance(data, dict):
        raise BadRequest("request body must be a JSON object")
    return data


def _too_large(max_bytes: int) -> CalinodeError:
    return CalinodeError(f"request body over {max_bytes // (1024 * 1024)} MiB; send it in parts",
                         code=ErrorCode.PAYLOAD_TOO_LARGE)
