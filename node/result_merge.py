"""Exact merge of per-shard top-k lists into the collection's top-k. Pure functions.

Every document lives in exactly one shard, so the global top-k is contained in the union of
the shards' top-k lists, and merging them gives exactly what a single index over all the
documents returns. The rules of :func:`merge_topk`:

- **Order.** Highest score first; equal scores by ``(doc_id, chunk)`` ascending, so the order
  never depends on which shard answered first or on the order of the lists.
- **No duplicates.** A ``(doc_id, chunk)`` appears once. Duplicates only arise when two
  replicas of one shard both answered (a hedged request); the copy with the best score is
  kept, equal copies by ``(shard, peer)`` ascending.
- **Size.** At most ``k`` hits; fewer when the shards had fewer between them.
- **No NaN.** A NaN score has no place in an order and is rejected (ValueError).

Scores are similarities (higher is better: inner product or cosine). A caller working with
distances negates them first.

One caveat for exactness at the k-th place: if a shard holds more than ``k`` hits tied at its
k-th score, which of them it returns is the shard's business; to match a single index exactly
on such ties, shards should break ties the same way (``(doc_id, chunk)`` ascending).

:func:`missing_shards` names the shards no replica answered for, which makes a response
``partial``.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

__all__ = ["ShardHit", "hit_order", "merge_topk", "missing_shards"]


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
    return (-hit.score, hit.doc_id, hit.chunk, hit.shard, hit.peer)


def merge_topk(per_shard: Sequence[Sequence[ShardHit]], k: int) -> list[ShardHit]:
    """The ``k`` best distinct hits over all lists (see the module docstring for the rules).

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
        key = (hit.doc_id, hit.chunk)
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
