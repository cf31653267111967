"""Typed, frozen, bounded views of the ``params`` of every job kind.

A :class:`~calinode.protocol.messages.JobRequest` carries ``params`` as a free-form map (each
kind has its own arguments). Before a handler reads anything, it parses the map with its
kind's ``from_wire``: exactly the known keys, every value of its type (a ``bool`` is not an
``int``), every count, size and string under a maximum, enums closed, floats finite. A map
that does not fit raises :class:`~calinode.protocol.errors.RemoteProtocolError`
(``BAD_REQUEST``) naming the field; nothing else escapes. ``to_wire`` writes the same keys the
callers always sent, so the wire format is unchanged.

=====================  ===========================================================
kind                   view
=====================  ===========================================================
``ping``               :class:`PingParams` (no params)
``echo``               :class:`EchoParams`
``embed``              :class:`EmbedParams`
``embed_chunks``       :class:`EmbedChunksParams`
``generate``           :class:`GenerateParams`
``shard.*``            :mod:`calinode.protocol.shard_params` (with the shared checks and
                       limits of this module)
=====================  ===========================================================
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, Final

from .collections import COLLECTION_NAME, MAX_CHUNK_TOKENS, MAX_DIM
from .limits import DEFAULT_LIMITS
from .tools import (
    MAX_TOOLS,
    TOOL_CHOICES,
    ToolCall,
    ToolSpec,
    check_tools,
    tool_calls_from_wire,
)
from .validation import MAX_INT64, check_bytes, check_instance, check_int, check_str, from_peer
from .validation import invalid as invalid

__all__ = [
    "INPUT_TYPES",
    "MAX_CHOICES",
    "MAX_FETCH_IDS",
    "MAX_K",
    "MAX_LOGPROB_TOKENS",
    "MAX_RESUME_TOKENS",
    "MAX_SCHEMA_CHARS",
    "MAX_TOKEN_ID",
    "MAX_TOP_LOGPROBS",
    "ChatMessage",
    "EchoParams",
    "EmbedChunksParams",
    "EmbedParams",
    "GenerateParams",
    "PingParams",
    "check_collection",
    "check_echo_payload",
    "check_finite",
    "check_json",
    "check_keys",
    "check_list",
    "check_token_ids",
]

#: Longest text to embed (characters); longer documents are chunked first.
MAX_TEXT_CHARS: Final = 200_000
#: Most texts or documents in one request.
MAX_BATCH: Final = DEFAULT_LIMITS.max_batch
INPUT_TYPES: Final = ("query", "passage", "raw")
MAX_MODEL_NAME: Final = 128
MAX_MESSAGES: Final = 256
MAX_ROLE: Final = 32
MAX_PROMPT_CHARS: Final = 1_000_000
MAX_STOP: Final = 8
MAX_STOP_CHARS: Final = 256
MAX_GENERATE_TOKENS: Final = 1 << 20
#: Largest token id a ``generate`` resume may carry (llama.cpp token ids are int32).
MAX_TOKEN_ID: Final = (1 << 31) - 1
#: Most already-generated tokens one resumed ``generate`` may carry (see ``resume_tokens``):
#: four times the default context. A decoded int costs about 38 bytes against a frame's
#: decoding budget of 10 per payload byte plus 512 KiB (``protocol/limits.py``): even ids
#: of one byte each fit that budget up to about 18,700 ids, so a legitimate resume is never
#: refused as a bad frame.
MAX_RESUME_TOKENS: Final = 16_384
#: Longest JSON schema (compact JSON text) a ``generate`` may constrain its output with.
MAX_SCHEMA_CHARS: Final = 16_384
#: Most independent samples (OpenAI's ``n``) one ``generate`` may ask for.
MAX_CHOICES: Final = 8
#: Most alternatives per token (OpenAI's ``top_logprobs``).
MAX_TOP_LOGPROBS: Final = 20
#: Most generated tokens (over all choices) a ``generate`` with logprobs may ask for: each
#: costs up to ``3 * (MAX_TOP_LOGPROBS + 1) + 2`` msgpack objects in the reply, and the whole
#: reply must stay well inside one frame's ``max_objects``.
MAX_LOGPROB_TOKENS: Final = 2048
#: Most hits per query asked of one shard.
MAX_K: Final = 1000
#: Most chunk ids one ``shard.fetch`` request may ask for (the holder pages its reply).
MAX_FETCH_IDS: Final = 100_000
#: Most documents one ``shard.changes`` page may ask for (and most ids one request may name).
MAX_CHANGES_LIMIT: Final = 500
#: Most document keys one keys-only ``shard.changes`` page may ask for: at most
#: MAX_KEYS_LIMIT * (MAX_DOC_ID_CHARS + MAX_CONTENT_HASH + 32) bytes, about 2.6 MB, and five
#: objects a key, far inside a frame's limits.
MAX_KEYS_LIMIT: Final = 2000
#: Most chunks one document may have on the wire.
MAX_DOC_CHUNKS: Final = 20_000
MAX_DOC_ID_CHARS: Final = 1024
MAX_CONTENT_HASH: Final = 256
#: Metadata of a chunk: JSON values, at most this many keys per map and this deep.
MAX_METADATA_KEYS: Final = 256
MAX_METADATA_DEPTH: Final = 8


# -- shared checks ---------------------------------------------------------------------------

def check_keys(what: str, data: object, allowed: frozenset[str],
               required: frozenset[str] = frozenset()) -> Mapping[str, Any]:
    """``data`` is a map of str keys from ``allowed`` holding every key of ``required``."""
    if not isinstance(data, dict):
        invalid(f"{what} must be a map, not {type(data).__name__}")
    unknown = sorted(repr(k)[:40] for k in data if k not in allowed)
    if unknown:
        invalid(f"{what}: unknown fields {unknown[:8]}")
    missing = sorted(required - data.keys())
    if missing:
        invalid(f"{what}: missing fields {missing}")
    return data


def check_list(name: str, value: object, *, max_len: int, min_len: int = 0) -> list[Any]:
    """``value`` is a list (msgpack array) of ``min_len..max_len`` items."""
    if not isinstance(value, list):
        invalid(f"{name} must be a list, not {type(value).__name__}")
    if not min_len <= len(value) <= max_len:
        invalid(f"{name} must have {min_len} to {max_len} items, has {len(value)}")
    return value


def check_finite(name: str, value: object, *, lo: float, hi: float) -> float:
    """``value`` is an int or float (not a bool), finite, in ``lo..hi``; returned as float."""
    if not isinstance(value, int | float) or isinstance(value, bool):
        invalid(f"{name} must be a number, not {type(value).__name__}")
    number = float(value)
    if not math.isfinite(number) or not lo <= number <= hi:
        invalid(f"{name} must be a finite number in {lo}..{hi}, is {value!r}")
    return number


def check_json(name: str, value: object, depth: int = 0) -> None:
    """``value`` is JSON: str keys, finite floats, at most ``MAX_METADATA_KEYS`` entries per
    container and ``MAX_METADATA_DEPTH`` levels (the codec already bounds the total size)."""
    if depth > MAX_METADATA_DEPTH:
        invalid(f"{name} is nested deeper than {MAX_METADATA_DEPTH}")
    if value is None or isinstance(value, bool | int | str):
        if isinstance(value, int) and not isinstance(value, bool) and abs(value) > MAX_INT64:
            invalid(f"{name} holds an int outside 64 bits")
        return
    if isinstance(value, float):
        if not math.isfinite(value):
            invalid(f"{name} holds a non-finite number")
        return
    if isinstance(value, list):
        check_list(name, value, max_len=MAX_METADATA_KEYS)
        for item in value:
            check_json(name, item, depth + 1)
        return
    if isinstance(value, dict):
        if len(value) > MAX_METADATA_KEYS:
            invalid(f"{name} has more than {MAX_METADATA_KEYS} keys")
        for key, item in value.items():
            if not isinstance(key, str) or len(key) > 256:
                invalid(f"{name} keys must be strings of at most 256 characters")
            check_json(name, item, depth + 1)
        return
    invalid(f"{name} holds a {type(value).__name__}, not a JSON value")


def check_schema_text(value: object) -> None:
    """``value`` is a JSON object as text of at most ``MAX_SCHEMA_CHARS`` characters (what it
    says as a schema is checked where it is used, ``models/json_grammar.py``)."""
    check_str("json_schema", value, max_len=MAX_SCHEMA_CHARS)
    try:
        schema = json.loads(str(value))
    except (ValueError, RecursionError):
        invalid("json_schema is not JSON text")
    if not isinstance(schema, dict):
        invalid("json_schema must be a JSON object")


def check_token_ids(name: str, value: object, *,
                    max_len: int = MAX_RESUME_TOKENS) -> tuple[int, ...]:
    """A list (or tuple) of at most ``max_len`` token ids, each an int in
    ``[0, MAX_TOKEN_ID]``."""
    if isinstance(value, tuple):
        value = list(value)
    items = check_list(name, value, max_len=max_len)
    for item in items:
        check_int(name, item, lo=0, hi=MAX_TOKEN_ID)
    return tuple(items)


def _model(value: object) -> None:
    check_str("model", value, max_len=MAX_MODEL_NAME)


def check_collection(value: object) -> None:
    check_str("collection", value, max_len=64, pattern=COLLECTION_NAME)


def _texts(name: str, value: object) -> tuple[str, ...]:
    items = check_list(name, value, min_len=1, max_len=MAX_BATCH)
    for i, text in enumerate(items):
        check_str(f"{name}[{i}]", text, max_len=MAX_TEXT_CHARS)
        if not text.strip():
            invalid(f"{name}[{i}] is empty")
    return tuple(items)


# -- ping, echo --------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class PingParams:
    """``ping`` takes no params."""

    @classmethod
    def from_wire(cls, data: object) -> PingParams:
        with from_peer():
            check_keys("ping params", data, frozenset())
            return cls()


def check_echo_payload(payload: bytes | str) -> None:
    """An echo's payload, asked or answered: a string or bytes within the codec's limits."""
    if isinstance(payload, str):
        check_str("payload", payload, min_len=0, max_len=DEFAULT_LIMITS.max_str)
    else:
        check_bytes("payload", payload, max_len=DEFAULT_LIMITS.max_bin)


@dataclass(frozen=True, kw_only=True, slots=True)
class EchoParams:
    """``echo``: one payload (bytes or str) sent back as it came."""

    payload: bytes | str

    def __post_init__(self) -> None:
        check_echo_payload(self.payload)

    @classmethod
    def from_wire(cls, data: object) -> EchoParams:
        with from_peer():
            wire = check_keys("echo params", data, frozenset({"payload"}),
                              frozenset({"payload"}))
            return cls(payload=wire["payload"])


# -- inference ---------------------------------------------------------------------------------

@dataclass(frozen=True, kw_only=True, slots=True)
class EmbedParams:
    model: str
    texts: tuple[str, ...]
    input_type: str = "passage"
    dimensions: int | None = None

    def __post_init__(self) -> None:
        _model(self.model)
        _texts("texts", list(self.texts))
        if self.input_type not in INPUT_TYPES:
            invalid(f"input_type must be one of {', '.join(INPUT_TYPES)}")
        if self.dimensions is not None:
            check_int("dimensions", self.dimensions, lo=1, hi=MAX_DIM)

    _KEYS: ClassVar[frozenset[str]] = frozenset({"model", "texts", "input_type", "dimensions"})

    @classmethod
    def from_wire(cls, data: object) -> EmbedParams:
        with from_peer():
            wire = check_keys("embed params", data, cls._KEYS, frozenset({"model", "texts"}))
            return cls(model=wire["model"], texts=_texts("texts", wire["texts"]),
                       input_type=wire.get("input_type", "passage"),
                       dimensions=wire.get("dimensions"))

    def to_wire(self) -> dict[str, Any]:
        out: dict[str, Any] = {"model": self.model, "texts": list(self.texts),
                               "input_type": self.input_type}
        if self.dimensions is not None:
            out["dimensions"] = self.dimensions
        return out


@dataclass(frozen=True, kw_only=True, slots=True)
class EmbedChunksParams:
    """``embed_chunks``: documents to cut into ``chunk_tokens`` windows and embed."""

    model: str
    docs: tuple[str, ...]
    chunk_tokens: int
    chunk_overlap: int

    def __post_init__(self) -> None:
        _model(self.model)
        _texts("docs", list(self.docs))
        check_int("chunk_tokens", self.chunk_tokens, lo=8, hi=MAX_CHUNK_TOKENS)
        check_int("chunk_overlap", self.chunk_overlap, lo=0, hi=self.chunk_tokens // 2 - 1)

    _KEYS: ClassVar[frozenset[str]] = frozenset({"model", "docs", "chunk_tokens", "chunk_overlap"})

    @classmethod
    def from_wire(cls, data: object) -> EmbedChunksParams:
        with from_peer():
            wire = check_keys("embed_chunks params", data, cls._KEYS, cls._KEYS)
            return cls(model=wire["model"], docs=_texts("docs", wire["docs"]),
                       chunk_tokens=wire["chunk_tokens"], chunk_overlap=wire["chunk_overlap"])

    def to_wire(self) -> dict[str, Any]:
        return {"model": self.model, "docs": list(self.docs), "chunk_tokens": self.chunk_tokens,
                "chunk_overlap": self.chunk_overlap}


@dataclass(frozen=True, kw_only=True, slots=True)
class ChatMessage:
    """One message of a chat. Tool calling (issue 15): an ``assistant`` message may carry the
    ``tool_calls`` it made (its content then often empty), a ``tool`` message answers the
    call ``tool_call_id`` names; both are written on the wire only when set."""

    role: str
    content: str
    tool_calls: tuple[ToolCall, ...] = ()
    tool_call_id: str | None = None

    def __post_init__(self) -> None:
        check_str("message role", self.role, max_len=MAX_ROLE)
        check_str("message content", self.content, min_len=0, max_len=MAX_PROMPT_CHARS)
        if self.tool_calls and self.role != "assistant":
            invalid("only an assistant message carries tool_calls")
        if (self.role == "tool") != (self.tool_call_id is not None):
            invalid("a tool message (and only it) names the tool_call_id it answers")
        if self.tool_call_id is not None:
            check_str("tool_call_id", self.tool_call_id, max_len=64)

    _KEYS: ClassVar[frozenset[str]] = frozenset({"role", "content", "tool_calls",
                                                 "tool_call_id"})

    @classmethod
    def from_wire(cls, data: object, where: str) -> ChatMessage:
        wire = check_keys(where, data, cls._KEYS, frozenset({"role", "content"}))
        calls = wire.get("tool_calls")
        return cls(role=wire["role"], content=wire["content"],
                   tool_calls=() if calls is None else tool_calls_from_wire(calls),
                   tool_call_id=wire.get("tool_call_id"))

    def to_wire(self) -> dict[str, Any]:
        out: dict[str, Any] = {"role": self.role, "content": self.content}
        if self.tool_calls:
            out["tool_calls"] = [call.to_wire() for call in self.tool_calls]
        if self.tool_call_id is not None:
            out["tool_call_id"] = self.tool_call_id
        return out


@dataclass(frozen=True, kw_only=True, slots=True)
class GenerateParams:
    """``generate``: exactly one of ``messages`` (chat) or ``prompt`` (completion).

    Sampling extras (issue 15), written on the wire only when asked for, so a plain request
    still reads the same to a node that predates them: ``json_schema`` (structured output: a
    JSON schema as compact JSON text of at most :data:`MAX_SCHEMA_CHARS`, a JSON object; the
    serving node turns it into the grammar that constrains decoding, never taking grammar
    text from a peer, see ``models/json_grammar.py``), ``n`` (1 to
    :data:`MAX_CHOICES` independent samples), ``logprobs`` and ``top_logprobs`` (0 to
    :data:`MAX_TOP_LOGPROBS` alternatives per token; needs ``logprobs``). With logprobs,
    ``n * max_tokens`` is at most :data:`MAX_LOGPROB_TOKENS` (the reply's size). ``n > 1``
    and logprobs are answered whole, never streamed.

    Resume (issue 14, "a generation outlives the peer that serves it"): ``resume_tokens``
    are the token ids another peer already generated for this very request (same model
    sha256, prompt, seed and sampling), at most :data:`MAX_RESUME_TOKENS`, each in
    ``[0, MAX_TOKEN_ID]``, and fewer than ``max_tokens`` (which stays the whole request's:
    ``max_tokens - len(resume_tokens)`` remain). The serving node replays them and streams
    only what comes after. One sample, no logprobs (those of the replayed tokens are gone).
    Written on the wire only when non-empty."""

    model: str
    messages: tuple[ChatMessage, ...] | None = None
    prompt: str | None = None
    max_tokens: int = 256
    temperature: float = 0.7
    top_p: float = 0.95
    seed: int | None = None
    stop: tuple[str, ...] = ()
    stream: bool = False
    json_schema: str | None = None
    n: int = 1
    logprobs: bool = False
    top_logprobs: int = 0
    # tool calling (issue 15): see _check_tool_fields
    tools: tuple[ToolSpec, ...] = ()
    tool_choice: str = "auto"
    tool_name: str | None = None
    # -- resume block (issue 14) --
    resume_tokens: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        _model(self.model)
        if (self.messages is None) == (self.prompt is None):
            invalid("give exactly one of messages (chat) or prompt (completion)")
        if self.messages is not None:
            check_list("messages", list(self.messages), min_len=1, max_len=MAX_MESSAGES)
        if self.prompt is not None:
            check_str("prompt", self.prompt, max_len=MAX_PROMPT_CHARS)
            if not self.prompt.strip():
                invalid("prompt must be a non-empty string")
        check_int("max_tokens", self.max_tokens, lo=1, hi=MAX_GENERATE_TOKENS)
        check_finite("temperature", self.temperature, lo=0.0, hi=100.0)
        check_finite("top_p", self.top_p, lo=0.0, hi=1.0)
        if self.seed is not None:
            check_int("seed", self.seed, lo=-MAX_INT64 - 1, hi=MAX_INT64)
        check_list("stop", list(self.stop), max_len=MAX_STOP)
        for s in self.stop:
            check_str("stop", s, max_len=MAX_STOP_CHARS)
        check_instance("stream", self.stream, bool)
        if self.json_schema is not None:
            check_schema_text(self.json_schema)
        check_int("n", self.n, lo=1, hi=MAX_CHOICES)
        check_instance("logprobs", self.logprobs, bool)
        check_int("top_logprobs", self.top_logprobs, lo=0, hi=MAX_TOP_LOGPROBS)
        if self.top_logprobs and not self.logprobs:
            invalid("top_logprobs needs logprobs")
        if self.stream and (self.n > 1 or self.logprobs):
            invalid("n > 1 and logprobs are answered whole, not streamed: drop stream")
        if self.logprobs and self.n * self.max_tokens > MAX_LOGPROB_TOKENS:
            invalid(f"with logprobs, n * max_tokens must be at most {MAX_LOGPROB_TOKENS}, "
                    f"is {self.n * self.max_tokens}")
        self._check_tool_fields()
        self._check_resume()

    def _check_tool_fields(self) -> None:
        """Tool calling (issue 15): ``tools`` (see :mod:`calinode.protocol.tools`) need chat
        ``messages``; ``tool_choice`` is ``auto`` (the model answers in text or calls one) or
        ``required`` (it must call one; with ``tool_name``, that one), and means nothing
        without tools. A tool's answer is its call, so ``json_schema`` does not combine with
        tools; the end of a call block is a stop sequence, so tools leave one fewer."""
        check_list("tools", list(self.tools), max_len=MAX_TOOLS)
        for tool in self.tools:
            check_instance("tools", tool, ToolSpec)
        check_tools(self.tools)
        if self.tool_choice not in TOOL_CHOICES:
            invalid(f"tool_choice must be one of {', '.join(TOOL_CHOICES)}")
        if self.tool_name is not None:
            if self.tool_choice != "required":
                invalid("tool_name needs tool_choice required")
            if self.tool_name not in {t.name for t in self.tools}:
                invalid("tool_name must name one of the tools")
        if not self.tools:
            if self.tool_choice != "auto":
                invalid("tool_choice needs tools")
            return
        if self.messages is None:
            invalid("tools need chat messages, not a prompt")
        if self.json_schema is not None:
            invalid("tools and json_schema (response_format) do not combine")
        if len(self.stop) >= MAX_STOP:
            invalid(f"with tools, at most {MAX_STOP - 1} stop sequences (the end of a tool "
                    "call block is one)")

    def _check_resume(self) -> None:
        object.__setattr__(self, "resume_tokens",
                           check_token_ids("resume_tokens", self.resume_tokens))
        if not self.resume_tokens:
            return
        if len(self.resume_tokens) >= self.max_tokens:
            invalid(f"resume_tokens must be fewer than max_tokens ({self.max_tokens}), "
                    f"has {len(self.resume_tokens)}")
        if self.n != 1 or self.logprobs:
            invalid("resume_tokens resume one sample without logprobs: drop n or logprobs")

    _KEYS: ClassVar[frozenset[str]] = frozenset(
        {"model", "messages", "prompt", "max_tokens", "temperature", "top_p", "seed", "stop",
         "stream", "json_schema", "n", "logprobs", "top_logprobs", "resume_tokens"}) | frozenset(
        {"tools", "tool_choice", "tool_name"})

    @classmethod
    def from_wire(cls, data: object) -> GenerateParams:
        with from_peer():
            wire = check_keys("generate params", data, cls._KEYS, frozenset({"model"}))
            messages = None
            if wire.get("messages") is not None:
                items = check_list("messages", wire["messages"], min_len=1,
                                   max_len=MAX_MESSAGES)
                messages = tuple(ChatMessage.from_wire(m, f"messages[{i}]")
                                 for i, m in enumerate(items))
            stop = wire.get("stop", [])
            stop = [stop] if isinstance(stop, str) else stop
            stop = check_list("stop", stop, max_len=MAX_STOP)
            max_tokens = wire.get("max_tokens")
            return cls(model=wire["model"], messages=messages, prompt=wire.get("prompt"),
                       max_tokens=256 if max_tokens is None else max_tokens,
                       temperature=check_finite("temperature", wire.get("temperature", 0.7),
                                                lo=0.0, hi=100.0),
                       top_p=check_finite("top_p", wire.get("top_p", 0.95), lo=0.0, hi=1.0),
                       seed=wire.get("seed"), stop=tuple(stop),
                       stream=wire.get("stream", False), json_schema=wire.get("json_schema"),
                       n=wire.get("n", 1), logprobs=wire.get("logprobs", False),
                       top_logprobs=wire.get("top_logprobs", 0),
                       resume_tokens=check_token_ids("resume_tokens",
                                                     wire.get("resume_tokens", [])),
                       **_tool_fields(wire))

    def to_wire(self) -> dict[str, Any]:
        out: dict[str, Any] = {"model": self.model, "max_tokens": self.max_tokens,
                               "temperature": self.temperature, "top_p": self.top_p,
                               "stop": list(self.stop), "stream": self.stream}
        if self.messages is not None:
            out["messages"] = [m.to_wire() for m in self.messages]
        else:
            out["prompt"] = self.prompt
        if self.seed is not None:
            out["seed"] = self.seed
        if self.json_schema is not None:
            out["json_schema"] = self.json_schema
        if self.n != 1:
            out["n"] = self.n
        if self.logprobs:
            out["logprobs"] = True
            out["top_logprobs"] = self.top_logprobs
        if self.tools:
            out["tools"] = [tool.to_wire() for tool in self.tools]
            out["tool_choice"] = self.tool_choice
            if self.tool_name is not None:
                out["tool_name"] = self.tool_name
        if self.resume_tokens:
            out["resume_tokens"] = list(self.resume_tokens)
        return out


def _tool_fields(wire: Mapping[str, Any]) -> dict[str, Any]:
    """The tool calling fields of a generate params map (only those it sets)."""
    out: dict[str, Any] = {}
    if wire.get("tools") is not None:
        items = check_list("tools", wire["tools"], max_len=MAX_TOOLS)
        out["tools"] = tuple(ToolSpec.from_wire(item) for item in items)
    for key in ("tool_choice", "tool_name"):
        if wire.get(key) is not None:
            out[key] = wire[key]
    return out
