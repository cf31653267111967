"""How much one ``shard.search`` request may ask for, and how a coordinator splits its searches
so that they fit.

The work of a search and the size of its reply both grow with the number of hits it can
return, ``queries x k x shards``: each hit is a FAISS result, a row fetched from SQLite (text
and metadata) and a map in the reply. One request is refused *before it runs* when that product
is over :meth:`SearchBudget.max_hits`, which is derived from the frame limits
(:mod:`calinode.protocol.limits`): the reply must fit ``max_frame`` bytes and ``max_objects``
msgpack objects with a margin, at a conservative estimate per hit (``HIT_BYTES``,
``HIT_OBJECTS``; a hit of a 200-token chunk with a few metadata fields is ~1-1.5 KB and ~25
objects). With the default limits that is 4 000 hits, a few hundred ms of CPU.

The serving node calls :func:`check_search`; the coordinator calls :func:`plan_search` with
the same budget to cut a search into requests that each pass it (queries in blocks, each
holder's shards in groups), so its own searches never hit the refusal.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from .errors import ErrorCode, JobError
from .limits import DEFAULT_LIMITS, Limits

__all__ = ["DEFAULT_SEARCH_BUDGET", "HIT_BYTES", "HIT_OBJECTS", "SearchBudget", "check_search",
           "plan_search"]

#: Estimated reply bytes per hit (text, metadata, ids, score, map overhead).
HIT_BYTES: Final = 2048
#: Estimated msgpack objects per hit (the hit map, its keys and values, metadata entries).
HIT_OBJECTS: Final = 40
#: Share of the frame limits a reply may be planned to use (the rest is estimate margin).
_MARGIN: Final = 0.9


@dataclass(frozen=True, slots=True)
class SearchBudget:
    """The hit budget of one ``shard.search`` request under ``limits``."""

    limits: Limits = DEFAULT_LIMITS

    @property
    def max_hits(self) -> int:
        by_bytes = int(self.limits.max_frame * _MARGIN) // HIT_BYTES
        by_objects = int(self.limits.max_objects * _MARGIN) // HIT_OBJECTS
        return max(1, min(by_bytes, by_objects))

    def hits(self, queries: int, k: int, shards: int) -> int:
        return queries * k * shards


#: The budget of the default limits.
DEFAULT_SEARCH_BUDGET: Final = SearchBudget()


def check_search(queries: int, k: int, shards: int,
                 budget: SearchBudget = DEFAULT_SEARCH_BUDGET) -> None:
    """Refuse (``BAD_REQUEST``, naming the budget) a search whose hits would be over budget."""
    hits = budget.hits(queries, k, shards)
    if hits > budget.max_hits:
        raise JobError(
            f"search of {queries} queries x k={k} x {shards} shards = {hits} hits is over "
            f"the search budget of {budget.max_hits} hits per request (reply size); split it",
            code=ErrorCode.BAD_REQUEST)


def plan_search(queries: int, k: int, shards: list[int],
                budget: SearchBudget = DEFAULT_SEARCH_BUDGET) -> tuple[int, list[list[int]]]:
    """``(queries per request, shard groups)`` such that every request of one query block on
    one group passes :func:`check_search`. ``k`` must be at most ``max_hits``."""
    if k > budget.max_hits:
        raise JobError(f"k={k} is over the search budget of {budget.max_hits} hits",
                       code=ErrorCode.BAD_REQUEST)
    per_block = max(1, min(queries, budget.max_hits // k))
    per_group = max(1, budget.max_hits // (k * per_block))
    groups = [shards[i:i + per_group] for i in range(0, len(shards), per_group)]
    return per_block, groups
