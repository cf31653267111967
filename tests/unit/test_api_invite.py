"""``GET /v1/invite`` while the node starts: the API answers before the host listens (so that
``/readyz`` can say 503), and an invite without addresses would be useless."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import httpx

from calinode.node.api.app import build_app
from calinode.node.api.guard import ApiGuard

TOKEN = "t" * 43


def client_for(addrs: list[str]) -> httpx.AsyncClient:
    node: Any = SimpleNamespace(peer_id="12D3KooWtest", swarm_key=None, swarm_mode="open",
                                routable_addrs=lambda: addrs)
    app = ApiGuard(build_app(node), token=TOKEN)
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                             base_url="http://127.0.0.1:7412",
                             headers={"Authorization": f"Bearer {TOKEN}"})


async def test_an_invite_before_the_host_listens_is_a_503_that_says_to_retry() -> None:
    async with client_for([]) as client:
        got = await client.get("/v1/invite")
    assert got.status_code == 503
    assert got.json()["error"]["code"] == "OVERLOADED"
    assert "still starting" in got.json()["error"]["message"]


async def test_an_open_swarm_invites_with_its_first_address() -> None:
    addr = "/ip4/10.0.0.1/tcp/7411/p2p/12D3KooWtest"
    async with client_for([addr, "/ip4/127.0.0.1/tcp/7411/p2p/12D3KooWtest"]) as client:
        got = await client.get("/v1/invite")
    assert got.status_code == 200
    assert got.json() == {"invite": None, "swarm": "open", "bootstrap": [addr]}
