"""The one writer of answers that may stream on the local HTTP API (``/v1/generate``,
``/v1/chat/completions`` and ``/v1/ask``): :class:`AnswerEndpoint` and :func:`stream_answer`.

A route that may stream is an :class:`AnswerEndpoint` given a ``prepare`` function: it reads
and checks the request and returns an :class:`Answer` (the whole JSON answer, and the same
answer written piece by piece). The endpoint answers a refused request, or a failed whole
answer, with the API's JSON error; a streamed one goes through :func:`stream_answer`. One
endpoint for every such route, so they cannot drift apart in how they fail.

A streamed answer is produced by a job that writes pieces as they come (a raw ASGI endpoint, so no
async generator has to yield inside a nursery). The writer runs the job beside a watcher of
the client: when the client disconnects, the job's scope is cancelled, and so is the generate
job under it (a local llama.cpp thread stops at its next token, a peer's job stream is reset).
A ``CalinodeError`` after the headers went out is the last line: ``{"error": {"code",
"message"}}``. Pieces are NDJSON lines, or server-sent events (``data: ...``) ending in
``data: [DONE]`` for OpenAI clients.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import trio
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.types import Receive, Scope, Send

from calinode.node.api.errors import error_response
from calinode.protocol.errors import CalinodeError, ErrorCode, groups_collapsed

__all__ = ["Answer", "AnswerEndpoint", "Emit", "stream_answer"]

log = logging.getLogger(__name__)

#: Writes one piece (a JSON-able object) of a streamed answer.
Emit = Callable[[Any], Awaitable[None]]


async def _cancel_on_disconnect(receive: Receive, scope: trio.CancelScope) -> None:
    """The request body was read already: the next message is the client going away."""
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            scope.cancel()
            return


async def stream_answer(receive: Receive, send: Send, produce: Callable[[Emit], Awaitable[None]],
                        *, sse: bool) -> bool:
    """Send a 200 streamed answer written by ``produce(emit)``; False when the client went
    away before the end (``produce`` was cancelled then)."""
    content_type = b"text/event-stream" if sse else b"application/x-ndjson"
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", content_type), (b"cache-control", b"no-cache")]})

    async def emit(obj: Any) -> None:
        line = json.dumps(obj)
        data = f"data: {line}\n\n" if sse else f"{line}\n"
        await send({"type": "http.response.body", "body": data.encode(), "more_body": True})

    finished = False
    with groups_collapsed():
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_cancel_on_disconnect, receive, nursery.cancel_scope)
            try:
                await produce(emit)
            except CalinodeError as exc:
                await emit({"error": {"code": exc.code.value, "message": exc.message}})
            except Exception as exc:  # a bug: the client still gets a line it can parse
                log.exception("a streamed answer failed")
                await emit({"error": {"code": ErrorCode.INTERNAL.value,
                                      "message": f"internal error: {type(exc).__name__}"}})
            finished = True
            nursery.cancel_scope.cancel()
    if not finished:  # the client is gone: nothing more to write
        return False
    if sse:
        await send({"type": "http.response.body", "body": b"data: [DONE]\n\n",
                    "more_body": True})
    await send({"type": "http.response.body", "body": b"", "more_body": False})
    return True


@dataclass(frozen=True, slots=True)
class Answer:
    """What a checked request answers: ``whole()`` (one JSON object) or, with ``stream``,
    ``pieces(emit)`` writing it as it comes (NDJSON lines, or server-sent events with
    ``sse``)."""

    whole: Callable[[], Awaitable[dict[str, Any]]]
    pieces: Callable[[Emit], Awaitable[None]]
    stream: bool
    sse: bool = False


#: Reads and checks a request (raising ``CalinodeError`` for a bad one), before any answer.
Prepare = Callable[[Request], Awaitable[Answer]]


class AnswerEndpoint:
    """A raw ASGI endpoint (Starlette calls an object as one, which a streamed answer needs:
    no async generator has to yield inside a nursery) for a route whose answer may stream."""

    def __init__(self, prepare: Prepare) -> None:
        self.prepare = prepare

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            answer = await self.prepare(Request(scope, receive))
            if not answer.stream:
                payload = await answer.whole()
        except CalinodeError as exc:
            await error_response(exc.code, exc.message)(scope, receive, send)
            return
        if not answer.stream:
            await JSONResponse(payload)(scope, receive, send)
            return
        await stream_answer(receive, send, answer.pieces, sse=answer.sse)
