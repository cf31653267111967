"""Deadlines, error codes and disconnects against real nodes (libp2p hosts, hypercorn, httpx).

- a real hostile peer advertises every shard of a collection, accepts each ``shard.search``
  job and never answers: a search and an ask end by their deadline, the budget travelled in
  the job's ``deadline_ms``, and the node serves on;
- a job handler that raises a ``CalinodeError`` other than ``JobError``, or an exception
  group, reaches the caller on another node with its own code (not ``PEER_UNREACHABLE``);
- every API error is a JSON body, exception groups and bugs included;
- a streamed ``/v1/ask`` whose client disconnects stops its generation (the model's thread
  sees its cancel event long before ``max_tokens``).
"""

from __future__ import annotations

import json
import re
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio
from test_embed_merging import FakeEmbedder
from test_hostile_jobs import definition, seed_collection

from calinode.models.generator import GenerationChunk, GenerationParams
from calinode.models.manifest import ModelFile, ModelManifest
from calinode.node.daemon import Node
from calinode.node.index.collections import sign_definition
from calinode.node.inference.services import EmbedService, GenerateService
from calinode.node.jobs.server import JobContext
from calinode.protocol.capabilities import Capabilities
from calinode.protocol.codec import unpack
from calinode.protocol.errors import CalinodeError, ConfigError, ErrorCode, JobError
from calinode.protocol.framing import PREFIX_SIZE
from calinode.protocol.ids import JOB_PROTOCOL
from hostile_peer import HostilePeer, open_hostile_peer
from node_harness import open_nodes, wait_until

SHARDS = 8  # test_hostile_jobs.definition()
BUDGET = 2.0


def api(node: Node) -> httpx.AsyncClient:
    return httpx.AsyncClient(base_url=node.api_url, timeout=120,
                             headers={"Authorization": f"Bearer {node.api_token}"})


# -- a peer that accepts jobs and never answers ----------------------------------------------


class SilentHolder:
    """Makes ``evil`` advertise every shard of ``papers`` and swallow every job it gets."""

    def __init__(self, evil: HostilePeer) -> None:
        self.evil = evil
        self.requests: list[dict[str, Any]] = []
        evil.host.set_stream_handler(JOB_PROTOCOL, self.accept_and_stall)  # type: ignore[arg-type]

    async def accept_and_stall(self, stream: Any) -> None:
        raw = bytearray()
        while len(raw) < PREFIX_SIZE or len(raw) < PREFIX_SIZE + int.from_bytes(
                raw[:PREFIX_SIZE], "big"):
            chunk = await stream.read(65536)
            if not chunk:
                return
            raw += chunk
        self.requests.append(unpack(bytes(raw[PREFIX_SIZE:])))
        await trio.sleep_forever()  # accepted; the answer never comes

    def record(self) -> dict[str, Any]:
        caps = Capabilities(jobs=("shard.search",), index=True,
                            shards={"papers": {s: "ab" * 32 for s in range(SHARDS)}})
        return self.evil.record(capabilities=caps.to_wire())

    async def stay_alive(self, peer_id: str) -> None:
        while True:
            await self.evil.exchange(peer_id, self.evil.exchange_wire(self.record()))
            await trio.sleep(0.3)


async def test_search_and_ask_against_a_peer_that_never_answers_end_by_their_deadline(
    tmp_path: Path, bootstrap_of: Callable[[Node], str]
) -> None:
    async with open_nodes(tmp_path) as start, open_hostile_peer() as evil, \
            trio.open_nursery() as nursery:
        node = await start("coordinator")
        service = EmbedService(FakeEmbedder())  # type: ignore[arg-type]  # a fake model
        await nursery.start(service.run)
        node.models.embed["fake"] = service
        owned = sign_definition(replace(definition(), owner=node.peer_id),
                                node.signer.key_pair)
        await trio.to_thread.run_sync(node.book.merge, owned)
        silent = SilentHolder(evil)
        await evil.connect(bootstrap_of(node))
        nursery.start_soon(silent.stay_alive, node.peer_id)
        await wait_until(lambda: any(e.peer_id == evil.peer_id and e.caps.index
                                     for e in node.table.alive()), 60)

        with trio.fail_after(60):  # a safety net: the budget under test is 2 s
            started = trio.current_time()
            (found,) = await node.coordinator.search(
                "papers", ["a question"], k=5, deadline=started + BUDGET)
            searched_in = trio.current_time() - started
        assert found["partial"] and found["missing_shards"] == list(range(SHARDS))
        assert searched_in < 30  # not the old fresh 30 s of the shard search
        assert silent.requests and all(r["kind"] == "shard.search" for r in silent.requests)
        assert all(0 < r["deadline_ms"] <= BUDGET * 1000 for r in silent.requests)

        asked_before = len(silent.requests)
        async with api(node) as client:
            with trio.fail_after(60):
                reply = await client.post("/v1/ask", json={
                    "collection": "papers", "question": "a question", "timeout": BUDGET})
        assert reply.status_code == 504
        assert reply.json()["error"]["code"] == "DEADLINE_EXCEEDED"
        assert len(silent.requests) > asked_before
        assert all(r["deadline_ms"] <= BUDGET * 1000 for r in silent.requests[asked_before:])
        # the node serves on
        async with api(node) as client:
            assert (await client.get("/v1/status")).json()["peer_id"] == node.peer_id
        nursery.cancel_scope.cancel()


# -- error codes across the job seam -----------------------------------------------------------


async def test_a_handlers_calinode_error_reaches_the_caller_with_its_own_code(
    tmp_path: Path, bootstrap_of: Callable[[Node], str]
) -> None:
    async with open_nodes(tmp_path) as start:
        server = await start("server")
        caller = await start("caller", bootstrap=(bootstrap_of(server),))
        await wait_until(lambda: server.peer_id in {e.peer_id for e in caller.table.alive()}, 60)

        async def unknown_collection(ctx: JobContext, params: dict[str, Any]) -> dict[str, Any]:
            raise CalinodeError("no collection x here", code=ErrorCode.UNKNOWN_COLLECTION)

        async def bad_config(ctx: JobContext, params: dict[str, Any]) -> dict[str, Any]:
            raise ConfigError("the node's file is wrong")

        async def group_of_errors(ctx: JobContext, params: dict[str, Any]) -> dict[str, Any]:
            async with trio.open_nursery() as nursery:
                async def fail() -> None:
                    raise JobError("the shard is closed", code=ErrorCode.SHARD_UNAVAILABLE)
                nursery.start_soon(fail)
            return {}

        async def group_of_bugs(ctx: JobContext, params: dict[str, Any]) -> dict[str, Any]:
            raise ExceptionGroup("bugs", [KeyError("score")])

        for kind, handler in (("test.unknown_collection", unknown_collection),
                              ("test.config", bad_config), ("test.group", group_of_errors),
                              ("test.bugs", group_of_bugs)):
            server.registry.register(kind, handler)
        expected = {"test.unknown_collection": ErrorCode.UNKNOWN_COLLECTION,
                    "test.config": ErrorCode.CONFIG,
                    "test.group": ErrorCode.SHARD_UNAVAILABLE,
                    "test.bugs": ErrorCode.INTERNAL}
        for kind, code in expected.items():
            for via in (caller, server):  # over libp2p, and through the node's own server
                with pytest.raises(JobError) as caught, trio.fail_after(60):
                    await via.client.call(server.peer_id, kind, {}, timeout=30)
                assert caught.value.code is code, (kind, via.peer_id, caught.value)
        assert (await caller.ping(server.peer_id, count=1, timeout=30))["served_by"]


# -- API error bodies ----------------------------------------------------------------------------


async def test_every_api_error_is_a_json_body(tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    async with open_nodes(tmp_path) as start:
        node = await start("a")

        async def ask_group(*args: Any, **kwargs: Any) -> Any:
            raise ExceptionGroup("two shards", [
                ValueError("a bug"),
                JobError("no collection x", code=ErrorCode.UNKNOWN_COLLECTION)])

        async def ask_bugs(*args: Any, **kwargs: Any) -> Any:
            raise ExceptionGroup("bugs", [KeyError("score")])

        async def drop_bug(name: str) -> Any:
            raise KeyError("doc_id")

        async with api(node) as client:
            body = {"collection": "x", "question": "why?"}
            monkeypatch.setattr(node.coordinator, "ask", ask_group)
            reply = await client.post("/v1/ask", json=body)
            assert reply.status_code == 404
            assert reply.json()["error"]["code"] == "UNKNOWN_COLLECTION"
            monkeypatch.setattr(node.coordinator, "ask", ask_bugs)
            reply = await client.post("/v1/ask", json=body)
            assert reply.status_code == 500 and reply.json()["error"]["code"] == "INTERNAL"
            monkeypatch.setattr(node.coordinator, "drop", drop_bug)
            reply = await client.delete("/v1/collections/x")
            assert reply.status_code == 500 and reply.json()["error"]["code"] == "INTERNAL"
            reply = await client.post("/v1/ask", json={"question": "why?"})
            assert reply.status_code == 400 and reply.json()["error"]["code"] == "BAD_REQUEST"
            assert (await client.get("/v1/status")).status_code == 200


# -- /v1/ask streams cancel when the client goes away --------------------------------------------

GEN_MANIFEST = ModelManifest(name="gen", kind="generate", context_length=2048,
                             files=(ModelFile(path="gen.gguf", sha256="1" * 64, size=0),))


class FakeSlowGenerator:
    """Yields one token every 20 ms in its worker thread until ``max_tokens`` or until the
    trio side cancels, like GgufGenerator.stream_chat; keeps the cancel event it was given
    (the one the node sets when nobody listens any more)."""

    manifest = GEN_MANIFEST

    def __init__(self) -> None:
        self.produced = 0
        self.cancels: list[threading.Event] = []

    def stream_chat(self, messages: list[dict[str, str]], params: GenerationParams,
                    cancel: threading.Event) -> Iterator[GenerationChunk]:
        self.cancels.append(cancel)
        for n in range(params.max_tokens):
            if cancel.is_set():
                return
            time.sleep(0.02)
            self.produced += 1
            yield GenerationChunk(f"t{n} ", None, 3, n + 1)
        yield GenerationChunk("", "length", 3, params.max_tokens)


async def ask_then_hang_up(node: Node, body: dict[str, Any], *, after_lines: int
                           ) -> list[dict[str, Any]]:
    """A plain HTTP/1.1 client on a real socket: POST a streamed ask, read ``after_lines``
    text lines of the answer, then close the connection mid-answer."""
    host, port = node.api_url.removeprefix("http://").rsplit(":", 1)
    payload = json.dumps(body).encode()
    head = (f"POST /v1/ask HTTP/1.1\r\nHost: {host}:{port}\r\n"
            f"Authorization: Bearer {node.api_token}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(payload)}\r\n\r\n").encode()
    stream = await trio.open_tcp_stream(host, int(port))
    texts: list[dict[str, Any]] = []
    try:
        await stream.send_all(head + payload)
        received = b""
        while len(texts) < after_lines:
            chunk = await stream.receive_some(65536)
            assert chunk, "the node closed the answer early"
            received += chunk
            texts = [json.loads(line) for line in re.findall(rb'\{"text": [^\n]*\}', received)]
        assert received.startswith(b"HTTP/1.1 200")
    finally:
        await stream.aclose()  # the client goes away mid-answer
    return texts[:after_lines]


@pytest.mark.slow
async def test_a_streamed_ask_stops_generating_when_its_client_disconnects(
    tmp_path: Path, bootstrap_of: Callable[[Node], str]
) -> None:
    max_tokens = 2000  # 40 s of tokens: the disconnect has to stop it
    async with open_nodes(tmp_path) as start, open_hostile_peer() as evil, \
            trio.open_nursery() as nursery:
        node = await start("index", index=True)
        await evil.connect(bootstrap_of(node))
        await seed_collection(evil, node, 40)
        embedder = EmbedService(FakeEmbedder())  # type: ignore[arg-type]
        await nursery.start(embedder.run)
        node.models.embed["fake"] = embedder
        generator = FakeSlowGenerator()
        node.models.generate["gen"] = GenerateService(
            generator, stream_interval=0)  # type: ignore[arg-type]
        await wait_until(lambda: bool(node.coordinator.holders(definition())), 60)

        with trio.fail_after(60):
            texts = await ask_then_hang_up(node, {
                "collection": "papers", "question": "what?", "model": "gen",
                "max_tokens": max_tokens, "stream": True, "timeout": 120}, after_lines=5)
        assert len(texts) == 5
        async with api(node) as client:
            # the model's thread is told to stop, long before its max_tokens
            await wait_until(lambda: generator.cancels[0].is_set(), 60)
            stopped_at = generator.produced
            assert stopped_at < max_tokens // 4
            # the model is free again: the next answer runs (and ends by its max_tokens)
            with trio.fail_after(60):
                reply = await client.post("/v1/ask", json={
                    "collection": "papers", "question": "what?", "model": "gen",
                    "max_tokens": 3})
            assert reply.status_code == 200, reply.text
            assert reply.json()["finish_reason"] == "length"
            assert not reply.json()["no_sources"]
            assert generator.produced == stopped_at + 3  # the first one never went on
        nursery.cancel_scope.cancel()
