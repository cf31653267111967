"""The record types of a shard store: what is written (:class:`DocWrite`, :class:`ChunkWrite`),
exchanged between replicas (:class:`DocRecord`), found (:class:`Hit`, :class:`StoredChunk`) and
reported (:class:`UpsertResult`, :class:`ShardStoreStatistics`). Plain data, no I/O."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from calinode.models.store.digest import Outcome
from calinode.protocol.ranking import rank_key

__all__ = [
    "OUTCOME_NAMES", "ChunkWrite", "DocRecord", "DocWrite", "Hit", "IndexKind", "Metric",
    "ShardStoreStatistics", "StoredChunk", "UpsertResult", "hit_sort_key",
]

IndexKind = Literal["flat", "hnsw"]
Metric = Literal["ip"]


@dataclass(frozen=True, eq=False, slots=True)
class ChunkWrite:
    """One chunk of a document: its text, its (dim,) float32 vector, JSON-able metadata."""

    text: str
    vector: npt.NDArray[np.float32]
    metadata: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, eq=False, slots=True)
class DocWrite:
    """A whole document to store; its chunks are numbered 0..n-1 in order.

    ``content_hash`` must change whenever the text, metadata or vectors change (the store
    compares hashes, never contents).
    """

    doc_id: str
    content_hash: str
    version: int
    chunks: Sequence[ChunkWrite]


@dataclass(frozen=True, eq=False, slots=True)
class DocRecord:
    """A document as exported by :meth:`ShardStore.changes`: live, or a tombstone (``deleted``,
    ``content_hash == ""``, no chunks). Vectors are read-only views of the stored bytes."""

    doc_id: str
    content_hash: str
    version: int
    deleted: bool
    chunks: Sequence[ChunkWrite]


@dataclass(frozen=True, slots=True)
class Hit:
    """A chunk found by :meth:`ShardStore.search`; ``score`` is the inner product."""

    doc_id: str
    chunk: int
    score: float


def hit_sort_key(hit: Hit) -> tuple[float, str, int]:
    """Sort key of the search order: :func:`calinode.protocol.ranking.rank_key`."""
    return rank_key(hit.score, hit.doc_id, hit.chunk)


@dataclass(frozen=True, slots=True)
class StoredChunk:
    """What :meth:`ShardStore.fetch` returns for one ``(doc_id, chunk)``."""

    text: str
    metadata: dict[str, Any]
    content_hash: str
    version: int


#: What a writer is told about each document (a bump or tombstone that changed nothing
#: visible counts as unchanged).
OUTCOME_NAMES: dict[Outcome, str] = {
    Outcome.INSERT: "inserted", Outcome.REPLACE: "replaced", Outcome.DELETE: "deleted",
    Outcome.UNCHANGED: "unchanged", Outcome.BUMP: "unchanged", Outcome.TOMBSTONE: "unchanged",
    Outcome.STALE: "stale",
}


@dataclass(frozen=True, slots=True)
class UpsertResult:
    """Documents per outcome of one write, and the chunks it added and removed.

    ``unchanged`` also counts a version advanced without new content, and a tombstone written
    or advanced for a document that was not live.
    """

    inserted: int = 0
    replaced: int = 0
    deleted: int = 0
    unchanged: int = 0
    stale: int = 0
    chunks_added: int = 0
    chunks_removed: int = 0
    #: doc_id -> "inserted" | "replaced" | "deleted" | "unchanged" | "stale", per document
    outcomes: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class ShardStoreStatistics:
    docs: int  # live documents
    chunks: int  # live chunks
    tombstones: int
    index_kind: IndexKind
    index_vectors: int  # FAISS ntotal, dead HNSW positions included
    index_dead: int  # HNSW positions removed but not yet compacted away
    rebuild_seconds: float  # the last rebuild of FAISS from SQLite

