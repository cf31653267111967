"""Inference on the local HTTP API: native routes and OpenAI-compatible ones.

Native: ``POST /v1/embed`` (``{model, texts, input_type, dimensions, timeout}`` ->
``{model, sha256, dim, vectors, served_by, token_counts, truncated}``) and ``POST /v1/generate``
(``{model, prompt | messages, max_tokens, temperature, top_p, seed, stop, stream}``; with
``stream`` the answer is NDJSON: ``{"text"}`` lines, then ``{"done": {...}}``).

OpenAI-compatible: ``POST /v1/embeddings``, ``POST /v1/chat/completions`` (``stream: true``
gives server-sent events ending in ``data: [DONE]``) and ``GET /v1/models`` (every model
reachable in the swarm); ``openai_routes.py`` adds ``GET /v1/models/{id}`` and
``POST /v1/completions``, and checks the model before a chat answer starts (the same 404 with or
without ``stream``). Responses add ``served_by``.
"""

from __future__ import annotations

import base64
import dataclasses
import functools
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import trio
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from calinode.node.api.bodies import integer, request_deadline
from calinode.node.api.chat_choices import chat_choices
from calinode.node.api.guard import read_json
from calinode.node.api.json_response import FastJSONResponse
from calinode.node.api.openai_routes import models_catalog, open_frame
from calinode.node.api.openai_shapes import ResponseFrame, chat_messages, provenance, usage
from calinode.node.api.sampling_body import sampling_params
from calinode.node.api.streaming import Answer, AnswerEndpoint, Emit
from calinode.node.api.tool_deltas import tool_call_deltas
from calinode.node.api.tools_body import check_tools_schemas, tool_params, wire_messages
from calinode.node.inference.jobs import INPUT_TYPES, generate_request, texts_param
from calinode.node.jobs.dispatch import default_model
from calinode.protocol.errors import BadRequest
from calinode.protocol.job_params import ChatMessage, GenerateParams

if TYPE_CHECKING:
    from calinode.node.api.node_view import ApiNode

async def _embed(node: ApiNode, body: dict[str, Any], texts: Any) -> Any:
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


async def native_embed(node: ApiNode, request: Request) -> JSONResponse:
    body = await read_json(request)
    outcome = await _embed(node, body, body.get("texts"))
    return FastJSONResponse({
        "model": outcome.model, "sha256": outcome.sha256, "dim": int(outcome.vectors.shape[1]),
        "vectors": outcome.vectors, "served_by": outcome.served_by,
        "token_counts": outcome.token_counts, "truncated": outcome.truncated})


async def openai_embeddings(node: ApiNode, request: Request) -> JSONResponse:
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


def models_listing(node: ApiNode) -> JSONResponse:
    found = models_catalog(node)
    return JSONResponse({"object": "list", "data": sorted(found.values(), key=lambda m: m["id"])})


def _openai_to_params(node: ApiNode, body: dict[str, Any]) -> dict[str, Any]:
    model = body.get("model") or default_model(node, "generate")
    params: dict[str, Any] = {"model": model,
                              "messages": chat_messages(body.get("messages"), str(model))}
    max_tokens = body.get("max_completion_tokens", body.get("max_tokens"))
    if max_tokens is not None:
        params["max_tokens"] = max_tokens
    for key in ("temperature", "top_p", "seed", "stop"):
        if body.get(key) is not None:
            params[key] = body[key]
    params.update(sampling_params(body))  # response_format, n, logprobs, top_logprobs
    params["messages"] = wire_messages(params["messages"])  # tool calls in the history
    params.update(tool_params(body, structured="json_schema" in params))  # tools
    return params


@dataclass(slots=True)
class Generation:
    """One generation of a request, by its one ``deadline``: ``params`` is the request's
    generate view (checked once, when the request is read); a chat with a ``collection``
    puts the retrieved passages into its messages, or, when retrieval found nothing, answers
    ``canned`` (the coordinator's no-sources reply) and generates nothing."""

    node: ApiNode
    params: GenerateParams
    deadline: float
    sources: list[dict[str, Any]] | None = None
    canned: dict[str, Any] | None = None

    async def run(self, on_text: Callable[[str], Awaitable[None]] | None = None
                  ) -> dict[str, Any]:
        if self.canned is None:
            return await self.node.dispatcher.generate(self.params.to_wire(),
                                                       deadline=self.deadline, on_text=on_text)
        if on_text is not None:
            await on_text(self.canned["text"])
        return self.canned

    async def augment(self, body: dict[str, Any]) -> None:
        """Retrieval-augmented chat: the coordinator's retrieval, within the deadline."""
        users = [m for m in self.params.messages or () if m.role == "user"]
        if not users:
            raise BadRequest("a retrieval-augmented chat needs a user message (the question)")
        k = integer(body, "k", 5)
        collection = body["collection"]
        if not isinstance(collection, str):
            raise BadRequest("collection must be a string")
        coordinator = self.node.coordinator
        augmented, self.sources, found = await coordinator.rag_messages(
            collection, users[-1].content, k=k, deadline=self.deadline)
        self.params = dataclasses.replace(
            self.params, messages=tuple(ChatMessage(role=m["role"], content=m["content"])
                                        for m in augmented))
        if not self.sources:
            self.canned = coordinator.no_sources_reply(collection, found)


def _generate_endpoint(node: ApiNode) -> AnswerEndpoint:
    """``POST /v1/generate``: JSON, or with ``stream`` NDJSON ``{"text"}`` lines, then
    ``{"done": {...}}``."""

    async def prepare(request: Request) -> Answer:
        body = await read_json(request)
        deadline = request_deadline(body)
        stream = body.pop("stream", False) is True
        params = dict(body)
        params.setdefault("model", default_model(node, "generate"))
        generation = Generation(node, generate_request(dict(params, stream=stream)), deadline)
        if generation.params.logprobs:  # raw token bytes: OpenAI's shape is the chat route's
            raise BadRequest("logprobs are answered by POST /v1/chat/completions")

        async def pieces(emit: Emit) -> None:
            async def on_text(text: str) -> None:
                await emit({"text": text})

            await emit({"done": await generation.run(on_text)})

        return Answer(whole=generation.run, pieces=pieces, stream=stream)

    return AnswerEndpoint(prepare)


def chat_endpoint(node: ApiNode) -> AnswerEndpoint:
    """``POST /v1/chat/completions`` (OpenAI's shape; ``stream: true`` gives server-sent
    events): one deadline, set from the request's ``timeout``, bounds retrieval (chat with a
    ``collection``) and generation."""

    async def prepare(request: Request) -> Answer:
        body = await read_json(request)
        deadline = request_deadline(body)
        stream = body.get("stream", False) is True
        wire = _openai_to_params(node, body)
        if "tools" in wire:
            await trio.to_thread.run_sync(check_tools_schemas, wire)
        params = generate_request(dict(wire, stream=stream))
        frame = open_frame(node, body, params.model, stream=stream, prefix="chatcmpl")
        generation = Generation(node, params, deadline)
        if body.get("collection") is not None:
            await generation.augment(body)

        async def whole() -> dict[str, Any]:
            payload = _completion(frame, await generation.run())
            return _with_sources(payload, generation.sources)

        return Answer(whole=whole, pieces=functools.partial(_chat_pieces, generation, frame),
                      stream=stream, sse=True)

    return AnswerEndpoint(prepare)


def _with_sources(payload: dict[str, Any], sources: list[dict[str, Any]] | None
                  ) -> dict[str, Any]:
    if sources is not None:
        payload["sources"] = sources
        payload["no_sources"] = not sources
    return payload


def _completion(frame: ResponseFrame, result: dict[str, Any]) -> dict[str, Any]:
    return {
        **frame.header("chat.completion"),
        "choices": chat_choices(result),
        "usage": usage(result), **provenance(result)}


async def _chat_pieces(generation: Generation, frame: ResponseFrame, emit: Emit) -> None:
    """The chat answer as ``chat.completion.chunk`` events: the role with the first text,
    then the finish reason, ``served_by`` and the sources in the last; then, when
    ``stream_options.include_usage`` asked for it, the usage chunk."""

    def chunk(delta: dict[str, Any], finish: str | None) -> dict[str, Any]:
        return {**frame.header("chat.completion.chunk"),
                "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}

    first = True

    async def on_text(text: str) -> None:
        nonlocal first
        await emit(chunk({"role": "assistant", "content": text} if first else
                         {"content": text}, None))
        first = False

    result = await generation.run(on_text)
    for delta in tool_call_deltas(result.get("tool_calls", ()), with_role=first):
        await emit(chunk(delta, None))
    final = chunk({}, result["finish_reason"])
    final.update(provenance(result))
    await emit(_with_sources(final, generation.sources))
    if frame.include_usage:
        await emit(frame.usage_chunk("chat.completion.chunk", result))


def inference_routes(node: ApiNode) -> list[Route]:
    async def embed(request: Request) -> JSONResponse:
        return await native_embed(node, request)

    async def embeddings(request: Request) -> JSONResponse:
        return await openai_embeddings(node, request)

    async def models(request: Request) -> JSONResponse:
        return models_listing(node)

    return [
        Route("/v1/embed", embed, methods=["POST"]),
        Route("/v1/embeddings", embeddings, methods=["POST"]),
        Route("/v1/generate", _generate_endpoint(node), methods=["POST"]),
        Route("/v1/chat/completions", chat_endpoint(node), methods=["POST"]),
        Route("/v1/models", models),
    ]

