"""Exact merge of per-shard top-k lists into the collection's top-k. Pure functions.

Every document lives in exactly one shard, so the global top-k is contained in the union of
the shards' top-k lists, and merging them gives exactly what a single index over all the
documents returns. The rules of :func:`merge_topk`:

- **Order.** Highest score first; equal scores by ``(doc_id, chunk)`` ascending, so the order
  never depends on which shard answered first or on the order of the lists. This is the one
  order of :mod:`calinode.protocol.ranking`; the shard stores cut their own top-k with it.
- **No duplicates.** A ``(doc_id, chunk)`` appears once. Duplicates only arise when two
  replicas of one shard both answered (a hedged request); the copy with the best score is
  kept, equal copies by ``(shard, peer)`` ascending.
- **Size.** At most ``k`` hits; fewer when the shards had fewer between them.
- **No NaN.** A NaN score has no place in an order and is rejected (ValueError).

Scores are similarities (higher is better: inner product or cosine). A caller working with
distances negates them first.

Exactness at the k-th place holds because the shard stores cut their lists with the same
key (``models/store/ranking.py``): of hits tied at a shard's k-th score, it returns the ones a
single index sorted this way would rank first.

**Per document** (``per_doc``): a document lives in one shard, so each shard's list of its
best documents (each by its best chunk) merged gives the best documents of the collection;
a document that appears twice (two copies of one shard) is kept once, by its best hit.

**Two phases.** Shards answer chunk ids and scores only; :func:`cut_candidates` picks, per
query, the hits that can still be in the top-k before their ``(doc_id, chunk)`` keys are known
(every hit scoring at least the k-th best score: ties at the k-th place are decided by key),
so only those are fetched; :func:`merge_topk` then orders them by the full key.

:func:`missing_shards` names the shards no replica answered for, which makes a response
``partial``.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from calinode.protocol.ranking import rank_key

__all__ = ["ShardHit", "cut_candidates", "hit_order", "merge_topk", "missing_shards"]


@dataclass(frozen=True)
class ShardHit:
    """One search hit as a shard replica returned it."""

    doc_id: str
    chunk: int
    score: float
    shard: int
    peer: str


def hit_order(hit: ShardHit) -> tuple[float, str, int, int, str]:
    """The sort key of the merged order: best score first, then ``(doc_id, chunk)``.

    The trailing ``(shard, peer)`` only orders duplicate copies of one hit.
    """
    return (*rank_key(hit.score, hit.doc_id, hit.chunk), hit.shard, hit.peer)


def cut_candidates(scores: Sequence[npt.NDArray[np.float32]], k: int
                   ) -> list[npt.NDArray[np.bool_]]:
    """Per list of scores (one per shard, for one query), which hits may be in the top ``k``
    of all of them: those scoring at least the ``k``-th best score over all lists (all hits
    when there are at most ``k``). Raises ValueError for a NaN score."""
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    every = np.concatenate([np.asarray(s, dtype=np.float32) for s in scores]) if scores else (
        np.empty(0, np.float32))
    if np.isnan(every).any():
        raise ValueError("NaN score")
    if len(every) <= k:
        return [np.ones(len(s), dtype=bool) for s in scores]
    threshold = -np.partition(-every, k - 1)[k - 1]
    return [np.asarray(s, dtype=np.float32) >= threshold for s in scores]


def merge_topk(per_shard: Sequence[Sequence[ShardHit]], k: int, *,
               per_doc: bool = False) -> list[ShardHit]:
    """The ``k`` best distinct hits over all lists (see the module docstring for the rules);
    with ``per_doc``, the best hit of each of the ``k`` best distinct documents.

    The input lists need not be sorted. Raises ValueError for ``k < 0`` or a NaN score.
    """
    if k < 0:
        raise ValueError(f"k must be >= 0, got {k}")
    hits = [hit for hits in per_shard for hit in hits]
    for hit in hits:
        if math.isnan(hit.score):
            raise ValueError(f"NaN score for {hit.doc_id!r} chunk {hit.chunk} from {hit.peer!r}")
    merged: list[ShardHit] = []
    seen: set[tuple[str, int]] = set()
    if k == 0:
        return merged
    for hit in sorted(hits, key=hit_order):
        key = (hit.doc_id, -1 if per_doc else hit.chunk)
        if key in seen:
            continue
        seen.add(key)
        merged.append(hit)
        if len(merged) == k:
            break
    return merged


def missing_shards(answered: Iterable[int], shards: int) -> list[int]:
    """The shards in ``0..shards-1`` that are not in ``answered``, ascending.

    Raises ValueError for a negative shard count or an answered shard out of range (a reply
    for a shard the collection does not have means a mismatched shard count somewhere).
    """
    if shards < 0:
        raise ValueError(f"shards must be >= 0, got {shards}")
    got = set(answered)
    strays = sorted(shard for shard in got if not 0 <= shard < shards)
    if strays:
        raise ValueError(f"answers for shards {strays} outside 0..{shards - 1}")
    return [shard for shard in range(shards) if shard not in got]
