"""The SQL of a shard store: the schema, transactions, and the queries that read and write
documents and chunk rows. SQLite is the source of truth (see
:mod:`calinode.models.store.shard_store`); every function here takes the open connection and
runs under the store's lock.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, Final

import numpy as np
import numpy.typing as npt

from calinode.models.store.digest import DocState, Outcome, chunk_faiss_id, resolve
from calinode.models.store.records import OUTCOME_NAMES, ChunkWrite, DocRecord, StoredChunk
from calinode.models.store.validation import Incoming, bad
from calinode.models.store.vector_index import VectorIndex
from calinode.protocol.errors import ConfigError, ErrorCode, JobError

SCHEMA: Final = "1"
SQL_BATCH: Final = 400  # host parameters per IN (...) list
REBUILD_BATCH: Final = 16384  # rows per FAISS add during a rebuild

SCHEMA_SQL: Final = """
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
UPSERT_DOC: Final = (
    "INSERT INTO docs(doc_id, content_hash, version, chunks, deleted, updated_ms)"
    " VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT(doc_id) DO UPDATE SET"
    " content_hash = excluded.content_hash, version = excluded.version,"
    " chunks = excluded.chunks, deleted = excluded.deleted, updated_ms = excluded.updated_ms"
)
INSERT_CHUNK: Final = (
    "INSERT INTO chunks(doc_id, chunk, text, metadata, content_hash, version, vector, faiss_id)"
    " VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
)

def batches(seq: Sequence[Any], size: int = SQL_BATCH) -> Iterator[Sequence[Any]]:
    for start in range(0, len(seq), size):
        yield seq[start : start + size]


def marks(n: int) -> str:
    return ",".join("?" * n)

class transaction:
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


def read_records(conn: sqlite3.Connection, docs: list[Any]) -> list[DocRecord]:
    """Whole records of the docs rows ``docs`` (doc_id, content_hash, version, deleted), in
    their order, with the chunks of the live ones."""
    chunks: dict[str, list[ChunkWrite]] = {}
    for batch in batches([row[0] for row in docs if not row[3]]):
        rows = conn.execute(
            "SELECT doc_id, text, metadata, vector FROM chunks"
            f" WHERE doc_id IN ({marks(len(batch))}) ORDER BY doc_id, chunk",
            batch,
        )
        for doc_id, text, metadata, blob in rows:
            vector = np.frombuffer(blob, dtype="<f4")
            chunks.setdefault(doc_id, []).append(ChunkWrite(text, vector, json.loads(metadata)))
    return [
        DocRecord(doc_id, content_hash, version, bool(deleted), tuple(chunks.get(doc_id, ())))
        for doc_id, content_hash, version, deleted in docs
    ]


def stored_states(conn: sqlite3.Connection, doc_ids: list[str]) -> dict[str, DocState]:
    states: dict[str, DocState] = {}
    for batch in batches(doc_ids):
        rows = conn.execute(
            "SELECT doc_id, content_hash, version, deleted FROM docs"
            f" WHERE doc_id IN ({marks(len(batch))})",
            batch,
        )
        for doc_id, content_hash, version, deleted in rows:
            states[doc_id] = DocState(version, bool(deleted), content_hash)
    return states


def insert_chunks(conn: sqlite3.Connection, item: Incoming) -> list[int]:
    """Insert the chunk rows of ``item``; a faiss id taken by another chunk refuses the write."""
    doc_id, state = item.doc_id, item.state
    ids = [chunk_faiss_id(doc_id, n) for n in range(len(item.texts))]
    rows = [
        (doc_id, n, text, meta, state.content_hash, state.version, item.vectors[n].tobytes(), fid)
        for n, (text, meta, fid) in enumerate(zip(item.texts, item.metadata, ids, strict=True))
    ]
    try:
        conn.executemany(INSERT_CHUNK, rows)
    except sqlite3.IntegrityError:
        for n, fid in enumerate(ids):
            other = conn.execute(
                "SELECT doc_id, chunk FROM chunks WHERE faiss_id = ?"
                " AND NOT (doc_id = ? AND chunk = ?)",
                (fid, doc_id, n),
            ).fetchone()
            if other is not None:
                bad(
                    f"faiss id collision: chunk {n} of {doc_id!r} and chunk {other[1]} of"
                    f" {other[0]!r} both hash to {fid}; nothing of this write was stored"
                )
        raise
    return ids


def keys_of(conn: sqlite3.Connection, faiss_ids: set[int]) -> dict[int, tuple[str, int]]:
    keys: dict[int, tuple[str, int]] = {}
    for batch in batches(sorted(faiss_ids)):
        rows = conn.execute(
            f"SELECT faiss_id, doc_id, chunk FROM chunks WHERE faiss_id IN ({marks(len(batch))})",
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


def init_schema(conn: sqlite3.Connection, wanted: dict[str, str], path: Path) -> None:
    """Create the tables and check or record ``wanted`` (schema, dim, metric, index kind)."""
    with transaction(conn):
        for statement in SCHEMA_SQL.split(";"):
            if statement.strip():
                conn.execute(statement)
        stored = dict(conn.execute("SELECT key, value FROM meta").fetchall())
        for key in ("schema", "dim", "metric"):
            if key in stored and stored[key] != wanted[key]:
                raise ConfigError(
                    f"shard store {path} has {key}={stored[key]}, not {wanted[key]}"
                )
        # FAISS is derived state: a store may be reopened with another index kind
        conn.executemany(
            "INSERT OR REPLACE INTO meta(key, value) VALUES (?, ?)", wanted.items()
        )


@dataclass
class WriteRows:
    """What one committed write changed: outcome counts, the chunks it removed and added
    (FAISS follows), and the docs rows it replaced and wrote (the digest moves by them)."""

    counts: dict[Outcome, int] = field(default_factory=lambda: dict.fromkeys(Outcome, 0))
    outcomes: dict[str, str] = field(default_factory=dict)
    removed: list[int] = field(default_factory=list)
    added_ids: list[int] = field(default_factory=list)
    added_vectors: list[npt.NDArray[np.float32]] = field(default_factory=list)
    rows_out: list[tuple[str, str, int, bool]] = field(default_factory=list)
    rows_in: list[tuple[str, str, int, bool]] = field(default_factory=list)


def write_items(conn: sqlite3.Connection, items: list[Incoming], now: int) -> WriteRows:
    """Write validated documents in ONE transaction under the version rules
    (:func:`~calinode.models.store.digest.resolve`); returns after the COMMIT."""
    out = WriteRows()
    with transaction(conn):
        stored = stored_states(conn, [item.doc_id for item in items])
        for item in items:
            outcome = resolve(item.state, stored.get(item.doc_id))
            out.counts[outcome] += 1
            out.outcomes[item.doc_id] = OUTCOME_NAMES[outcome]
            _write_item(conn, item, outcome, stored.get(item.doc_id), now, out)
    return out


def _write_item(conn: sqlite3.Connection, item: Incoming, outcome: Outcome,
                before: DocState | None, now: int, out: WriteRows) -> None:
    doc_id, state = item.doc_id, item.state
    if outcome in (Outcome.REPLACE, Outcome.DELETE):
        out.removed.extend(row[0] for row in conn.execute(
            "DELETE FROM chunks WHERE doc_id = ? RETURNING faiss_id", (doc_id,)
        ))
    if outcome in (Outcome.INSERT, Outcome.REPLACE):
        out.added_ids.extend(insert_chunks(conn, item))
        out.added_vectors.append(item.vectors)
    if outcome in (Outcome.UNCHANGED, Outcome.STALE):
        return
    if before is not None:
        out.rows_out.append((doc_id, before.content_hash, before.version, before.deleted))
    if outcome is Outcome.BUMP:
        conn.execute("UPDATE docs SET version = ?, updated_ms = ? WHERE doc_id = ?",
                     (state.version, now, doc_id))
        conn.execute("UPDATE chunks SET version = ? WHERE doc_id = ?",
                     (state.version, doc_id))
        out.rows_in.append((doc_id, before.content_hash if before else "",
                            state.version, False))
    else:
        conn.execute(UPSERT_DOC, (doc_id, state.content_hash, state.version,
                                  len(item.texts), int(state.deleted), now))
        out.rows_in.append((doc_id, state.content_hash, state.version, state.deleted))


def fetch_chunks(conn: sqlite3.Connection, pairs: list[tuple[str, int]]
                 ) -> dict[tuple[str, int], StoredChunk]:
    """The stored chunks among the ``(doc_id, chunk)`` keys ``pairs``."""
    out: dict[tuple[str, int], StoredChunk] = {}
    wanted = set(pairs)
    for batch in batches(pairs, SQL_BATCH):
        # by faiss_id: its UNIQUE index makes this a lookup per key, where a row-value
        # IN over (doc_id, chunk) scanned the table (0.7 ms per 1k-chunk shard)
        rows = conn.execute(
            "SELECT doc_id, chunk, text, metadata, content_hash, version FROM chunks"
            f" WHERE faiss_id IN ({marks(len(batch))})",
            [chunk_faiss_id(doc_id, chunk) for doc_id, chunk in batch],
        )
        for doc_id, chunk, text, metadata, content_hash, version in rows:
            if (doc_id, chunk) not in wanted:
                continue
            out[(doc_id, chunk)] = StoredChunk(
                text, json.loads(metadata), content_hash, version
            )
    return out


def fetch_id_rows(conn: sqlite3.Connection, ids: Sequence[int], *, text: bool
                  ) -> dict[int, tuple[str, int, str, str]]:
    """``faiss id -> (doc_id, chunk, text, metadata JSON)`` of the chunk rows among ``ids``."""
    columns = "faiss_id, doc_id, chunk" + (", text, metadata" if text else "")
    out: dict[int, tuple[str, int, str, str]] = {}
    for batch in batches(sorted({int(x) for x in ids}), SQL_BATCH):
        rows = conn.execute(f"SELECT {columns} FROM chunks WHERE faiss_id IN "
                            f"({marks(len(batch))})", batch)
        for row in rows:
            out[int(row[0])] = (row[1], int(row[2]), *(row[3:] if text else ("", "")))
    return out


def docs_rows(conn: sqlite3.Connection, ids: list[str]) -> list[Any]:
    """The docs rows (doc_id, content_hash, version, deleted) of ``ids``, in
    ``(version, doc_id)`` order."""
    docs = []
    for batch in batches(ids):
        docs.extend(conn.execute(
            "SELECT doc_id, content_hash, version, deleted FROM docs"
            f" WHERE doc_id IN ({marks(len(batch))})", batch).fetchall())
    docs.sort(key=lambda row: (row[2], row[0]))
    return docs




def connect(db: Path) -> sqlite3.Connection:
    """The store's connection: autocommit (transactions are explicit), WAL, synchronous=FULL."""
    conn = sqlite3.connect(db, isolation_level=None, check_same_thread=False)
    try:
        if conn.execute("PRAGMA journal_mode=WAL").fetchone()[0] != "wal":
            raise ConfigError(f"{db}: cannot use WAL mode")
        conn.execute("PRAGMA synchronous=FULL")
    except BaseException:
        conn.close()
        raise
    return conn


def load_vectors(conn: sqlite3.Connection, index: VectorIndex, dim: int, path: Path) -> None:
    """Add every stored vector to ``index`` (the rebuild of FAISS from SQLite)."""
    cursor = conn.execute("SELECT faiss_id, vector FROM chunks")
    while rows := cursor.fetchmany(REBUILD_BATCH):
        ids = np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows))
        data = b"".join(r[1] for r in rows)
        if len(data) != len(rows) * dim * 4:
            raise JobError(
                f"shard store {path}: a stored vector is not {dim * 4} bytes",
                code=ErrorCode.INTERNAL,
            )
        index.add(ids, np.frombuffer(data, dtype="<f4").reshape(len(rows), dim))


#: Every document state, the rows of :func:`~calinode.models.store.digest.shard_digest`.
DOC_STATES: Final = "SELECT doc_id, content_hash, version, deleted FROM docs"


def live_counts(conn: sqlite3.Connection) -> tuple[int, int]:
    """(live documents, live chunks)."""
    docs = conn.execute("SELECT count(*) FROM docs WHERE deleted = 0").fetchone()[0]
    chunks = conn.execute("SELECT count(*) FROM chunks").fetchone()[0]
    return int(docs), int(chunks)


def row_counts(conn: sqlite3.Connection) -> tuple[int, int, int]:
    """(live documents, live chunks, tombstones)."""
    docs, tombstones = conn.execute(
        "SELECT count(*) - sum(deleted), sum(deleted) FROM docs"
    ).fetchone()
    chunks = conn.execute("SELECT count(*) FROM chunks").fetchone()[0]
    return int(docs or 0), int(chunks), int(tombstones or 0)


def live_doc_ids(conn: sqlite3.Connection) -> list[str]:
    """The ids of the live documents, sorted."""
    rows = conn.execute("SELECT doc_id FROM docs WHERE deleted = 0 ORDER BY doc_id")
    return [row[0] for row in rows]


def changed_rows(conn: sqlite3.Connection, since_version: int, after_doc_id: str,
                 limit: int) -> list[Any]:
    """Up to ``limit`` docs rows after ``(since_version, after_doc_id)`` in that order."""
    return conn.execute(
        "SELECT doc_id, content_hash, version, deleted FROM docs"
        " WHERE (version, doc_id) > (?, ?) ORDER BY version, doc_id LIMIT ?",
        (since_version, after_doc_id, limit),
    ).fetchall()


def key_rows(conn: sqlite3.Connection, after_doc_id: str, limit: int
             ) -> list[tuple[str, str, int, bool]]:
    """Up to ``limit`` document states after ``after_doc_id`` in doc_id order."""
    rows = conn.execute(
        "SELECT doc_id, content_hash, version, deleted FROM docs"
        " WHERE doc_id > ? ORDER BY doc_id LIMIT ?", (after_doc_id, limit))
    return [(doc_id, content_hash, version, bool(deleted))
            for doc_id, content_hash, version, deleted in rows]
