"""The local HTTP API as a web page, a rebinding DNS name or a careless script would meet it.

A real node (in-process, real hypercorn on 127.0.0.1) and a real HTTP client: every refusal has
its documented status and code, and the node keeps serving afterwards.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio

from calinode.node.api.guard import MAX_BODY
from calinode.node.daemon import Node
from node_harness import open_nodes


def rss_bytes() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


def error_of(response: httpx.Response) -> tuple[int, str]:
    return response.status_code, response.json()["error"]["code"]


async def client_of(node: Node, **headers: str) -> httpx.AsyncClient:
    return httpx.AsyncClient(base_url=node.api_url, timeout=120,
                             headers={"Authorization": f"Bearer {node.api_token}", **headers})


@pytest.fixture
async def node(tmp_path: Path) -> AsyncIterator[Node]:
    async with open_nodes(tmp_path) as start:
        yield await start("a")


async def test_token_is_required_everywhere_but_healthz(node: Node, tmp_path: Path) -> None:
    token_file = tmp_path / "a" / "api.token"
    assert token_file.read_text().strip() == node.api_token
    assert token_file.stat().st_mode & 0o777 == 0o600
    async with httpx.AsyncClient(base_url=node.api_url) as anonymous:
        assert (await anonymous.get("/healthz")).status_code == 200
        assert error_of(await anonymous.get("/v1/status")) == (401, "UNAUTHENTICATED")
        wrong = {"Authorization": "Bearer " + "x" * len(node.api_token)}
        assert error_of(await anonymous.get("/v1/peers", headers=wrong)) == (
            401, "UNAUTHENTICATED")
        assert error_of(await anonymous.post("/v1/jobs", json={"kind": "ping"})) == (
            401, "UNAUTHENTICATED")
    async with await client_of(node) as client:
        assert (await client.get("/v1/status")).json()["peer_id"] == node.peer_id


async def test_foreign_host_and_origin_are_refused(node: Node) -> None:
    port = node.api_url.rsplit(":", 1)[1]
    async with await client_of(node) as client:
        for host in ("attacker.example:" + port, "127.0.0.1.nip.io:" + port,
                     "127.0.0.1:1", "localhost"):
            assert error_of(await client.get("/v1/status", headers={"Host": host})) == (
                403, "UNAUTHORIZED"), host
        for good in ("localhost:" + port, "127.0.0.1:" + port):
            assert (await client.get("/v1/status", headers={"Host": good})).status_code == 200
        for origin in ("http://attacker.example", "https://evil.test:" + port, "null"):
            response = await client.post("/v1/jobs", json={"kind": "ping"},
                                         headers={"Origin": origin})
            assert error_of(response) == (403, "UNAUTHORIZED"), origin
        response = await client.post("/v1/jobs", json={"kind": "ping"},
                                     headers={"Origin": f"http://127.0.0.1:{port}"})
        assert response.status_code == 200


async def test_bodies_must_be_json_bounded_and_shallow(node: Node) -> None:
    async with await client_of(node) as client:
        # a cross-site form post arrives as text/plain: refused before it is parsed
        response = await client.post("/v1/jobs", content=b'{"kind": "ping"}',
                                     headers={"Content-Type": "text/plain"})
        assert error_of(response) == (415, "UNSUPPORTED_MEDIA_TYPE")
        assert error_of(await client.post("/v1/ingest", content=b"x")) == (
            415, "UNSUPPORTED_MEDIA_TYPE")
        deep = b"[" * 100_000 + b"]" * 100_000
        response = await client.post("/v1/jobs", content=b'{"kind": "ping", "params": '
                                     + deep + b"}", headers={"Content-Type": "application/json"})
        assert error_of(response) == (400, "BAD_REQUEST")
        response = await client.post("/v1/jobs", content=b"{not json",
                                     headers={"Content-Type": "application/json"})
        assert error_of(response) == (400, "BAD_REQUEST")
        # declared too large: refused before a byte of the body is read
        host, port = node.api_url.removeprefix("http://").rsplit(":", 1)
        stream = await trio.open_tcp_stream(host, int(port))
        async with stream:
            await stream.send_all(
                f"POST /v1/jobs HTTP/1.1\r\nHost: {host}:{port}\r\n"
                f"Authorization: Bearer {node.api_token}\r\n"
                f"Content-Type: application/json\r\nContent-Length: {MAX_BODY + 1}\r\n\r\n{{"
                .encode())
            head = b""
            with trio.fail_after(60):
                while b"PAYLOAD_TOO_LARGE" not in head and (piece := await stream.receive_some()):
                    head += piece
        assert head.startswith(b"HTTP/1.1 413") and b"PAYLOAD_TOO_LARGE" in head, head[:200]
        assert (await client.get("/v1/status")).status_code == 200


async def test_an_endless_body_is_cut_at_the_cap_while_reading(node: Node) -> None:
    """300 MB sent chunked (no length): the node stops reading at the cap (64 MiB). Before,
    a 300 MB body took a node to 1.02 GB RSS before its 400."""
    piece = b" " * (1 << 20)

    async def body() -> AsyncIterator[bytes]:
        yield b'{"kind": "ping", "params": {"x": "'
        for _ in range(300):
            yield piece
        yield b'"}}'

    before = rss_bytes()
    outcome: Any
    async with await client_of(node) as client:
        try:
            response = await client.post("/v1/jobs", content=body(),
                                         headers={"Content-Type": "application/json"})
            outcome = error_of(response)
        except httpx.HTTPError as exc:  # the node may close the socket while we still write
            outcome = type(exc).__name__
        grown = rss_bytes() - before
        assert outcome in ((413, "PAYLOAD_TOO_LARGE"), "WriteError", "RemoteProtocolError",
                           "ReadError"), outcome
        # the cap (64 MiB) plus one copy of it in the body's bytearray, plus slack: far from
        # the 300 MB sent (client and node share this process: the client streams its body)
        assert grown < 3 * MAX_BODY, grown
    async with await client_of(node) as client:
        assert (await client.get("/v1/status")).status_code == 200


async def test_unknown_routes_and_methods_answer_json(node: Node) -> None:
    async with await client_of(node) as client:
        assert error_of(await client.get("/v1/nope")) == (404, "NOT_FOUND")
        assert error_of(await client.get("/v1/jobs")) == (405, "METHOD_NOT_ALLOWED")
