"""The local store of one shard replica: a SQLite document store and the FAISS index over it.

A store is a folder (:mod:`calinode.models.store.folder`).

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

**Index kinds** (``"flat"``, exact; ``"hnsw"``, approximate and opt-in) are described in
:mod:`calinode.models.store.vector_index`; **search** order, ties and the per-document search
in :mod:`calinode.models.store.ranking`. The package's other modules hold the record types
(records.py), the validation of input (validation.py), the SQL (sql.py) and the version rules
and digest (digest.py).

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

import os
import sqlite3
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType

import numpy as np
import numpy.typing as npt

from calinode.models.store import sql
from calinode.models.store.checks import index_problems, sql_problems
from calinode.models.store.digest import DigestSum, DocState, Outcome, shard_digest
from calinode.models.store.folder import DB_FILE, fsync_dir, lock_folder
from calinode.models.store.ranking import ranked
from calinode.models.store.records import (
    DocRecord,
    DocWrite,
    Hit,
    IndexKind,
    Metric,
    ShardStoreStatistics,
    StoredChunk,
    UpsertResult,
)
from calinode.models.store.validation import (
    Incoming,
    bad,
    check_config,
    check_doc_id,
    check_limit,
    check_queries,
    check_version,
    incoming_doc,
    unique,
)
from calinode.models.store.vector_index import VectorIndex
from calinode.protocol.errors import ErrorCode, JobError

__all__ = ["ShardStore"]



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
        check_config(dim, metric, index_kind, (hnsw_m, hnsw_ef_construction, hnsw_ef_search))
        self.path = Path(path)
        self.dim = dim
        self.metric: Metric = metric
        self.index_kind: IndexKind = index_kind
        self._hnsw = (hnsw_m, hnsw_ef_construction, hnsw_ef_search)
        self._lock = threading.Lock()
        self._conn: sqlite3.Connection | None = None
        self._index: VectorIndex | None = None
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
            fd = lock_folder(self.path)
            conn: sqlite3.Connection | None = None
            try:
                created = not (self.path / DB_FILE).exists()
                conn = sql.connect(self.path / DB_FILE)
                sql.init_schema(conn, {"schema": sql.SCHEMA, "dim": str(self.dim),
                                       "metric": self.metric, "index_kind": self.index_kind},
                                self.path)
                if created:
                    fsync_dir(self.path)
                index = self._build_index(conn)
                digest = DigestSum(conn.execute(sql.DOC_STATES))
            except BaseException:
                if conn is not None:
                    conn.close()
                os.close(fd)
                raise
            self._conn, self._index, self._lock_fd = conn, index, fd
            self._digest = digest

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

    def _require(self) -> tuple[sqlite3.Connection, VectorIndex]:
        if self._conn is None or self._index is None:
            raise JobError(f"shard store {self.path} is closed", code=ErrorCode.SHARD_UNAVAILABLE)
        return self._conn, self._index

    def _build_index(self, conn: sqlite3.Connection) -> VectorIndex:
        started = time.perf_counter()
        m, ef_construction, _ = self._hnsw
        index = VectorIndex(self.dim, self.index_kind, m, ef_construction)
        sql.load_vectors(conn, index, self.dim, self.path)
        self._rebuild_seconds = time.perf_counter() - started
        return index

    # -- writes ----------------------------------------------------------------------------

    def upsert(self, docs: Sequence[DocWrite]) -> UpsertResult:
        """Store whole documents: insert, replace (newer version, other content) or ignore."""
        items = []
        for doc in docs:
            if not isinstance(doc, DocWrite):
                bad(f"expected DocWrite items, not {type(doc).__name__}")
            items.append(incoming_doc(doc, self.dim))
        return self._write(unique(items))

    def delete(self, doc_ids: Sequence[str], version: int) -> int:
        """Tombstone documents at ``version``; returns how many live documents it removed.

        An id never seen gets a tombstone too, so that an older write arriving later (from a
        lagging replica) stays ignored.
        """
        if isinstance(doc_ids, str):
            bad("doc_ids must be a sequence of document ids, not one string")
        ids = list(dict.fromkeys(check_doc_id(doc_id) for doc_id in doc_ids))
        version = check_version(version, "delete")
        empty = np.empty((0, self.dim), dtype="<f4")
        items = [Incoming(d, DocState(version, True, ""), [], [], empty) for d in ids]
        return self._write(items).deleted

    def apply(self, records: Sequence[DocRecord]) -> UpsertResult:
        """Import records of :meth:`changes` (from a peer replica) under the same rules."""
        items = []
        for record in records:
            if not isinstance(record, DocRecord):
                bad(f"expected DocRecord items, not {type(record).__name__}")
            items.append(incoming_doc(record, self.dim))
        return self._write(unique(items))

    def _write(self, items: list[Incoming]) -> UpsertResult:
        with self._lock:
            conn, index = self._require()
            if not items:
                return UpsertResult()
            rows = sql.write_items(conn, items, time.time_ns() // 1_000_000)
            digest = self._digest
            assert digest is not None  # set by _open with the connection
            for row in rows.rows_out:
                digest.remove(*row)
            for row in rows.rows_in:
                digest.add(*row)
            self._update_index(conn, index, rows.removed, rows.added_ids, rows.added_vectors)
        counts = rows.counts
        return UpsertResult(
            inserted=counts[Outcome.INSERT],
            replaced=counts[Outcome.REPLACE],
            deleted=counts[Outcome.DELETE],
            unchanged=counts[Outcome.UNCHANGED] + counts[Outcome.BUMP] + counts[Outcome.TOMBSTONE],
            stale=counts[Outcome.STALE],
            chunks_added=len(rows.added_ids),
            chunks_removed=len(rows.removed),
            outcomes=rows.outcomes,
        )

    def _update_index(
        self,
        conn: sqlite3.Connection,
        index: VectorIndex,
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
        q = check_queries(queries, k, self.dim)
        with self._lock:  # one lock scope: no write between the search and the keys
            rows = self._ranked(q, k, per_doc)
            conn, _ = self._require()
            keys = sql.keys_of(conn, {int(x) for ids, _ in rows for x in ids})
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
        q = check_queries(queries, k, self.dim)
        with self._lock:
            return self._ranked(q, k, per_doc)

    def _ranked(self, q: npt.NDArray[np.float32], k: int, per_doc: bool
                ) -> list[tuple[npt.NDArray[np.int64], npt.NDArray[np.float32]]]:
        """:meth:`search_ids` under the store's lock (:mod:`~calinode.models.store.ranking`)."""
        conn, index = self._require()
        return ranked(conn, index, q, k, per_doc, self._hnsw[2])

    def fetch(self, keys: Sequence[tuple[str, int]]) -> dict[tuple[str, int], StoredChunk]:
        """The stored chunks among ``keys``; absent keys are left out of the result."""
        pairs: list[tuple[str, int]] = []
        for key in keys:
            if (not isinstance(key, tuple) or len(key) != 2 or not isinstance(key[0], str)
                    or not isinstance(key[1], int) or isinstance(key[1], bool)):
                bad(f"keys must be (doc_id, chunk) tuples, not {key!r}")
            pairs.append(key)
        with self._lock:
            conn, _ = self._require()
            return sql.fetch_chunks(conn, pairs)

    def fetch_ids(self, ids: Sequence[int], *, text: bool = True
                  ) -> dict[int, tuple[str, int, str, str]]:
        """``faiss id -> (doc_id, chunk, text, metadata JSON)`` of the stored chunks among
        ``ids`` (absent ids left out; text and metadata ``""`` unless ``text``)."""
        with self._lock:
            conn, _ = self._require()
            return sql.fetch_id_rows(conn, ids, text=text)

    def count(self) -> tuple[int, int]:
        """(live documents, live chunks), from SQLite."""
        with self._lock:
            conn, _ = self._require()
            return sql.live_counts(conn)

    def doc_ids(self) -> list[str]:
        """The ids of the live documents, sorted."""
        with self._lock:
            conn, _ = self._require()
            return sql.live_doc_ids(conn)

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
            return shard_digest(conn.execute(sql.DOC_STATES))

    def changes(
        self, since_version: int = 0, limit: int = 1000, *, after_doc_id: str = ""
    ) -> list[DocRecord]:
        """Up to ``limit`` whole documents (vectors and tombstones included) for shard sync.

        Records come ordered by ``(version, doc_id)``, starting after ``(since_version,
        after_doc_id)``: the defaults give every document of version >= ``since_version``;
        to page, pass the last record's version and doc_id.
        """
        check_version(since_version, "since_version")
        check_limit(limit)
        if not isinstance(after_doc_id, str):
            bad("after_doc_id must be a string")
        with self._lock:
            conn, _ = self._require()
            docs = sql.changed_rows(conn, since_version, after_doc_id, limit)
            return sql.read_records(conn, docs)

    def records(self, doc_ids: Sequence[str]) -> list[DocRecord]:
        """The whole documents (tombstones included) of those of ``doc_ids`` this replica
        has ever seen, in ``(version, doc_id)`` order: what a replica pulls once it knows,
        from :meth:`keys`, which documents it misses."""
        ids = list(dict.fromkeys(check_doc_id(doc_id) for doc_id in doc_ids))
        with self._lock:
            conn, _ = self._require()
            return sql.read_records(conn, sql.docs_rows(conn, ids))

    def keys(self, after_doc_id: str = "", limit: int = 1000) -> list[tuple[str, str, int, bool]]:
        """Up to ``limit`` document states ``(doc_id, content_hash, version, deleted)``
        after ``after_doc_id`` in doc_id order, tombstones included: the keys-only listing
        replica sync compares before it pulls whole documents (no chunk row is read)."""
        check_limit(limit)
        if not isinstance(after_doc_id, str):
            bad("after_doc_id must be a string")
        with self._lock:
            conn, _ = self._require()
            return sql.key_rows(conn, after_doc_id, limit)

    def states(self, doc_ids: Sequence[str]) -> dict[str, DocState]:
        """The stored state of each of ``doc_ids`` this replica has seen (tombstones too)."""
        ids = list(dict.fromkeys(check_doc_id(doc_id) for doc_id in doc_ids))
        with self._lock:
            conn, _ = self._require()
            return sql.stored_states(conn, ids)

    def quick_check(self) -> list[str]:
        """The cheap part of :meth:`check`: live FAISS vectors against chunk rows, by count
        (no row is read or hashed)."""
        with self._lock:
            conn, index = self._require()
            rows = sql.live_counts(conn)[1]
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
        with self._lock:
            conn, index = self._require()
            return index_problems(conn, index) + sql_problems(conn, self.dim)

    def statistics(self) -> ShardStoreStatistics:
        with self._lock:
            conn, index = self._require()
            docs, chunks, tombstones = sql.row_counts(conn)
            return ShardStoreStatistics(
                docs=docs, chunks=chunks, tombstones=tombstones,
                index_kind=index.kind, index_vectors=index.ntotal, index_dead=index.dead,
                rebuild_seconds=self._rebuild_seconds,
            )

