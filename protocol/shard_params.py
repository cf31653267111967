"""Typed, frozen, bounded views of the ``params`` of the ``shard.*`` job kinds, and of a
document as shard jobs carry it (:class:`WireDoc`). The rules are those of
:mod:`calinode.protocol.job_params` (exact keys, typed values, every count and size under a
maximum; a map that does not fit is ``BAD_REQUEST`` naming the field), whose shared checks and
limits they use.

=====================  ===========================================================
kind                   view
=====================  ===========================================================
``shard.write``        :class:`ShardWriteParams` (documents as :class:`WireDoc`)
``shard.write_many``   :class:`ShardWriteManyParams` (per shard, :class:`ShardWriteItem`)
``shard.search``       :class:`ShardSearchParams` (shards de-duplicated)
``shard.fetch``        :class:`ShardFetchParams` (chunk ids of one shard)
``shard.changes``      :class:`ShardChangesParams`
``shard.info``         :class:`ShardInfoParams`
=====================  ===========================================================

The document form (:class:`WireDoc`) is shared with the ``shard.changes`` reply
(:mod:`calinode.protocol.shard_replies`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import numpy.typing as npt

from .collections import MAX_SHARDS, CollectionDef
from .job_params import (
    MAX_BATCH,
    MAX_CHANGES_LIMIT,
    MAX_DOC_ID_CHARS,
    MAX_FETCH_IDS,
    MAX_K,
    MAX_KEYS_LIMIT,
    check_collection,
    check_keys,
    check_list,
)
from .validation import MAX_INT64, check_bytes, check_instance, check_int, check_str, from_peer
from .validation import invalid as invalid
from .vectors import decode_vectors, encode_vectors
from .wire_docs import WireDoc, docs_of

__all__ = [
    "ShardChangesParams",
    "ShardFetchParams",
    "ShardInfoParams",
    "ShardSearchParams",
    "ShardWriteItem",
    "ShardWriteManyParams",
    "ShardWriteParams",
    "decode_ids",
    "encode_ids",
]


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
        check_collection(self.collection)
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
                       docs=docs_of(wire["docs"], min_len=0, max_len=MAX_BATCH),
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
        return cls(shard=wire["shard"], docs=docs_of(wire["docs"], min_len=1, max_len=MAX_BATCH),
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
        check_collection(self.collection)
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
        check_collection(self.collection)
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
        check_collection(self.collection)
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
        check_collection(self.collection)
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
        check_collection(self.collection)
        check_instance("check", self.check, bool)

    @classmethod
    def from_wire(cls, data: object) -> ShardInfoParams:
        with from_peer():
            wire = check_keys("shard.info params", data, frozenset({"collection", "check"}),
                              frozenset({"collection"}))
            return cls(collection=wire["collection"], check=wire.get("check", False))

    def to_wire(self) -> dict[str, Any]:
        return {"collection": self.collection, "check": self.check}
