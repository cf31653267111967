"""Quorum writes of whole documents to a shard's owners: what ingest, delete and a new
collection's empty shards go through.

Each shard's documents go to its R owners (placement over the live index peers); a document is
acknowledged only once ``quorum`` owners said it is durable (``write_quorum.settle``). An owner
busy with other writes (``OVERLOADED``) is asked again after a jittered back-off, until
``WRITE_TIMEOUT``.
"""

from __future__ import annotations

import functools
import logging
import random
from collections.abc import Awaitable, Callable
from typing import TypeVar

import trio

from calinode.models.store.records import DocRecord
from calinode.node.index.placement import PlacementMap
from calinode.node.index.wire import docs_to_wire
from calinode.node.index.write_frames import write_rounds
from calinode.node.rag.ports import RagNode
from calinode.node.rag.swarm_view import SwarmView
from calinode.node.rag.write_quorum import DocSettlement, ReplicaAnswer, settle
from calinode.protocol.collections import CollectionDef
from calinode.protocol.errors import ErrorCode, JobError, groups_collapsed
from calinode.protocol.shard_replies import ShardWriteManyReply, ShardWriteReply

log = logging.getLogger(__name__)

WRITE_TIMEOUT = 30.0
WRITE_ATTEMPTS = 8  # tries of one owner's write while it answers OVERLOADED
_T = TypeVar("_T")


async def retry_overloaded(call: Callable[[float], Awaitable[_T]],
                           on_retry: Callable[[], None] = lambda: None) -> _T:
    """``call(timeout)`` until it succeeds, for at most ``WRITE_TIMEOUT`` seconds: an
    ``OVERLOADED`` replica (busy with other writes) is asked again after a jittered back-off,
    up to ``WRITE_ATTEMPTS`` times, each time calling ``on_retry`` (the node counts it in
    ``calinode_job_retries_total``); any other ``JobError``, or the last, is raised."""
    deadline = trio.current_time() + WRITE_TIMEOUT
    for attempt in range(WRITE_ATTEMPTS):
        try:
            return await call(max(0.1, deadline - trio.current_time()))
        except JobError as exc:
            if exc.code != ErrorCode.OVERLOADED or attempt == WRITE_ATTEMPTS - 1:
                raise
        # the replica is busy with other writes: back off (jittered) and try again
        on_retry()
        await trio.sleep(min(2.0, 0.02 * 2 ** attempt) * (0.5 + random.random()))
    raise AssertionError("unreachable: the last attempt returns or raises")


class ShardWriter:
    def __init__(self, node: RagNode, view: SwarmView) -> None:
        self.node = node
        self.view = view

    async def write_all(self, definition: CollectionDef, writes: dict[int, list[DocRecord]]
                        ) -> list[DocSettlement]:
        """Write each shard's documents to its owners; every document's settlement. The
        writes go in rounds of a bounded size (``write_rounds``: one round for a usual batch;
        a document of millions of characters in a round of its own), one after the other."""
        settled: list[DocSettlement] = []
        rounds = await trio.to_thread.run_sync(write_rounds, writes)  # sizes every chunk
        for writes_of_round in rounds:
            settled.extend(await self._write_round(definition, writes_of_round))
        return settled

    async def _write_round(self, definition: CollectionDef, writes: dict[int, list[DocRecord]]
                           ) -> list[DocSettlement]:
        """Write each shard's documents to its owners; every document's settlement.

        One ``shard.write_many`` per owner carries all the shards it owns of these writes (a
        batch of 16 documents falls in up to 16 shards: a request per shard and owner cost a
        stream each, the coordinator's largest cost after the model). Each shard is still
        settled alone, by the answers of its own owners."""
        placement = self.view.placement(definition)
        ready = self.view.holders(definition)
        outcomes: dict[int, list[DocSettlement]] = {}
        answers: dict[int, list[ReplicaAnswer]] = {}
        by_owner: dict[str, list[int]] = {}
        for shard in writes:
            owners = placement.owners(shard)
            if len(owners) < definition.quorum:
                outcomes[shard] = settle([d.doc_id for d in writes[shard]], [],
                                         definition.quorum, unavailable=(
                    f"shard {shard}: {len(owners)} live index peers, quorum "
                    f"{definition.quorum}"))
                continue
            answers[shard] = []
            for peer in owners:
                by_owner.setdefault(peer, []).append(shard)
        items = {shard: {"shard": shard, "docs": docs_to_wire(writes[shard]),
                         "seed": not ready.get(shard)}  # no ready replica yet: start it
                 for shard in answers}
        with groups_collapsed():
            async with trio.open_nursery() as nursery:
                for peer, shards in by_owner.items():
                    nursery.start_soon(self._write_owner, definition, peer, shards, items,
                                       answers)
        for shard, given in answers.items():
            outcomes[shard] = settle([d.doc_id for d in writes[shard]], given,
                                     definition.quorum)
        return [doc for shard in writes for doc in outcomes[shard]]

    async def _write_owner(self, definition: CollectionDef, peer: str, shards: list[int],
                           items: dict[int, dict[str, object]],
                           answers: dict[int, list[ReplicaAnswer]]) -> None:
        """One owner's ``shard.write_many`` of every shard it owns of a round: its answer
        per shard into ``answers``."""
        params = {"collection": definition.name, "definition": definition.to_wire(),
                  "writes": [items[shard] for shard in shards]}

        async def call(timeout: float) -> ShardWriteManyReply:
            reply, _ = await self.node.client.call_parsed(
                peer, "shard.write_many", params,
                functools.partial(ShardWriteManyReply.from_wire, shards=shards),
                timeout=timeout)
            return reply

        try:
            reply = await retry_overloaded(
                call, lambda: self.node.metrics.job_retried("shard.write_many"))
        except JobError as exc:
            for shard in shards:
                answers[shard].append(ReplicaAnswer(peer, None, exc.code.value))
            return
        for shard, result in reply.results.items():
            answers[shard].append(
                ReplicaAnswer(peer, result.outcomes)
                if isinstance(result, ShardWriteReply)
                else ReplicaAnswer(peer, None, result.code))

    async def write_shard(self, definition: CollectionDef, placement: PlacementMap, shard: int,
                          docs: list[DocRecord], outcomes: dict[int, list[DocSettlement]],
                          seed_empty: bool = False) -> None:
        """Write ``docs`` to the shard's owners; ``outcomes[shard]``: what became of each.
        With ``seed_empty`` (a new collection) ``docs`` is empty and every owner starts an
        empty ready replica."""
        owners = placement.owners(shard)
        doc_ids = [d.doc_id for d in docs]
        if len(owners) < definition.quorum and not seed_empty:
            outcomes[shard] = settle(doc_ids, [], definition.quorum, unavailable=(
                f"shard {shard}: {len(owners)} live index peers, quorum {definition.quorum}"))
            return
        seed = seed_empty or not self.view.holders(definition).get(shard)  # no ready replica
        params = {"collection": definition.name, "definition": definition.to_wire(),
                  "shard": shard, "docs": docs_to_wire(docs), "seed": seed}
        answers: list[ReplicaAnswer] = []

        async def one(peer: str) -> None:
            async def call(timeout: float) -> ShardWriteReply:
                reply, _ = await self.node.client.call_parsed(
                    peer, "shard.write", params, ShardWriteReply.from_wire, timeout=timeout)
                return reply

            try:
                reply = await retry_overloaded(
                    call, lambda: self.node.metrics.job_retried("shard.write"))
                answers.append(ReplicaAnswer(peer, reply.outcomes))
            except JobError as exc:
                answers.append(ReplicaAnswer(peer, None, exc.code.value))

        with groups_collapsed():
            async with trio.open_nursery() as nursery:
                for peer in owners:
                    nursery.start_soon(one, peer)
        outcomes[shard] = settle(doc_ids, answers, definition.quorum)
        if seed_empty and not any(a.outcomes is not None for a in answers):
            log.warning("collection %s: shard %s could not be seeded yet", definition.name, shard)
