"""The dashboard's routes, mounted into the local API by ``node/api/app.py``.

- ``GET /``: the page (``static/index.html``); its scripts and styles under ``/static/``. The
  page is plain ES modules that poll the JSON API about once a second (``static/app.js``):
  nothing is fetched from anywhere but this node.
- ``POST /v1/dashboard/login-code`` (token): a one-time login code and the URL that redeems
  it, ``{"code", "url", "expires_in"}`` (``calinode dashboard`` prints or opens the URL).
- ``GET /login?t=CODE`` (open: the code is the credential): the session cookie, then a 303 to
  ``/`` so the code leaves the address bar; a spent or expired code gets a 401 page.
- ``POST /v1/dashboard/logout``: ends the session and clears the cookie.
- ``GET /v1/activity``: this node's cumulative job counters per kind
  (``node/jobs/activity.py``), which the page turns into rates and percentiles.

Every answer of the page carries a Content-Security-Policy that allows only this origin
(plus WebAssembly compilation, for the in-browser embedding of ``static/embed.js``) and
refuses framing.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from starlette.requests import Request
from starlette.responses import FileResponse, HTMLResponse, JSONResponse, RedirectResponse
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Receive, Scope, Send

from calinode.node.dashboard.sessions import (
    CODE_TTL,
    SESSION_TTL,
    DashboardSessions,
    cookie_name,
)

if TYPE_CHECKING:
    from calinode.node.api.node_view import ApiNode

__all__ = ["STATIC", "dashboard_routes"]

STATIC = Path(__file__).resolve().parent / "static"

#: Only this origin; WebAssembly may compile (onnxruntime-web), workers may come from blobs.
CSP = ("default-src 'self'; script-src 'self' 'wasm-unsafe-eval' blob:; "
       "worker-src 'self' blob:; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
       "frame-ancestors 'none'; base-uri 'none'; form-action 'self'")
PAGE_HEADERS = {"content-security-policy": CSP, "x-frame-options": "DENY",
                "cache-control": "no-cache", "referrer-policy": "no-referrer",
                "x-content-type-options": "nosniff"}

EXPIRED_PAGE = """<!doctype html><meta charset="utf-8"><title>calinode: login link spent</title>
<body>
<h1>This login link was used or has expired</h1><p>A link logs in once, within
{ttl:.0f} seconds. Run <code>calinode dashboard</code> again for a new one.</p></body>"""


class _Headers:
    """ASGI wrapper adding :data:`PAGE_HEADERS` to every answer of the static files."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def with_headers(message: Any) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []),
                                      *((k.encode(), v.encode()) for k, v in
                                        PAGE_HEADERS.items())]
            await send(message)

        await self.app(scope, receive, with_headers)


def _cookie(request: Request) -> str:
    """The session cookie's name for the socket that took ``request`` (as the guard reads
    it)."""
    return cookie_name(int((request.scope.get("server") or ("", 0))[1] or 0))


def dashboard_routes(node: ApiNode, sessions: DashboardSessions) -> list[BaseRoute]:
    async def page(request: Request) -> FileResponse:
        return FileResponse(STATIC / "index.html", headers=PAGE_HEADERS)

    async def login_code(request: Request) -> JSONResponse:
        code = sessions.mint_code()
        host = request.headers.get("host", "")  # the guard checked it names this API
        return JSONResponse({"code": code, "url": f"http://{host}/login?t={code}",
                             "expires_in": CODE_TTL})

    async def login(request: Request) -> HTMLResponse | RedirectResponse:
        session = sessions.redeem(request.query_params.get("t", ""))
        if session is None:
            return HTMLResponse(EXPIRED_PAGE.format(ttl=CODE_TTL), status_code=401,
                                headers=PAGE_HEADERS)
        response = RedirectResponse("/", status_code=303, headers=PAGE_HEADERS)
        response.set_cookie(_cookie(request), session, max_age=int(SESSION_TTL), path="/",
                            httponly=True, samesite="strict")
        return response

    async def logout(request: Request) -> JSONResponse:
        session = request.cookies.get(_cookie(request))
        if session:
            sessions.end(session)
        response = JSONResponse({"ok": True})
        response.delete_cookie(_cookie(request), path="/", httponly=True, samesite="strict")
        return response

    async def activity(request: Request) -> JSONResponse:
        return JSONResponse(node.activity.snapshot())

    return [
        Route("/", page),
        Route("/login", login),
        Route("/v1/dashboard/login-code", login_code, methods=["POST"]),
        Route("/v1/dashboard/logout", logout, methods=["POST"]),
        Route("/v1/activity", activity),
        Mount("/static", app=_Headers(StaticFiles(directory=STATIC)), name="static"),
    ]
