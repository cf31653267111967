"""The OpenAI routes beyond chat and embeddings: ``GET /v1/models/{id}`` and
``POST /v1/completions``; and :func:`open_frame`, the check every OpenAI generation route
makes before it answers (the chat route in ``inference_routes.py`` calls it too).

:func:`open_frame` asks the dispatcher where the model runs *before* any answer starts: an
unknown model is the same 404 ``UNKNOWN_MODEL`` with or without ``stream`` (before, a stream
was a 200 followed by an error event, which clients report as a broken stream, not as a wrong
model name). The candidates it finds all hold one model file (routing picks one sha256), so
that file's sha256 is the ``system_fingerprint`` of every response and chunk, known before the
first token.

``/v1/completions`` is prompt completion through the same ``generate`` job that
``/v1/generate`` runs with a ``prompt``: the natural API for a base model such as
``gemma3-270m``. The shaping (fields, refusals, objects) is in ``openai_shapes.py``.
"""

from __future__ import annotations

import time
import uuid
from typing import TYPE_CHECKING, Any

from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from calinode.node import __version__
from calinode.node.api.bodies import request_deadline
from calinode.node.api.guard import read_json
from calinode.node.api.openai_shapes import (
    ResponseFrame,
    completion_params,
    include_usage,
    model_catalog,
    provenance,
    system_fingerprint,
    text_completion,
    text_completion_chunk,
    unknown_model,
)
from calinode.node.api.streaming import Answer, AnswerEndpoint, Emit
from calinode.node.inference.jobs import generate_request
from calinode.node.jobs.dispatch import default_model

if TYPE_CHECKING:
    from calinode.node.api.node_view import ApiNode

__all__ = ["completions_endpoint", "models_catalog", "open_frame", "openai_routes"]


def open_frame(node: ApiNode, body: dict[str, Any], model: str, *, stream: bool,
               prefix: str) -> ResponseFrame:
    """The frame of one OpenAI generation request, checked before any answer: the model
    must be reachable (``UNKNOWN_MODEL`` 404 / ``NO_CAPABLE_PEER`` 503 from the
    dispatcher's own routing) and ``stream_options`` well formed."""
    wants_usage = include_usage(body, stream=stream)
    where = node.dispatcher.candidates("generate", model)  # raises when none can run it
    return ResponseFrame(id=f"{prefix}-{uuid.uuid4().hex[:24]}", created=int(time.time()),
                         model=model,
                         system_fingerprint=system_fingerprint(where[0].sha256, __version__),
                         include_usage=wants_usage)


def models_catalog(node: ApiNode) -> dict[str, dict[str, Any]]:
    """Every model reachable in the swarm: this node's own, then its live peers'."""
    sources = [(node.peer_id, node.capabilities())]
    sources += [(e.peer_id, e.caps) for e in node.table.alive()]
    return model_catalog(sources)


def completions_endpoint(node: ApiNode) -> AnswerEndpoint:
    """``POST /v1/completions``: ``text_completion`` JSON, or with ``stream`` server-sent
    ``text_completion`` chunks, the finish reason (and ``served_by``) in the last one, then
    the usage chunk when ``stream_options.include_usage`` asked for it."""

    async def prepare(request: Request) -> Answer:
        body = await read_json(request)
        deadline = request_deadline(body)
        stream = body.get("stream", False) is True
        params = generate_request(dict(completion_params(body, default_model(node, "generate")),
                                       stream=stream))
        frame = open_frame(node, body, params.model, stream=stream, prefix="cmpl")
        wire = params.to_wire()

        async def whole() -> dict[str, Any]:
            return text_completion(frame, await node.dispatcher.generate(wire,
                                                                         deadline=deadline))

        async def pieces(emit: Emit) -> None:
            async def on_text(text: str) -> None:
                await emit(text_completion_chunk(frame, text, None))

            result = await node.dispatcher.generate(wire, deadline=deadline, on_text=on_text)
            last = text_completion_chunk(frame, "", result["finish_reason"])
            last.update(provenance(result))
            await emit(last)
            if frame.include_usage:
                await emit(frame.usage_chunk("text_completion", result))

        return Answer(whole=whole, pieces=pieces, stream=stream, sse=True)

    return AnswerEndpoint(prepare)


def openai_routes(node: ApiNode) -> list[Route]:
    async def retrieve_model(request: Request) -> JSONResponse:
        name = request.path_params["model_id"]
        catalog = models_catalog(node)
        if name not in catalog:
            raise unknown_model(name, catalog)
        return JSONResponse(catalog[name])

    return [
        Route("/v1/models/{model_id}", retrieve_model, methods=["GET"]),
        Route("/v1/completions", completions_endpoint(node), methods=["POST"]),
    ]
