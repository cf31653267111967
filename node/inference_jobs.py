"""The ``embed`` and ``generate`` job kinds, run on this node's own models.

Parameters are checked here, before any model runs; every problem is a ``BAD_REQUEST`` that
names the field. Vectors go back as raw little-endian float32 with a shape.
"""

from __future__ import annotations

from typing import Any

import trio

from calinode.node.chunking import Chunk, chunk_text
from calinode.node.job_server import JobContext, JobRegistry
from calinode.node.local_models import LocalModels
from calinode.protocol.errors import ErrorCode, JobError
from calinode.protocol.limits import DEFAULT_LIMITS
from calinode.protocol.vectors import encode_vectors

MAX_TEXT_CHARS = 200_000
INPUT_TYPES = ("query", "passage", "raw")


def bad(message: str) -> JobError:
    return JobError(message, code=ErrorCode.BAD_REQUEST)


def check_fields(params: dict[str, Any], allowed: set[str], required: set[str]) -> None:
    unknown = set(params) - allowed
    if unknown:
        raise bad(f"unknown params: {', '.join(sorted(unknown))}")
    missing = required - set(params)
    if missing:
        raise bad(f"missing params: {', '.join(sorted(missing))}")


def str_param(params: dict[str, Any], name: str, default: str | None = None) -> str:
    value = params.get(name, default)
    if not isinstance(value, str) or not value:
        raise bad(f"{name} must be a non-empty string")
    return value


def int_param(params: dict[str, Any], name: str, default: int | None) -> int | None:
    value = params.get(name, default)
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool):
        raise bad(f"{name} must be an integer")
    return value


def float_param(params: dict[str, Any], name: str, default: float) -> float:
    value = params.get(name, default)
    if not isinstance(value, int | float) or isinstance(value, bool):
        raise bad(f"{name} must be a number")
    return float(value)


def texts_param(params: dict[str, Any]) -> list[str]:
    texts = params.get("texts")
    if not isinstance(texts, list) or not texts:
        raise bad("texts must be a non-empty list of strings")
    if len(texts) > DEFAULT_LIMITS.max_batch:
        raise bad(f"{len(texts)} texts is over the limit of {DEFAULT_LIMITS.max_batch} "
                  "per request; split the batch")
    for i, text in enumerate(texts):
        if not isinstance(text, str):
            raise bad(f"texts[{i}] must be a string, not {type(text).__name__}")
        if not text.strip():
            raise bad(f"texts[{i}] is empty")
        if len(text) > MAX_TEXT_CHARS:
            raise bad(f"texts[{i}] has {len(text)} characters, over {MAX_TEXT_CHARS}; chunk it")
    return texts


def embed_request(params: dict[str, Any]) -> tuple[str, list[str], str, int | None]:
    check_fields(params, {"model", "texts", "input_type", "dimensions"}, {"model", "texts"})
    model = str_param(params, "model")
    texts = texts_param(params)
    input_type = str_param(params, "input_type", "passage")
    if input_type not in INPUT_TYPES:
        raise bad(f"input_type must be one of {', '.join(INPUT_TYPES)}")
    return model, texts, input_type, int_param(params, "dimensions", None)


def generate_request(params: dict[str, Any]) -> dict[str, Any]:
    """Validated generate params: model, messages or prompt, sampling settings, stream."""
    check_fields(params, {"model", "messages", "prompt", "max_tokens", "temperature", "top_p",
                          "seed", "stop", "stream"}, {"model"})
    if ("messages" in params) == ("prompt" in params):
        raise bad("give exactly one of messages (chat) or prompt (completion)")
    messages = params.get("messages")
    if messages is not None:
        if not isinstance(messages, list) or not messages:
            raise bad("messages must be a non-empty list")
        for i, m in enumerate(messages):
            if not isinstance(m, dict) or set(m) != {"role", "content"} or not all(
                    isinstance(v, str) for v in m.values()):
                raise bad(f"messages[{i}] must be {{role, content}} with string values")
    prompt = params.get("prompt")
    if prompt is not None and (not isinstance(prompt, str) or not prompt.strip()):
        raise bad("prompt must be a non-empty string")
    stop = params.get("stop", [])
    if isinstance(stop, str):
        stop = [stop]
    if not isinstance(stop, list) or not all(isinstance(s, str) and s for s in stop):
        raise bad("stop must be a string or a list of non-empty strings")
    stream = params.get("stream", False)
    if not isinstance(stream, bool):
        raise bad("stream must be true or false")
    return {
        "model": str_param(params, "model"), "messages": messages, "prompt": prompt,
        "max_tokens": int_param(params, "max_tokens", 256),
        "temperature": float_param(params, "temperature", 0.7),
        "top_p": float_param(params, "top_p", 0.95),
        "seed": int_param(params, "seed", None), "stop": tuple(stop[:8]), "stream": stream,
    }


def register_inference_jobs(registry: JobRegistry, models: LocalModels) -> None:
    async def embed(ctx: JobContext, params: dict[str, Any]) -> dict[str, Any]:
        model, texts, input_type, dimensions = embed_request(params)
        service = models.embedder(model)
        result = await service.embed(texts, input_type=input_type, dimensions=dimensions)
        return {"model": model, "sha256": service.manifest.sha256,
                "dim": int(result.vectors.shape[1]), "vectors": encode_vectors(result.vectors),
                "token_counts": list(result.token_counts), "truncated": list(result.truncated)}

    async def generate(ctx: JobContext, params: dict[str, Any]) -> dict[str, Any]:
        from calinode.models.generator import GenerationParams

        request = generate_request(params)
        service = models.generator(request["model"])
        settings = GenerationParams(
            max_tokens=request["max_tokens"], temperature=request["temperature"],
            top_p=request["top_p"], seed=request["seed"], stop=request["stop"])
        pieces: list[str] = []

        async def on_text(text: str) -> None:
            pieces.append(text)
            if request["stream"]:
                await ctx.emit({"text": text})

        final = await service.generate(params=settings, messages=request["messages"],
                                       prompt=request["prompt"], on_text=on_text)
        return {"model": request["model"], "sha256": service.manifest.sha256,
                "text": "".join(pieces), "finish_reason": final.finish_reason,
                "usage": {"prompt_tokens": final.prompt_tokens,
                          "completion_tokens": final.completion_tokens}}

    async def embed_chunks(ctx: JobContext, params: dict[str, Any]) -> dict[str, Any]:
        """Cut documents into token windows with the model's own tokenizer, embed every
        chunk as a passage; the chunks keep their character offsets into the document."""
        check_fields(params, {"model", "docs", "chunk_tokens", "chunk_overlap"},
                     {"model", "docs", "chunk_tokens", "chunk_overlap"})
        model = str_param(params, "model")
        docs = texts_param({"texts": params["docs"]})
        tokens, overlap = int_param(params, "chunk_tokens", None), int_param(
            params, "chunk_overlap", None)
        assert tokens is not None and overlap is not None
        service = models.embedder(model)
        embedder = service.embedder
        budget = min(tokens, embedder.chunk_budget)
        if not 0 <= overlap < budget // 2:
            raise bad(f"chunk_overlap must be 0..{budget // 2 - 1} for {budget}-token chunks")
        def cut() -> list[list[Chunk]]:  # tokenizing and cutting: one worker-thread hop
            return [chunk_text(doc, offsets=spans, max_tokens=budget, overlap=overlap)
                    for doc, spans in zip(docs, embedder.token_offsets(docs), strict=True)]

        per_doc = await trio.to_thread.run_sync(cut)
        texts = [chunk.text for chunks in per_doc for chunk in chunks]
        result = await service.embed(texts, input_type="passage")
        return {"model": model, "sha256": service.manifest.sha256,
                "dim": int(result.vectors.shape[1]), "vectors": encode_vectors(result.vectors),
                "chunks": [[{"text": c.text, "start": c.start, "end": c.end} for c in chunks]
                           for chunks in per_doc]}

    registry.register("embed", embed)
    registry.register("embed_chunks", embed_chunks)
    registry.register("generate", generate)
