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
``shard.write``        :class:`ShardWriteParams` (documents as :class:`WireDoc`)
``shard.write_many``   :class:`ShardWriteManyParams` (per shard, :class:`ShardWriteItem`)
``shard.search``       :class:`ShardSearchParams` (shards de-duplicated)
``shard.fetch``        :class:`ShardFetchParams` (chunk ids of one shard)
``shard.changes``      :class:`ShardChangesParams`
``shard.info``         :class:`ShardInfoParams`
=====================  ===========================================================

The document form (:class:`WireDoc`) is shared with the ``shard.changes`` reply
(:mod:`calinode.protocol.job_replies`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, Final

import numpy as np
import numpy.typing as npt

from .collections import COLLECTION_NAME, MAX_CHUNK_TOKENS, MAX_DIM, MAX_SHARDS, CollectionDef
from .limits import DEFAULT_LIMITS
from .validation import MAX_INT64, check_bytes, check_instance, check_int, check_str, from_peer
from .validation import invalid as invalid
from .vectors import decode_vectors, encode_vectors

__all__ = [
    "INPUT_TYPES",
    "MAX_FETCH_IDS",
    "MAX_K",
    "ChatMessage",
    "EchoParams",
    "EmbedChunksParams",
    "EmbedParams",
    "GenerateParams",
    "PingParams",
    "ShardChangesParams",
    "ShardFetchParams",
    "ShardInfoParams",
    "ShardSearchParams",
    "ShardWriteItem",
    "ShardWriteManyParams",
    "ShardWriteParams",
    "WireChunk",
    "WireDoc",
    "check_finite",
    "check_json",
    "check_keys",
    "check_list",
    "decode_ids",
    "encode_ids",
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


def _model(value: object) -> None:
    check_str("model", value, max_len=MAX_MODEL_NAME)


def _collection(value: object) -> None:
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


@dataclass(frozen=True, kw_only=True, slots=True)
class EchoParams:
    """``echo``: one payload (bytes or str) sent back as it came."""

    payload: bytes | str

    def __post_init__(self) -> None:
        if isinstance(self.payload, str):
            check_str("payload", self.payload, min_len=0, max_len=DEFAULT_LIMITS.max_str)
        else:
            check_bytes("payload", self.payload, max_len=DEFAULT_LIMITS.max_bin)

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
    role: str
    content: str

    def __post_init__(self) -> None:
        check_str("message role", self.role, max_len=MAX_ROLE)
        check_str("message content", self.content, min_len=0, max_len=MAX_PROMPT_CHARS)

    def to_wire(self) -> dict[str, str]:
        return {"role": self.role, "content": self.content}


@dataclass(frozen=True, kw_only=True, slots=True)
class GenerateParams:
    """``generate``: exactly one of ``messages`` (chat) or ``prompt`` (completion)."""

    model: str
    messages: tuple[ChatMessage, ...] | None = None
    prompt: str | None = None
    max_tokens: int = 256
    temperature: float = 0.7
    top_p: float = 0.95
    seed: int | None = None
    stop: tuple[str, ...] = ()
    stream: bool = False

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

    _KEYS: ClassVar[frozenset[str]] = frozenset(
        {"model", "messages", "prompt", "max_tokens", "temperature",
                              "top_p", "seed", "stop", "stream"})

    @classmethod
    def from_wire(cls, data: object) -> GenerateParams:
        with from_peer():
            wire = check_keys("generate params", data, cls._KEYS, frozenset({"model"}))
            messages = None
            if wire.get("messages") is not None:
                items = check_list("messages", wire["messages"], min_len=1,
                                   max_len=MAX_MESSAGES)
                keys = frozenset({"role", "content"})
                messages = tuple(ChatMessage(**check_keys(f"messages[{i}]", m, keys, keys))
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
                       stream=wire.get("stream", False))

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
        return out


# -- documents on the wire ---------------------------------------------------------------------

@dataclass(frozen=True, kw_only=True, slots=True)
class WireChunk:
    text: str
    metadata: Mapping[str, Any]

    def __post_init__(self) -> None:
        check_str("chunk text", self.text, min_len=0, max_len=MAX_TEXT_CHARS)
        check_json("chunk metadata", dict(self.metadata) if isinstance(
            self.metadata, Mapping) else self.metadata)


@dataclass(frozen=True, kw_only=True, slots=True, eq=False)
class WireDoc:
    """A whole document (or a tombstone) as ``shard.write`` and ``shard.changes`` carry it.

    ``vectors`` has one row per chunk (read-only float32, width not yet pinned: see
    :meth:`vectors_of`), ``None`` when the document has no chunks.
    """

    doc_id: str
    content_hash: str
    version: int
    deleted: bool
    chunks: tuple[WireChunk, ...]
    vectors: npt.NDArray[np.float32] | None

    def __post_init__(self) -> None:
        check_str("doc_id", self.doc_id, max_len=MAX_DOC_ID_CHARS)
        check_str("content_hash", self.content_hash, min_len=0, max_len=MAX_CONTENT_HASH)
        check_int("version", self.version, lo=0, hi=MAX_INT64)
        check_instance("deleted", self.deleted, bool)
        check_list("chunks", list(self.chunks), max_len=MAX_DOC_CHUNKS)
        rows = 0 if self.vectors is None else len(self.vectors)
        if self.vectors is not None and self.vectors.ndim != 2:
            invalid(f"{self.doc_id!r}: vectors must be 2-D")
        if rows != len(self.chunks):
            invalid(f"{self.doc_id!r}: {len(self.chunks)} chunks but {rows} vectors")
        if self.deleted and self.chunks:
            invalid(f"{self.doc_id!r}: a deleted document has no chunks")

    def vectors_of(self, dim: int) -> npt.NDArray[np.float32]:
        """The chunk vectors, refused (``BAD_REQUEST``) unless they are ``dim`` wide."""
        if self.vectors is None:
            return np.zeros((0, dim), dtype=np.float32)
        if self.vectors.shape[1] != dim:
            with from_peer():
                invalid(f"{self.doc_id!r}: vectors of dimension {self.vectors.shape[1]}, "
                        f"expected {dim}")
        return self.vectors

    _KEYS: ClassVar[frozenset[str]] = frozenset(
        {"doc_id", "content_hash", "version", "deleted", "chunks",
                              "vectors"})

    @classmethod
    def from_wire(cls, data: object) -> WireDoc:
        with from_peer():
            wire = check_keys("document", data, cls._KEYS,
                              frozenset({"doc_id", "content_hash", "version"}))
            items = check_list("chunks", wire.get("chunks", []), max_len=MAX_DOC_CHUNKS)
            ckeys = frozenset({"text", "metadata"})
            chunks = tuple(
                WireChunk(text=c["text"], metadata=c.get("metadata") or {})
                for c in (check_keys("chunk", c, ckeys, frozenset({"text"})) for c in items))
            vectors = None
            if chunks or wire.get("vectors") is not None:
                if "vectors" not in wire:
                    invalid("a document with chunks needs vectors")
                vectors = decode_vectors(wire["vectors"])
                if vectors.ndim != 2:
                    invalid("document vectors must be 2-D")
            return cls(doc_id=wire["doc_id"], content_hash=wire["content_hash"],
                       version=wire["version"], deleted=wire.get("deleted", False),
                       chunks=chunks, vectors=vectors)

    def to_wire(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "doc_id": self.doc_id, "content_hash": self.content_hash, "version": self.version,
            "deleted": self.deleted,
            "chunks": [{"text": c.text, "metadata": dict(c.metadata)} for c in self.chunks]}
        if self.vectors is not None:
            out["vectors"] = encode_vectors(self.vectors)
        return out


def _docs(value: object, *, min_len: int, max_len: int) -> tuple[WireDoc, ...]:
    return tuple(WireDoc.from_wire(d)
                 for d in check_list("docs", value, min_len=min_len, max_len=max_len))


def _shard(value: object) -> int:
    check_int("shard", value, lo=0, hi=MAX_SHARDS - 1)
    assert isinstance(value, int)
    return value


# -- shard jobs --------------------------------------------------------------------------------

@dataclass(frozen=True, kw_only=True, slots=True)
class ShardWriteParams:
    """``shard.write``: whole documents for one shard (``seed``: this replica starts it).

    The shard is bounded here by ``MAX_SHARDS``; the handler bounds it by the collection's
    own shard count once it knows the definition.
    """

    collection: str
    definition: CollectionDef | None
    shard: int
    docs: tuple[WireDoc, ...]
    seed: bool = False

    def __post_init__(self) -> None:
        _collection(self.collection)
        if self.definition is not None and self.definition.name != self.collection:
            invalid("definition is of another collection")
        _shard(self.shard)
        check_instance("seed", self.seed, bool)

    _KEYS: ClassVar[frozenset[str]] = frozenset(
        {"collection", "definition", "shard", "docs", "seed"})

    @classmethod
    def from_wire(cls, data: object) -> ShardWriteParams:
        with from_peer():
            wire = check_keys("shard.write params", data, cls._KEYS,
                              frozenset({"collection", "shard", "docs"}))
            definition = wire.get("definition")
            seed = wire.get("seed", False)
            return cls(collection=wire["collection"],
                       definition=None if definition is None else CollectionDef.from_wire(
                           definition),
                       shard=wire["shard"],
                       docs=_docs(wire["docs"], min_len=0, max_len=MAX_BATCH),
                       seed=False if seed is None else seed)

    def to_wire(self) -> dict[str, Any]:
        out: dict[str, Any] = {"collection": self.collection, "shard": self.shard,
                               "docs": [d.to_wire() for d in self.docs], "seed": self.seed}
        if self.definition is not None:
            out["definition"] = self.definition.to_wire()
        return out


@dataclass(frozen=True, kw_only=True, slots=True)
class ShardWriteItem:
    """One shard's part of a ``shard.write_many``: as a ``shard.write`` would carry it."""

    shard: int
    docs: tuple[WireDoc, ...]
    seed: bool = False

    def __post_init__(self) -> None:
        _shard(self.shard)
        check_instance("seed", self.seed, bool)
        if not self.docs:
            invalid(f"shard {self.shard}: docs must be a non-empty list")

    _KEYS: ClassVar[frozenset[str]] = frozenset({"shard", "docs", "seed"})

    @classmethod
    def from_wire(cls, data: object) -> ShardWriteItem:
        wire = check_keys("shard.write_many item", data, cls._KEYS,
                          frozenset({"shard", "docs"}))
        return cls(shard=wire["shard"], docs=_docs(wire["docs"], min_len=1, max_len=MAX_BATCH),
                   seed=wire.get("seed", False))

    def to_wire(self) -> dict[str, Any]:
        return {"shard": self.shard, "docs": [d.to_wire() for d in self.docs],
                "seed": self.seed}


@dataclass(frozen=True, kw_only=True, slots=True)
class ShardWriteManyParams:
    """``shard.write_many``: the writes of one ingest batch to one owner, for several shards
    of one collection in one request (a batch's documents fall in many shards, and a request
    per shard and owner costs a stream each). Each shard at most once; all the documents
    together at most ``MAX_BATCH``, as one ``shard.write`` (so the frame limits hold)."""

    collection: str
    definition: CollectionDef | None
    writes: tuple[ShardWriteItem, ...]

    def __post_init__(self) -> None:
        _collection(self.collection)
        if self.definition is not None and self.definition.name != self.collection:
            invalid("definition is of another collection")
        check_list("writes", list(self.writes), min_len=1, max_len=MAX_SHARDS)
        shards = [item.shard for item in self.writes]
        if len(set(shards)) != len(shards):
            invalid("writes must name each shard once")
        if sum(len(item.docs) for item in self.writes) > MAX_BATCH:
            invalid(f"writes may carry at most {MAX_BATCH} documents together")

    _KEYS: ClassVar[frozenset[str]] = frozenset({"collection", "definition", "writes"})

    @classmethod
    def from_wire(cls, data: object) -> ShardWriteManyParams:
        with from_peer():
            wire = check_keys("shard.write_many params", data, cls._KEYS,
                              frozenset({"collection", "writes"}))
            definition = wire.get("definition")
            return cls(collection=wire["collection"],
                       definition=None if definition is None else CollectionDef.from_wire(
                           definition),
                       writes=tuple(ShardWriteItem.from_wire(item) for item in check_list(
                           "writes", wire["writes"], min_len=1, max_len=MAX_SHARDS)))

    def to_wire(self) -> dict[str, Any]:
        out: dict[str, Any] = {"collection": self.collection,
                               "writes": [item.to_wire() for item in self.writes]}
        if self.definition is not None:
            out["definition"] = self.definition.to_wire()
        return out


@dataclass(frozen=True, kw_only=True, slots=True, eq=False)
class ShardSearchParams:
    """``shard.search``: the top ``k`` of each query on each of ``shards`` (sorted, each
    once: a peer that repeats a shard gets it searched once). With ``per_doc``: the top
    ``k`` documents, each by its best chunk (a document lives in one shard)."""

    collection: str
    shards: tuple[int, ...]
    vectors: npt.NDArray[np.float32]
    k: int
    per_doc: bool = False

    def __post_init__(self) -> None:
        _collection(self.collection)
        check_list("shards", list(self.shards), min_len=1, max_len=MAX_SHARDS)
        for s in self.shards:
            _shard(s)
        if list(self.shards) != sorted(set(self.shards)):
            invalid("shards must be sorted and distinct")
        check_int("k", self.k, lo=1, hi=MAX_K)
        check_instance("per_doc", self.per_doc, bool)
        if self.vectors.ndim != 2 or len(self.vectors) < 1:
            invalid("vectors must be a 2-D batch of at least one query")

    @property
    def queries(self) -> int:
        return len(self.vectors)

    _KEYS: ClassVar[frozenset[str]] = frozenset(
        {"collection", "shards", "vectors", "k", "per_doc"})
    _REQUIRED: ClassVar[frozenset[str]] = frozenset({"collection", "shards", "vectors", "k"})

    @classmethod
    def from_wire(cls, data: object) -> ShardSearchParams:
        with from_peer():
            wire = check_keys("shard.search params", data, cls._KEYS, cls._REQUIRED)
            # bounded before de-duplication: the list itself is what costs memory and time
            shards = check_list("shards", wire["shards"], min_len=1, max_len=MAX_SHARDS)
            for s in shards:
                _shard(s)
            vectors = decode_vectors(wire["vectors"])
            if vectors.ndim == 1:
                vectors = vectors.reshape(1, -1)
            return cls(collection=wire["collection"], shards=tuple(sorted(set(shards))),
                       vectors=vectors, k=wire["k"], per_doc=wire.get("per_doc", False))

    def to_wire(self) -> dict[str, Any]:
        out: dict[str, Any] = {"collection": self.collection, "shards": list(self.shards),
                               "vectors": encode_vectors(self.vectors), "k": self.k}
        if self.per_doc:
            out["per_doc"] = True
        return out


def encode_ids(ids: npt.ArrayLike) -> bytes:
    """Chunk ids (non-negative int64, the stores' FAISS ids) as little-endian int64 bytes."""
    return np.ascontiguousarray(ids, dtype="<i8").tobytes()


def decode_ids(name: str, value: object, *, max_len: int) -> npt.NDArray[np.int64]:
    """The chunk ids of ``value`` (bytes of little-endian int64): at most ``max_len``, each
    non-negative."""
    check_bytes(name, value, max_len=8 * max_len)
    assert isinstance(value, bytes)
    if len(value) % 8:
        invalid(f"{name} must be a whole number of int64 values")
    ids = np.frombuffer(value, dtype="<i8").astype(np.int64)
    if len(ids) and int(ids.min()) < 0:
        invalid(f"{name} holds a negative chunk id")
    return ids


@dataclass(frozen=True, kw_only=True, slots=True, eq=False)
class ShardFetchParams:
    """``shard.fetch``: the ``(doc_id, chunk)`` key of each chunk id of one shard, with its
    text and metadata unless ``text`` is false. The holder answers a prefix of ``ids`` that
    fits its reply budget (``protocol/search_budget.py``)."""

    collection: str
    shard: int
    ids: npt.NDArray[np.int64]
    text: bool = True

    def __post_init__(self) -> None:
        _collection(self.collection)
        _shard(self.shard)
        check_instance("text", self.text, bool)
        if self.ids.ndim != 1 or not 1 <= len(self.ids) <= MAX_FETCH_IDS:
            invalid(f"ids must be 1 to {MAX_FETCH_IDS} chunk ids")

    _KEYS: ClassVar[frozenset[str]] = frozenset({"collection", "shard", "ids", "text"})

    @classmethod
    def from_wire(cls, data: object) -> ShardFetchParams:
        with from_peer():
            wire = check_keys("shard.fetch params", data, cls._KEYS,
                              frozenset({"collection", "shard", "ids"}))
            return cls(collection=wire["collection"], shard=wire["shard"],
                       ids=decode_ids("ids", wire["ids"], max_len=MAX_FETCH_IDS),
                       text=wire.get("text", True))

    def to_wire(self) -> dict[str, Any]:
        return {"collection": self.collection, "shard": self.shard,
                "ids": encode_ids(self.ids), "text": self.text}


@dataclass(frozen=True, kw_only=True, slots=True)
class ShardChangesParams:
    """``shard.changes``, in one of three modes:

    - a page of whole documents after ``(since_version, after_doc_id)`` in (version, doc_id)
      order (the default);
    - ``keys_only``: a page of up to ``limit`` (at most ``MAX_KEYS_LIMIT``) document states
      ``(doc_id, content_hash, version, deleted)`` after ``after_doc_id`` in doc_id order,
      no chunk: replica sync compares them with its own before pulling anything;
    - ``doc_ids``: the whole documents of those ids (at most ``MAX_CHANGES_LIMIT``), the ones
      a keys-only comparison found missing or older here.

    The new keys are sent only when used, so a plain page request reads as it always did."""

    collection: str
    shard: int
    since_version: int = 0
    after_doc_id: str = ""
    limit: int = 200
    keys_only: bool = False
    doc_ids: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        _collection(self.collection)
        _shard(self.shard)
        check_int("since_version", self.since_version, lo=0, hi=MAX_INT64)
        check_str("after_doc_id", self.after_doc_id, min_len=0, max_len=MAX_DOC_ID_CHARS)
        check_instance("keys_only", self.keys_only, bool)
        check_int("limit", self.limit, lo=1,
                  hi=MAX_KEYS_LIMIT if self.keys_only else MAX_CHANGES_LIMIT)
        check_list("doc_ids", list(self.doc_ids), max_len=MAX_CHANGES_LIMIT)
        for doc_id in self.doc_ids:
            check_str("doc_id", doc_id, max_len=MAX_DOC_ID_CHARS)
        if len(set(self.doc_ids)) != len(self.doc_ids):
            invalid("doc_ids must name each document once")
        if self.keys_only and self.since_version:
            invalid("a keys-only page is in doc_id order: since_version must be 0")
        if self.doc_ids and (self.keys_only or self.since_version or self.after_doc_id):
            invalid("doc_ids goes with neither keys_only nor a page cursor")

    _KEYS: ClassVar[frozenset[str]] = frozenset(
        {"collection", "shard", "since_version", "after_doc_id", "limit", "keys_only",
         "doc_ids"})

    @classmethod
    def from_wire(cls, data: object) -> ShardChangesParams:
        with from_peer():
            wire = dict(check_keys("shard.changes params", data, cls._KEYS,
                                   frozenset({"collection", "shard"})))
            if "doc_ids" in wire:
                wire["doc_ids"] = tuple(check_list("doc_ids", wire["doc_ids"],
                                                   max_len=MAX_CHANGES_LIMIT))
            return cls(**wire)

    def to_wire(self) -> dict[str, Any]:
        wire: dict[str, Any] = {"collection": self.collection, "shard": self.shard,
                                "since_version": self.since_version,
                                "after_doc_id": self.after_doc_id, "limit": self.limit}
        if self.keys_only:
            wire["keys_only"] = True
        if self.doc_ids:
            wire["doc_ids"] = list(self.doc_ids)
        return wire


@dataclass(frozen=True, kw_only=True, slots=True)
class ShardInfoParams:
    """``shard.info``: counts and digests of the replicas held. ``check`` asks for the full
    consistency check (it reads and hashes every chunk row); without it only the cheap
    checks run (counts of FAISS vectors against chunk rows)."""

    collection: str
    check: bool = False

    def __post_init__(self) -> None:
        _collection(self.collection)
        check_instance("check", self.check, bool)

    @classmethod
    def from_wire(cls, data: object) -> ShardInfoParams:
        with from_peer():
            wire = check_keys("shard.info params", data, frozenset({"collection", "check"}),
                              frozenset({"collection"}))
            return cls(collection=wire["collection"], check=wire.get("check", False))

    def to_wire(self) -> dict[str, Any]:
        return {"collection": self.collection, "check": self.check}
