"""Typed, frozen, bounded views of the job replies a coordinator or dispatcher reads.

A reply's ``result`` is a free-form map written by another node: it may lack keys, carry NaN
scores, answer for shards nobody asked for, or hold fewer vectors than texts. Callers parse it
with the kind's ``from_wire`` (giving what they asked for, so counts can be cross-checked)
before reading anything; a map that does not fit raises
:class:`~calinode.protocol.errors.RemoteProtocolError` (``BAD_REQUEST``), which the caller
counts as one failed peer. ``to_wire`` writes the keys the serving node always sent.

=====================  ===============================================
kind                   view
=====================  ===============================================
``embed``              :class:`EmbedReply`
``embed_chunks``       :class:`EmbedChunksReply`
``generate``           :class:`GenerateReply`
``shard.*``            :mod:`calinode.protocol.shard_replies`
=====================  ===============================================
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, Final

import numpy as np
import numpy.typing as npt

from .job_params import (
    MAX_CHOICES,
    MAX_DOC_CHUNKS,
    MAX_LOGPROB_TOKENS,
    MAX_RESUME_TOKENS,
    MAX_TEXT_CHARS,
    MAX_TOP_LOGPROBS,
    GenerateParams,
    check_keys,
    check_list,
    check_token_ids,
)
from .limits import DEFAULT_LIMITS
from .tools import ToolCall, tool_calls_from_wire
from .validation import (
    SHA256,
    check_int,
    check_str,
    from_peer,
    invalid,
)
from .vectors import decode_vectors, encode_vectors

__all__ = [
    "FINISH_REASONS",
    "EmbedChunksReply",
    "EmbedReply",
    "GenerateChunk",
    "GenerateReply",
    "GeneratedChoice",
    "ResumeSwitch",
    "TextSpan",
    "TokenLogprob",
    "token_text",
]

FINISH_REASONS: Final = ("stop", "length", "cancelled", "tool_calls")


def _vectors(value: object, rows: int | None, dim: int | None) -> npt.NDArray[np.float32]:
    vectors = decode_vectors(value, dim=dim)
    if vectors.ndim != 2:
        invalid("reply vectors must be 2-D")
    if rows is not None and len(vectors) != rows:
        invalid(f"reply has {len(vectors)} vectors for {rows} inputs")
    if not np.isfinite(vectors).all():
        invalid("reply vectors hold NaN or infinite values")
    return vectors


def _sha(value: object) -> None:
    check_str("sha256", value, min_len=64, max_len=64, pattern=SHA256)


@dataclass(frozen=True, kw_only=True, slots=True, eq=False)
class EmbedReply:
    """``embed``: one vector per text, token counts, indexes of the truncated texts."""

    model: str
    sha256: str
    dim: int
    vectors: npt.NDArray[np.float32]
    token_counts: tuple[int, ...]
    truncated: tuple[int, ...]

    def __post_init__(self) -> None:
        check_str("model", self.model, max_len=128)
        _sha(self.sha256)
        if self.vectors.ndim != 2 or self.vectors.shape[1] != self.dim:
            invalid(f"dim {self.dim} does not match vectors of shape {self.vectors.shape}")
        if len(self.token_counts) != len(self.vectors):
            invalid(f"{len(self.token_counts)} token counts for {len(self.vectors)} vectors")
        for n in self.token_counts:
            check_int("token_counts", n, lo=0, hi=1 << 31)
        previous = -1
        for i in self.truncated:
            check_int("truncated", i, lo=previous + 1, hi=len(self.vectors) - 1)
            previous = i

    _KEYS: ClassVar[frozenset[str]] = frozenset(
        {"model", "sha256", "dim", "vectors", "token_counts", "truncated"})

    @classmethod
    def from_wire(cls, data: object, *, texts: int | None = None) -> EmbedReply:
        """The reply of an embed of ``texts`` texts (when given, exactly that many rows)."""
        with from_peer():
            wire = check_keys("embed reply", data, cls._KEYS, cls._KEYS)
            check_int("dim", wire["dim"], lo=1, hi=16384)
            rows = texts
            vectors = _vectors(wire["vectors"], rows, wire["dim"])
            limit = DEFAULT_LIMITS.max_array
            return cls(model=wire["model"], sha256=wire["sha256"], dim=wire["dim"],
                       vectors=vectors,
                       token_counts=tuple(check_list("token_counts", wire["token_counts"],
                                                     max_len=limit)),
                       truncated=tuple(check_list("truncated", wire["truncated"],
                                                  max_len=limit)))

    def to_wire(self) -> dict[str, Any]:
        return {"model": self.model, "sha256": self.sha256, "dim": self.dim,
                "vectors": encode_vectors(self.vectors), "token_counts": list(self.token_counts),
                "truncated": list(self.truncated)}


@dataclass(frozen=True, kw_only=True, slots=True)
class TextSpan:
    """One chunk cut by ``embed_chunks``: its text and character offsets into the document."""

    text: str
    start: int
    end: int

    def __post_init__(self) -> None:
        check_str("chunk text", self.text, min_len=0, max_len=MAX_TEXT_CHARS)
        check_int("chunk start", self.start, lo=0, hi=MAX_TEXT_CHARS)
        check_int("chunk end", self.end, lo=self.start, hi=MAX_TEXT_CHARS)

    def to_wire(self) -> dict[str, Any]:
        return {"text": self.text, "start": self.start, "end": self.end}


@dataclass(frozen=True, kw_only=True, slots=True, eq=False)
class EmbedChunksReply:
    """``embed_chunks``: per document its chunks, and one vector per chunk in that order."""

    model: str
    sha256: str
    dim: int
    vectors: npt.NDArray[np.float32]
    chunks: tuple[tuple[TextSpan, ...], ...]

    def __post_init__(self) -> None:
        check_str("model", self.model, max_len=128)
        _sha(self.sha256)
        if self.vectors.ndim != 2 or self.vectors.shape[1] != self.dim:
            invalid(f"dim {self.dim} does not match vectors of shape {self.vectors.shape}")
        total = sum(len(c) for c in self.chunks)
        if total != len(self.vectors):
            invalid(f"{total} chunks but {len(self.vectors)} vectors")

    _KEYS: ClassVar[frozenset[str]] = frozenset({"model", "sha256", "dim", "vectors", "chunks"})

    @classmethod
    def from_wire(cls, data: object, *, docs: int | None = None,
                  dim: int | None = None) -> EmbedChunksReply:
        with from_peer():
            wire = check_keys("embed_chunks reply", data, cls._KEYS, cls._KEYS)
            check_int("dim", wire["dim"], lo=1, hi=16384)
            if dim is not None and wire["dim"] != dim:
                invalid(f"reply vectors have dimension {wire['dim']}, expected {dim}")
            per_doc = check_list("chunks", wire["chunks"], max_len=DEFAULT_LIMITS.max_batch)
            if docs is not None and len(per_doc) != docs:
                invalid(f"chunks for {len(per_doc)} documents, {docs} were sent")
            keys = frozenset({"text", "start", "end"})
            chunks = tuple(
                tuple(TextSpan(**check_keys("chunk", c, keys, keys))
                      for c in check_list("chunks of a document", doc, max_len=MAX_DOC_CHUNKS))
                for doc in per_doc)
            vectors = _vectors(wire["vectors"], sum(len(c) for c in chunks), wire["dim"])
            return cls(model=wire["model"], sha256=wire["sha256"], dim=wire["dim"],
                       vectors=vectors, chunks=chunks)

    def to_wire(self) -> dict[str, Any]:
        return {"model": self.model, "sha256": self.sha256, "dim": self.dim,
                "vectors": encode_vectors(self.vectors),
                "chunks": [[c.to_wire() for c in doc] for doc in self.chunks]}


#: Most UTF-8 bytes of one token's text (llama.cpp vocabularies hold far shorter pieces).
MAX_TOKEN_BYTES: Final = 256
#: Lowest log-probability a reply may carry (a float32 log-softmax stays far above it).
MIN_LOGPROB: Final = -1e6


def token_text(piece: bytes) -> str:
    """A token's text as OpenAI shows it: its UTF-8 bytes decoded, a byte that does not decode
    on its own (half of a character split over tokens) written as ``\\xNN``."""
    return piece.decode("utf-8", errors="backslashreplace")


def _logprob(value: object) -> float:
    if not isinstance(value, float | int) or isinstance(value, bool):
        invalid(f"a logprob must be a number, not {type(value).__name__}")
    number = float(value)
    if not math.isfinite(number) or not MIN_LOGPROB <= number <= 0.0:
        invalid(f"a logprob must be a finite number in {MIN_LOGPROB}..0, is {value!r}")
    return number


def _piece(value: object) -> bytes:
    if not isinstance(value, bytes):
        invalid(f"a token's bytes must be bin, not {type(value).__name__}")
    if len(value) > MAX_TOKEN_BYTES:
        invalid(f"a token has {len(value)} bytes, at most {MAX_TOKEN_BYTES}")
    return value


@dataclass(frozen=True, kw_only=True, slots=True)
class TokenLogprob:
    """One generated token: its bytes, its log-probability under the model and the
    ``top`` most likely alternatives at that position, most likely first.

    On the wire a compact list ``[logprob, bytes, [[logprob, bytes], ...]]`` (a reply may hold
    thousands); the token's text is derived from its bytes (:func:`token_text`), so a peer
    cannot send a text that disagrees with them."""

    piece: bytes
    logprob: float
    top: tuple[tuple[bytes, float], ...] = ()

    def __post_init__(self) -> None:
        _piece(self.piece)
        _logprob(self.logprob)
        check_list("top_logprobs", list(self.top), max_len=MAX_TOP_LOGPROBS)
        for piece, logprob in self.top:
            _piece(piece)
            _logprob(logprob)

    @classmethod
    def from_wire(cls, data: object, *, top: int | None) -> TokenLogprob:
        """One token's entry with exactly ``top`` alternatives (None: up to the maximum)."""
        item = check_list("token logprob", data, min_len=3, max_len=3)
        alternatives = check_list("top_logprobs", item[2], min_len=top or 0,
                                  max_len=MAX_TOP_LOGPROBS if top is None else top)
        pairs = []
        for pair in alternatives:
            logprob, piece = check_list("top logprob", pair, min_len=2, max_len=2)
            pairs.append((_piece(piece), _logprob(logprob)))
        return cls(piece=_piece(item[1]), logprob=_logprob(item[0]), top=tuple(pairs))

    def to_wire(self) -> list[Any]:
        return [self.logprob, self.piece, [[lp, piece] for piece, lp in self.top]]

    def to_openai(self) -> dict[str, Any]:
        """OpenAI's ``choices[i].logprobs.content[j]``."""
        return {"token": token_text(self.piece), "logprob": self.logprob,
                "bytes": list(self.piece),
                "top_logprobs": [{"token": token_text(piece), "logprob": lp,
                                  "bytes": list(piece)} for piece, lp in self.top]}


@dataclass(frozen=True, kw_only=True, slots=True)
class GeneratedChoice:
    """One sample of a ``generate``: its text, why it ended, its tokens' logprobs (None when
    they were not asked for)."""

    text: str
    finish_reason: str
    logprobs: tuple[TokenLogprob, ...] | None = None
    #: the calls the model made (tool calling, issue 15): exactly when ``finish_reason`` is
    #: ``tool_calls``; ``text`` is then what it said before them (often empty)
    tool_calls: tuple[ToolCall, ...] = ()

    def __post_init__(self) -> None:
        check_str("text", self.text, min_len=0, max_len=DEFAULT_LIMITS.max_str)
        if self.finish_reason not in FINISH_REASONS:
            invalid(f"finish_reason must be one of {', '.join(FINISH_REASONS)}")
        if self.logprobs is not None:
            check_list("logprobs", list(self.logprobs), max_len=MAX_LOGPROB_TOKENS)
        if bool(self.tool_calls) != (self.finish_reason == "tool_calls"):
            invalid("tool_calls come exactly with finish_reason tool_calls")

    _KEYS: ClassVar[frozenset[str]] = frozenset({"text", "finish_reason", "logprobs",
                                                 "tool_calls"})

    @classmethod
    def from_wire(cls, data: object, *, asked: GenerateParams | None = None) -> GeneratedChoice:
        wire = check_keys("generated choice", data, cls._KEYS,
                          frozenset({"text", "finish_reason"}))
        return cls(text=wire["text"], finish_reason=wire["finish_reason"],
                   logprobs=_logprobs(wire.get("logprobs"), asked),
                   tool_calls=_tool_calls(wire, asked))

    def to_wire(self) -> dict[str, Any]:
        out: dict[str, Any] = {"text": self.text, "finish_reason": self.finish_reason}
        if self.logprobs is not None:
            out["logprobs"] = [t.to_wire() for t in self.logprobs]
        if self.tool_calls:
            out["tool_calls"] = [call.to_wire() for call in self.tool_calls]
        return out


def _tool_calls(wire: Mapping[str, Any], asked: GenerateParams | None
                ) -> tuple[ToolCall, ...]:
    """A choice's tool calls: only when tools were offered, each naming an offered tool (the
    one ``tool_name`` forced, when it did); a ``required`` call that ended as if complete
    (``stop``) without one is refused too."""
    value = wire.get("tool_calls")
    calls = () if value is None else tool_calls_from_wire(value)
    if asked is None:
        return calls
    offered = {tool.name for tool in asked.tools}
    if calls and not offered:
        invalid("the reply carries tool_calls but no tools were offered")
    for call in calls:
        if call.name not in offered:
            invalid(f"the reply calls {call.name!r}, which was not offered")
        if asked.tool_name is not None and call.name != asked.tool_name:
            invalid(f"the reply calls {call.name!r}, {asked.tool_name!r} was required")
    if asked.tools and asked.tool_choice == "required" and wire.get("finish_reason") == "stop":
        invalid("a tool call was required but the reply has none")
    return calls


def _logprobs(value: object, asked: GenerateParams | None) -> tuple[TokenLogprob, ...] | None:
    """A choice's logprobs: present exactly when they were asked for, at most ``max_tokens``
    tokens, each with exactly ``top_logprobs`` alternatives."""
    top: int | None = None
    limit = MAX_LOGPROB_TOKENS
    if asked is None:
        if value is None:
            return None
    else:
        if value is None:
            if asked.logprobs:
                invalid("logprobs were asked for but the reply has none")
            return None
        if not asked.logprobs:
            invalid("the reply carries logprobs that were not asked for")
        top, limit = asked.top_logprobs, min(asked.max_tokens, MAX_LOGPROB_TOKENS)
    items = check_list("logprobs", value, max_len=limit)
    return tuple(TokenLogprob.from_wire(item, top=top) for item in items)


@dataclass(frozen=True, kw_only=True, slots=True)
class GenerateReply:
    """``generate``: the first (often the only) sample in ``text``/``finish_reason``/
    ``logprobs``, the other ``n - 1`` in ``more_choices``; ``usage`` counts the prompt once
    and the completion tokens of every sample (as OpenAI does)."""

    model: str
    sha256: str
    text: str
    finish_reason: str
    prompt_tokens: int
    completion_tokens: int
    logprobs: tuple[TokenLogprob, ...] | None = None
    more_choices: tuple[GeneratedChoice, ...] = ()
    #: the first sample's tool calls (issue 15)
    tool_calls: tuple[ToolCall, ...] = ()
    # -- resume block (issue 14): the peers this generation moved between, in order --
    resumed: tuple[ResumeSwitch, ...] = ()

    def __post_init__(self) -> None:
        check_list("resumed", list(self.resumed), max_len=MAX_RESUMES)
        check_str("model", self.model, max_len=128)
        _sha(self.sha256)
        check_int("prompt_tokens", self.prompt_tokens, lo=0, hi=1 << 31)
        check_int("completion_tokens", self.completion_tokens, lo=0, hi=1 << 31)
        GeneratedChoice(text=self.text, finish_reason=self.finish_reason,
                        logprobs=self.logprobs, tool_calls=self.tool_calls)
        check_list("more_choices", list(self.more_choices), max_len=MAX_CHOICES - 1)

    @property
    def choices(self) -> tuple[GeneratedChoice, ...]:
        first = GeneratedChoice(text=self.text, finish_reason=self.finish_reason,
                                logprobs=self.logprobs, tool_calls=self.tool_calls)
        return (first, *self.more_choices)

    _KEYS: ClassVar[frozenset[str]] = frozenset(
        {"model", "sha256", "text", "finish_reason", "usage", "logprobs", "more_choices",
         "tool_calls", "resumed"})
    _REQUIRED: ClassVar[frozenset[str]] = frozenset(
        {"model", "sha256", "text", "finish_reason", "usage"})

    @classmethod
    def from_wire(cls, data: object, *, asked: GenerateParams | None = None) -> GenerateReply:
        """The reply to ``asked`` (when given: exactly ``asked.n`` choices, logprobs exactly
        when asked for, with ``top_logprobs`` alternatives per token)."""
        with from_peer():
            wire = check_keys("generate reply", data, cls._KEYS, cls._REQUIRED)
            keys = frozenset({"prompt_tokens", "completion_tokens"})
            usage = check_keys("usage", wire["usage"], keys, keys)
            n = 1 if asked is None else asked.n
            more = check_list("more_choices", wire.get("more_choices", []), min_len=n - 1,
                              max_len=MAX_CHOICES - 1 if asked is None else n - 1)
            return cls(model=wire["model"], sha256=wire["sha256"], text=wire["text"],
                       finish_reason=wire["finish_reason"],
                       logprobs=_logprobs(wire.get("logprobs"), asked),
                       more_choices=tuple(GeneratedChoice.from_wire(c, asked=asked)
                                          for c in more),
                       tool_calls=_tool_calls(wire, asked),
                       resumed=ResumeSwitch.list_from_wire(wire.get("resumed", [])), **usage)

    @classmethod
    def parser_for(cls, params: Mapping[str, Any]) -> Callable[[object], GenerateReply]:
        """The reply parser of a generate request whose (our own, valid) ``params`` are
        given: a reply that does not answer what was asked is refused like a malformed one."""
        asked = GenerateParams.from_wire(dict(params))
        return functools.partial(cls.from_wire, asked=asked)

    def to_wire(self) -> dict[str, Any]:
        out: dict[str, Any] = {"model": self.model, "sha256": self.sha256, "text": self.text,
                               "finish_reason": self.finish_reason,
                               "usage": {"prompt_tokens": self.prompt_tokens,
                                         "completion_tokens": self.completion_tokens}}
        if self.logprobs is not None:
            out["logprobs"] = [t.to_wire() for t in self.logprobs]
        if self.more_choices:
            out["more_choices"] = [c.to_wire() for c in self.more_choices]
        if self.tool_calls:
            out["tool_calls"] = [call.to_wire() for call in self.tool_calls]
        if self.resumed:
            out["resumed"] = [r.to_wire() for r in self.resumed]
        return out


# -- resume (issue 14: a generation outlives the peer that serves it) -----------------------

#: Most times one generation moves to another peer (each costs a replay of the tokens so far).
MAX_RESUMES: Final = 2
MAX_PEER_ID_CHARS: Final = 128
#: Most token ids one streamed chunk may carry (a chunk covers at most a stream interval).
MAX_CHUNK_TOKENS: Final = 4096


@dataclass(frozen=True, kw_only=True, slots=True)
class ResumeSwitch:
    """One move of a generation: from the peer that died or stalled to the one that went on,
    after ``at_token`` generated tokens (the ones the relay had received and replayed)."""

    from_peer: str
    to_peer: str
    at_token: int

    def __post_init__(self) -> None:
        check_str("resumed.from", self.from_peer, min_len=1, max_len=MAX_PEER_ID_CHARS)
        check_str("resumed.to", self.to_peer, min_len=1, max_len=MAX_PEER_ID_CHARS)
        check_int("resumed.at_token", self.at_token, lo=0, hi=MAX_RESUME_TOKENS)

    _KEYS: ClassVar[frozenset[str]] = frozenset({"from", "to", "at_token"})

    @classmethod
    def list_from_wire(cls, data: object) -> tuple[ResumeSwitch, ...]:
        items = check_list("resumed", data, max_len=MAX_RESUMES)
        out = []
        for item in items:
            wire = check_keys("resumed", item, cls._KEYS, cls._KEYS)
            out.append(cls(from_peer=wire["from"], to_peer=wire["to"],
                           at_token=wire["at_token"]))
        return tuple(out)

    def to_wire(self) -> dict[str, Any]:
        return {"from": self.from_peer, "to": self.to_peer, "at_token": self.at_token}


@dataclass(frozen=True, kw_only=True, slots=True)
class GenerateChunk:
    """One streamed piece of a ``generate``: its ``text`` and the ids of the ``tokens`` it
    covers (the tokens sampled since the previous chunk, whose text the serving node
    released), so a relay can resume the generation elsewhere exactly where it stands. A
    node that predates resume sends no ``tokens`` (None): its stream cannot be resumed."""

    text: str
    tokens: tuple[int, ...] | None = None

    def __post_init__(self) -> None:
        check_str("chunk text", self.text, min_len=0, max_len=MAX_TEXT_CHARS)
        if self.tokens is not None:
            check_token_ids("chunk tokens", self.tokens, max_len=MAX_CHUNK_TOKENS)

    _KEYS: ClassVar[frozenset[str]] = frozenset({"text", "tokens"})

    @classmethod
    def from_wire(cls, data: object) -> GenerateChunk:
        with from_peer():
            wire = check_keys("generate chunk", data, cls._KEYS, frozenset({"text"}))
            tokens = wire.get("tokens")
            return cls(text=wire["text"], tokens=None if tokens is None else check_token_ids(
                "chunk tokens", tokens, max_len=MAX_CHUNK_TOKENS))

    def to_wire(self) -> dict[str, Any]:
        out: dict[str, Any] = {"text": self.text}
        if self.tokens is not None:
            out["tokens"] = list(self.tokens)
        return out
