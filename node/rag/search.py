"""Search across the swarm: embed the queries with the collection's model (query prefix), ask
every shard on one live holder (placement owners first) with a hedged second request to
another holder when the first is slow or fails, fetch the keys (and texts) of the hits that can
be in the merged top-k, and merge them exactly (``plan.merged_results``). A shard with no live
holder makes the answer ``partial`` and is named in ``missing_shards``.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from typing import Any, TypeVar

import numpy as np
import trio

from calinode.models.store.digest import chunk_faiss_id
from calinode.node.index.merge import missing_shards
from calinode.node.index.placement import shard_of
from calinode.node.rag.pinned_model import pinned_model_not_served
from calinode.node.rag.plan import (
    ShardAnswers,
    ShardPlan,
    deadline_of,
    hedge_after,
    merged_results,
    next_groups,
    wanted_ids,
)
from calinode.node.rag.ports import RagNode
from calinode.node.rag.query_vector import query_vector
from calinode.node.rag.swarm_view import SwarmView
from calinode.protocol.collections import CollectionDef
from calinode.protocol.errors import BadRequest, JobError, groups_collapsed
from calinode.protocol.job_params import MAX_FETCH_IDS, MAX_K
from calinode.protocol.search_budget import SearchBudget, plan_search
from calinode.protocol.shard_params import ShardFetchParams, ShardSearchParams
from calinode.protocol.shard_replies import (
    FetchedChunk,
    ShardFetchReply,
    ShardHits,
    ShardSearchReply,
)

log = logging.getLogger(__name__)

SEARCH_BLOCKS = 4  # query blocks of one search in flight at once
SEARCH_TIMEOUT = 30.0  # budget of a search whose caller has none of its own
SEARCH_REQUESTS_PER_PEER = 2  # shard.search requests of one block in flight to one holder
REQUEST_PATIENCE = 60.0  # seconds one shard.search request may take, plus its reply ...
REQUEST_MIN_BYTES_PER_SECOND = 1e6  # ... at this (very slow) rate; then its next holder
#: Hits (queries x k) below which a merge step runs on the event loop: a thread hop costs more
#: than merging a few thousand hits (and keeps small searches deterministic under trio's
#: MockClock, which jumps while a thread runs)
INLINE_MERGE_HITS = 10_000
_T = TypeVar("_T")


async def merge_step(hits: int, step: Callable[[], _T]) -> _T:
    """Run one merge step of a search of ``hits`` hits: inline when small, else in a thread
    (blocking compute never on the event loop)."""
    if hits <= INLINE_MERGE_HITS:
        return step()
    return await trio.to_thread.run_sync(step)


class Search:
    def __init__(self, node: RagNode, view: SwarmView) -> None:
        self.node = node
        self.view = view
        #: the hit budget of one shard.search request: the same function the serving nodes
        #: refuse requests with, so this node's own searches are always split to fit
        self.budget = SearchBudget()

    async def search(self, name: str, queries: list[str], *, k: int = 10,
                     deadline: float | None = None, timeout: float = SEARCH_TIMEOUT,
                     per_doc: bool = False, text: bool = True) -> list[dict[str, Any]]:
        """Embed the queries and search by ``deadline`` (trio time, set once at the edge: the
        HTTP handler; ``timeout`` from now only for a caller without a budget): the embedding,
        the shard searches and the fetch spend the same budget."""
        deadline = deadline_of(deadline, timeout)
        definition = self.node.book.get(name)
        if not 1 <= k <= MAX_K:
            raise BadRequest(f"k must be 1..{MAX_K}")
        outcome = await self.node.dispatcher.embed(definition.model, queries,
                                                   input_type="query", deadline=deadline)
        if outcome.sha256 != definition.model_sha256:
            raise pinned_model_not_served(definition, outcome.sha256, what="the queries")
        return await self.search_vectors(definition, outcome.vectors, k=k, deadline=deadline,
                                         per_doc=per_doc, text=text)

    async def search_by_vector(self, name: str, vector: Any, model_sha256: Any, *,
                               k: int = 10, deadline: float | None = None,
                               timeout: float = SEARCH_TIMEOUT, per_doc: bool = False,
                               text: bool = True) -> dict[str, Any]:
        """Search with a query the client embedded itself (the dashboard's in-browser
        embedding): ``vector`` is checked against the collection's pinned model and dimension
        (``query_vector``), then searched the same way as a text query after its embedding."""
        deadline = deadline_of(deadline, timeout)
        definition = self.node.book.get(name)
        if not 1 <= k <= MAX_K:
            raise BadRequest(f"k must be 1..{MAX_K}")
        row = query_vector(definition, vector, model_sha256)
        (result,) = await self.search_vectors(definition, row, k=k, deadline=deadline,
                                              per_doc=per_doc, text=text)
        return result

    async def search_vectors(self, definition: CollectionDef, vectors: np.ndarray, *, k: int,
                             deadline: float | None = None, timeout: float = SEARCH_TIMEOUT,
                             per_doc: bool = False, text: bool = True) -> list[dict[str, Any]]:
        """Search every shard by ``deadline``, then fetch the keys (and texts) of the hits that
        can be in the merged top-k, and merge them exactly (``node/result_merge.py``).

        Queries go in blocks small enough that every request fits the search budget
        (``protocol/search_budget.py``), blocks at most ``SEARCH_BLOCKS`` at a time; a shard
        is in the answer only if every block got it, and its hits' keys were fetched; a shard
        still unanswered at the deadline is missing (``partial``). With ``per_doc`` the hits
        are the ``k`` best documents, each by its best chunk; without ``text`` they carry no
        text and metadata."""
        deadline = deadline_of(deadline, timeout)
        plans = self.view.plan(definition)
        per_block, _ = plan_search(len(vectors), k, [], self.budget)
        starts = list(range(0, len(vectors), per_block))
        found: list[dict[int, tuple[str, ShardHits]]] = [{} for _ in starts]
        limiter = trio.CapacityLimiter(SEARCH_BLOCKS)

        async def block(n: int, start: int) -> None:
            async with limiter:
                await self._search_shards(definition, plans, vectors[start:start + per_block],
                                          k, per_doc, deadline, found[n])

        with groups_collapsed():
            async with trio.open_nursery() as nursery:
                for n, start in enumerate(starts):
                    nursery.start_soon(block, n, start)
        complete = set.intersection(*(set(out) for out in found)) if found else set()
        # per shard: the peer that answered, and one (ids, scores) row per query
        answers: ShardAnswers = {
            shard: (found[0][shard][0], [row for out in found for row in out[shard][1].rows()])
            for shard in sorted(complete)}
        holders = {p.shard: p.holders[:3] for p in plans}
        fetched = await self._fetch_wanted(definition, answers, holders, len(vectors), k, text,
                                           deadline)
        missing = missing_shards(set(answers), definition.shards)
        self.node.metrics.search_answered(partial=bool(missing))
        return await merge_step(len(vectors) * k, functools.partial(
            merged_results, answers, fetched, len(vectors), k, per_doc=per_doc, text=text,
            missing=missing))

    async def _fetch_wanted(self, definition: CollectionDef, answers: ShardAnswers,
                            holders: dict[int, list[str]], queries: int, k: int, text: bool,
                            deadline: float) -> dict[int, dict[int, FetchedChunk]]:
        """The chunks that may be in some query's merged top-k, per shard, fetched from the
        holder that answered the shard first. A shard whose fetch fails on every holder is
        taken out of ``answers`` (it is missing) and the cut is made again without it."""
        fetched: dict[int, dict[int, FetchedChunk]] = {shard: {} for shard in answers}
        while True:  # a shard whose fetch fails on every holder is missing: cut again
            wanted = await merge_step(queries * k,
                                      functools.partial(wanted_ids, answers, queries, k))
            failed: list[int] = []
            with groups_collapsed():
                async with trio.open_nursery() as nursery:
                    for shard, ids in wanted.items():
                        need = sorted(ids - fetched[shard].keys())
                        if need:
                            first = answers[shard][0]
                            order = [first,
                                     *(p for p in holders.get(shard, []) if p != first)]
                            nursery.start_soon(self._fetch_shard, definition, shard, order,
                                               need, text, deadline, fetched[shard], failed)
            if not failed:
                return fetched
            for shard in failed:
                del answers[shard]

    async def _fetch_shard(self, definition: CollectionDef, shard: int, holders: list[str],
                           ids: list[int], text: bool, deadline: float,
                           out: dict[int, FetchedChunk], failed: list[int]) -> None:
        """Keys (and texts) of chunk ids of one shard into ``out``, page by page, from its
        first holder that answers (a failing or invalid reply: the next holder takes over
        from where it stopped). Appends ``shard`` to ``failed`` when no holder could."""
        todo = np.asarray(ids, dtype=np.int64)
        for peer in holders:
            if peer != holders[0]:  # the holder before failed: the rest goes to this one
                self.node.metrics.job_retried("shard.fetch")
            while len(todo):
                part = todo[:MAX_FETCH_IDS]
                ask = ShardFetchParams(collection=definition.name, shard=shard, ids=part,
                                       text=text)
                try:
                    reply, _ = await self.node.client.call_parsed(
                        peer, "shard.fetch", ask.to_wire(),
                        functools.partial(ShardFetchReply.from_wire, ids=part, text=text,
                                          chunk_id=chunk_faiss_id),
                        timeout=max(0.01, deadline - trio.current_time()))
                except JobError as exc:
                    log.info("fetch of shard %s from %s failed: %s", shard, peer[:16],
                             exc.code.value)
                    break
                strays = [c for c in reply.chunks.values()
                          if shard_of(c.doc_id, definition.shards) != shard]
                if strays:
                    self.node.rejections.reject("bad_reply", peer, f"shard.fetch: document "
                                                f"{strays[0].doc_id[:64]!r} is not in shard "
                                                f"{shard}")
                    break
                out.update(reply.chunks)
                todo = todo[reply.done:]
            if not len(todo):
                return
        failed.append(shard)

    async def _search_shards(self, definition: CollectionDef, plans: list[ShardPlan],
                             vectors: np.ndarray, k: int, per_doc: bool, deadline: float,
                             out: dict[int, tuple[str, ShardHits]]) -> None:
        """Ask each holder for all the shards it is first choice for (in as few requests as
        the search budget allows); a shard whose answer fails is asked again on its next
        holder at once, and every unanswered shard when the round is slower than
        ``HEDGE_AFTER`` plus the time its replies take at ``HEDGE_BYTES_PER_SECOND`` (up to
        three holders each); the first answer for a shard wins. A reply that fails its view
        is one failed holder. At most ``SEARCH_REQUESTS_PER_PEER`` requests wait on one
        holder at a time."""
        await _ShardRound(self, definition, plans, vectors, k, per_doc, out).run(deadline)


class _ShardRound:
    """One query block's shard searches (see :meth:`Search._search_shards`): who was asked
    for which shard, what is still in flight, and the answers so far (``out``)."""

    def __init__(self, search: Search, definition: CollectionDef, plans: list[ShardPlan],
                 vectors: np.ndarray, k: int, per_doc: bool,
                 out: dict[int, tuple[str, ShardHits]]) -> None:
        self.node, self.budget = search.node, search.budget
        self.definition, self.vectors, self.k, self.per_doc = definition, vectors, k, per_doc
        self.out = out
        self.holders = {p.shard: p.holders[:3] for p in plans if p.holders}
        self.tried: set[tuple[str, int]] = set()
        self.inflight = dict.fromkeys(self.holders, 0)
        self.outstanding = 0
        self.changed = trio.Event()  # an attempt settled
        self.slots: dict[str, trio.CapacityLimiter] = {}

    async def run(self, deadline: float) -> None:
        """Attempts until every shard answered, every holder of the missing ones failed, or
        ``deadline``; a slow round (see ``plan.hedge_after``) asks the next holders too."""
        reply_bytes = self.budget.search_bytes(len(self.vectors), self.k, len(self.holders))
        hedge_delay = hedge_after(reply_bytes)
        with trio.move_on_at(deadline):
            async with trio.open_nursery() as nursery:
                hedge_at = first = trio.current_time()
                while len(self.out) < len(self.holders):
                    slow = trio.current_time() >= hedge_at  # first round, or a slow round
                    groups = next_groups(self.holders, self.out, self.inflight, self.tried,
                                         hedge=slow)
                    self._count_resent(groups, hedged=slow, first=hedge_at == first)
                    for peer, shards in groups.items():
                        self.outstanding += 1
                        for shard in shards:
                            self.inflight[shard] += 1
                        nursery.start_soon(self._attempt, peer, shards, deadline)
                    if slow:
                        hedge_at = trio.current_time() + hedge_delay
                    if not groups and self.outstanding == 0:
                        break  # every holder of the missing shards failed
                    self.changed = trio.Event()
                    with trio.move_on_at(hedge_at):
                        await self.changed.wait()
                nursery.cancel_scope.cancel()

    def _count_resent(self, groups: dict[str, list[int]], *, hedged: bool, first: bool) -> None:
        """Requests after the first round: hedges (a slow round) or retries (a failed one)."""
        if groups and not first:
            metrics = self.node.metrics
            for _ in groups:
                (metrics.job_hedged if hedged else metrics.job_retried)("shard.search")

    async def _attempt(self, peer: str, shards: list[int], deadline: float) -> None:
        try:
            _, groups = plan_search(len(self.vectors), self.k, shards, self.budget)
            async with trio.open_nursery() as nursery:
                for group in groups:
                    nursery.start_soon(self._request, peer, group, deadline)
        finally:
            self.outstanding -= 1
            for shard in shards:
                self.inflight[shard] -= 1
            self.changed.set()

    async def _request(self, peer: str, shards: list[int], deadline: float) -> None:
        vectors, k = self.vectors, self.k
        params = ShardSearchParams(collection=self.definition.name, shards=tuple(shards),
                                   vectors=vectors, k=k, per_doc=self.per_doc).to_wire()
        slot = self.slots.setdefault(peer, trio.CapacityLimiter(SEARCH_REQUESTS_PER_PEER))
        # a stalled stream (a connection broken under it) must not hold the shard until
        # the search's deadline: the request gets the time its reply may take, then the
        # shard goes to its next holder
        patience = REQUEST_PATIENCE + self.budget.search_bytes(
            len(vectors), k, len(shards)) / REQUEST_MIN_BYTES_PER_SECOND
        try:
            async with slot:  # a few replies at a time on one connection
                reply, _ = await self.node.client.call_parsed(
                    peer, "shard.search", params,
                    lambda wire: ShardSearchReply.from_wire(wire, shards=shards,
                                                            queries=len(vectors), k=k),
                    timeout=max(0.01, min(deadline - trio.current_time(), patience)))
            for shard in shards:
                self.out.setdefault(shard, (peer, reply.results[shard]))
        except JobError as exc:
            log.info("shards %s on %s failed: %s", shards, peer[:16], exc.code.value)
