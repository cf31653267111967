"""The ``embed`` and ``generate`` job kinds, run on this node's own models.

Parameters are parsed into their typed views (``protocol/job_params.py``) before any model
runs; every problem is a ``BAD_REQUEST`` that names the field. Vectors go back as raw
little-endian float32 with a shape.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import trio

from calinode.node.index.chunking import Chunk, chunk_text
from calinode.node.inference.services import LocalModels
from calinode.node.inference.tool_turns import ToolTurn, chat_messages_of
from calinode.node.jobs.server import JobContext, JobRegistry
from calinode.protocol.errors import BadRequest, ProtocolError
from calinode.protocol.job_params import (
    INPUT_TYPES,
    EmbedChunksParams,
    EmbedParams,
    GenerateParams,
)
from calinode.protocol.job_replies import GenerateChunk
from calinode.protocol.vectors import encode_vectors

__all__ = ["INPUT_TYPES", "generate_request", "register_inference_jobs", "texts_param"]
T = TypeVar("T")


def _view(parse: Callable[[], T]) -> T:
    """Run a params view on input that did not come from a peer (the HTTP API): its
    ``ProtocolError`` becomes a plain ``BAD_REQUEST``."""
    try:
        return parse()
    except ProtocolError as exc:
        raise BadRequest(exc.message) from None


def texts_param(params: dict[str, Any]) -> list[str]:
    """The texts of an embed request, checked as the ``embed`` job checks them."""
    texts = params.get("texts")
    return list(_view(lambda: EmbedParams.from_wire({"model": "m", "texts": texts})).texts)


def generate_request(params: dict[str, Any]) -> GenerateParams:
    """Validated generate params (the HTTP API checks a request before sending it)."""
    return _view(lambda: GenerateParams.from_wire(params))


def register_inference_jobs(registry: JobRegistry, models: LocalModels) -> None:
    async def embed(ctx: JobContext, params: dict[str, Any]) -> dict[str, Any]:
        request = EmbedParams.from_wire(params)
        service = models.embedder(request.model)
        result = await service.embed(list(request.texts), input_type=request.input_type,
                                     dimensions=request.dimensions)
        return {"model": request.model, "sha256": service.manifest.sha256,
                "dim": int(result.vectors.shape[1]), "vectors": encode_vectors(result.vectors),
                "token_counts": list(result.token_counts), "truncated": list(result.truncated)}

    async def generate(ctx: JobContext, params: dict[str, Any]) -> dict[str, Any]:
        """``n`` samples one after the other (one model, one stream at a time), sample ``i``
        seeded with ``derive_seed(seed, i)``; the first one in the reply's top-level keys."""
        from calinode.models.generator import GenerationParams, derive_seed

        request = GenerateParams.from_wire(params)
        service = models.generator(request.model)
        messages = chat_messages_of(request)
        tools = await ToolTurn.of(request)
        choices: list[dict[str, Any]] = []
        prompt_tokens = completion_tokens = 0
        for index in range(request.n):
            settings = GenerationParams(
                max_tokens=request.max_tokens, temperature=request.temperature,
                top_p=request.top_p, seed=derive_seed(request.seed, index), stop=request.stop,
                json_schema=request.json_schema, logprobs=request.logprobs,
                top_logprobs=request.top_logprobs)
            if tools is not None:
                settings = tools.settings(settings)
            hold = None if tools is None else tools.hold_back()
            pieces: list[str] = []

            async def on_text(text: str) -> None:
                pieces.append(text)  # noqa: B023  (each sample's own list, used in its loop)
                shown = text if hold is None else hold.feed(text)  # noqa: B023
                if request.stream and shown:
                    await ctx.emit({"text": shown})

            async def on_tokens(text: str, tokens: tuple[int, ...]) -> None:
                # a streamed chunk carries its token ids: the relay can resume elsewhere
                pieces.append(text)  # noqa: B023  (each sample's own list, used in its loop)
                await ctx.emit(GenerateChunk(text=text, tokens=tokens).to_wire())

            final = await service.generate(
                params=settings, messages=messages, prompt=request.prompt, on_text=on_text,
                resume=request.resume_tokens,
                # with tools the text is held back and parsed whole: no resumable pieces
                on_tokens=on_tokens if request.stream and tools is None else None)
            choice: dict[str, Any] = {"text": "".join(pieces),
                                      "finish_reason": final.finish_reason}
            if tools is not None and hold is not None:
                choice = tools.reply_fields(choice["text"], choice["finish_reason"])
                rest = "" if "tool_calls" in choice else hold.rest()
                if request.stream and rest:
                    await ctx.emit({"text": rest})
            if request.logprobs:
                choice["logprobs"] = [entry.to_wire() for entry in final.logprobs]
            choices.append(choice)
            prompt_tokens = final.prompt_tokens
            completion_tokens += final.completion_tokens
        reply: dict[str, Any] = {"model": request.model, "sha256": service.manifest.sha256,
                                 **choices[0], "usage": {"prompt_tokens": prompt_tokens,
                                                         "completion_tokens": completion_tokens}}
        if len(choices) > 1:
            reply["more_choices"] = choices[1:]
        return reply

    async def embed_chunks(ctx: JobContext, params: dict[str, Any]) -> dict[str, Any]:
        """Cut documents into token windows with the model's own tokenizer, embed every
        chunk as a passage; the chunks keep their character offsets into the document."""
        request = EmbedChunksParams.from_wire(params)
        docs = list(request.docs)
        service = models.embedder(request.model)
        embedder = service.embedder
        budget = min(request.chunk_tokens, embedder.chunk_budget)
        overlap = request.chunk_overlap
        if not 0 <= overlap < budget // 2:
            raise BadRequest(
                f"chunk_overlap must be 0..{budget // 2 - 1} for {budget}-token chunks")
        def cut() -> list[list[Chunk]]:  # tokenizing and cutting: one worker-thread hop
            return [chunk_text(doc, offsets=spans, max_tokens=budget, overlap=overlap)
                    for doc, spans in zip(docs, embedder.token_offsets(docs), strict=True)]

        per_doc = await trio.to_thread.run_sync(cut, limiter=service.limiter)
        texts = [chunk.text for chunks in per_doc for chunk in chunks]
        result = await service.embed(texts, input_type="passage")
        return {"model": request.model, "sha256": service.manifest.sha256,
                "dim": int(result.vectors.shape[1]), "vectors": encode_vectors(result.vectors),
                "chunks": [[{"text": c.text, "start": c.start, "end": c.end} for c in chunks]
                           for chunks in per_doc]}

    registry.register("embed", embed)
    registry.register("embed_chunks", embed_chunks)
    registry.register("generate", generate)
