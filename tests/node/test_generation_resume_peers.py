"""Resuming a generation (issue 14) against real py-libp2p peers that serve the ``generate``
job themselves, and refusing bad resume requests, on a real in-process node.

The serving peers are hostile peers (``tests/hostile_peer.py``) that advertise one model
file and answer on the job protocol as each test decides: a first peer streams some pieces
and then dies, stalls or sends a malformed piece; a second one checks the resume it is sent
and finishes the generation. The relaying node must hand its caller one uninterrupted text,
report the switch, count what it refused, and keep answering.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
import trio
from libp2p.abc import INetStream
from libp2p.custom_types import TProtocol

from calinode.node.daemon import Node
from calinode.protocol.errors import ErrorCode, JobError
from calinode.protocol.ids import JOB_PROTOCOL, META_PROTOCOL
from calinode.protocol.job_params import MAX_RESUME_TOKENS
from hostile_peer import HostilePeer, frame, open_hostile_peer, record_wire, signed_wire_record
from node_harness import open_nodes, wait_until

MODEL = "smollm2-135m"
SHA = "ab" * 32
WORDS = [f"w{i} " for i in range(12)]  # the whole generation: token i is id 100 + i
TOKENS = [100 + i for i in range(len(WORDS))]

Serve = Callable[[INetStream, dict[str, Any]], Awaitable[None]]


def read_request(raw: bytes) -> dict[str, Any]:
    import msgpack

    size = int.from_bytes(raw[:4], "big")
    request: dict[str, Any] = msgpack.unpackb(raw[4:4 + size], raw=False)
    return request


async def read_one_frame(stream: INetStream) -> dict[str, Any]:
    raw = bytearray()
    while len(raw) < 4 or len(raw) < 4 + int.from_bytes(raw[:4], "big"):
        chunk = await stream.read(65536)
        if not chunk:
            break
        raw += chunk
    return read_request(bytes(raw))


class ServingPeer:
    """A hostile peer advertising ``MODEL`` (file ``SHA``) with ``load``, answering its
    generate jobs with ``serve`` and the node's peer exchanges with its record."""

    def __init__(self, evil: HostilePeer, serve: Serve, load: int) -> None:
        self.evil, self.serve, self.load = evil, serve, load
        self.requests: list[dict[str, Any]] = []
        evil.host.set_stream_handler(TProtocol(JOB_PROTOCOL), self.handle)
        evil.host.set_stream_handler(TProtocol(META_PROTOCOL), self.exchange)

    def record(self) -> dict[str, Any]:
        wire = record_wire(self.evil.key_pair, addrs=[self.evil.addr] if self.evil.addr else [],
                           capabilities={"jobs": ["generate"], "generate": [
                               {"name": MODEL, "sha256": SHA, "context_length": 4096,
                                "chat": True}]})
        wire["load"] = {"in_flight": self.load, "queue_depth": 0}
        return signed_wire_record(self.evil.key_pair, wire)

    async def exchange(self, stream: INetStream) -> None:
        await read_one_frame(stream)
        await stream.write(frame(self.evil.exchange_wire(self.record())))
        await stream.close()

    async def handle(self, stream: INetStream) -> None:
        request = await read_one_frame(stream)
        self.requests.append(request)
        await self.serve(stream, request)

    async def announce(self, node: Node) -> None:
        await self.evil.exchange(node.peer_id, self.evil.exchange_wire(self.record()))


def chunk(request: dict[str, Any], seq: int, data: dict[str, Any]) -> bytes:
    return frame({"t": "chunk", "id": request["id"], "seq": seq, "data": data})


async def stream_words(stream: INetStream, request: dict[str, Any], start: int, stop: int
                       ) -> None:
    for seq, i in enumerate(range(start, stop)):
        await stream.write(chunk(request, seq, {"text": WORDS[i], "tokens": [TOKENS[i]]}))


async def finish_from_resume(stream: INetStream, request: dict[str, Any]) -> None:
    """An honest second peer: replays nothing, streams what follows the resume tokens."""
    done = list(request["params"].get("resume_tokens", []))
    assert done == TOKENS[:len(done)], "the resume carries exactly the tokens received"
    await stream_words(stream, request, len(done), len(WORDS))
    reply = {"model": MODEL, "sha256": SHA, "text": "".join(WORDS[len(done):]),
             "finish_reason": "length",
             "usage": {"prompt_tokens": 7, "completion_tokens": len(WORDS)}}
    await stream.write(frame({"t": "res", "id": request["id"], "result": reply,
                              "served_by": "ignored"}))
    await stream.close()


def dies_after(n: int) -> Serve:
    async def serve(stream: INetStream, request: dict[str, Any]) -> None:
        await stream_words(stream, request, 0, n)
        await stream.reset()  # the peer's process is gone: the relay reads a reset

    return serve


def stalls_after(n: int) -> Serve:
    async def serve(stream: INetStream, request: dict[str, Any]) -> None:
        await stream_words(stream, request, 0, n)
        await trio.sleep_forever()  # alive, connected, silent

    return serve


def poisons_after(n: int, bad: dict[str, Any]) -> Serve:
    async def serve(stream: INetStream, request: dict[str, Any]) -> None:
        await stream_words(stream, request, 0, n)
        await stream.write(chunk(request, n, bad))
        await trio.sleep_forever()

    return serve


async def relay_through(tmp_path: Path, bootstrap_of: Callable[[Node], str], first: Serve,
                        **config: Any) -> tuple[dict[str, Any], list[str], Node,
                                                list[dict[str, Any]], list[dict[str, Any]]]:
    """Generate on a real node without models whose two candidate peers are ``first``
    (preferred: less loaded) and an honest second; the reply, the pieces its caller got, the
    node, and the requests each peer received. A failed generation's reply is
    ``{"error": JobError}``."""
    async with open_nodes(tmp_path) as start, open_hostile_peer() as e1, \
            open_hostile_peer() as e2:
        node = await start("relay", **config)
        one, two = ServingPeer(e1, first, load=0), ServingPeer(e2, finish_from_resume, load=3)
        for peer in (one, two):
            await peer.evil.connect(bootstrap_of(node))
            await peer.announce(node)
        await wait_until(lambda: len(node.dispatcher.candidates("generate", MODEL)) == 2)
        pieces: list[str] = []

        async def on_text(text: str) -> None:
            pieces.append(text)

        with trio.fail_after(60):
            try:
                reply = await node.dispatcher.generate(
                    {"model": MODEL, "prompt": "x", "max_tokens": len(WORDS),
                     "temperature": 0.0}, on_text=on_text)
            except JobError as exc:
                reply = {"error": exc}
        assert (await e1.job(node.peer_id, "ping", {}))["t"] == "res"  # still answering
        return reply, pieces, node, one.requests, two.requests


@pytest.mark.parametrize("first", [dies_after(5), stalls_after(5)], ids=["dies", "stalls"])
async def test_a_generation_moves_to_the_other_peer_and_reads_as_one(
        tmp_path: Path, bootstrap_of: Callable[[Node], str], first: Serve) -> None:
    reply, pieces, node, asked_first, asked_second = await relay_through(
        tmp_path, bootstrap_of, first, generate_stall_timeout=1.0)
    assert "".join(pieces) == reply["text"] == "".join(WORDS)
    assert reply["usage"] == {"prompt_tokens": 7, "completion_tokens": len(WORDS)}
    [switch] = reply["resumed"]
    assert switch["at_token"] == 5
    assert "resume_tokens" not in asked_first[0]["params"]
    assert asked_second[0]["params"]["resume_tokens"] == TOKENS[:5]
    assert asked_first[0]["params"]["stream"] is True  # resumable: streamed from the peer
    value = node.metrics.generations_resumed._value.get()
    assert value == 1


@pytest.mark.parametrize("bad", [{"text": "w5 ", "tokens": [-1]},
                                 {"text": "w5 ", "tokens": [True]},
                                 {"text": "w5 ", "tokens": list(range(5000))},
                                 {"text": 5},
                                 {"text": "w5 ", "evil": 1}],
                         ids=["negative-id", "bool-id", "too-many-ids", "text-not-str",
                              "unknown-key"])
async def test_a_malformed_piece_is_refused_counted_and_the_generation_resumes(
        tmp_path: Path, bootstrap_of: Callable[[Node], str], bad: dict[str, Any]) -> None:
    reply, pieces, node, _, asked_second = await relay_through(
        tmp_path, bootstrap_of, poisons_after(5, bad))
    assert "".join(pieces) == reply["text"] == "".join(WORDS)  # the bad piece never reached
    assert asked_second[0]["params"]["resume_tokens"] == TOKENS[:5]
    assert node.rejections.counts["bad_reply"] == 1


async def test_pieces_without_token_ids_cannot_be_resumed(
        tmp_path: Path, bootstrap_of: Callable[[Node], str]) -> None:
    """A peer that predates resume sends text only: after streamed text, a failure ends the
    generation with its error, as before (no text is repeated, none is lost silently)."""
    async def old_peer(stream: INetStream, request: dict[str, Any]) -> None:
        for seq in range(3):
            await stream.write(chunk(request, seq, {"text": WORDS[seq]}))
        await stream.reset()

    reply, pieces, node, _, asked_second = await relay_through(tmp_path, bootstrap_of, old_peer)
    assert reply["error"].code == ErrorCode.PEER_UNREACHABLE
    assert pieces == WORDS[:3] and asked_second == []
    assert node.metrics.generations_resumed._value.get() == 0


@pytest.mark.parametrize("resume", [[-1], [True], [1 << 31], "1,2",
                                    list(range(MAX_RESUME_TOKENS + 1)), list(range(8))],
                         ids=["negative", "bool", "over-int32", "not-a-list", "too-many",
                              "not-fewer-than-max-tokens"])
async def test_a_bad_resume_request_is_refused_and_the_node_serves(
        tmp_path: Path, bootstrap_of: Callable[[Node], str], resume: Any) -> None:
    async with open_nodes(tmp_path) as start, open_hostile_peer() as evil:
        node = await start("server")
        await evil.connect(bootstrap_of(node))
        reply = await evil.job(node.peer_id, "generate", {
            "model": MODEL, "prompt": "x", "max_tokens": 8, "resume_tokens": resume})
        assert reply["t"] == "err" and reply["code"] == "BAD_REQUEST", reply
        assert "resume_tokens" in reply["message"]
        assert node.rejections.counts["bad_params"] == 1
        assert (await evil.job(node.peer_id, "ping", {}))["t"] == "res"


async def test_the_longest_resume_fits_a_frame(
        tmp_path: Path, bootstrap_of: Callable[[Node], str]) -> None:
    """``MAX_RESUME_TOKENS`` ids of one byte each (the costliest to decode per byte) pass the
    frame's decoding budget and the params view: the node without the model answers
    ``UNKNOWN_MODEL``, not a refused frame."""
    async with open_nodes(tmp_path) as start, open_hostile_peer() as evil:
        node = await start("server")
        await evil.connect(bootstrap_of(node))
        reply = await evil.job(node.peer_id, "generate", {
            "model": MODEL, "prompt": "x", "max_tokens": MAX_RESUME_TOKENS + 1,
            "resume_tokens": [5] * MAX_RESUME_TOKENS})
        assert reply["t"] == "err" and reply["code"] == "UNKNOWN_MODEL", reply
        assert sum(node.rejections.counts.values()) == 0
