"""The API guard with the dashboard's cookie sessions (node/api/guard.py,
node/dashboard/sessions.py): the cookie authenticates like the token, but only same-origin,
and it never weakens the Host and Origin checks that stop CSRF and DNS rebinding."""

from __future__ import annotations

import json
from typing import Any

import pytest

from asgi_client import FakeClient
from calinode.node.api.guard import ApiGuard
from calinode.node.dashboard.routes import dashboard_routes
from calinode.node.dashboard.sessions import (
    CODE_TTL,
    MAX_CODES,
    MAX_SESSIONS,
    SESSION_TTL,
    DashboardSessions,
    cookie_name,
)

PORT = 7412
COOKIE = cookie_name(PORT)
TOKEN = "t" * 43


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def passed(scope: Any, receive: Any, send: Any) -> None:
    """The app behind the guard: answers 200 "passed"."""
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"passed", "more_body": False})


def scope(path: str = "/v1/status", method: str = "GET", host: str = f"127.0.0.1:{PORT}",
          **headers: str) -> dict[str, Any]:
    raw = [(b"host", host.encode())]
    raw += [(k.replace("_", "-").encode(), v.encode()) for k, v in headers.items()]
    return {"type": "http", "method": method, "path": path, "query_string": b"",
            "headers": raw, "server": ("127.0.0.1", PORT)}


def logged_in() -> tuple[ApiGuard, str, Clock]:
    clock = Clock()
    sessions = DashboardSessions(clock)
    session = sessions.redeem(sessions.mint_code())
    assert session is not None
    return ApiGuard(passed, token=TOKEN, sessions=sessions), session, clock


def status_of(guard: ApiGuard, s: dict[str, Any]) -> int:
    refusal = guard.check(s)
    return 200 if refusal is None else refusal.status_code


def test_a_session_cookie_authenticates_like_the_token() -> None:
    guard, session, _ = logged_in()
    assert status_of(guard, scope(authorization=f"Bearer {TOKEN}")) == 200
    assert status_of(guard, scope(cookie=f"{COOKIE}={session}")) == 200
    assert status_of(guard, scope(cookie=f"other=1; {COOKIE}={session}; x=y")) == 200
    # a same-origin POST from the page carries its own Origin
    assert status_of(guard, scope("/v1/search", "POST", cookie=f"{COOKIE}={session}",
                                  origin=f"http://127.0.0.1:{PORT}")) == 200


@pytest.mark.parametrize("cookie", ["", f"{COOKIE}=", f"{COOKIE}=forged", "calinode=x",
                                    f"{COOKIE}={'a' * 5000}"])
def test_no_or_a_forged_cookie_is_unauthenticated(cookie: str) -> None:
    guard, _, _ = logged_in()
    refusal = guard.check(scope(cookie=cookie))
    assert refusal is not None and refusal.status_code == 401
    assert b"UNAUTHENTICATED" in refusal.body


def test_each_port_has_its_own_cookie() -> None:
    """Browsers share cookies across the ports of one host: a node reads only its own."""
    guard, session, _ = logged_in()
    assert status_of(guard, scope(cookie=f"{cookie_name(PORT + 10)}={session}")) == 401
    assert status_of(guard, scope(cookie=f"{cookie_name(PORT + 10)}=x; {COOKIE}={session}")) == 200


def test_an_expired_or_ended_session_is_refused() -> None:
    guard, session, clock = logged_in()
    clock.now += SESSION_TTL + 1
    assert status_of(guard, scope(cookie=f"{COOKIE}={session}")) == 401
    guard, session, _ = logged_in()
    guard.sessions.end(session)
    assert status_of(guard, scope(cookie=f"{COOKIE}={session}")) == 401


@pytest.mark.parametrize("origin", [
    "http://evil.example",               # a cross-site page
    f"http://127.0.0.2:{PORT}",          # another loopback origin
    f"http://localhost:{PORT}",          # the same node under another name: another origin
    "http://127.0.0.1:8080",             # another port on this machine
    "null",                              # a sandboxed frame or a file:// page
])
def test_a_cookie_request_from_another_origin_is_refused(origin: str) -> None:
    guard, session, _ = logged_in()
    for method, path in (("GET", "/v1/status"), ("POST", "/v1/ingest")):
        refusal = guard.check(scope(path, method, cookie=f"{COOKIE}={session}", origin=origin))
        assert refusal is not None and refusal.status_code == 403, (origin, method)


def test_a_cookie_post_without_an_origin_is_refused() -> None:
    """Browsers send Origin on every POST; one without it did not come from the page."""
    guard, session, _ = logged_in()
    assert status_of(guard, scope("/v1/ingest", "POST", cookie=f"{COOKIE}={session}")) == 403
    assert status_of(guard, scope("/v1/ingest", "DELETE", cookie=f"{COOKIE}={session}")) == 403


def test_the_host_check_still_holds_with_a_valid_cookie() -> None:
    """DNS rebinding: a hostile name resolving to 127.0.0.1 gets the browser's cookie only if
    the cookie was set for that name, and the Host check refuses the name anyway."""
    guard, session, _ = logged_in()
    for host in (f"evil.example:{PORT}", f"127.0.0.1:{PORT + 1}", "127.0.0.1"):
        refusal = guard.check(scope(host=host, cookie=f"{COOKIE}={session}",
                                    authorization=f"Bearer {TOKEN}"))
        assert refusal is not None and refusal.status_code == 403, host


def test_login_is_open_but_still_host_checked() -> None:
    guard, _, _ = logged_in()
    assert status_of(guard, scope("/login")) == 200
    assert status_of(guard, scope("/login", host=f"evil.example:{PORT}")) == 403
    assert status_of(guard, scope("/login", origin="http://evil.example")) == 403


def test_the_page_without_a_login_says_how_to_log_in() -> None:
    guard, _, _ = logged_in()
    refusal = guard.check(scope("/"))
    assert refusal is not None and refusal.status_code == 401
    assert b"calinode dashboard" in refusal.body
    assert b"<script" not in refusal.body


def test_codes_are_single_use_short_lived_and_capped() -> None:
    clock = Clock()
    sessions = DashboardSessions(clock)
    code = sessions.mint_code()
    assert sessions.redeem(code) is not None
    assert sessions.redeem(code) is None  # spent
    late = sessions.mint_code()
    clock.now += CODE_TTL + 0.1
    assert sessions.redeem(late) is None  # expired
    codes = [sessions.mint_code() for _ in range(MAX_CODES + 5)]
    assert sessions.redeem(codes[0]) is None  # the oldest were forgotten
    assert sessions.redeem(codes[-1]) is not None
    assert sessions.redeem("") is None
    for _ in range(MAX_SESSIONS + 10):
        assert sessions.redeem(sessions.mint_code()) is not None
    assert len(sessions) == MAX_SESSIONS


def _login_app() -> tuple[Any, DashboardSessions]:
    from starlette.applications import Starlette

    sessions = DashboardSessions()
    app = Starlette(routes=dashboard_routes(None, sessions))  # type: ignore[arg-type]
    return ApiGuard(app, token=TOKEN, sessions=sessions), sessions


async def _get(app: Any, path: str, query: bytes = b"", **headers: str) -> FakeClient:
    client = FakeClient({})
    s = scope(path, **headers)
    s["query_string"] = query
    await app(s, client.receive, client.send)
    return client


async def test_login_trades_a_code_for_an_httponly_strict_cookie_and_leaves_the_url() -> None:
    app, sessions = _login_app()
    code = sessions.mint_code()
    answer = await _get(app, "/login", f"t={code}".encode())
    assert answer.status() == 303
    assert answer.header(b"location") == b"/"
    cookie = answer.header(b"set-cookie").decode()
    assert cookie.startswith(f"{COOKIE}=")
    assert "HttpOnly" in cookie and "SameSite=strict" in cookie and "Path=/" in cookie
    session = cookie.split(";")[0].split("=", 1)[1]
    assert sessions.valid(session)
    assert code not in cookie
    page = await _get(app, "/", cookie=f"{COOKIE}={session}")
    assert page.status() == 200
    assert "default-src 'self'" in page.header(b"content-security-policy").decode()
    assert '<script type="module" src="/static/app.js">' in page.text()
    again = await _get(app, "/login", f"t={code}".encode())
    assert again.status() == 401  # a code logs in once
    assert b"set-cookie" not in dict(next(m for m in again.sent
                                          if m["type"] == "http.response.start")["headers"])


async def test_the_login_code_route_needs_the_token() -> None:
    app, sessions = _login_app()
    client = FakeClient({})
    s = scope("/v1/dashboard/login-code", "POST")
    await app(s, client.receive, client.send)
    assert client.status() == 401
    client = FakeClient({})
    s = scope("/v1/dashboard/login-code", "POST", authorization=f"Bearer {TOKEN}",
              content_type="application/json")
    await app(s, client.receive, client.send)
    assert client.status() == 200
    reply = json.loads(client.text())
    assert reply["url"] == f"http://127.0.0.1:{PORT}/login?t={reply['code']}"
    assert sessions.redeem(reply["code"]) is not None
