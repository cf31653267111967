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

from dataclasses import dataclass
from typing import Any, ClassVar, Final

import numpy as np
import numpy.typing as npt

from .job_params import (
    MAX_DOC_CHUNKS,
    MAX_TEXT_CHARS,
    check_keys,
    check_list,
)
from .limits import DEFAULT_LIMITS
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
    "GenerateReply",
    "TextSpan",
]

FINISH_REASONS: Final = ("stop", "length", "cancelled")


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


@dataclass(frozen=True, kw_only=True, slots=True)
class GenerateReply:
    model: str
    sha256: str
    text: str
    finish_reason: str
    prompt_tokens: int
    completion_tokens: int

    def __post_init__(self) -> None:
        check_str("model", self.model, max_len=128)
        _sha(self.sha256)
        check_str("text", self.text, min_len=0, max_len=DEFAULT_LIMITS.max_str)
        if self.finish_reason not in FINISH_REASONS:
            invalid(f"finish_reason must be one of {', '.join(FINISH_REASONS)}")
        check_int("prompt_tokens", self.prompt_tokens, lo=0, hi=1 << 31)
        check_int("completion_tokens", self.completion_tokens, lo=0, hi=1 << 31)

    _KEYS: ClassVar[frozenset[str]] = frozenset(
        {"model", "sha256", "text", "finish_reason", "usage"})

    @classmethod
    def from_wire(cls, data: object) -> GenerateReply:
        with from_peer():
            wire = check_keys("generate reply", data, cls._KEYS, cls._KEYS)
            keys = frozenset({"prompt_tokens", "completion_tokens"})
            usage = check_keys("usage", wire["usage"], keys, keys)
            return cls(model=wire["model"], sha256=wire["sha256"], text=wire["text"],
                       finish_reason=wire["finish_reason"], **usage)

    def to_wire(self) -> dict[str, Any]:
        return {"model": self.model, "sha256": self.sha256, "text": self.text,
                "finish_reason": self.finish_reason,
                "usage": {"prompt_tokens": self.prompt_tokens,
                          "completion_tokens": self.completion_tokens}}
