"""The one writer of streamed answers on the local HTTP API (``/v1/generate``,
``/v1/chat/completions`` and ``/v1/ask`` with ``stream: true``).

An answer is produced by a job that writes pieces as they come (a raw ASGI endpoint, so no
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
from typing import Any

import trio
from starlette.types import Receive, Send

from calinode.protocol.errors import CalinodeError, ErrorCode, groups_collapsed

__all__ = ["Emit", "stream_answer"]

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
