"""How a shard store ranks hits: the top k of a query in the one order of
:mod:`calinode.protocol.ranking`, searching deeper until the cut is settled.

**Search** runs every query of a batch in one FAISS call on the index itself (no copy). Hits
are sorted by descending score, ties (bitwise-equal float32 scores) by ascending
``(doc_id, chunk)``: the one order of :mod:`calinode.protocol.ranking`, which the merge of
several shards uses too (:func:`~calinode.models.store.records.hit_sort_key`). When the k-th
and the last fetched score are equal, the query is searched again with a larger k until the tie
is complete, so a flat store returns exactly the top-k in that order. A search per document
(``per_doc``) keeps each document's best chunk and searches deeper until it has k documents
whose k-th score is above the last fetched one (or the shard is exhausted). (FAISS computes
the scores of a batch of 20 or more queries with BLAS: they may differ from one-query scores in
the last bits.)

Blocking: called by :class:`~calinode.models.store.shard_store.ShardStore` under its lock.
"""

from __future__ import annotations

import sqlite3

import numpy as np
import numpy.typing as npt

from calinode.models.store.sql import keys_of
from calinode.models.store.vector_index import VectorIndex
from calinode.protocol.ranking import rank_key

__all__ = ["ranked"]


def ranked(conn: sqlite3.Connection, index: VectorIndex, q: npt.NDArray[np.float32], k: int,
           per_doc: bool, ef_search: int
           ) -> list[tuple[npt.NDArray[np.int64], npt.NDArray[np.float32]]]:
    """:meth:`~calinode.models.store.shard_store.ShardStore.search_ids` of checked queries
    ``q``, under the store's lock."""
    empty = (np.empty(0, np.int64), np.empty(0, np.float32))
    if index.live == 0 or len(q) == 0:
        return [empty for _ in range(len(q))]
    want = k if per_doc else min(k, index.live)
    first = min(2 * k + 8 if per_doc else want + 1, index.ntotal)
    scores, ids = index.search(q, first, ef_search)
    keys: dict[int, tuple[str, int]] = {}
    rows = []
    for row in range(len(q)):
        s, i = valid_hits(scores[row], ids[row])
        f = first
        while True:
            exhausted = len(i) < f or f >= index.ntotal
            cut = top_cut(conn, keys, s, i, want, per_doc=per_doc, exhausted=exhausted)
            if cut is not None:
                rows.append(cut)
                break
            f = min(2 * f, index.ntotal)
            more_scores, more_ids = index.search(q[row : row + 1], f, ef_search)
            s, i = valid_hits(more_scores[0], more_ids[0])
    return rows


def top_cut(
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
            learn_keys(conn, keys, i)
            order = np.array(sorted(range(len(s)), key=lambda n: rank_key(
                float(s[n]), *keys[int(i[n])])), dtype=np.int64)
            s, i = s[order], i[order]
        return i[:want], s[:want]
    learn_keys(conn, keys, i)
    best: dict[str, int] = {}  # doc -> position of its best chunk
    for n in sorted(range(len(s)), key=lambda n: rank_key(float(s[n]), *keys[int(i[n])])):
        best.setdefault(keys[int(i[n])][0], n)
        if len(best) == want:
            break
    top = np.fromiter(best.values(), dtype=np.int64, count=len(best))
    if not exhausted and (len(top) < want or s[top[-1]] == s[-1]):
        return None
    return i[top], s[top]


def learn_keys(conn: sqlite3.Connection, keys: dict[int, tuple[str, int]],
                ids: npt.NDArray[np.int64]) -> None:
    new = {int(x) for x in ids} - keys.keys()
    if new:
        keys.update(keys_of(conn, new))


def valid_hits(
    scores: npt.NDArray[np.float32], ids: npt.NDArray[np.int64]
) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.int64]]:
    keep = ids >= 0
    return scores[keep], ids[keep]

