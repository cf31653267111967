"""How big a ``shard.search`` or ``shard.fetch`` reply may get, and how a coordinator splits a
search so that every request fits.

A search reply carries, per shard and query, only the hits' chunk ids and scores, packed as
binary arrays (``protocol/shard_replies.py``): ``SEARCH_HIT_BYTES`` = 12 bytes per hit (an
int64 chunk id, a float32 score), ``SEARCH_ROW_BYTES`` per query row (its hit count) and a
fixed number of msgpack objects per shard (``SEARCH_SHARD_OBJECTS``), whatever the number of
hits, the documents' ids or their texts. So the size of a reply is known exactly from
``(queries, k, shards)`` before the search runs, and :func:`check_search` holds it to the
frame limits of :mod:`calinode.protocol.limits` (``max_frame`` bytes with a margin for the
envelope, ``max_objects`` objects, ``max_bin`` for one array, ``max_map`` shards).
With the default limits a reply may hold ~1.25 million hits; the coordinator plans its own
requests for ``PLAN_REPLY_BYTES`` (4 MiB, ~350 000 hits: 349 queries x k=1000 on one shard),
so the 16 shards of a 1000 x 1000 search take 48 requests.

The texts, metadata and ``(doc_id, chunk)`` keys of the hits that made the merged top-k are
fetched afterwards (``shard.fetch``), once per chunk, from one holder per shard. Their size
is only known to the holder, so a fetch reply is *paged by the holder*: it answers a prefix of
the asked ids whose measured size (:class:`FetchPage`) fits the same limits, and says how
many ids it covered; the coordinator asks again for the rest. One chunk always fits, since
it arrived in a ``shard.write`` frame of the same limits.

The serving node calls :func:`check_search` before it runs anything (over budget is
``BAD_REQUEST``); the coordinator calls :func:`plan_search` with the same budget to cut a
search into requests that each pass it (queries in blocks, each holder's shards in groups),
so its own searches never hit the refusal.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Final

from .errors import ErrorCode, JobError
from .limits import DEFAULT_LIMITS, Limits

__all__ = ["DEFAULT_SEARCH_BUDGET", "FETCH_ENTRY_OBJECTS", "PLAN_REPLY_BYTES", "SEARCH_HIT_BYTES",
           "SEARCH_ROW_BYTES", "SEARCH_SHARD_BYTES", "SEARCH_SHARD_OBJECTS", "FetchPage",
           "SearchBudget", "check_search", "msgpack_objects", "plan_search"]

#: Reply bytes per hit: an int64 chunk id and a float32 score, in two binary arrays.
SEARCH_HIT_BYTES: Final = 12
#: Reply bytes per query row and shard: its hit count (uint32, in a binary array).
SEARCH_ROW_BYTES: Final = 4
#: Reply bytes per shard besides its arrays: its key, a map, three keys, three bin headers.
SEARCH_SHARD_BYTES: Final = 64
#: Reply objects per shard: key, map, three keys, three values (hits add none).
SEARCH_SHARD_OBJECTS: Final = 8
#: The job-result envelope around a reply (ids, status, kind, keys): bytes and objects.
ENVELOPE_BYTES: Final = 1024
ENVELOPE_OBJECTS: Final = 64
#: Objects of one fetched entry besides its metadata: the list and five values.
FETCH_ENTRY_OBJECTS: Final = 6
#: Bytes of one fetched entry besides its strings and metadata (headers, id, chunk number).
FETCH_ENTRY_BYTES: Final = 32
#: Share of the frame limits a reply may be planned to use.
_MARGIN: Final = 0.9
#: The reply size a coordinator plans its own requests for (well under the frame limit): a
#: 16 MiB reply keeps a connection busy long enough that other streams on it stall in
#: protocol negotiation; 4 MiB replies interleave (and stay under the refusal threshold).
PLAN_REPLY_BYTES: Final = 4 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class SearchBudget:
    """The reply budget of one ``shard.search`` or ``shard.fetch`` request under ``limits``."""

    limits: Limits = DEFAULT_LIMITS

    @property
    def max_bytes(self) -> int:
        # one shard's hit array is one bin: a reply is kept within a bin's limit as well as
        # a frame's (frames are larger, for whole documents in writes)
        size = min(self.limits.max_frame, self.limits.max_bin)
        return int(size * _MARGIN) - ENVELOPE_BYTES

    @property
    def max_objects(self) -> int:
        return int(self.limits.max_objects * _MARGIN) - ENVELOPE_OBJECTS

    @property
    def plan_bytes(self) -> int:
        """The reply size :func:`plan_search` aims at (never above :attr:`max_bytes`)."""
        return min(self.max_bytes, PLAN_REPLY_BYTES)

    @property
    def max_shards(self) -> int:
        """Most shards in one search reply (objects, and entries of its ``results`` map)."""
        return max(1, min(self.max_objects // SEARCH_SHARD_OBJECTS, self.limits.max_map - 1))

    def search_bytes(self, queries: int, k: int, shards: int) -> int:
        """The largest reply of a search of ``queries`` x ``k`` on ``shards`` shards."""
        return shards * (SEARCH_SHARD_BYTES + queries * (SEARCH_ROW_BYTES
                                                         + k * SEARCH_HIT_BYTES))

    def fits(self, queries: int, k: int, shards: int) -> bool:
        return (shards <= self.max_shards
                and self.search_bytes(queries, k, shards) <= self.max_bytes
                and 8 * queries * k <= self.limits.max_bin  # the largest array: chunk ids
                and 4 * queries <= self.limits.max_bin)


#: The budget of the default limits.
DEFAULT_SEARCH_BUDGET: Final = SearchBudget()


def check_search(queries: int, k: int, shards: int,
                 budget: SearchBudget = DEFAULT_SEARCH_BUDGET) -> None:
    """Refuse (``BAD_REQUEST``, naming the budget) a search whose reply could break the
    frame limits."""
    if not budget.fits(queries, k, shards):
        raise JobError(
            f"search of {queries} queries x k={k} x {shards} shards (reply up to "
            f"{budget.search_bytes(queries, k, shards)} bytes) is over the search budget of "
            f"{budget.max_bytes} bytes and {budget.max_shards} shards per request; split it",
            code=ErrorCode.BAD_REQUEST)


def plan_search(queries: int, k: int, shards: list[int],
                budget: SearchBudget = DEFAULT_SEARCH_BUDGET) -> tuple[int, list[list[int]]]:
    """``(queries per request, shard groups)`` such that every request of one query block on
    one group passes :func:`check_search`. Raises ``BAD_REQUEST`` when not even one query on
    one shard fits (a ``k`` far beyond ``MAX_K`` under the default limits)."""
    row = SEARCH_ROW_BYTES + k * SEARCH_HIT_BYTES
    target = budget.plan_bytes
    per_block = min(max(1, queries), (target - SEARCH_SHARD_BYTES) // row,
                    budget.limits.max_bin // (8 * k))
    if per_block < 1 or not budget.fits(per_block, k, 1):
        raise JobError(f"k={k} is over the search budget of {budget.max_bytes} bytes per "
                       "request", code=ErrorCode.BAD_REQUEST)
    per_group = max(1, min(budget.max_shards,
                           target // (SEARCH_SHARD_BYTES + per_block * row)))
    groups = [shards[i:i + per_group] for i in range(0, len(shards), per_group)]
    return per_block, groups


def msgpack_objects(value: Any) -> int:
    """How many msgpack objects ``value`` (a JSON value) encodes to: every container, key and
    value counts as one, as :func:`calinode.protocol.codec.scan` counts them."""
    if isinstance(value, dict):
        return 1 + sum(1 + msgpack_objects(v) for v in value.values())
    if isinstance(value, list | tuple):
        return 1 + sum(msgpack_objects(v) for v in value)
    return 1


@dataclass(slots=True)
class FetchPage:
    """The entries of one ``shard.fetch`` reply, measured as they are added: the holder stops
    (and says how many ids it covered) before the reply would break the budget."""

    budget: SearchBudget = DEFAULT_SEARCH_BUDGET
    bytes: int = 0
    objects: int = 0
    entries: int = 0
    _full: bool = field(default=False)

    def admit(self, entry_bytes: int, entry_objects: int) -> bool:
        """Count one entry if it fits (the first entry always does); False once full."""
        limits = self.budget.limits
        fits = (self.bytes + entry_bytes <= self.budget.max_bytes
                and self.objects + entry_objects <= self.budget.max_objects
                and self.entries + 1 < limits.max_array)
        if self._full or (self.entries and not fits):
            self._full = True
            return False
        self.bytes += entry_bytes
        self.objects += entry_objects
        self.entries += 1
        return True
