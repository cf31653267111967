"""The ``shard.*`` job kinds a node with ``--index`` answers, over the replicas it hosts
(:class:`~calinode.node.index.replicas.LocalIndex`).

Every job's params are parsed into their views (``protocol/shard_params.py``) before use;
``shard.search`` is bounded to the collection's shards, each once, and refused before it runs
when its reply could be over the search budget (``protocol/search_budget.py``).

Job kinds: ``write`` (whole documents with chunk vectors; durable before the reply),
``write_many`` (the writes of several shards in one request, each shard answered alone),
``delete``, ``search`` (several shards of one collection in one request; hits are chunk ids
and scores only, per chunk or per document), ``fetch`` (the keys, texts and metadata of chunk
ids of one shard, paged to the reply budget), ``changes`` (paged export for replica sync:
whole documents, a keys-only listing of document states, or whole documents by id) and
``info``.
"""

from __future__ import annotations

import functools
from typing import Any

import numpy as np
import trio

from calinode.models.store.records import DocRecord
from calinode.models.store.shard_store import ShardStore
from calinode.node.access import AccessPolicy
from calinode.node.hlc import HybridClock
from calinode.node.index.collections import CollectionBook
from calinode.node.index.replicas import LocalIndex, shard_unavailable
from calinode.node.index.wire import docs_to_wire, fetch_reply, records_from_wire
from calinode.node.index.write_frames import MAX_DOC_BYTES, write_groups
from calinode.node.jobs.server import JobContext, JobRegistry
from calinode.protocol.collections import CollectionDef
from calinode.protocol.errors import (
    BadRequest,
    CalinodeError,
    ErrorCode,
    JobError,
    groups_collapsed,
)
from calinode.protocol.search_budget import DEFAULT_SEARCH_BUDGET, SearchBudget, check_search
from calinode.protocol.shard_params import (
    ShardChangesParams,
    ShardFetchParams,
    ShardInfoParams,
    ShardSearchParams,
    ShardWriteItem,
    ShardWriteManyParams,
    ShardWriteParams,
)
from calinode.protocol.shard_replies import MAX_ERROR_MESSAGE, ShardHits, ShardSearchReply
from calinode.protocol.wire_docs import WireDoc

__all__ = ["ShardJobs", "register_index_jobs"]


def _known(book: CollectionBook, definition: CollectionDef) -> bool:
    """The book holds this very definition: nothing to verify or merge (every write of an
    ingest carries it), so no worker-thread hop for it."""
    try:
        return book.get(definition.name, include_dropped=True) == definition
    except JobError:
        return False


def _in_range(shard: int, definition: CollectionDef) -> int:
    if not 0 <= shard < definition.shards:
        raise BadRequest(f"shard must be 0..{definition.shards - 1}")
    return shard


def register_index_jobs(registry: JobRegistry, index: LocalIndex,
                        budget: SearchBudget = DEFAULT_SEARCH_BUDGET, *,
                        access: AccessPolicy | None = None,
                        clock: HybridClock | None = None) -> None:
    """The ``shard.*`` kinds. ``access`` decides who may read and write (default: everyone,
    for tests of one node); ``clock`` refuses versions too far ahead and keeps this node's own
    versions above every one it stored."""
    jobs = ShardJobs(index, budget, access or AccessPolicy(self_id="", private=True),
                     clock or HybridClock())
    registry.register("shard.write", jobs.write)
    registry.register("shard.write_many", jobs.write_many)
    registry.register("shard.search", jobs.search)
    registry.register("shard.fetch", jobs.fetch)
    registry.register("shard.changes", jobs.changes)
    registry.register("shard.info", jobs.info)


class ShardJobs:
    """The handlers of the ``shard.*`` kinds (see :func:`register_index_jobs`)."""

    def __init__(self, index: LocalIndex, budget: SearchBudget, rules: AccessPolicy,
                 hlc: HybridClock) -> None:
        self.index = index
        self.book = index.book
        self.budget = budget
        self.rules = rules
        self.hlc = hlc

    async def writable(self, ctx: JobContext, collection: str,
                       sent: CollectionDef | None) -> CollectionDef:
        """The collection a write goes to (admitting the definition it carries), once the
        caller may write it."""
        if sent is not None and not _known(self.book, sent):
            await trio.to_thread.run_sync(functools.partial(
                self.book.admit, sent, may_own=self.rules.may_own))
        definition = self.book.get(collection)
        self.rules.require_write(ctx.caller, definition)
        return definition

    async def write_docs(self, definition: CollectionDef, shard: int,
                         docs: tuple[WireDoc, ...], seed: bool) -> dict[str, Any]:
        index, hlc = self.index, self.hlc
        shard = _in_range(shard, definition)
        if seed and not docs:  # a new collection: every shard starts empty
            await index.store(definition, shard)
            await index.mark_ready(definition.name, shard)
            return {"inserted": 0, "replaced": 0, "deleted": 0, "unchanged": 0, "stale": 0,
                    "outcomes": {}}
        if not docs:
            raise BadRequest("docs must be a non-empty list")
        records = records_from_wire(docs, definition.dim)
        for record in records:  # a version chosen far ahead would win over every later write
            hlc.check(record.version)
        result = await index.call(definition, shard, lambda s: s.apply(records), writes=True)
        index.note_write(definition.name, shard)
        hlc.observe(max(record.version for record in records))
        if seed:  # the writer saw no ready replica: this one starts it (unless it
            await index.mark_ready(definition.name, shard)  # is recovering: see mark_ready)
        return {"inserted": result.inserted, "replaced": result.replaced,
                "deleted": result.deleted, "unchanged": result.unchanged, "stale": result.stale,
                "outcomes": result.outcomes}

    async def write(self, ctx: JobContext, params: dict[str, Any]) -> dict[str, Any]:
        request = ShardWriteParams.from_wire(params)
        definition = await self.writable(ctx, request.collection, request.definition)
        return await self.write_docs(definition, request.shard, request.docs, request.seed)

    async def write_many(self, ctx: JobContext, params: dict[str, Any]) -> dict[str, Any]:
        """Several shards' writes in one request, the shards written at once; each shard
        answers alone (its reply, or its error's code and message), as ``shard.write``."""
        request = ShardWriteManyParams.from_wire(params)
        definition = await self.writable(ctx, request.collection, request.definition)
        answers: dict[int, dict[str, Any]] = {}

        async def one(item: ShardWriteItem) -> None:
            try:
                answers[item.shard] = {"shard": item.shard, "result": await self.write_docs(
                    definition, item.shard, item.docs, item.seed)}
            except CalinodeError as exc:
                answers[item.shard] = {"shard": item.shard, "error": exc.code.value,
                                       "message": exc.message[:MAX_ERROR_MESSAGE]}

        with groups_collapsed():
            async with trio.open_nursery() as nursery:
                for item in request.writes:
                    nursery.start_soon(one, item)
        return {"shards": [answers[item.shard] for item in request.writes]}

    async def search(self, ctx: JobContext, params: dict[str, Any]) -> dict[str, Any]:
        index = self.index
        request = ShardSearchParams.from_wire(params)  # shards sorted, each once
        definition = self.book.get(request.collection)
        self.rules.require_read(ctx.caller, definition)
        shards = [_in_range(shard, definition) for shard in request.shards]
        if request.vectors.shape[1] != definition.dim:
            raise BadRequest(f"expected query vectors of dimension {definition.dim}, "
                      f"got {request.vectors.shape[1]}")
        try:  # refused before any work: the search thread cannot be cancelled
            check_search(request.queries, request.k, len(shards), self.budget)
        except JobError as exc:
            ctx.reject("over_budget", exc.message)
            raise
        queries = np.ascontiguousarray(request.vectors)
        k = request.k
        for shard in shards:
            if not index.is_ready(definition.name, shard):
                raise shard_unavailable(definition.name, shard)

        per_doc = request.per_doc

        def run(store: ShardStore) -> ShardHits:
            return ShardHits.from_rows(store.search_ids(queries, k, per_doc=per_doc))

        answers = await index.call_many(definition, shards, run)
        return ShardSearchReply(results=dict(zip(shards, answers, strict=True))).to_wire()

    async def fetch(self, ctx: JobContext, params: dict[str, Any]) -> dict[str, Any]:
        """Keys (and texts) of chunk ids of one shard: a prefix of the asked ids whose reply
        fits the budget, measured entry by entry (``FetchPage``); ``done`` says how many."""
        index = self.index
        request = ShardFetchParams.from_wire(params)
        definition = self.book.get(request.collection)
        self.rules.require_read(ctx.caller, definition)
        shard = _in_range(request.shard, definition)
        if not index.is_ready(definition.name, shard):
            raise shard_unavailable(definition.name, shard)
        ids, text = request.ids.tolist(), request.text
        found = await index.call(definition, shard, lambda s: s.fetch_ids(ids, text=text))
        return await trio.to_thread.run_sync(
            functools.partial(fetch_reply, ids, found, text=text, budget=self.budget),
            limiter=index.limiter)

    async def changes(self, ctx: JobContext, params: dict[str, Any]) -> dict[str, Any]:
        index = self.index
        request = ShardChangesParams.from_wire(params)
        definition = self.book.get(request.collection, include_dropped=True)
        self.rules.require_read(ctx.caller, definition)
        shard = _in_range(request.shard, definition)
        if not index.has(definition.name, shard):
            raise shard_unavailable(definition.name, shard)
        since, after, limit = request.since_version, request.after_doc_id, request.limit
        if request.keys_only:  # states only, in doc_id order: what sync compares first
            keys = await index.call(definition, shard, lambda s: s.keys(after, limit))
            return {"keys": [list(key) for key in keys],
                    "digest": index.digest_of(definition.name, shard)}
        if request.doc_ids:  # the documents a keys-only comparison found missing
            ids = request.doc_ids
            records = await index.call(definition, shard, lambda s: s.records(ids))
        else:
            records = await index.call(definition, shard,
                                       lambda s: s.changes(since, limit, after_doc_id=after))
        # the page ends where one more document would overflow a frame (at least one: a
        # document of the maximum size fits a frame alone); the puller asks on from there
        docs = await trio.to_thread.run_sync(_changes_page, records)
        return {"docs": docs, "digest": index.digest_of(definition.name, shard)}

    async def info(self, ctx: JobContext, params: dict[str, Any]) -> dict[str, Any]:
        """Counts, digest and problems of every replica held. The digest is kept current by
        the writes; the problems come from :meth:`ShardStore.quick_check` (counts) unless the
        caller asks for the full ``check``, which reads and hashes every chunk row."""
        index = self.index
        request = ShardInfoParams.from_wire(params)
        definition = self.book.get(request.collection)
        self.rules.require_read(ctx.caller, definition)
        rows = []

        def look(store: ShardStore) -> tuple[tuple[int, int], list[str]]:
            return store.count(), store.check() if request.check else store.quick_check()

        for shard in range(definition.shards):
            if not index.has(definition.name, shard):
                continue
            try:
                counts = await index.call(definition, shard, look)
            except JobError as exc:
                if exc.code is not ErrorCode.SHARD_UNAVAILABLE:
                    raise
                continue  # dropped while we asked
            (docs, chunks), problems = counts
            rows.append({"shard": shard, "docs": docs, "chunks": chunks,
                         "problems": problems,
                         "ready": index.is_ready(definition.name, shard),
                         "digest": index.digest_of(definition.name, shard)})
        return {"shards": rows}


def _changes_page(records: list[DocRecord]) -> list[dict[str, Any]]:
    """The first documents of ``records`` that fit one frame (at least one: a document of the
    maximum size fits a frame alone), in their wire form; measured and encoded in a worker
    thread (thousands of chunks for long documents)."""
    page = write_groups(records, MAX_DOC_BYTES)[0] if records else []
    return docs_to_wire(page)
