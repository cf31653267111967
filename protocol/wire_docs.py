"""A document as the shard jobs carry it: :class:`WireDoc` (its chunks as :class:`WireChunk`
and one vector per chunk), in ``shard.write``/``shard.write_many`` params
(:mod:`calinode.protocol.shard_params`) and ``shard.changes`` replies
(:mod:`calinode.protocol.shard_replies`). Bounded like every peer message: exact keys, typed
values, at most ``MAX_DOC_CHUNKS`` chunks, vectors as wide as the chunks are many."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import numpy.typing as npt

from .job_params import (
    MAX_CONTENT_HASH,
    MAX_DOC_CHUNKS,
    MAX_DOC_ID_CHARS,
    MAX_TEXT_CHARS,
    check_json,
    check_keys,
    check_list,
)
from .validation import MAX_INT64, check_instance, check_int, check_str, from_peer, invalid
from .vectors import decode_vectors, encode_vectors

__all__ = ["WireChunk", "WireDoc", "docs_of"]

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


def docs_of(value: object, *, min_len: int, max_len: int) -> tuple[WireDoc, ...]:
    return tuple(WireDoc.from_wire(d)
                 for d in check_list("docs", value, min_len=min_len, max_len=max_len))
