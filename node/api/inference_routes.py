"""Inference on the local HTTP API: native routes and OpenAI-compatible ones.

Native: ``POST /v1/embed`` (``{model, texts, input_type, dimensions, timeout}`` ->
``{model, sha256, dim, vectors, served_by, token_counts, truncated}``) and ``POST /v1/generate``
(``{model, prompt | messages, max_tokens, temperature, top_p, seed, stop, stream}``; with
``stream`` the answer is NDJSON: ``{"text"}`` lines, then ``{"done": {...}}``).

OpenAI-compatible: ``POST /v1/embeddings``, ``POST /v1/chat/completions`` (``stream: true``
gives server-sent events ending in ``data: [DONE]``) and ``GET /v1/models`` (every model
reachable in the swarm). Responses add ``served_by``.
"""

from __future__ import annotations

import base64
import functools
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from calinode.node.api.bodies import request_deadline
from calinode.node.api.errors import error_response
from calinode.node.api.guard import read_json
from calinode.node.api.json_response import FastJSONResponse
from calinode.node.api.stream import Emit, stream_answer
from calinode.node.inference.jobs import INPUT_TYPES, generate_request, texts_param
from calinode.node.jobs.dispatch import default_model
from calinode.protocol.errors import BadRequest, CalinodeError

if TYPE_CHECKING:
    from calinode.node.daemon import Node

async def _embed(node: Node, body: dict[str, Any], texts: Any) -> Any:
    if not isinstance(texts, list) or not texts:
        raise BadRequest("input must be a non-empty string or list of strings")
    if not all(isinstance(t, str) for t in texts):
        raise BadRequest("only text input is supported (no token arrays)")
    input_type = body.get("input_type", "passage")
    if input_type not in INPUT_TYPES:
        raise BadRequest(f"input_type must be one of {', '.join(INPUT_TYPES)}")
    dimensions = body.get("dimensions")
    if dimensions is not None and (not isinstance(dimensions, int) or isinstance(dimensions, bool)):
        raise BadRequest("dimensions must be an integer")
    texts = texts_param({"texts": texts})
    model = body.get("model") or default_model(node, "embed")
    if not isinstance(model, str):
        raise BadRequest("model must be a string")
    return await node.dispatcher.embed(model, texts, input_type=input_type,
                                       dimensions=dimensions, deadline=request_deadline(body))


async def native_embed(node: Node, request: Request) -> JSONResponse:
    body = await read_json(request)
    outcome = await _embed(node, body, body.get("texts"))
    return FastJSONResponse({
        "model": outcome.model, "sha256": outcome.sha256, "dim": int(outcome.vectors.shape[1]),
        "vectors": outcome.vectors, "served_by": outcome.served_by,
        "token_counts": outcome.token_counts, "truncated": outcome.truncated})


async def openai_embeddings(node: Node, request: Request) -> JSONResponse:
    body = await read_json(request)
    texts = body.get("input")
    if isinstance(texts, str):
        texts = [texts]
    encoding = body.get("encoding_format", "float")
    if encoding not in ("float", "base64"):
        raise BadRequest("encoding_format must be float or base64")
    outcome = await _embed(node, body, texts)
    data = []
    for i, row in enumerate(outcome.vectors):
        embedding: Any = (base64.b64encode(row.astype("<f4").tobytes()).decode()
                          if encoding == "base64" else row)
        data.append({"object": "embedding", "embedding": embedding, "index": i})
    tokens = sum(outcome.token_counts)
    return FastJSONResponse({"object": "list", "data": data, "model": outcome.model,
                         "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
                         "served_by": outcome.served_by, "truncated": outcome.truncated})


def models_listing(node: Node) -> JSONResponse:
    found: dict[str, dict[str, Any]] = {}
    sources = [(node.peer_id, node.capabilities())]
    sources += [(e.peer_id, e.caps) for e in node.table.alive()]
    for peer_id, caps in sources:
        for kind in ("embed", "generate"):
            for model in caps.models(kind):
                row = found.setdefault(model.name, {
                    "id": model.name, "object": "model", "created": 0,
                    "owned_by": "calinode", "kind": kind, "sha256": model.sha256,
                    "peers": []})
                row["peers"].append(peer_id)
    return JSONResponse({"object": "list", "data": sorted(found.values(), key=lambda m: m["id"])})


def _openai_to_params(node: Node, body: dict[str, Any]) -> dict[str, Any]:
    params: dict[str, Any] = {"model": body.get("model") or default_model(node, "generate"),
                              "messages": body.get("messages")}
    max_tokens = body.get("max_completion_tokens", body.get("max_tokens"))
    if max_tokens is not None:
        params["max_tokens"] = max_tokens
    for key in ("temperature", "top_p", "seed", "stop"):
        if body.get(key) is not None:
            params[key] = body[key]
    return params


class StreamingEndpoint:
    """A raw ASGI endpoint (generate and chat, streamed or not): one deadline, set here from
    the request's ``timeout``, bounds retrieval (chat with a ``collection``) and generation."""

    def __init__(self, node: Node, mode: str) -> None:
        self.node = node
        self.mode = mode  # "native" or "openai"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        request = Request(scope, receive)
        sources: list[dict[str, Any]] | None = None
        canned: dict[str, Any] | None = None  # the answer when retrieval found nothing
        try:
            body = await read_json(request)
            deadline = request_deadline(body)
            if self.mode == "openai":
                stream = body.get("stream", False) is True
                params = _openai_to_params(self.node, body)
            else:
                stream = body.pop("stream", False) is True
                params = dict(body)
                params.setdefault("model", default_model(self.node, "generate"))
            generate_request(dict(params, stream=stream))  # validate before anything is sent
            if self.mode == "openai" and body.get("collection") is not None:
                # retrieval-augmented chat: the coordinator's retrieval, within the deadline
                params["messages"], sources, found = await self._augment(body, deadline)
                generate_request(dict(params, stream=stream))
                if not sources:
                    canned = self.node.coordinator.no_sources_reply(body["collection"], found)
        except CalinodeError as exc:
            await error_response(exc.code, exc.message)(scope, receive, send)
            return

        async def generate(on_text: Callable[[str], Awaitable[None]] | None = None
                           ) -> dict[str, Any]:
            if canned is None:
                return await self.node.dispatcher.generate(params, deadline=deadline,
                                                           on_text=on_text)
            if on_text is not None:
                await on_text(canned["text"])
            return canned

        if not stream:
            try:
                result = await generate()
            except CalinodeError as exc:
                await error_response(exc.code, exc.message)(scope, receive, send)
                return
            payload = self._complete(params, result) if self.mode == "openai" else result
            if sources is not None:
                payload["sources"] = sources
                payload["no_sources"] = not sources
            await JSONResponse(payload)(scope, receive, send)
            return
        await stream_answer(receive, send, functools.partial(
            self._stream, params, generate, sources), sse=self.mode == "openai")

    async def _augment(self, body: dict[str, Any], deadline: float
                       ) -> tuple[list[dict[str, str]], list[dict[str, Any]], dict[str, Any]]:
        messages = body.get("messages")
        users = [m for m in messages or [] if isinstance(m, dict) and m.get("role") == "user"]
        if not users or not isinstance(users[-1].get("content"), str):
            raise BadRequest("a retrieval-augmented chat needs a user message (the question)")
        k = body.get("k", 5)
        if not isinstance(k, int) or isinstance(k, bool):
            raise BadRequest("k must be an integer")
        collection = body["collection"]
        if not isinstance(collection, str):
            raise BadRequest("collection must be a string")
        return await self.node.coordinator.rag_messages(
            collection, users[-1]["content"], k=k, deadline=deadline)

    def _complete(self, params: dict[str, Any], result: dict[str, Any]) -> dict[str, Any]:
        usage = result["usage"]
        return {
            "id": f"chatcmpl-{uuid.uuid4().hex[:24]}", "object": "chat.completion",
            "created": int(time.time()), "model": params["model"],
            "choices": [{"index": 0, "finish_reason": result["finish_reason"],
                         "message": {"role": "assistant", "content": result["text"]}}],
            "usage": {**usage, "total_tokens": usage["prompt_tokens"] + usage["completion_tokens"]},
            "served_by": result["served_by"]}

    async def _stream(self, params: dict[str, Any],
                      generate: Callable[[Callable[[str], Awaitable[None]]],
                                         Awaitable[dict[str, Any]]],
                      sources: list[dict[str, Any]] | None, emit: Emit) -> None:
        openai = self.mode == "openai"
        chat_id = f"chatcmpl-{uuid.uuid4().hex[:24]}"
        created = int(time.time())

        def chunk(delta: dict[str, Any], finish: str | None) -> dict[str, Any]:
            return {"id": chat_id, "object": "chat.completion.chunk", "created": created,
                    "model": params["model"],
                    "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}

        first = True

        async def on_text(text: str) -> None:
            nonlocal first
            if openai:
                delta = {"role": "assistant", "content": text} if first else {"content": text}
                await emit(chunk(delta, None))
            else:
                await emit({"text": text})
            first = False

        result = await generate(on_text)
        if openai:
            final = chunk({}, result["finish_reason"])
            final["served_by"] = result["served_by"]
            if sources is not None:
                final["sources"] = sources
                final["no_sources"] = not sources
            await emit(final)
        else:
            await emit({"done": result})


def inference_routes(node: Node) -> list[Route]:
    async def embed(request: Request) -> JSONResponse:
        return await native_embed(node, request)

    async def embeddings(request: Request) -> JSONResponse:
        return await openai_embeddings(node, request)

    async def models(request: Request) -> JSONResponse:
        return models_listing(node)

    return [
        Route("/v1/embed", embed, methods=["POST"]),
        Route("/v1/embeddings", embeddings, methods=["POST"]),
        Route("/v1/generate", StreamingEndpoint(node, "native"), methods=["POST"]),
        Route("/v1/chat/completions", StreamingEndpoint(node, "openai"), methods=["POST"]),
        Route("/v1/models", models),
    ]

