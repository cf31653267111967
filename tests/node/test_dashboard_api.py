"""The dashboard's login and JSON on a real node (in-process, real hypercorn on 127.0.0.1, a
real HTTP client): the one-time code becomes a cookie session that works only same-origin, a
cross-site request riding the cookie is refused and changes nothing, ``/v1/activity`` moves by
exactly the jobs run, and ``/v1/peers`` says which peers hold an open connection."""

from __future__ import annotations

from pathlib import Path

import httpx
import trio

from calinode.node.daemon import Node
from calinode.node.dashboard.sessions import cookie_name
from node_harness import open_nodes


def bearer(node: Node) -> dict[str, str]:
    return {"Authorization": f"Bearer {node.api_token}"}


async def login(node: Node, browser: httpx.AsyncClient) -> str:
    """Mint a code with the token (as ``calinode dashboard`` does), open it as a browser."""
    async with httpx.AsyncClient(base_url=node.api_url, headers=bearer(node)) as cli:
        minted = (await cli.post("/v1/dashboard/login-code", json={})).json()
    assert minted["url"] == f"{node.api_url}/login?t={minted['code']}"
    answer = await browser.get(minted["url"])
    assert answer.status_code == 303 and answer.headers["location"] == "/"
    assert (await browser.get(minted["url"])).status_code == 401  # spent
    return str(minted["code"])


async def test_a_login_gives_a_same_origin_session_and_nothing_else(tmp_path: Path) -> None:
    async with open_nodes(tmp_path) as start:
        node = await start("a")
        async with httpx.AsyncClient(base_url=node.api_url, timeout=60) as browser:
            assert (await browser.get("/")).status_code == 401  # the login hint page
            await login(node, browser)
            port = int(node.api_url.rsplit(":", 1)[1])
            assert browser.cookies.get(cookie_name(port))
            assert not browser.cookies.get(cookie_name(port + 1))
            page = await browser.get("/")
            assert page.status_code == 200 and "/static/app.js" in page.text
            assert "frame-ancestors 'none'" in page.headers["content-security-policy"]
            assert (await browser.get("/static/app.js")).status_code == 200
            assert (await browser.get("/v1/status")).json()["peer_id"] == node.peer_id
            same_origin = {"Origin": node.api_url}
            made = await browser.post("/v1/collections", headers=same_origin,
                                      json={"name": "mine", "model": "nope"})
            assert made.status_code != 401 and made.status_code != 403  # authenticated
            # a page elsewhere (another origin, even on this machine) riding the cookie
            for origin in ("http://evil.example", "http://localhost:1", "null"):
                refused = await browser.post("/v1/collections", headers={"Origin": origin},
                                             json={"name": "evil", "model": "x"})
                assert refused.status_code == 403, origin
                assert refused.json()["error"]["code"] == "UNAUTHORIZED"
            no_origin = await browser.post("/v1/collections", json={"name": "evil"})
            assert no_origin.status_code == 403
            assert "evil" not in node.book.names()
            # logout ends the session
            out = await browser.post("/v1/dashboard/logout", headers=same_origin, json={})
            assert out.status_code == 200
            assert (await browser.get("/v1/status")).status_code == 401
            # and the token still works as before
            async with httpx.AsyncClient(base_url=node.api_url, headers=bearer(node)) as cli:
                assert (await cli.get("/v1/status")).status_code == 200


async def test_activity_moves_by_exactly_the_jobs_run_and_peers_say_connected(
    tmp_path: Path
) -> None:
    async with open_nodes(tmp_path) as start:
        a = await start("a")
        b = await start("b", bootstrap=(next(x for x in a.addrs if "/ip4/127.0.0.1/" in x),))
        async with httpx.AsyncClient(base_url=a.api_url, headers=bearer(a),
                                     timeout=60) as api:
            async def b_alive() -> bool:
                return any(p["peer_id"] == b.peer_id and p["alive"]
                           for p in (await api.get("/v1/peers")).json())

            with trio.fail_after(60):
                while not await b_alive():  # noqa: ASYNC110 - polling the API is the point
                    await trio.sleep(0.1)
            row = next(p for p in (await api.get("/v1/peers")).json()
                       if p["peer_id"] == b.peer_id)
            assert row["connected"] is True
            before = (await api.get("/v1/activity")).json()["kinds"].get("ping", {})
            served_before = before.get("served", 0)
            assert (await api.post("/v1/ping", json={"peer_id": a.peer_id,
                                                      "count": 5})).status_code == 200
            after = (await api.get("/v1/activity")).json()["kinds"]["ping"]
            assert after["served"] == served_before + 5
            assert sum(after["latency"]) == after["served"] + after["failed"]
