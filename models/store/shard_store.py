"""The local store of one shard replica: a SQLite document store and the FAISS index over it.

A store is a folder::

    docs.sqlite (+ -wal, -shm)   the document store: WAL mode, synchronous=FULL
    LOCK                         flock()ed while a ShardStore has the folder open

**SQLite is the source of truth; FAISS is derived.** Tables: ``chunks`` (text, JSON metadata,
content hash, version, the float32 little-endian vector and its faiss id, per
``(doc_id, chunk)``), ``docs`` (one row per document: content hash, version, chunk count,
``deleted``; a deleted document keeps a tombstone row so that replicas converge on deletes) and
``meta`` (``dim``, ``metric``, ``index_kind``, ``schema``). Only SQLite is on disk:
:meth:`ShardStore.open` rebuilds the FAISS index from the stored vectors (about 0.5 s for 100k
384-d vectors, flat), so a crash at any instant (kill -9, power loss) leaves nothing to
reconcile. A write (:meth:`~ShardStore.upsert`, :meth:`~ShardStore.delete`,
:meth:`~ShardStore.apply`) puts all its documents in ONE transaction, returns only after the
commit (fsync of the WAL), and updates FAISS after the commit; invalid input raises
``JobError(BAD_REQUEST)`` before anything is written.

**Versions** (rules in :mod:`calinode.models.store.digest`): the same ``doc_id`` with the same
``content_hash`` changes no chunk (``unchanged``); other content replaces every chunk of the
document when its ``(version, content_hash)`` is greater than the stored one, and is ignored
(``stale``) when older; a delete at version v beats a live document of version <= v. Replicas
that exchange :meth:`~ShardStore.changes` through :meth:`~ShardStore.apply` converge, and equal
document states give equal :meth:`~ShardStore.digest`.

**Index kinds.** ``"flat"``: ``IndexIDMap2(IndexFlatIP(dim))``, exact inner product (vectors
are L2-normalized, so IP = cosine); removals are FAISS ``remove_ids``. ``"hnsw"``:
``IndexIDMap2(IndexHNSWFlat(dim, M, METRIC_INNER_PRODUCT))``, approximate and opt-in
(defaults M=32, efConstruction=80, efSearch=max(256, k): recall@10 0.99 on 5k random 384-d
unit vectors, the hard case; see tests/shards). HNSW cannot remove vectors, so a removed
vector's position is marked dead and searches exclude dead positions with an
``IDSelectorBitmap``; when more than a quarter of the positions are dead, the index is rebuilt
from SQLite (a full graph build). A replaced chunk keeps its faiss id, which is why dead marks
are per position, not per id.

**Search** runs every query of a batch in one FAISS call on the index itself (no copy). Hits
are sorted by descending score, ties (bitwise-equal float32 scores) by ascending
``(doc_id, chunk)``: the one order of :mod:`calinode.protocol.ranking`, which the merge of
several shards uses too (:func:`hit_sort_key`). When the k-th and the last fetched score are
equal, the query is searched again with a larger k until the tie is complete, so a flat store
returns exactly the top-k in that order. A search per document (``per_doc``) keeps each
document's best chunk and searches deeper until it has k documents whose k-th score is above
the last fetched one (or the shard is exhausted). (FAISS computes the scores of a batch
of 20 or more queries with BLAS: they may differ from one-query scores in the last bits.)

**Threads.** Blocking code: call it from a worker thread (``trio.to_thread.run_sync``). Each
public method holds the store's lock, so calls from several threads are safe but run one at a
time; a ``CapacityLimiter(1)`` per store keeps threads from queueing on it. FAISS parallelizes
a search or a build with OpenMP: ``faiss.omp_set_num_threads`` is left to the caller (on 2
shared cores, one thread gave the steadiest one-query latency: 5.5 ms for 100k x 384 flat).

**Errors.** ``JobError(BAD_REQUEST)`` for invalid input and for a faiss id collision (two
chunks hashing to one id: the write is refused); ``ConfigError`` when the folder is already
open or holds a store of another dim or metric; ``JobError(SHARD_UNAVAILABLE)`` on a closed
store; ``JobError(INTERNAL)`` when FAISS and SQLite are found to disagree (see
:meth:`~ShardStore.check`).
"""

from __future__ import annotations

import fcntl
import json
import os
import sqlite3
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, Final, Literal, NoReturn, get_args

import faiss
import numpy as np
import numpy.typing as npt

from calinode.models.store.digest import (
    MAX_VERSION,
    DigestSum,
    DocState,
    Outcome,
    chunk_faiss_id,
    resolve,
    shard_digest,
)
from calinode.protocol.errors import ConfigError, ErrorCode, JobError
from calinode.protocol.ranking import rank_key

__all__ = [
    "ChunkWrite", "DocRecord", "DocWrite", "Hit", "IndexKind", "ShardStore",
    "ShardStoreStatistics", "StoredChunk", "UpsertResult", "chunk_faiss_id", "hit_sort_key",
]

IndexKind = Literal["flat", "hnsw"]
Metric = Literal["ip"]
DB_FILE: Final = "docs.sqlite"
LOCK_FILE: Final = "LOCK"
SCHEMA: Final = "1"
MAX_DOC_ID_BYTES: Final = 1024
MAX_CONTENT_HASH_CHARS: Final = 256
_SQL_BATCH: Final = 400  # host parameters per IN (...) list
_REBUILD_BATCH: Final = 16384  # rows per FAISS add during a rebuild

_SCHEMA_SQL: Final = """
CREATE TABLE IF NOT EXISTS meta(key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS docs(
    doc_id TEXT PRIMARY KEY, content_hash TEXT NOT NULL, version INTEGER NOT NULL,
    chunks INTEGER NOT NULL, deleted INTEGER NOT NULL, updated_ms INTEGER NOT NULL);
CREATE INDEX IF NOT EXISTS docs_by_version ON docs(version, doc_id);
CREATE TABLE IF NOT EXISTS chunks(
    doc_id TEXT NOT NULL, chunk INTEGER NOT NULL, text TEXT NOT NULL, metadata TEXT NOT NULL,
    content_hash TEXT NOT NULL, version INTEGER NOT NULL, vector BLOB NOT NULL,
    faiss_id INTEGER NOT NULL UNIQUE, PRIMARY KEY(doc_id, chunk));
"""
_UPSERT_DOC: Final = (
    "INSERT INTO docs(doc_id, content_hash, version, chunks, deleted, updated_ms)"
    " VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT(doc_id) DO UPDATE SET"
    " content_hash = excluded.content_hash, version = excluded.version,"
    " chunks = excluded.chunks, deleted = excluded.deleted, updated_ms = excluded.updated_ms"
)
_INSERT_CHUNK: Final = (
    "INSERT INTO chunks(doc_id, chunk, text, metadata, content_hash, version, vector, faiss_id)"
    " VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
)


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
_OUTCOME_NAMES: dict[Outcome, str] = {
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


@dataclass(frozen=True, slots=True)
class _Incoming:
    """A validated write of one document (vectors already stacked as (n, dim) '<f4')."""

    doc_id: str
    state: DocState
    texts: list[str]
    metadata: list[str]
    vectors: npt.NDArray[np.float32]


def _bad(message: str) -> NoReturn:
    raise JobError(message, code=ErrorCode.BAD_REQUEST)


def _check_doc_id(doc_id: object) -> str:
    if not isinstance(doc_id, str) or not doc_id:
        _bad(f"doc_id must be a non-empty string, not {doc_id!r}")
    try:
        size = len(doc_id.encode("utf-8"))
    except UnicodeEncodeError:
        _bad(f"doc_id {doc_id!r} is not valid UTF-8 text")
    if size > MAX_DOC_ID_BYTES:
        _bad(f"doc_id is {size} bytes long; at most {MAX_DOC_ID_BYTES} are allowed")
    return doc_id


def _check_version(version: object, doc_id: str) -> int:
    if not isinstance(version, int) or isinstance(version, bool):
        _bad(f"{doc_id!r}: version must be an int, not {version!r}")
    if not 0 <= version <= MAX_VERSION:
        _bad(f"{doc_id!r}: version {version} is outside 0..2**63-1")
    return version


def _check_chunks(
    doc_id: str, chunks: Sequence[ChunkWrite], dim: int
) -> tuple[list[str], list[str], npt.NDArray[np.float32]]:
    texts: list[str] = []
    metadata: list[str] = []
    vectors: list[npt.NDArray[Any]] = []
    for n, chunk in enumerate(chunks):
        where = f"{doc_id!r} chunk {n}"
        if not isinstance(chunk, ChunkWrite):
            _bad(f"{where}: expected a ChunkWrite, not {type(chunk).__name__}")
        if not isinstance(chunk.text, str):
            _bad(f"{where}: text must be a string")
        try:
            chunk.text.encode("utf-8")
            if not isinstance(chunk.metadata, Mapping):
                raise TypeError("metadata must be a mapping")
            meta = json.dumps(
                dict(chunk.metadata), sort_keys=True, separators=(",", ":"),
                ensure_ascii=False, allow_nan=False,
            )
            meta.encode("utf-8")
        except (TypeError, ValueError) as exc:  # UnicodeEncodeError is a ValueError
            _bad(f"{where}: {exc}")
        v = chunk.vector
        if not isinstance(v, np.ndarray) or v.dtype.kind != "f" or v.dtype.itemsize != 4:
            got = v.dtype if isinstance(v, np.ndarray) else type(v).__name__
            _bad(f"{where}: the vector must be a float32 numpy array, not {got}")
        if v.shape != (dim,):
            _bad(f"{where}: expected a vector of shape ({dim},), got {v.shape}")
        texts.append(chunk.text)
        metadata.append(meta)
        vectors.append(v)
    stacked = (np.stack(vectors).astype("<f4", copy=False) if vectors
               else np.empty((0, dim), dtype="<f4"))
    if not np.isfinite(stacked).all():
        _bad(f"{doc_id!r}: a vector holds NaN or infinite values")
    return texts, metadata, stacked


def _check_content_hash(content_hash: object, doc_id: str) -> str:
    if not isinstance(content_hash, str) or not content_hash:
        _bad(f"{doc_id!r}: content_hash must be a non-empty string")
    if len(content_hash) > MAX_CONTENT_HASH_CHARS:
        _bad(f"{doc_id!r}: content_hash longer than {MAX_CONTENT_HASH_CHARS} characters")
    return content_hash


def _incoming_doc(doc: DocWrite | DocRecord, dim: int) -> _Incoming:
    doc_id = _check_doc_id(doc.doc_id)
    version = _check_version(doc.version, doc_id)
    if isinstance(doc, DocRecord) and doc.deleted:
        if doc.chunks:
            _bad(f"{doc_id!r}: a tombstone record carries no chunks")
        empty = np.empty((0, dim), dtype="<f4")
        return _Incoming(doc_id, DocState(version, True, ""), [], [], empty)
    content_hash = _check_content_hash(doc.content_hash, doc_id)
    if not isinstance(doc.chunks, Sequence):
        _bad(f"{doc_id!r}: chunks must be a sequence of ChunkWrite")
    texts, metadata, vectors = _check_chunks(doc_id, doc.chunks, dim)
    return _Incoming(doc_id, DocState(version, False, content_hash), texts, metadata, vectors)


def _unique(items: list[_Incoming]) -> list[_Incoming]:
    seen: set[str] = set()
    for item in items:
        if item.doc_id in seen:
            _bad(f"{item.doc_id!r} appears twice in one write")
        seen.add(item.doc_id)
    return items


def _batches(seq: Sequence[Any], size: int = _SQL_BATCH) -> Iterator[Sequence[Any]]:
    for start in range(0, len(seq), size):
        yield seq[start : start + size]


def _marks(n: int) -> str:
    return ",".join("?" * n)


class _VectorIndex:
    """The in-memory FAISS index of a store, keyed by faiss id (see the module docstring)."""

    def __init__(self, dim: int, kind: IndexKind, hnsw_m: int, ef_construction: int) -> None:
        self.kind = kind
        self._hnsw: faiss.IndexHNSWFlat | None = None
        inner: faiss.Index
        if kind == "hnsw":
            self._hnsw = faiss.IndexHNSWFlat(dim, hnsw_m, faiss.METRIC_INNER_PRODUCT)
            self._hnsw.hnsw.efConstruction = ef_construction
            inner = self._hnsw
        else:
            inner = faiss.IndexFlatIP(dim)
        self._inner = inner  # keep the wrapped index alive
        self._index = faiss.IndexIDMap2(inner)
        self._dead: set[int] = set()  # HNSW positions whose vector was removed
        self._alive_bitmap: npt.NDArray[np.uint8] | None = None

    @property
    def ntotal(self) -> int:
        return int(self._index.ntotal)

    @property
    def dead(self) -> int:
        return len(self._dead)

    @property
    def live(self) -> int:
        return self.ntotal - len(self._dead)

    def needs_compaction(self) -> bool:
        return len(self._dead) * 4 > self.ntotal

    def _labels(self) -> npt.NDArray[np.int64]:
        """The faiss id of every position: a view of IndexIDMap2's id_map, valid until an add."""
        n = self._index.id_map.size()
        if n == 0:
            return np.empty(0, dtype=np.int64)
        return faiss.rev_swig_ptr(self._index.id_map.data(), n)

    def add(self, ids: npt.NDArray[np.int64], vectors: npt.NDArray[np.float32]) -> None:
        if len(ids):
            self._index.add_with_ids(vectors, ids)
            self._alive_bitmap = None

    def remove(self, ids: npt.NDArray[np.int64]) -> None:
        if not len(ids):
            return
        if self._hnsw is None:
            self._index.remove_ids(faiss.IDSelectorBatch(ids))
            return
        positions = np.flatnonzero(np.isin(self._labels(), ids))
        self._dead.update(int(p) for p in positions)
        self._alive_bitmap = None

    def live_ids(self) -> npt.NDArray[np.int64]:
        labels = self._labels()
        if not self._dead:
            return labels.copy()
        alive = np.ones(len(labels), dtype=bool)
        alive[list(self._dead)] = False
        return labels[alive]

    def search(
        self, queries: npt.NDArray[np.float32], k: int, ef_search: int
    ) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.int64]]:
        """Scores and faiss ids (-1: no hit) of the k best live vectors of every query.

        The wrapped index is searched directly and positions are mapped to faiss ids here:
        ``IndexIDMap2.search`` maps them in an OpenMP loop, whose start-up costs milliseconds
        per one-query search on a busy machine (measured on 2 busy cores, 100k vectors: 32 ms
        through IndexIDMap2, 14 ms for the flat index alone).
        """
        params: faiss.SearchParameters | None = None
        if self._hnsw is not None:
            self._hnsw.hnsw.efSearch = max(ef_search, k)
            if self._dead:
                if self._alive_bitmap is None:
                    alive = np.ones(self.ntotal, dtype=bool)
                    alive[list(self._dead)] = False
                    self._alive_bitmap = np.packbits(alive, bitorder="little")
                params = faiss.SearchParameters()
                # the selector reads the bitmap by pointer: self._alive_bitmap keeps it alive
                params.sel = faiss.IDSelectorBitmap(
                    self._alive_bitmap.size, faiss.swig_ptr(self._alive_bitmap)
                )
        scores, positions = self._inner.search(queries, k, params=params)
        labels = self._labels()
        ids = np.where(positions >= 0, labels[np.maximum(positions, 0)], -1)
        return scores, ids


class ShardStore:
    """One shard replica on disk; see the module docstring.

    The constructor does no I/O: use :meth:`open` (or ``with ShardStore(...) as store``).
    """

    def __init__(
        self,
        path: Path,
        *,
        dim: int,
        metric: Metric = "ip",
        index_kind: IndexKind = "flat",
        hnsw_m: int = 32,
        hnsw_ef_construction: int = 80,
        hnsw_ef_search: int = 256,
    ) -> None:
        if not isinstance(dim, int) or isinstance(dim, bool) or dim < 1:
            raise ConfigError(f"dim must be a positive int, not {dim!r}")
        if metric not in get_args(Metric):
            raise ConfigError(f"metric must be one of {get_args(Metric)}, not {metric!r}")
        if index_kind not in get_args(IndexKind):
            raise ConfigError(
                f"index_kind must be one of {get_args(IndexKind)}, not {index_kind!r}"
            )
        if min(hnsw_m, hnsw_ef_construction, hnsw_ef_search) < 1:
            raise ConfigError("hnsw_m, hnsw_ef_construction and hnsw_ef_search must be >= 1")
        self.path = Path(path)
        self.dim = dim
        self.metric: Metric = metric
        self.index_kind: IndexKind = index_kind
        self._hnsw = (hnsw_m, hnsw_ef_construction, hnsw_ef_search)
        self._lock = threading.Lock()
        self._conn: sqlite3.Connection | None = None
        self._index: _VectorIndex | None = None
        self._lock_fd: int | None = None
        #: the sum behind :meth:`digest`: read from SQLite once at open, then kept current by
        #: every write (the rows it changed), so a write never re-reads the docs table
        self._digest: DigestSum | None = None
        self._rebuild_seconds = 0.0

    # -- lifecycle -------------------------------------------------------------------------

    @classmethod
    def open(
        cls,
        path: Path,
        *,
        dim: int,
        metric: Metric = "ip",
        index_kind: IndexKind = "flat",
        hnsw_m: int = 32,
        hnsw_ef_construction: int = 80,
        hnsw_ef_search: int = 256,
    ) -> ShardStore:
        """Open (creating if needed) the store in the folder ``path`` and rebuild its index."""
        store = cls(
            path, dim=dim, metric=metric, index_kind=index_kind, hnsw_m=hnsw_m,
            hnsw_ef_construction=hnsw_ef_construction, hnsw_ef_search=hnsw_ef_search,
        )
        store._open()
        return store

    def _open(self) -> None:
        with self._lock:
            if self._conn is not None:
                return
            self.path.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                raise ConfigError(f"shard store {self.path} is already open") from None
            conn: sqlite3.Connection | None = None
            try:
                created = not (self.path / DB_FILE).exists()
                conn = sqlite3.connect(
                    self.path / DB_FILE, isolation_level=None, check_same_thread=False
                )
                if conn.execute("PRAGMA journal_mode=WAL").fetchone()[0] != "wal":
                    raise ConfigError(f"{self.path / DB_FILE}: cannot use WAL mode")
                conn.execute("PRAGMA synchronous=FULL")
                self._init_schema(conn)
                if created:
                    _fsync_dir(self.path)
                index = self._build_index(conn)
                digest = DigestSum(conn.execute(
                    "SELECT doc_id, content_hash, version, deleted FROM docs"))
            except BaseException:
                if conn is not None:
                    conn.close()
                os.close(fd)
                raise
            self._conn, self._index, self._lock_fd = conn, index, fd
            self._digest = digest

    def _init_schema(self, conn: sqlite3.Connection) -> None:
        wanted = {"schema": SCHEMA, "dim": str(self.dim), "metric": self.metric,
                  "index_kind": self.index_kind}
        with _transaction(conn):
            for statement in _SCHEMA_SQL.split(";"):
                if statement.strip():
                    conn.execute(statement)
            stored = dict(conn.execute("SELECT key, value FROM meta").fetchall())
            for key in ("schema", "dim", "metric"):
                if key in stored and stored[key] != wanted[key]:
                    raise ConfigError(
                        f"shard store {self.path} has {key}={stored[key]}, not {wanted[key]}"
                    )
            # FAISS is derived state: a store may be reopened with another index kind
            conn.executemany(
                "INSERT OR REPLACE INTO meta(key, value) VALUES (?, ?)", wanted.items()
            )

    def close(self) -> None:
        """Close the store (idempotent). SQLite already holds every acknowledged write."""
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None
            if self._lock_fd is not None:
                os.close(self._lock_fd)  # releases the flock
                self._lock_fd = None
            self._index = None

    def __enter__(self) -> ShardStore:
        self._open()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def _require(self) -> tuple[sqlite3.Connection, _VectorIndex]:
        if self._conn is None or self._index is None:
            raise JobError(f"shard store {self.path} is closed", code=ErrorCode.SHARD_UNAVAILABLE)
        return self._conn, self._index

    def _build_index(self, conn: sqlite3.Connection) -> _VectorIndex:
        started = time.perf_counter()
        m, ef_construction, _ = self._hnsw
        index = _VectorIndex(self.dim, self.index_kind, m, ef_construction)
        cursor = conn.execute("SELECT faiss_id, vector FROM chunks")
        while rows := cursor.fetchmany(_REBUILD_BATCH):
            ids = np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows))
            data = b"".join(r[1] for r in rows)
            if len(data) != len(rows) * self.dim * 4:
                raise JobError(
                    f"shard store {self.path}: a stored vector is not {self.dim * 4} bytes",
                    code=ErrorCode.INTERNAL,
                )
            index.add(ids, np.frombuffer(data, dtype="<f4").reshape(len(rows), self.dim))
        self._rebuild_seconds = time.perf_counter() - started
        return index

    # -- writes ----------------------------------------------------------------------------

    def upsert(self, docs: Sequence[DocWrite]) -> UpsertResult:
        """Store whole documents: insert, replace (newer version, other content) or ignore."""
        items = []
        for doc in docs:
            if not isinstance(doc, DocWrite):
                _bad(f"expected DocWrite items, not {type(doc).__name__}")
            items.append(_incoming_doc(doc, self.dim))
        return self._write(_unique(items))

    def delete(self, doc_ids: Sequence[str], version: int) -> int:
        """Tombstone documents at ``version``; returns how many live documents it removed.

        An id never seen gets a tombstone too, so that an older write arriving later (from a
        lagging replica) stays ignored.
        """
        if isinstance(doc_ids, str):
            _bad("doc_ids must be a sequence of document ids, not one string")
        ids = list(dict.fromkeys(_check_doc_id(doc_id) for doc_id in doc_ids))
        version = _check_version(version, "delete")
        empty = np.empty((0, self.dim), dtype="<f4")
        items = [_Incoming(d, DocState(version, True, ""), [], [], empty) for d in ids]
        return self._write(items).deleted

    def apply(self, records: Sequence[DocRecord]) -> UpsertResult:
        """Import records of :meth:`changes` (from a peer replica) under the same rules."""
        items = []
        for record in records:
            if not isinstance(record, DocRecord):
                _bad(f"expected DocRecord items, not {type(record).__name__}")
            items.append(_incoming_doc(record, self.dim))
        return self._write(_unique(items))

    def _write(self, items: list[_Incoming]) -> UpsertResult:
        counts = dict.fromkeys(Outcome, 0)
        outcomes: dict[str, str] = {}
        removed: list[int] = []
        added_ids: list[int] = []
        added_vectors: list[npt.NDArray[np.float32]] = []
        #: docs rows this write replaces and writes: the digest moves by them after COMMIT
        rows_out: list[tuple[str, str, int, bool]] = []
        rows_in: list[tuple[str, str, int, bool]] = []
        with self._lock:
            conn, index = self._require()
            if not items:
                return UpsertResult()
            now = time.time_ns() // 1_000_000
            with _transaction(conn):
                stored = _stored_states(conn, [item.doc_id for item in items])
                for item in items:
                    outcome = resolve(item.state, stored.get(item.doc_id))
                    counts[outcome] += 1
                    outcomes[item.doc_id] = _OUTCOME_NAMES[outcome]
                    doc_id, state = item.doc_id, item.state
                    if outcome in (Outcome.REPLACE, Outcome.DELETE):
                        removed.extend(row[0] for row in conn.execute(
                            "DELETE FROM chunks WHERE doc_id = ? RETURNING faiss_id", (doc_id,)
                        ))
                    if outcome in (Outcome.INSERT, Outcome.REPLACE):
                        added_ids.extend(_insert_chunks(conn, item))
                        added_vectors.append(item.vectors)
                    if outcome in (Outcome.UNCHANGED, Outcome.STALE):
                        continue
                    before = stored.get(doc_id)
                    if before is not None:
                        rows_out.append((doc_id, before.content_hash, before.version,
                                         before.deleted))
                    if outcome is Outcome.BUMP:
                        conn.execute("UPDATE docs SET version = ?, updated_ms = ? WHERE doc_id = ?",
                                     (state.version, now, doc_id))
                        conn.execute("UPDATE chunks SET version = ? WHERE doc_id = ?",
                                     (state.version, doc_id))
                        rows_in.append((doc_id, before.content_hash if before else "",
                                        state.version, False))
                    else:
                        conn.execute(_UPSERT_DOC, (doc_id, state.content_hash, state.version,
                                                   len(item.texts), int(state.deleted), now))
                        rows_in.append((doc_id, state.content_hash, state.version,
                                        state.deleted))
            digest = self._digest
            assert digest is not None  # set by _open with the connection
            for row in rows_out:
                digest.remove(*row)
            for row in rows_in:
                digest.add(*row)
            self._update_index(conn, index, removed, added_ids, added_vectors)
        return UpsertResult(
            inserted=counts[Outcome.INSERT],
            replaced=counts[Outcome.REPLACE],
            deleted=counts[Outcome.DELETE],
            unchanged=counts[Outcome.UNCHANGED] + counts[Outcome.BUMP] + counts[Outcome.TOMBSTONE],
            stale=counts[Outcome.STALE],
            chunks_added=len(added_ids),
            chunks_removed=len(removed),
            outcomes=outcomes,
        )

    def _update_index(
        self,
        conn: sqlite3.Connection,
        index: _VectorIndex,
        removed: list[int],
        added_ids: list[int],
        added_vectors: list[npt.NDArray[np.float32]],
    ) -> None:
        """Apply a committed write to FAISS (removals first: a replaced chunk keeps its id).

        If FAISS fails (memory), or HNSW has too many dead positions, FAISS is rebuilt from
        SQLite, which already holds the write; a failed rebuild leaves the store unusable
        (``SHARD_UNAVAILABLE``), never inconsistent.
        """
        try:
            index.remove(np.asarray(removed, dtype=np.int64))
            if added_ids:
                index.add(np.asarray(added_ids, dtype=np.int64), np.concatenate(added_vectors))
            rebuild = index.needs_compaction()
        except Exception:
            rebuild = True
        if rebuild:
            self._index = None
            self._index = self._build_index(conn)

    # -- reads -----------------------------------------------------------------------------

    def search(self, queries: npt.NDArray[np.float32], k: int, *,
               per_doc: bool = False) -> list[list[Hit]]:
        """The ``k`` best chunks of every query row of ``queries`` (q, dim) float32, in the
        order of :func:`calinode.protocol.ranking.rank_key` (with ``per_doc``: the ``k`` best
        documents, each by its best chunk). See :meth:`search_ids`."""
        q = self._check_queries(queries, k)
        with self._lock:  # one lock scope: no write between the search and the keys
            rows = self._ranked(q, k, per_doc)
            conn, _ = self._require()
            keys = _keys_of(conn, {int(x) for ids, _ in rows for x in ids})
        return [[Hit(*keys[int(fid)], float(score)) for fid, score in zip(ids, s, strict=True)]
                for ids, s in rows]

    def search_ids(self, queries: npt.NDArray[np.float32], k: int, *, per_doc: bool = False
                   ) -> list[tuple[npt.NDArray[np.int64], npt.NDArray[np.float32]]]:
        """Per query row, the chunk (faiss) ids and scores of its ``k`` best chunks, best
        first by :func:`~calinode.protocol.ranking.rank_key` (score, then ``(doc_id,
        chunk)``). With ``per_doc``, the ``k`` best distinct documents, each by its best
        chunk. Fewer when the shard holds fewer. Exact for a flat store: when the cut is not
        settled by the fetched hits (the last one ties the k-th, or too few documents were
        seen), the row is searched again twice as deep, until it is (module docstring).
        """
        q = self._check_queries(queries, k)
        with self._lock:
            return self._ranked(q, k, per_doc)

    def _check_queries(self, queries: npt.NDArray[np.float32], k: int
                       ) -> npt.NDArray[np.float32]:
        if not isinstance(queries, np.ndarray) or queries.ndim != 2:
            _bad("queries must be a 2-D numpy array (q, dim)")
        if queries.shape[1] != self.dim:
            _bad(f"expected queries of dimension {self.dim}, got shape {queries.shape}")
        if queries.dtype.kind != "f" or queries.dtype.itemsize != 4:
            _bad(f"queries must be float32, not {queries.dtype}")
        q = np.ascontiguousarray(queries, dtype=np.float32)
        if not np.isfinite(q).all():
            _bad("queries hold NaN or infinite values")
        if not isinstance(k, int) or isinstance(k, bool) or k < 1:
            _bad(f"k must be a positive int, not {k!r}")
        return q

    def _ranked(self, q: npt.NDArray[np.float32], k: int, per_doc: bool
                ) -> list[tuple[npt.NDArray[np.int64], npt.NDArray[np.float32]]]:
        """:meth:`search_ids` under the store's lock."""
        empty = (np.empty(0, np.int64), np.empty(0, np.float32))
        conn, index = self._require()
        if index.live == 0 or len(q) == 0:
            return [empty for _ in range(len(q))]
        want = k if per_doc else min(k, index.live)
        first = min(2 * k + 8 if per_doc else want + 1, index.ntotal)
        ef_search = self._hnsw[2]
        scores, ids = index.search(q, first, ef_search)
        keys: dict[int, tuple[str, int]] = {}
        ranked = []
        for row in range(len(q)):
            s, i = _valid(scores[row], ids[row])
            f = first
            while True:
                exhausted = len(i) < f or f >= index.ntotal
                cut = _cut(conn, keys, s, i, want, per_doc=per_doc, exhausted=exhausted)
                if cut is not None:
                    ranked.append(cut)
                    break
                f = min(2 * f, index.ntotal)
                more_scores, more_ids = index.search(q[row : row + 1], f, ef_search)
                s, i = _valid(more_scores[0], more_ids[0])
        return ranked

    def fetch(self, keys: Sequence[tuple[str, int]]) -> dict[tuple[str, int], StoredChunk]:
        """The stored chunks among ``keys``; absent keys are left out of the result."""
        pairs: list[tuple[str, int]] = []
        for key in keys:
            if (not isinstance(key, tuple) or len(key) != 2 or not isinstance(key[0], str)
                    or not isinstance(key[1], int) or isinstance(key[1], bool)):
                _bad(f"keys must be (doc_id, chunk) tuples, not {key!r}")
            pairs.append(key)
        out: dict[tuple[str, int], StoredChunk] = {}
        with self._lock:
            conn, _ = self._require()
            wanted = set(pairs)
            for batch in _batches(pairs, _SQL_BATCH):
                # by faiss_id: its UNIQUE index makes this a lookup per key, where a row-value
                # IN over (doc_id, chunk) scanned the table (0.7 ms per 1k-chunk shard)
                rows = conn.execute(
                    "SELECT doc_id, chunk, text, metadata, content_hash, version FROM chunks"
                    f" WHERE faiss_id IN ({_marks(len(batch))})",
                    [chunk_faiss_id(doc_id, chunk) for doc_id, chunk in batch],
                )
                for doc_id, chunk, text, metadata, content_hash, version in rows:
                    if (doc_id, chunk) not in wanted:
                        continue
                    out[(doc_id, chunk)] = StoredChunk(
                        text, json.loads(metadata), content_hash, version
                    )
        return out

    def fetch_ids(self, ids: Sequence[int], *, text: bool = True
                  ) -> dict[int, tuple[str, int, str, str]]:
        """``faiss id -> (doc_id, chunk, text, metadata JSON)`` of the stored chunks among
        ``ids`` (absent ids left out; text and metadata ``""`` unless ``text``)."""
        columns = "faiss_id, doc_id, chunk" + (", text, metadata" if text else "")
        out: dict[int, tuple[str, int, str, str]] = {}
        with self._lock:
            conn, _ = self._require()
            for batch in _batches(sorted({int(x) for x in ids}), _SQL_BATCH):
                rows = conn.execute(f"SELECT {columns} FROM chunks WHERE faiss_id IN "
                                    f"({_marks(len(batch))})", batch)
                for row in rows:
                    out[int(row[0])] = (row[1], int(row[2]), *(row[3:] if text else ("", "")))
        return out

    def count(self) -> tuple[int, int]:
        """(live documents, live chunks), from SQLite."""
        with self._lock:
            conn, _ = self._require()
            docs = conn.execute("SELECT count(*) FROM docs WHERE deleted = 0").fetchone()[0]
            chunks = conn.execute("SELECT count(*) FROM chunks").fetchone()[0]
        return int(docs), int(chunks)

    def doc_ids(self) -> list[str]:
        """The ids of the live documents, sorted."""
        with self._lock:
            conn, _ = self._require()
            rows = conn.execute("SELECT doc_id FROM docs WHERE deleted = 0 ORDER BY doc_id")
            return [row[0] for row in rows]

    def digest(self) -> str:
        """Hash of every document state, tombstones included (see :func:`shard_digest`);
        kept current by every write, so this costs one hash, whatever the shard's size."""
        with self._lock:
            self._require()
            assert self._digest is not None  # set by _open with the connection
            return self._digest.hexdigest()

    def full_digest(self) -> str:
        """:meth:`digest` recomputed from every docs row (what the running sum must equal;
        for tests and checks, it reads the whole table)."""
        with self._lock:
            conn, _ = self._require()
            return shard_digest(conn.execute(
                "SELECT doc_id, content_hash, version, deleted FROM docs"))

    def changes(
        self, since_version: int = 0, limit: int = 1000, *, after_doc_id: str = ""
    ) -> list[DocRecord]:
        """Up to ``limit`` whole documents (vectors and tombstones included) for shard sync.

        Records come ordered by ``(version, doc_id)``, starting after ``(since_version,
        after_doc_id)``: the defaults give every document of version >= ``since_version``;
        to page, pass the last record's version and doc_id.
        """
        _check_version(since_version, "since_version")
        _check_limit(limit)
        if not isinstance(after_doc_id, str):
            _bad("after_doc_id must be a string")
        with self._lock:
            conn, _ = self._require()
            docs = conn.execute(
                "SELECT doc_id, content_hash, version, deleted FROM docs"
                " WHERE (version, doc_id) > (?, ?) ORDER BY version, doc_id LIMIT ?",
                (since_version, after_doc_id, limit),
            ).fetchall()
            return _records(conn, docs)

    def records(self, doc_ids: Sequence[str]) -> list[DocRecord]:
        """The whole documents (tombstones included) of those of ``doc_ids`` this replica
        has ever seen, in ``(version, doc_id)`` order: what a replica pulls once it knows,
        from :meth:`keys`, which documents it misses."""
        ids = list(dict.fromkeys(_check_doc_id(doc_id) for doc_id in doc_ids))
        with self._lock:
            conn, _ = self._require()
            docs = []
            for batch in _batches(ids):
                docs.extend(conn.execute(
                    "SELECT doc_id, content_hash, version, deleted FROM docs"
                    f" WHERE doc_id IN ({_marks(len(batch))})", batch).fetchall())
            docs.sort(key=lambda row: (row[2], row[0]))
            return _records(conn, docs)

    def keys(self, after_doc_id: str = "", limit: int = 1000) -> list[tuple[str, str, int, bool]]:
        """Up to ``limit`` document states ``(doc_id, content_hash, version, deleted)``
        after ``after_doc_id`` in doc_id order, tombstones included: the keys-only listing
        replica sync compares before it pulls whole documents (no chunk row is read)."""
        _check_limit(limit)
        if not isinstance(after_doc_id, str):
            _bad("after_doc_id must be a string")
        with self._lock:
            conn, _ = self._require()
            rows = conn.execute(
                "SELECT doc_id, content_hash, version, deleted FROM docs"
                " WHERE doc_id > ? ORDER BY doc_id LIMIT ?", (after_doc_id, limit))
            return [(doc_id, content_hash, version, bool(deleted))
                    for doc_id, content_hash, version, deleted in rows]

    def states(self, doc_ids: Sequence[str]) -> dict[str, DocState]:
        """The stored state of each of ``doc_ids`` this replica has seen (tombstones too)."""
        ids = list(dict.fromkeys(_check_doc_id(doc_id) for doc_id in doc_ids))
        with self._lock:
            conn, _ = self._require()
            return _stored_states(conn, ids)

    def quick_check(self) -> list[str]:
        """The cheap part of :meth:`check`: live FAISS vectors against chunk rows, by count
        (no row is read or hashed)."""
        with self._lock:
            conn, index = self._require()
            rows = int(conn.execute("SELECT count(*) FROM chunks").fetchone()[0])
            if index.live != rows:
                return [f"FAISS holds {index.live} live vectors for {rows} chunk rows"]
        return []

    def check(self) -> list[str]:
        """Consistency problems of FAISS against SQLite and of SQLite itself ([]: none).

        FAISS: its live vectors are exactly the chunk rows' faiss ids, each once. SQLite: live
        documents have their chunk count of rows, tombstones none, rows agree with their
        document, vectors are dim * 4 bytes, faiss ids are the hash of (doc_id, chunk).
        Reopening repairs the FAISS problems (it rebuilds from SQLite), never the others.
        """
        problems: list[str] = []
        with self._lock:
            conn, index = self._require()
            stored = np.fromiter(
                (row[0] for row in conn.execute("SELECT faiss_id FROM chunks")), dtype=np.int64
            )
            indexed = index.live_ids()
            if len(indexed) != len(stored):
                problems.append(
                    f"FAISS holds {len(indexed)} live vectors for {len(stored)} chunk rows"
                )
            for ids, what in ((np.setdiff1d(stored, indexed), "chunk rows have no vector"),
                              (np.setdiff1d(indexed, stored), "FAISS vectors have no chunk row")):
                if ids.size:
                    problems.append(f"{ids.size} {what} (faiss id {ids[0]}, ...)")
            _, counts = np.unique(indexed, return_counts=True)
            if (counts > 1).any():
                problems.append(f"{int((counts > 1).sum())} faiss ids are in FAISS twice or more")
            for what, sql in _STORE_CHECKS:
                n = conn.execute(sql, (self.dim * 4,) if "?" in sql else ()).fetchone()[0]
                if n:
                    problems.append(f"{n} {what}")
            wrong = sum(
                1 for doc_id, chunk, fid in conn.execute(
                    "SELECT doc_id, chunk, faiss_id FROM chunks")
                if chunk_faiss_id(doc_id, chunk) != fid
            )
            if wrong:
                problems.append(f"{wrong} chunk rows have a faiss id that is not their hash")
        return problems

    def statistics(self) -> ShardStoreStatistics:
        with self._lock:
            conn, index = self._require()
            docs, tombstones = conn.execute(
                "SELECT count(*) - sum(deleted), sum(deleted) FROM docs"
            ).fetchone()
            chunks = conn.execute("SELECT count(*) FROM chunks").fetchone()[0]
            return ShardStoreStatistics(
                docs=int(docs or 0), chunks=int(chunks), tombstones=int(tombstones or 0),
                index_kind=index.kind, index_vectors=index.ntotal, index_dead=index.dead,
                rebuild_seconds=self._rebuild_seconds,
            )


_STORE_CHECKS: Final = (
    ("live documents do not have their number of chunk rows",
     "SELECT count(*) FROM docs AS d WHERE d.deleted = 0"
     " AND d.chunks != (SELECT count(*) FROM chunks AS c WHERE c.doc_id = d.doc_id)"),
    ("tombstones still have chunk rows",
     "SELECT count(DISTINCT c.doc_id) FROM chunks AS c JOIN docs AS d USING (doc_id)"
     " WHERE d.deleted != 0"),
    ("chunk rows have no document row",
     "SELECT count(*) FROM chunks WHERE doc_id NOT IN (SELECT doc_id FROM docs)"),
    ("chunk rows differ from their document's content hash or version, or chunk count",
     "SELECT count(*) FROM chunks AS c JOIN docs AS d USING (doc_id)"
     " WHERE c.content_hash != d.content_hash OR c.version != d.version"
     " OR c.chunk < 0 OR c.chunk >= d.chunks"),
    ("stored vectors have the wrong size", "SELECT count(*) FROM chunks WHERE length(vector) != ?"),
)


class _transaction:
    """``BEGIN IMMEDIATE`` ... ``COMMIT`` (fsync under synchronous=FULL), or ``ROLLBACK``."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn

    def __enter__(self) -> None:
        self._conn.execute("BEGIN IMMEDIATE")

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc_type is None:
            try:
                self._conn.execute("COMMIT")
                return
            except BaseException:
                if self._conn.in_transaction:
                    self._conn.execute("ROLLBACK")
                raise
        if self._conn.in_transaction:
            self._conn.execute("ROLLBACK")


def _check_limit(limit: object) -> None:
    if not isinstance(limit, int) or isinstance(limit, bool) or limit < 1:
        _bad(f"limit must be a positive int, not {limit!r}")


def _records(conn: sqlite3.Connection, docs: list[Any]) -> list[DocRecord]:
    """Whole records of the docs rows ``docs`` (doc_id, content_hash, version, deleted), in
    their order, with the chunks of the live ones."""
    chunks: dict[str, list[ChunkWrite]] = {}
    for batch in _batches([row[0] for row in docs if not row[3]]):
        rows = conn.execute(
            "SELECT doc_id, text, metadata, vector FROM chunks"
            f" WHERE doc_id IN ({_marks(len(batch))}) ORDER BY doc_id, chunk",
            batch,
        )
        for doc_id, text, metadata, blob in rows:
            vector = np.frombuffer(blob, dtype="<f4")
            chunks.setdefault(doc_id, []).append(ChunkWrite(text, vector, json.loads(metadata)))
    return [
        DocRecord(doc_id, content_hash, version, bool(deleted), tuple(chunks.get(doc_id, ())))
        for doc_id, content_hash, version, deleted in docs
    ]


def _stored_states(conn: sqlite3.Connection, doc_ids: list[str]) -> dict[str, DocState]:
    states: dict[str, DocState] = {}
    for batch in _batches(doc_ids):
        rows = conn.execute(
            "SELECT doc_id, content_hash, version, deleted FROM docs"
            f" WHERE doc_id IN ({_marks(len(batch))})",
            batch,
        )
        for doc_id, content_hash, version, deleted in rows:
            states[doc_id] = DocState(version, bool(deleted), content_hash)
    return states


def _insert_chunks(conn: sqlite3.Connection, item: _Incoming) -> list[int]:
    """Insert the chunk rows of ``item``; a faiss id taken by another chunk refuses the write."""
    doc_id, state = item.doc_id, item.state
    ids = [chunk_faiss_id(doc_id, n) for n in range(len(item.texts))]
    rows = [
        (doc_id, n, text, meta, state.content_hash, state.version, item.vectors[n].tobytes(), fid)
        for n, (text, meta, fid) in enumerate(zip(item.texts, item.metadata, ids, strict=True))
    ]
    try:
        conn.executemany(_INSERT_CHUNK, rows)
    except sqlite3.IntegrityError:
        for n, fid in enumerate(ids):
            other = conn.execute(
                "SELECT doc_id, chunk FROM chunks WHERE faiss_id = ?"
                " AND NOT (doc_id = ? AND chunk = ?)",
                (fid, doc_id, n),
            ).fetchone()
            if other is not None:
                _bad(
                    f"faiss id collision: chunk {n} of {doc_id!r} and chunk {other[1]} of"
                    f" {other[0]!r} both hash to {fid}; nothing of this write was stored"
                )
        raise
    return ids


def _keys_of(conn: sqlite3.Connection, faiss_ids: set[int]) -> dict[int, tuple[str, int]]:
    keys: dict[int, tuple[str, int]] = {}
    for batch in _batches(sorted(faiss_ids)):
        rows = conn.execute(
            f"SELECT faiss_id, doc_id, chunk FROM chunks WHERE faiss_id IN ({_marks(len(batch))})",
            batch,
        )
        for fid, doc_id, chunk in rows:
            keys[fid] = (doc_id, chunk)
    if len(keys) != len(faiss_ids):
        missing = sorted(faiss_ids - keys.keys())
        raise JobError(
            f"FAISS returned {len(missing)} ids without a chunk row (faiss id {missing[0]}):"
            " the index and the document store disagree; reopen the store",
            code=ErrorCode.INTERNAL,
        )
    return keys


def _cut(
    conn: sqlite3.Connection, keys: dict[int, tuple[str, int]], s: npt.NDArray[np.float32],
    i: npt.NDArray[np.int64], want: int, *, per_doc: bool, exhausted: bool,
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float32]] | None:
    """The top ``want`` of fetched hits ``(s, i)`` in :func:`rank_key` order, or None when
    hits not fetched yet could still belong (search deeper).

    Settled when the shard is exhausted or the k-th hit's score is above the last fetched
    score (every unfetched hit scores at most that, so it ranks after the k-th).
    """
    order = np.argsort(-s, kind="stable")
    s, i = s[order], i[order]
    if not per_doc:
        if not exhausted and len(s) > want and s[want - 1] == s[-1]:
            return None
        if len(s) > 1 and bool(np.any(s[1:] == s[:-1])):  # ties: order them by key
            _learn_keys(conn, keys, i)
            order = np.array(sorted(range(len(s)), key=lambda n: rank_key(
                float(s[n]), *keys[int(i[n])])), dtype=np.int64)
            s, i = s[order], i[order]
        return i[:want], s[:want]
    _learn_keys(conn, keys, i)
    best: dict[str, int] = {}  # doc -> position of its best chunk
    for n in sorted(range(len(s)), key=lambda n: rank_key(float(s[n]), *keys[int(i[n])])):
        best.setdefault(keys[int(i[n])][0], n)
        if len(best) == want:
            break
    top = np.fromiter(best.values(), dtype=np.int64, count=len(best))
    if not exhausted and (len(top) < want or s[top[-1]] == s[-1]):
        return None
    return i[top], s[top]


def _learn_keys(conn: sqlite3.Connection, keys: dict[int, tuple[str, int]],
                ids: npt.NDArray[np.int64]) -> None:
    new = {int(x) for x in ids} - keys.keys()
    if new:
        keys.update(_keys_of(conn, new))


def _valid(
    scores: npt.NDArray[np.float32], ids: npt.NDArray[np.int64]
) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.int64]]:
    keep = ids >= 0
    return scores[keep], ids[keep]


def _fsync_dir(path: Path) -> None:
    """Make the creation of the store's files durable (their directory entries)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
