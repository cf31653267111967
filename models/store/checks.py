"""What :meth:`~calinode.models.store.shard_store.ShardStore.check` looks for: FAISS against
SQLite, and SQLite against itself. Reopening a store repairs the FAISS problems (it rebuilds
from SQLite), never the others."""

from __future__ import annotations

import sqlite3
from typing import Final

import numpy as np

from calinode.models.store.digest import chunk_faiss_id
from calinode.models.store.vector_index import VectorIndex

__all__ = ["STORE_CHECKS", "index_problems", "sql_problems"]

STORE_CHECKS: Final = (
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


def index_problems(conn: sqlite3.Connection, index: VectorIndex) -> list[str]:
    """FAISS against SQLite: its live vectors are exactly the chunk rows' faiss ids, each once."""
    problems: list[str] = []
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
    return problems


def sql_problems(conn: sqlite3.Connection, dim: int) -> list[str]:
    """SQLite itself: :data:`STORE_CHECKS`, and faiss ids that are not the hash of their key."""
    problems: list[str] = []
    for what, sql in STORE_CHECKS:
        n = conn.execute(sql, (dim * 4,) if "?" in sql else ()).fetchone()[0]
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
