"""The one endpoint of answers that may stream (node/api/streaming.py): JSON or NDJSON/SSE,
errors before and after the headers, and a client that goes away cancelling the answer."""

from __future__ import annotations

import json
from typing import Any

import trio
import trio.testing

from asgi_client import FakeClient
from calinode.node.api.guard import read_json
from calinode.node.api.streaming import Answer, AnswerEndpoint, Emit
from calinode.protocol.errors import BadRequest, ErrorCode, JobError


def endpoint(pieces: list[Any], *, fail: Exception | None = None,
             sse: bool = False) -> AnswerEndpoint:
    """An endpoint that answers ``{"echo": body}`` whole, or emits ``pieces`` then ``fail``."""

    async def prepare(request: Any) -> Answer:
        body = await read_json(request)
        if "bad" in body:
            raise BadRequest("bad must not be given")

        async def whole() -> dict[str, Any]:
            if fail is not None:
                raise fail
            return {"echo": body}

        async def write(emit: Emit) -> None:
            for piece in pieces:
                await emit(piece)
            if fail is not None:
                raise fail

        return Answer(whole=whole, pieces=write, stream=body.get("stream") is True, sse=sse)

    return AnswerEndpoint(prepare)


async def test_a_whole_answer_is_one_json_body() -> None:
    client = FakeClient({"q": 1})
    await client.run(endpoint([]))
    assert client.status() == 200 and json.loads(client.text()) == {"echo": {"q": 1}}


async def test_a_refused_request_is_the_apis_json_error() -> None:
    client = FakeClient({"bad": 1, "stream": True})
    await client.run(endpoint([{"text": "never"}]))
    assert client.status() == 400
    assert json.loads(client.text())["error"] == {
        "code": "BAD_REQUEST", "message": "bad must not be given",
        "type": "invalid_request_error"}


async def test_a_whole_answer_that_fails_is_its_codes_status() -> None:
    client = FakeClient({})
    await client.run(endpoint([], fail=JobError("late", code=ErrorCode.DEADLINE_EXCEEDED)))
    assert client.status() == 504
    assert json.loads(client.text())["error"]["code"] == "DEADLINE_EXCEEDED"


async def test_a_streamed_answer_is_ndjson_lines() -> None:
    client = FakeClient({"stream": True})
    await client.run(endpoint([{"text": "a"}, {"text": "b"}, {"done": {"n": 2}}]))
    assert client.status() == 200 and client.header(b"content-type") == b"application/x-ndjson"
    assert [json.loads(line) for line in client.text().splitlines()] == [
        {"text": "a"}, {"text": "b"}, {"done": {"n": 2}}]
    assert client.finished()


async def test_server_sent_events_end_with_done() -> None:
    client = FakeClient({"stream": True})
    await client.run(endpoint([{"x": 1}], sse=True))
    assert client.header(b"content-type") == b"text/event-stream"
    assert client.text() == 'data: {"x": 1}\n\ndata: [DONE]\n\n'


async def test_an_error_after_the_headers_is_the_last_line() -> None:
    client = FakeClient({"stream": True})
    await client.run(endpoint([{"text": "a"}], fail=JobError("gone",
                                                             code=ErrorCode.PEER_UNREACHABLE)))
    lines = [json.loads(line) for line in client.text().splitlines()]
    assert client.status() == 200
    assert lines == [{"text": "a"}, {"error": {"code": "PEER_UNREACHABLE", "message": "gone"}}]


async def test_a_bug_after_the_headers_is_an_internal_line() -> None:
    client = FakeClient({"stream": True})
    await client.run(endpoint([], fail=ZeroDivisionError()))
    assert json.loads(client.text()) == {"error": {
        "code": "INTERNAL", "message": "internal error: ZeroDivisionError"}}


async def test_a_client_that_goes_away_cancels_the_answer(
        autojump_clock: trio.testing.MockClock) -> None:
    client = FakeClient({"stream": True})
    reached_end = False

    async def prepare(request: Any) -> Answer:
        async def write(emit: Emit) -> None:
            nonlocal reached_end
            await emit({"text": "a"})
            client.disconnect.set()
            await trio.sleep(3600)  # a generation that would go on for an hour
            reached_end = True

        async def whole() -> dict[str, Any]:
            raise AssertionError("not asked for")

        return Answer(whole=whole, pieces=write, stream=True)

    start = trio.current_time()
    await client.run(AnswerEndpoint(prepare))
    assert not reached_end and trio.current_time() < start + 3600
    assert client.text() == '{"text": "a"}\n' and not client.finished()
