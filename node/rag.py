"""Collections across the swarm: create, ingest, search, ask, and replica sync.

- **Ingest**: documents are cut and embedded on an embedding peer (``embed_chunks``, with the
  collection's pinned model: a reply from another model file is refused), each document goes
  to shard ``shard_of(doc_id, S)``, and to that shard's R owners by rendezvous hashing over the
  live index peers. A document is acknowledged only once ``quorum`` owners said it is durable.
- **Search**: the query is embedded with the collection's model (query prefix); every shard is
  asked on one live holder (placement owners first), with a hedged second request to another
  holder when the first is slow or fails; per-query results are merged exactly. A shard with no
  live holder makes the answer ``partial`` and is named in ``missing_shards``.
- **Sync** (every ``SYNC_INTERVAL``): definitions are merged from peers' records; a node opens
  the shards it owns, and for every shard it holds compares with any live holder whose shard
  digest differs from its own: it lists the holder's document states (keys only) and pulls
  whole only the documents whose state there wins over its own (both sides do, so replicas
  converge, deletes included). A ready replica taking a coordinator's writes waits with this
  until they pause (``SYNC_QUIET``), at most ``MAX_SYNC_DEFER`` seconds. A replica a node
  holds but no longer owns is kept in sync until all R owners have
  held the same documents (equal digests) for ``replica_gc_after`` seconds without a break;
  then it is deleted (``may_drop_replica``, ``LocalIndex.drop``). A replica ready before its
  node restarted is *recovering*: it serves again only once this node knows the live swarm
  (two heartbeat rounds) and has pulled every other live copy (``_recover``), so acknowledged
  writes it missed while down are visible to every search. Replicas of a dropped collection
  are deleted (``LocalIndex.purge``), and so are those of an earlier incarnation of a name.
- **Lifecycle**: ``create`` picks min(2, live index peers) replicas when none are asked;
  ``update`` signs a new version with another replication; ``ingest`` is refused before
  anything is embedded when the write quorum is out of reach (``require_write_quorum``).
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import logging
import random
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np
import trio

from calinode.models.store.digest import DocState, Outcome, chunk_faiss_id, resolve
from calinode.models.store.records import ChunkWrite, DocRecord
from calinode.models.store.shard_store import ShardStore
from calinode.node.index.chunking import content_hash, make_document_text, text_pieces
from calinode.node.index.collections import sign_definition
from calinode.node.index.merge import ShardHit, cut_candidates, merge_topk, missing_shards
from calinode.node.index.placement import PlacementCache, PlacementMap, may_drop_replica, shard_of
from calinode.node.index.wire import docs_to_wire, records_from_wire
from calinode.node.index.write_frames import too_large, write_rounds
from calinode.node.ingest_input import MAX_DOCUMENT_CHARS, document_size
from calinode.node.jobs.routing import Candidate
from calinode.node.rejections import RateLimitedLog
from calinode.node.write_quorum import DocSettlement, ReplicaAnswer, settle
from calinode.protocol.capabilities import Capabilities, ModelOffer
from calinode.protocol.collections import CollectionDef
from calinode.protocol.errors import (
    BadRequest,
    CalinodeError,
    ErrorCode,
    JobError,
    ProtocolError,
    RemoteProtocolError,
    groups_collapsed,
)
from calinode.protocol.job_params import (
    MAX_FETCH_IDS,
    MAX_K,
    MAX_TEXT_CHARS,
    ShardChangesParams,
    ShardFetchParams,
    ShardSearchParams,
)
from calinode.protocol.job_replies import (
    EmbedChunksReply,
    FetchedChunk,
    ShardChangesReply,
    ShardFetchReply,
    ShardHits,
    ShardKeysReply,
    ShardSearchReply,
    ShardWriteManyReply,
    ShardWriteReply,
)
from calinode.protocol.search_budget import SearchBudget, plan_search

if TYPE_CHECKING:
    from calinode.node.daemon import Node

log = logging.getLogger(__name__)
quiet = RateLimitedLog(log)
_SUMMARY_KEY = {"inserted": "added", "replaced": "replaced", "unchanged": "unchanged"}

INGEST_BATCH = 16
BATCHES_PER_EMBEDDER = 2
MAX_BATCHES_IN_FLIGHT = 8
HEDGE_AFTER = 0.25  # seconds before a second holder is asked for a slow shard ...
HEDGE_BYTES_PER_SECOND = 20e6  # ... plus the time its reply may take to arrive at this rate
SYNC_INTERVAL = 2.0
#: A ready replica that took a coordinator's write in the last SYNC_QUIET seconds skips its
#: sync round: while an ingest runs, every replica's digest differs from its peers' by the
#: writes in flight to them, and comparing (a keys listing per holder, each round) would only
#: find those. It compares again once the writes pause, and at least every MAX_SYNC_DEFER
#: seconds whatever the writes, so a write one replica missed is still found under a
#: continuous load. Recovering and not yet ready replicas never wait.
SYNC_QUIET = SYNC_INTERVAL
MAX_SYNC_DEFER = 30.0
WRITE_TIMEOUT = 30.0
DEFAULT_REPLICAS = 2  # replicas of a new collection, at most the live index peers
PULL_PAGE = 200  # documents per shard.changes request of whole documents
KEYS_PAGE = 1000  # document states per keys-only shard.changes page
SEARCH_BLOCKS = 4  # query blocks of one search in flight at once
SEARCH_TIMEOUT = 30.0  # budget of a search whose caller has none of its own
SEARCH_REQUESTS_PER_PEER = 2  # shard.search requests of one block in flight to one holder
REQUEST_PATIENCE = 60.0  # seconds one shard.search request may take, plus its reply ...
REQUEST_MIN_BYTES_PER_SECOND = 1e6  # ... at this (very slow) rate; then its next holder
Progress = Callable[[dict[str, Any]], Awaitable[None]]
_T = TypeVar("_T")
#: One chunk of an embedded document: its text, its offsets into the document, its vector.
_EmbeddedChunk = tuple[str, int, int, "np.ndarray[Any, np.dtype[np.float32]]"]


def deadline_of(deadline: float | None, timeout: float) -> float:
    """The caller's absolute deadline (trio time), or ``timeout`` seconds from now for a
    caller that has none: every step of one request spends the same budget."""
    return trio.current_time() + timeout if deadline is None else deadline


#: Hits (queries x k) below which a merge step runs on the event loop: a thread hop costs more
#: than merging a few thousand hits (and keeps small searches deterministic under trio's
#: MockClock, which jumps while a thread runs)
INLINE_MERGE_HITS = 10_000


async def merge_step(hits: int, step: Callable[[], _T]) -> _T:
    """Run one merge step of a search of ``hits`` hits: inline when small, else in a thread
    (blocking compute never on the event loop)."""
    if hits <= INLINE_MERGE_HITS:
        return step()
    return await trio.to_thread.run_sync(step)


@dataclass
class ShardPlan:
    shard: int
    holders: list[str]  # live peers holding the shard, preferred first


ShardAnswers = dict[int, tuple[str, list[tuple[np.ndarray, np.ndarray]]]]


def wanted_ids(answers: ShardAnswers, queries: int, k: int) -> dict[int, set[int]]:
    """Per shard, the chunk ids that may be in some query's merged top-k (``cut_candidates``).
    Blocking (numpy over every hit)."""
    wanted: dict[int, set[int]] = {shard: set() for shard in answers}
    for q in range(queries):
        rows = [(shard, rows[q]) for shard, (_, rows) in answers.items()]
        keep = cut_candidates([scores for _, (_, scores) in rows], k)
        for (shard, (ids, _)), mask in zip(rows, keep, strict=True):
            wanted[shard].update(ids[mask].tolist())
    return wanted


def merged_results(answers: ShardAnswers, fetched: dict[int, dict[int, FetchedChunk]],
                   queries: int, k: int, *, per_doc: bool, text: bool,
                   missing: list[int]) -> list[dict[str, Any]]:
    """Each query's merged top-k as API hits (blocking). Only the candidates at the cut
    (``cut_candidates``) are looked at; without tied scores among them the order is by score
    alone (a numpy sort), with ties it is :func:`merge_topk`'s full key."""
    sources = list(answers.items())
    if not sources:  # no shard answered: every query's answer is empty (and partial)
        return [{"hits": [], "partial": True, "missing_shards": missing} for _ in range(queries)]
    results = []
    for q in range(queries):
        keep = cut_candidates([rows[q][1] for _, (_, rows) in sources], k)
        ids = np.concatenate([rows[q][0][m] for (_, (_, rows)), m in zip(sources, keep,
                                                                          strict=True)])
        scores = np.concatenate([rows[q][1][m] for (_, (_, rows)), m in zip(sources, keep,
                                                                             strict=True)])
        origin = np.repeat(np.arange(len(sources)), [int(m.sum()) for m in keep])
        order = np.argsort(-scores, kind="stable")
        ranked = scores[order]
        picked: list[tuple[FetchedChunk, float, int, str]] = []
        if len(order) > 1 and bool(np.any(ranked[1:] == ranked[:-1])):
            lists = [[ShardHit(c.doc_id, c.chunk, float(scores[n]), sources[o][0],
                               sources[o][1][0])
                      for n, o in enumerate(origin.tolist())
                      if (c := fetched[sources[o][0]].get(int(ids[n]))) is not None]]
            for h in merge_topk(lists, k, per_doc=per_doc):
                chunk = fetched[h.shard][chunk_faiss_id(h.doc_id, h.chunk)]
                picked.append((chunk, h.score, h.shard, h.peer))
        else:
            seen: set[str] = set()
            for n in order.tolist():
                shard, (peer, _) = sources[int(origin[n])]
                chunk_or_none = fetched[shard].get(int(ids[n]))
                if chunk_or_none is None or (per_doc and chunk_or_none.doc_id in seen):
                    continue  # deleted since the search; a second chunk of a document
                seen.add(chunk_or_none.doc_id)
                picked.append((chunk_or_none, float(scores[n]), shard, peer))
                if len(picked) == k:
                    break
        hits = []
        for chunk, score, shard, peer in picked:
            hit: dict[str, Any] = {"doc_id": chunk.doc_id, "chunk": chunk.chunk, "score": score}
            if text:
                hit["text"], hit["metadata"] = chunk.text, dict(chunk.metadata)
            hit["shard"], hit["peer"] = shard, peer
            hits.append(hit)
        results.append({"hits": hits, "partial": bool(missing), "missing_shards": missing})
    return results


def _apply(store: ShardStore, *, records: list[DocRecord]) -> object:
    return store.apply(records)


def _states(store: ShardStore, *, doc_ids: list[str]) -> dict[str, DocState]:
    return store.states(doc_ids)


def _text_size(doc: Any) -> int:
    if not isinstance(doc, dict):
        return 1
    return 1 + sum(len(v) for v in (doc.get("title"), doc.get("text")) if isinstance(v, str))


def ingest_batches(docs: list[Any], embedders: int) -> list[list[Any]]:
    """``docs`` cut into contiguous batches for ``embed_chunks``: about ``INGEST_BATCH``
    documents each, their number a multiple of ``embedders`` (when there are documents
    enough), and of about equal text (what the embedding time grows with).

    Why: the embedders work on one request's batches at once; batches of 16 documents, 4 of
    them for 3 embedders, kept one embedder busy twice as long as the others, which then
    idled until the request's last batch was done (three nodes ingested at 0.52x the model)."""
    if not docs:
        return []
    count = -(-len(docs) // INGEST_BATCH)
    if embedders > 1 and len(docs) >= embedders:
        count = -(-count // embedders) * embedders
    count = min(count, len(docs))
    sizes = [_text_size(doc) for doc in docs]
    total = sum(sizes)
    batches: list[list[Any]] = []
    start, seen = 0, 0
    for n in range(1, count):
        # the end of batch n: where the running text size passes n/count of the total,
        # leaving at least one document for every batch still to come
        target = total * n / count
        end = start + 1
        seen += sizes[start]
        while end < len(docs) - (count - n) and seen + sizes[end] <= target:
            seen += sizes[end]
            end += 1
        batches.append(docs[start:end])
        start = end
    batches.append(docs[start:])
    # a few huge documents can leave many small ones to one batch: no batch is longer than
    # twice the usual (an embed_chunks request has a bounded number of documents)
    return [batch[at:at + INGEST_BATCH] if len(batch) > 2 * INGEST_BATCH else batch
            for batch in batches
            for at in range(0, len(batch) if len(batch) > 2 * INGEST_BATCH else 1,
                            INGEST_BATCH)]


class _EmbedderSpread:
    """The embedding peers one ingest keeps busy, and how many of its batches each has.

    The dispatcher ranks peers by the load their records advertised, which is seconds old:
    an ingest that sent its batches by that rank alone piled them on one peer while another
    idled. Here each batch goes first to the peer with the fewest of this ingest's batches
    (the dispatcher's rank breaks ties, and stays the order of the fallbacks)."""

    def __init__(self) -> None:
        self._batches: dict[str, int] = {}

    def order(self, ranked: list[Candidate]) -> list[Candidate]:
        rank = {c.peer_id: n for n, c in enumerate(ranked)}
        return sorted(ranked, key=lambda c: (self._batches.get(c.peer_id, 0), rank[c.peer_id]))

    @contextlib.contextmanager
    def running(self, peer: str) -> Iterator[None]:
        self._batches[peer] = self._batches.get(peer, 0) + 1
        try:
            yield
        finally:
            self._batches[peer] -= 1
            if not self._batches[peer]:
                del self._batches[peer]


class Coordinator:
    def __init__(self, node: Node) -> None:
        self.node = node
        # (collection, shard) -> since when this node's non-owned replica has been covered by
        # all of the shard's owners (see may_drop_replica)
        self._covered_since: dict[tuple[str, int], float] = {}
        #: (collection, shard) -> when its replica here last compared with the holders
        self._synced_at: dict[tuple[str, int], float] = {}
        #: (collection, shard) -> why its last sync round failed (cleared by a good round)
        self.sync_failures: dict[tuple[str, int], str] = {}
        #: the hit budget of one shard.search request: the same function the serving nodes
        #: refuse requests with, so this node's own searches are always split to fit
        self.search_budget = SearchBudget()
        #: collection -> its placement over the live index peers it was last built for
        self._placements = PlacementCache()

    # -- views of the swarm ----------------------------------------------------------------

    def _alive_caps(self) -> list[tuple[str, Capabilities]]:
        return [(e.peer_id, e.caps) for e in self.node.table.alive()]

    def index_peers(self) -> list[str]:
        peers = [pid for pid, caps in self._alive_caps() if caps.index]
        if self.node.config.index:
            peers.append(self.node.peer_id)
        return sorted(peers)

    def placement(self, definition: CollectionDef) -> PlacementMap:
        """The collection's placement over the live index peers: built once per (shards,
        replicas, peer set), not on every search, write batch and sync round."""
        return self._placements.get(definition.name, definition.shards, self.index_peers(),
                                    definition.replicas)

    def holders(self, definition: CollectionDef) -> dict[int, dict[str, str]]:
        """shard -> {peer: digest} for live holders (this node included)."""
        found: dict[int, dict[str, str]] = {}
        index = self.node.index
        sources = [(peer, caps.shards) for peer, caps in self._alive_caps()]
        if index is not None:
            sources.append((self.node.peer_id, index.held()))
        for peer, shards in sources:
            for shard, digest in (shards.get(definition.name) or {}).items():
                if shard < definition.shards:  # a peer's record may know an older layout
                    found.setdefault(shard, {})[peer] = digest
        return found

    def plan(self, definition: CollectionDef) -> list[ShardPlan]:
        placement, holders = self.placement(definition), self.holders(definition)
        plans = []
        for shard in range(definition.shards):
            have = holders.get(shard, {})
            owners = [p for p in placement.owners(shard) if p in have]
            rest = sorted(p for p in have if p not in owners)
            plans.append(ShardPlan(shard, owners + rest))
        return plans

    # -- collections -----------------------------------------------------------------------

    def _model_info(self, model: str) -> ModelOffer:
        local = self.node.models.embed.get(model)
        if local is not None:
            return ModelOffer.from_wire(local.manifest.advertised(), "embed")
        for _, caps in self._alive_caps():
            offer = caps.offer("embed", model)
            if offer is not None:
                return offer
        raise JobError(f"no live peer has embedding model {model!r}",
                       code=ErrorCode.UNKNOWN_MODEL)

    def replication_notes(self, replicas: int, quorum: int) -> list[str]:
        """What a user should know about ``replicas`` copies with ``quorum`` on the live index
        peers: more replicas than peers is allowed (the missing copies appear when nodes
        join) but is said plainly, and a quorum the peers cannot reach blocks every write."""
        live = len(self.index_peers())
        notes = []
        if replicas > live:
            notes.append(f"{replicas} replicas asked, but only {live} live index peer"
                         f"{'' if live == 1 else 's'}: each shard has {live} cop"
                         f"{'y' if live == 1 else 'ies'} until more nodes start with --index "
                         "(sync then brings the new replicas up)")
        if quorum > live:
            notes.append(f"a write needs {quorum} durable replicas and only {live} index "
                         f"peer{' is' if live == 1 else 's are'} live: ingest fails until "
                         "another --index node starts (or lower the replication)")
        return notes

    async def create(self, name: str, *, model: str, shards: int, replicas: int | None = None,
                     write_quorum: int = 0, index_kind: str = "flat",
                     admins: tuple[str, ...] = (), writers: tuple[str, ...] = (),
                     readers: tuple[str, ...] = ()) -> tuple[CollectionDef, list[str]]:
        """A new collection owned by this node and signed by it (see protocol/collections.py
        for who may change it, and who may read and write it in an open swarm), and notes
        for the user: the replication chosen when ``replicas`` is None (min(2, live index
        peers), so one node is a valid swarm) and :meth:`replication_notes`."""
        book = self.node.book
        info = self._model_info(model)
        version = 1
        try:
            existing = book.get(name, include_dropped=True)
        except JobError:
            existing = None
        if existing is not None:
            if not existing.dropped:
                raise BadRequest(f"collection {name} exists")
            version = existing.version + 1
        live = len(self.index_peers())
        if not live:
            raise JobError("no index peer is alive to host the collection; start nodes with "
                           "--index", code=ErrorCode.NO_CAPABLE_PEER)
        notes = []
        if replicas is None:
            replicas = min(DEFAULT_REPLICAS, live)
            notes.append(f"replicas: {replicas} (the default, min({DEFAULT_REPLICAS}, "
                         f"{live} live index peer{'' if live == 1 else 's'})); raise it "
                         f"later with: calinode collections update {name} --replicas N")
        assert info.dim is not None and info.pooling is not None  # an embed offer has both
        definition = CollectionDef(
            name=name, model=model, model_sha256=info.sha256, dim=info.dim,
            pooling=info.pooling, normalize=info.normalize, query_prefix=info.query_prefix,
            passage_prefix=info.passage_prefix, shards=shards, replicas=replicas,
            write_quorum=write_quorum, index_kind=index_kind, version=version,
            created=version, owner=self.node.peer_id, admins=admins, writers=writers,
            readers=readers)
        notes.extend(self.replication_notes(definition.replicas, definition.quorum))
        definition = sign_definition(definition, self.node.signer.key_pair)
        placement = self.placement(definition)
        await trio.to_thread.run_sync(book.merge, definition)
        outcomes: dict[int, list[DocSettlement]] = {}
        with groups_collapsed():
            async with trio.open_nursery() as nursery:  # every shard starts empty and ready
                for shard in range(definition.shards):
                    nursery.start_soon(self._write_shard, definition, placement, shard, [],
                                       outcomes, True)
        return definition, notes

    def _changeable(self, name: str, action: str) -> CollectionDef:
        current = self.node.book.get(name)
        if current.owner and not current.may_change(self.node.peer_id):
            raise JobError(f"collection {name} belongs to {current.owner}; only its owner or "
                           f"an admin may {action} it", code=ErrorCode.UNAUTHORIZED)
        return current

    async def update(self, name: str, *, replicas: int, write_quorum: int | None = None
                     ) -> tuple[CollectionDef, list[str]]:
        """A new signed version of the definition with another replication (only its owner
        or an admin may, ``UNAUTHORIZED``). It spreads like any definition; the sync rounds
        then open and pull the shards on their new owners, and drop the copies no longer
        owned once the owners hold the same documents (``replica_gc_after``)."""
        current = self._changeable(name, "update")
        quorum = current.write_quorum if write_quorum is None else write_quorum
        changed = dataclasses.replace(current, replicas=replicas,
                                      write_quorum=min(quorum, replicas),
                                      version=current.version + 1)
        changed = sign_definition(changed, self.node.signer.key_pair)
        await trio.to_thread.run_sync(self.node.book.merge, changed)
        return changed, self.replication_notes(changed.replicas, changed.quorum)

    async def drop(self, name: str) -> CollectionDef:
        """Drop a collection: only its owner or an admin may (``UNAUTHORIZED``). The dropped
        definition spreads like any; every holder's sync round then deletes its replicas."""
        current = self._changeable(name, "drop")
        dropped = sign_definition(current.dropped_copy(), self.node.signer.key_pair)
        await trio.to_thread.run_sync(self.node.book.merge, dropped)
        await self._drop_replicas(dropped)
        return dropped

    async def _drop_replicas(self, definition: CollectionDef) -> None:
        """Close and delete this node's replicas of a dropped collection."""
        index = self.node.index
        if index is None or definition.name not in index.held(ready_only=False):
            return
        for shard in await index.purge(definition):
            log.info("deleted replica %s/%s: the collection was dropped", definition.name,
                     shard)

    def require_write_quorum(self, definition: CollectionDef) -> None:
        """Refuse an ingest that no shard could acknowledge, before anything is embedded:
        every shard has min(R, live index peers) owners, so all or none reach the quorum."""
        live = len(self.index_peers())
        owners = min(definition.replicas, live)
        if owners >= definition.quorum:
            return
        lower = max(1, owners)
        raise JobError(
            f"collection {definition.name} needs {definition.quorum} durable replicas per "
            f"write (replicas {definition.replicas}, write quorum {definition.quorum}) and "
            f"only {live} index peer{'' if live == 1 else 's'} {'is' if live == 1 else 'are'}"
            f" live: start another node with --index, or lower the replication: calinode "
            f"collections update {definition.name} --replicas {lower}",
            code=ErrorCode.SHARD_UNAVAILABLE)

    # -- ingest ----------------------------------------------------------------------------

    async def ingest(self, name: str, docs: list[dict[str, Any]], *,
                     progress: Progress | None = None) -> dict[str, Any]:
        definition = self.node.book.get(name)
        self.require_write_quorum(definition)  # fail before embedding anything
        started = trio.current_time()
        summary: dict[str, Any] = {"collection": name, "documents": len(docs), "chunks": 0,
                                   "acknowledged": 0, "added": 0, "replaced": 0,
                                   "unchanged": 0, "failed": []}
        # BATCHES_PER_EMBEDDER batches in flight per embedding peer: while one batch is
        # written to its shards, the next is already queued at the embedder, so the model
        # never waits for the writes (with one batch per embedder it did after every batch)
        embedders = len(self.node.dispatcher.candidates("embed", definition.model, definition))
        limiter = trio.CapacityLimiter(
            max(1, min(MAX_BATCHES_IN_FLIGHT, BATCHES_PER_EMBEDDER * embedders)))
        spread = _EmbedderSpread()
        done = 0

        async def run(batch: list[dict[str, Any]]) -> None:
            nonlocal done
            async with limiter:
                try:
                    settled, failed, chunks = await self._ingest_batch(definition, batch,
                                                                       spread)
                except CalinodeError as exc:
                    settled, failed, chunks = [], [{"_id": d.get("_id"), "error": exc.code.value,
                                                    "message": exc.message} for d in batch], 0
            for doc in settled:
                if doc.acknowledged:
                    summary["acknowledged"] += 1
                    summary[_SUMMARY_KEY.get(doc.outcome, "unchanged")] += 1
                else:
                    failed.append({"_id": doc.doc_id, "error": doc.outcome,
                                   "message": doc.message})
            summary["chunks"] += chunks
            summary["failed"].extend(failed)
            done += len(batch)
            if progress is not None:
                await progress({"done": done, "total": len(docs),
                                "acknowledged": summary["acknowledged"]})

        with groups_collapsed():
            async with trio.open_nursery() as nursery:
                for batch in ingest_batches(docs, embedders):
                    nursery.start_soon(run, batch)
        summary["seconds"] = round(trio.current_time() - started, 3)
        return summary

    async def _ingest_batch(self, definition: CollectionDef, batch: list[dict[str, Any]],
                            spread: _EmbedderSpread | None = None,
                            ) -> tuple[list[DocSettlement], list[dict[str, Any]], int]:
        """Each valid document's settlement, the documents refused before writing, and the
        number of chunks written."""
        records, rejected = self._validate_docs(batch)
        batch = [doc for doc, record in zip(batch, records, strict=True) if record is not None]
        valid = [record for record in records if record is not None]
        if not batch:
            return [], rejected, 0
        texts = [make_document_text(doc.get("title"), doc["text"]) for doc in batch]
        embedded = await self._embed_documents(definition, texts, spread or _EmbedderSpread())
        version = self.node.clock.tick()
        writes: dict[int, list[DocRecord]] = {}
        row = 0
        for doc, (doc_id, chash), chunks in zip(batch, valid, embedded, strict=True):
            metadata = {k: v for k, v in doc.items() if k not in ("_id", "text")}
            chunk_writes = [
                ChunkWrite(text=text, vector=vector,
                           metadata={**metadata, "position": position, "start": begin,
                                     "end": end})
                for position, (text, begin, end, vector) in enumerate(chunks)]
            record = DocRecord(doc_id=doc_id, content_hash=chash, version=version,
                               deleted=False, chunks=chunk_writes)
            problem = too_large(record)
            if problem is not None:  # its chunks would not fit one write: it fails alone
                rejected.append({"_id": doc_id, "error": ErrorCode.PAYLOAD_TOO_LARGE.value,
                                 "message": problem})
                continue
            row += len(chunk_writes)
            writes.setdefault(shard_of(doc_id, definition.shards), []).append(record)
        return await self._write_all(definition, writes), rejected, row

    async def _embed_documents(self, definition: CollectionDef, texts: list[str],
                               spread: _EmbedderSpread) -> list[list[_EmbeddedChunk]]:
        """Every text cut into chunks and embedded: per text its chunks ``(text, start, end,
        vector)``, offsets into that text.

        One ``embed_chunks`` request carries the texts of up to ``MAX_TEXT_CHARS``
        characters; a longer one (up to ``MAX_DOCUMENT_CHARS``) is cut into pieces
        (``text_pieces``), each piece a request of its own, run on the embedders at once, and
        its chunks' offsets moved back into the whole text."""
        short = [i for i, text in enumerate(texts) if len(text) <= MAX_TEXT_CHARS]
        requests: list[list[tuple[int, int, str]]] = []  # (text index, offset, text) each
        if short:
            requests.append([(i, 0, texts[i]) for i in short])
        for i, text in enumerate(texts):
            if len(text) > MAX_TEXT_CHARS:
                requests.extend([(i, offset, piece)]
                                for offset, piece in text_pieces(text, MAX_TEXT_CHARS))
        out: list[list[_EmbeddedChunk]] = [[] for _ in texts]
        replies: list[EmbedChunksReply | None] = [None] * len(requests)
        embedders = len(self.node.dispatcher.candidates("embed", definition.model, definition))
        limiter = trio.CapacityLimiter(max(1, BATCHES_PER_EMBEDDER * embedders))

        async def embed(n: int) -> None:
            async with limiter:
                replies[n] = await self._embed_request(
                    definition, [text for _, _, text in requests[n]], spread)

        with groups_collapsed():
            async with trio.open_nursery() as nursery:
                for n in range(len(requests)):
                    nursery.start_soon(embed, n)
        for request, reply in zip(requests, replies, strict=True):
            assert reply is not None
            row = 0
            for (i, offset, _), spans in zip(request, reply.chunks, strict=True):
                for span in spans:
                    out[i].append((span.text, offset + span.start, offset + span.end,
                                   np.array(reply.vectors[row], dtype=np.float32)))
                    row += 1
        return out

    async def _embed_request(self, definition: CollectionDef, texts: list[str],
                             spread: _EmbedderSpread) -> EmbedChunksReply:
        """One ``embed_chunks`` request, on the embedder with the fewest of this ingest's
        requests (the others its fallbacks)."""
        params = {"model": definition.model, "docs": texts,
                  "chunk_tokens": definition.chunk_tokens,
                  "chunk_overlap": definition.chunk_overlap}
        dispatcher = self.node.dispatcher
        order = spread.order(dispatcher.candidates("embed", definition.model, definition))
        deadline = trio.current_time() + 120
        count = len(texts)
        with spread.running(order[0].peer_id if order else ""):
            reply, _ = await dispatcher.run_with_retry(
                order, "embed_chunks", params, deadline,
                lambda wire: EmbedChunksReply.from_wire(wire, docs=count, dim=definition.dim))
        if reply.sha256 != definition.model_sha256:
            raise JobError("the embedding peer runs another file of the collection's model",
                           code=ErrorCode.UNKNOWN_MODEL)
        return reply

    async def _write_all(self, definition: CollectionDef, writes: dict[int, list[DocRecord]]
                         ) -> list[DocSettlement]:
        """Write each shard's documents to its owners; every document's settlement. The
        writes go in rounds of a bounded size (``write_rounds``: one round for a usual batch;
        a document of millions of characters in a round of its own), one after the other."""
        settled: list[DocSettlement] = []
        for writes_of_round in write_rounds(writes):
            settled.extend(await self._write_round(definition, writes_of_round))
        return settled

    async def _write_round(self, definition: CollectionDef, writes: dict[int, list[DocRecord]]
                           ) -> list[DocSettlement]:
        """Write each shard's documents to its owners; every document's settlement.

        One ``shard.write_many`` per owner carries all the shards it owns of these writes (a
        batch of 16 documents falls in up to 16 shards: a request per shard and owner cost a
        stream each, the coordinator's largest cost after the model). Each shard is still
        settled alone, by the answers of its own owners."""
        placement = self.placement(definition)
        ready = self.holders(definition)
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

        async def one(peer: str, shards: list[int]) -> None:
            params = {"collection": definition.name, "definition": definition.to_wire(),
                      "writes": [items[shard] for shard in shards]}
            deadline = trio.current_time() + WRITE_TIMEOUT
            for attempt in range(8):
                try:
                    reply, _ = await self.node.client.call_parsed(
                        peer, "shard.write_many", params,
                        functools.partial(ShardWriteManyReply.from_wire, shards=shards),
                        timeout=max(0.1, deadline - trio.current_time()))
                    for shard, result in reply.results.items():
                        answers[shard].append(
                            ReplicaAnswer(peer, result.outcomes)
                            if isinstance(result, ShardWriteReply)
                            else ReplicaAnswer(peer, None, result.code))
                    return
                except JobError as exc:
                    if exc.code != ErrorCode.OVERLOADED or attempt == 7:
                        for shard in shards:
                            answers[shard].append(ReplicaAnswer(peer, None, exc.code.value))
                        return
                # the replica is busy with other writes: back off (jittered) and try again
                await trio.sleep(min(2.0, 0.02 * 2 ** attempt) * (0.5 + random.random()))

        with groups_collapsed():
            async with trio.open_nursery() as nursery:
                for peer, shards in by_owner.items():
                    nursery.start_soon(one, peer, shards)
        for shard, given in answers.items():
            outcomes[shard] = settle([d.doc_id for d in writes[shard]], given,
                                     definition.quorum)
        return [doc for shard in writes for doc in outcomes[shard]]

    async def _write_shard(self, definition: CollectionDef, placement: PlacementMap, shard: int,
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
        seed = seed_empty or not self.holders(definition).get(shard)  # no ready replica yet
        params = {"collection": definition.name, "definition": definition.to_wire(),
                  "shard": shard, "docs": docs_to_wire(docs), "seed": seed}
        answers: list[ReplicaAnswer] = []

        async def one(peer: str) -> None:
            deadline = trio.current_time() + WRITE_TIMEOUT
            for attempt in range(8):
                try:
                    reply, _ = await self.node.client.call_parsed(
                        peer, "shard.write", params, ShardWriteReply.from_wire,
                        timeout=max(0.1, deadline - trio.current_time()))
                    answers.append(ReplicaAnswer(peer, reply.outcomes))
                    return
                except JobError as exc:
                    if exc.code != ErrorCode.OVERLOADED or attempt == 7:
                        answers.append(ReplicaAnswer(peer, None, exc.code.value))
                        return
                # the replica is busy with other writes: back off (jittered) and try again
                await trio.sleep(min(2.0, 0.02 * 2 ** attempt) * (0.5 + random.random()))

        with groups_collapsed():
            async with trio.open_nursery() as nursery:
                for peer in owners:
                    nursery.start_soon(one, peer)
        outcomes[shard] = settle(doc_ids, answers, definition.quorum)
        if seed_empty and not any(a.outcomes is not None for a in answers):
            log.warning("collection %s: shard %s could not be seeded yet", definition.name, shard)

    async def delete(self, name: str, doc_ids: list[str]) -> dict[str, Any]:
        """Tombstone documents on every owner of their shards (quorum acknowledged)."""
        definition = self.node.book.get(name)
        if not doc_ids or not all(isinstance(d, str) and d for d in doc_ids):
            raise BadRequest("doc_ids must be a non-empty list of strings")
        version = self.node.clock.tick()
        writes: dict[int, list[DocRecord]] = {}
        for doc_id in dict.fromkeys(doc_ids):
            writes.setdefault(shard_of(doc_id, definition.shards), []).append(
                DocRecord(doc_id=doc_id, content_hash="", version=version, deleted=True,
                          chunks=[]))
        settled = await self._write_all(definition, writes)
        return {"collection": name,
                "deleted": [d.doc_id for d in settled if d.acknowledged
                            and d.outcome == "deleted"],
                "not_found": [d.doc_id for d in settled if d.acknowledged
                              and d.outcome != "deleted"],
                "failed": [{"_id": d.doc_id, "error": d.outcome, "message": d.message}
                           for d in settled if not d.acknowledged]}

    @staticmethod
    def _validate_docs(batch: list[dict[str, Any]]
                       ) -> tuple[list[tuple[str, str] | None], list[dict[str, Any]]]:
        """(doc_id, content hash) per document, None for a rejected one; and the rejections."""
        out: list[tuple[str, str] | None] = []
        rejected: list[dict[str, Any]] = []
        for i, doc in enumerate(batch):
            doc_id = doc.get("_id") if isinstance(doc, dict) else None
            text = doc.get("text") if isinstance(doc, dict) else None
            problem = None
            if not isinstance(doc_id, str) or not doc_id:
                problem = f"document {i} of the batch needs a non-empty string _id"
            elif not isinstance(text, str) or not text.strip():
                problem = "the document has no text"
            elif (size := document_size(doc) or 0) > MAX_DOCUMENT_CHARS:
                problem = (f"the document has {size:,} characters, more than the maximum "
                           f"document size of {MAX_DOCUMENT_CHARS:,} (title and text)")
            else:
                try:
                    out.append((doc_id, content_hash(doc)))
                    continue
                except ValueError as exc:
                    problem = f"metadata cannot be stored: {exc}"
            out.append(None)
            rejected.append({"_id": doc_id, "error": "BAD_REQUEST", "message": problem})
        return out, rejected

    # -- search ----------------------------------------------------------------------------

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
            raise JobError("queries would be embedded by another file of the collection's model",
                           code=ErrorCode.UNKNOWN_MODEL)
        return await self.search_vectors(definition, outcome.vectors, k=k, deadline=deadline,
                                         per_doc=per_doc, text=text)

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
        plans = self.plan(definition)
        per_block, _ = plan_search(len(vectors), k, [], self.search_budget)
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
        fetched: dict[int, dict[int, FetchedChunk]] = {shard: {} for shard in answers}
        while True:  # a shard whose fetch fails on every holder is missing: cut again
            wanted = await merge_step(len(vectors) * k,
                                      functools.partial(wanted_ids, answers, len(vectors), k))
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
                break
            for shard in failed:
                del answers[shard]
        missing = missing_shards(set(answers), definition.shards)
        return await merge_step(len(vectors) * k, functools.partial(
            merged_results, answers, fetched, len(vectors), k, per_doc=per_doc, text=text,
            missing=missing))

    async def _fetch_shard(self, definition: CollectionDef, shard: int, holders: list[str],
                           ids: list[int], text: bool, deadline: float,
                           out: dict[int, FetchedChunk], failed: list[int]) -> None:
        """Keys (and texts) of chunk ids of one shard into ``out``, page by page, from its
        first holder that answers (a failing or invalid reply: the next holder takes over
        from where it stopped). Appends ``shard`` to ``failed`` when no holder could."""
        todo = np.asarray(ids, dtype=np.int64)
        for peer in holders:
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
        holders = {p.shard: p.holders[:3] for p in plans if p.holders}
        tried: set[tuple[str, int]] = set()
        outstanding = 0
        changed = trio.Event()  # an attempt settled

        slots: dict[str, trio.CapacityLimiter] = {}

        async def request(peer: str, shards: list[int]) -> None:
            params = ShardSearchParams(collection=definition.name, shards=tuple(shards),
                                       vectors=vectors, k=k, per_doc=per_doc).to_wire()
            slot = slots.setdefault(peer, trio.CapacityLimiter(SEARCH_REQUESTS_PER_PEER))
            # a stalled stream (a connection broken under it) must not hold the shard until
            # the search's deadline: the request gets the time its reply may take, then the
            # shard goes to its next holder
            patience = REQUEST_PATIENCE + self.search_budget.search_bytes(
                len(vectors), k, len(shards)) / REQUEST_MIN_BYTES_PER_SECOND
            try:
                async with slot:  # a few replies at a time on one connection
                    reply, _ = await self.node.client.call_parsed(
                        peer, "shard.search", params,
                        lambda wire: ShardSearchReply.from_wire(wire, shards=shards,
                                                                queries=len(vectors), k=k),
                        timeout=max(0.01, min(deadline - trio.current_time(), patience)))
                for shard in shards:
                    out.setdefault(shard, (peer, reply.results[shard]))
            except JobError as exc:
                log.info("shards %s on %s failed: %s", shards, peer[:16], exc.code.value)

        async def attempt(peer: str, shards: list[int]) -> None:
            nonlocal outstanding, changed
            try:
                _, groups = plan_search(len(vectors), k, shards, self.search_budget)
                async with trio.open_nursery() as nursery:
                    for group in groups:
                        nursery.start_soon(request, peer, group)
            finally:
                outstanding -= 1
                for shard in shards:
                    inflight[shard] -= 1
                changed.set()

        def next_groups(*, hedge: bool) -> dict[str, list[int]]:
            """The next holder of every unanswered shard: of those with no attempt left in
            flight (theirs failed) at once, of every one when ``hedge`` (a slow round)."""
            groups: dict[str, list[int]] = {}
            for shard, peers in holders.items():
                if shard in out or (inflight[shard] and not hedge):
                    continue
                nxt = next((p for p in peers if (p, shard) not in tried), None)
                if nxt is not None:
                    groups.setdefault(nxt, []).append(shard)
                    tried.add((nxt, shard))
            return groups

        # a round is slow once it took longer than its replies take to arrive: hedging a
        # large search after HEDGE_AFTER alone would ask every shard again while the first
        # answers are still on their way
        reply_bytes = self.search_budget.search_bytes(len(vectors), k, len(holders))
        hedge_after = HEDGE_AFTER + reply_bytes / HEDGE_BYTES_PER_SECOND
        inflight = dict.fromkeys(holders, 0)
        with trio.move_on_at(deadline):
            async with trio.open_nursery() as nursery:
                hedge_at = trio.current_time()
                while len(out) < len(holders):
                    slow = trio.current_time() >= hedge_at  # first round, or a slow round
                    groups = next_groups(hedge=slow)
                    for peer, shards in groups.items():
                        outstanding += 1
                        for shard in shards:
                            inflight[shard] += 1
                        nursery.start_soon(attempt, peer, shards)
                    if slow:
                        hedge_at = trio.current_time() + hedge_after
                    if not groups and outstanding == 0:
                        break  # every holder of the missing shards failed
                    changed = trio.Event()
                    with trio.move_on_at(hedge_at):
                        await changed.wait()
                nursery.cancel_scope.cancel()

    # -- ask -------------------------------------------------------------------------------

    async def rag_messages(self, name: str, question: str, *, k: int,
                           deadline: float | None = None, timeout: float = SEARCH_TIMEOUT
                           ) -> tuple[list[dict[str, str]], list[dict[str, Any]], dict[str, Any]]:
        """Chat messages with numbered context passages, the sources, and the search result,
        retrieved by ``deadline`` (the caller's whole budget: generation spends what is left).
        The sources are the ``k`` best distinct documents (per-document search), each by its
        best chunk, so ``k`` sources never name one document twice. A retrieval that found
        nothing because the budget ran out is ``DEADLINE_EXCEEDED``, not an answer that the
        collection has nothing."""
        deadline = deadline_of(deadline, timeout)
        (found,) = await self.search(name, [question], k=k, deadline=deadline, per_doc=True)
        if not found["hits"] and found["partial"] and trio.current_time() >= deadline:
            raise JobError(f"retrieval from {name} ran out of its budget before the shards "
                           f"{found['missing_shards']} answered",
                           code=ErrorCode.DEADLINE_EXCEEDED)
        sources, blocks, budget = [], [], 6000  # characters of context (~1500 tokens)
        for n, hit in enumerate(found["hits"], start=1):
            text = hit["text"][:max(200, budget // max(1, len(found["hits"])))]
            blocks.append(f"[{n}] {text}")
            sources.append({"n": n, "doc_id": hit["doc_id"], "score": hit["score"],
                            "title": hit["metadata"].get("title")})
        context = "\n\n".join(blocks)
        messages = [
            {"role": "system", "content": "Answer the question using only the numbered "
             "context passages. Cite passages like [1]. If they do not contain the answer, "
             "say so."},
            {"role": "user", "content": f"Context:\n{context}\n\nQuestion: {question}"}]
        return messages, sources, found

    def no_sources_reply(self, name: str, found: dict[str, Any]) -> dict[str, Any]:
        """What ``ask`` and chat with a collection answer when retrieval found nothing: they
        say so, and no model answers from its own weights (a generate reply's shape)."""
        text = (f"The collection {name!r} has nothing relevant to this question: the search "
                "found no passages, so there is no answer from its documents.")
        if found["partial"]:
            text += (f" (The shards {found['missing_shards']} did not answer: the search was "
                     "incomplete.)")
        return {"text": text, "finish_reason": "stop", "served_by": self.node.peer_id,
                "usage": {"prompt_tokens": 0, "completion_tokens": 0}}

    async def ask(self, name: str, question: str, *, k: int = 5, model: str | None = None,
                  max_tokens: int = 256, on_text: Callable[[str], Awaitable[None]] | None = None,
                  deadline: float | None = None, timeout: float = 300.0) -> dict[str, Any]:
        """Retrieve, then generate, both by one ``deadline`` (trio time, set once at the edge;
        ``timeout`` from now only for a caller without a budget). No hits: the answer says
        so and ``no_sources`` is true (see :meth:`no_sources_reply`)."""
        from calinode.node.jobs.dispatch import default_model

        deadline = deadline_of(deadline, timeout)
        messages, sources, found = await self.rag_messages(name, question, k=k,
                                                           deadline=deadline)
        if not sources:
            result = self.no_sources_reply(name, found)
            if on_text is not None:
                await on_text(result["text"])
        else:
            params = {"model": model or default_model(self.node, "generate"),
                      "messages": messages, "max_tokens": max_tokens, "temperature": 0.2}
            result = await self.node.dispatcher.generate(params, deadline=deadline,
                                                         on_text=on_text)
        return {"answer": result["text"], "sources": sources, "no_sources": not sources,
                "partial": found["partial"], "missing_shards": found["missing_shards"],
                "served_by": result["served_by"], "finish_reason": result["finish_reason"]}

    # -- sync ------------------------------------------------------------------------------

    async def sync_once(self) -> None:
        """One round: merge peers' definitions, then converge every shard this node owns or
        holds. Each definition and each shard is one item: a failing item (a full disk, a
        broken store, a peer's bad reply) is logged, reported in ``sync_failures`` and skipped;
        the round goes on with the next."""
        node = self.node
        for peer, caps in self._alive_caps():
            for definition in caps.collections:  # typed when the record was accepted
                try:
                    if not self._known(definition):
                        await trio.to_thread.run_sync(functools.partial(
                            node.book.admit, definition, may_own=node.access.may_own))
                except CalinodeError as exc:
                    node.rejections.reject("bad_definition", peer,
                                           f"definition {definition.name}: {exc.message}")
                except Exception as exc:
                    quiet.warning(f"merge:{definition.name}", "definition %s from %s not "
                                  "merged: %s", definition.name, peer[:16], exc)
        if not node.config.index or node.index is None:
            return
        for definition in node.book.all():
            try:  # a dropped collection's replicas go; so do those of an earlier incarnation
                if definition.dropped:
                    await self._drop_replicas(definition)
                    continue
                await node.index.drop_other_incarnations(definition)
            except Exception as exc:
                self._sync_failed((definition.name, -1), exc)
                continue
            placement = self.placement(definition)
            holders = self.holders(definition)
            held = node.index.held(ready_only=False).get(definition.name, {})
            # owners open their shards; every holder, owner or not, converges with the others
            for shard in sorted(set(placement.shards_of(node.peer_id)) | set(held)):
                key = (definition.name, shard)
                try:
                    await self._sync_shard(definition, shard, holders.get(shard, {}),
                                           placement.owners(shard))
                    self.sync_failures.pop(key, None)
                except Exception as exc:
                    self._sync_failed(key, exc)
            try:
                await self._collect(definition, placement, holders)
            except Exception as exc:
                self._sync_failed((definition.name, -1), exc)

    def _known(self, definition: CollectionDef) -> bool:
        """We hold this very definition already (no signature to check, nothing to merge)."""
        try:
            return self.node.book.get(definition.name, include_dropped=True) == definition
        except JobError:
            return False

    async def _sync_shard(self, definition: CollectionDef, shard: int,
                          holders: dict[str, str], owners: tuple[str, ...] = ()) -> None:
        index = self.node.index
        assert index is not None
        await index.store(definition, shard)
        if index.is_recovering(definition.name, shard):
            await self._recover(definition, shard, set(holders) | set(owners))
            return
        mine = index.held(ready_only=False)[definition.name][shard]
        ready = index.is_ready(definition.name, shard)
        key, now = (definition.name, shard), trio.current_time()
        if ready and index.written_within(definition.name, shard, SYNC_QUIET) \
                and now - self._synced_at.setdefault(key, now) < MAX_SYNC_DEFER:
            return  # writes in flight: the digests differ by them, not by a missed write
        self._synced_at[key] = now
        for peer, digest in holders.items():
            stale = peer != self.node.peer_id and (digest != mine or not ready)
            if stale and await self._pull(definition, shard, peer):
                await index.mark_ready(definition.name, shard)
                ready = True

    def membership_settled(self) -> bool:
        """Two heartbeat rounds done: the peer table holds every live peer we can learn of."""
        membership = self.node.membership
        return membership is not None and membership.rounds >= 2

    async def _recover(self, definition: CollectionDef, shard: int, peers: set[str]) -> None:
        """Bring a replica that was ready before this start up to date, then serve it.

        While its node was down, writes were acknowledged by the other owners, so the copy
        on disk may miss some. It is not advertised, and ``shard.search`` refuses it, until
        this node knows the live swarm (:meth:`membership_settled`) and has pulled every
        document of every other live copy: the shard's live owners and advertised holders,
        ready or not (an owner without the shard counts as an empty copy). Any failed pull
        leaves it recovering for the next round. Alone in the swarm, it serves at once."""
        if not self.membership_settled():
            return
        others = sorted(peers - {self.node.peer_id})
        for peer in others:
            if not await self._pull(definition, shard, peer, missing_ok=True):
                return
        assert self.node.index is not None
        await self.node.index.mark_ready(definition.name, shard, caught_up=True)
        log.info("replica %s/%s is current again (caught up with %d live copies): serving it",
                 definition.name, shard, len(others))

    def _sync_failed(self, key: tuple[str, int], exc: Exception) -> None:
        what = f"{type(exc).__name__}: {exc}"[:300]
        self.sync_failures[key] = what
        where = f"{key[0]}/{key[1]}" if key[1] >= 0 else f"{key[0]} (replica collection)"
        if isinstance(exc, CalinodeError | OSError):
            quiet.warning(f"sync:{key}", "shard sync of %s failed: %s", where, what)
        else:  # a bug: keep its traceback, but never more than one a key and interval
            quiet.exception(f"sync:{key}", "shard sync of %s failed: %s", where, what)

    async def _collect(self, definition: CollectionDef, placement: PlacementMap,
                       holders: dict[int, dict[str, str]]) -> None:
        """Delete the replicas this node no longer owns once their owners have held the same
        documents for ``replica_gc_after`` seconds without a break."""
        node, after = self.node, self.node.config.replica_gc_after
        assert node.index is not None
        held = node.index.held(ready_only=False).get(definition.name, {})
        now = trio.current_time()
        for shard, mine in held.items():
            key = (definition.name, shard)
            if not after or not may_drop_replica(  # an owner never may
                    node.peer_id, placement.owners(shard), holders.get(shard, {}), mine,
                    definition.replicas):
                self._covered_since.pop(key, None)
                continue
            since = self._covered_since.setdefault(key, now)
            if now - since >= after and await node.index.drop(definition.name, shard):
                self._covered_since.pop(key, None)
                log.info("dropped replica %s/%s: its %d owners hold the same documents",
                         definition.name, shard, definition.replicas)

    async def _pull(self, definition: CollectionDef, shard: int, peer: str, *,
                    missing_ok: bool = False) -> bool:
        """Copy from ``peer``'s replica every document whose state there wins over ours;
        True when the whole pass succeeded (with ``missing_ok`` also when ``peer`` holds no
        copy of the shard at all).

        Keys first: a keys-only listing of the peer's document states (doc_id order, paged)
        is compared with ours, and only the documents whose state there would change ours
        (:func:`~calinode.models.shard_digest.resolve`: newer, or deleted there) are fetched
        whole, by id. Applying the rest would change nothing, which is why this converges as
        the whole copy did: after it, every state the peer held is ours or older than ours.
        A replica behind on a few in-flight writes costs one listing, not its whole shard."""
        index = self.node.index
        assert index is not None
        after, listed, pulled = "", 0, 0
        while True:
            ask = ShardChangesParams(collection=definition.name, shard=shard,
                                     after_doc_id=after, limit=KEYS_PAGE, keys_only=True)
            try:
                reply, _ = await self.node.client.call_parsed(
                    peer, "shard.changes", ask.to_wire(),
                    functools.partial(ShardKeysReply.from_wire, after=after, limit=KEYS_PAGE),
                    timeout=30)
            except (JobError, ProtocolError) as exc:  # a bad reply is one failed holder
                if missing_ok and not listed and exc.code in (
                        ErrorCode.SHARD_UNAVAILABLE, ErrorCode.UNKNOWN_COLLECTION):
                    return True  # no copy there: nothing this replica can have missed
                self._pull_failed(definition, shard, peer, exc)
                return False
            if not listed and reply.digest == index.digest_of(definition.name, shard):
                return True  # the very same document states: nothing to compare
            listed += len(reply.keys)
            if not reply.keys:
                break
            if any(shard_of(key.doc_id, definition.shards) != shard for key in reply.keys):
                self._pull_failed(definition, shard, peer, RemoteProtocolError(
                    "shard.changes listed a document of another shard",
                    code=ErrorCode.BAD_REQUEST))
                return False
            ids = [key.doc_id for key in reply.keys]
            mine = await index.call(definition, shard, functools.partial(_states, doc_ids=ids))
            wanted = [key.doc_id for key in reply.keys if resolve(
                DocState(key.version, key.deleted, key.content_hash), mine.get(key.doc_id))
                not in (Outcome.UNCHANGED, Outcome.STALE)]
            for start in range(0, len(wanted), PULL_PAGE):
                got = await self._pull_docs(definition, shard, peer,
                                            wanted[start:start + PULL_PAGE])
                if got is None:
                    return False
                pulled += got
            if len(reply.keys) < KEYS_PAGE:
                break
            after = reply.keys[-1].doc_id
        if pulled:
            log.info("synced %s/%s: %d documents from %s", definition.name, shard, pulled,
                     peer[:16])
        return True

    async def _pull_docs(self, definition: CollectionDef, shard: int, peer: str,
                         doc_ids: list[str]) -> int | None:
        """Fetch the whole documents ``doc_ids`` from ``peer`` and apply them; how many came
        (a document the peer no longer has is simply absent), ``None`` when a request or its
        reply failed. The holder ends a reply where one more document would overflow a frame
        (documents of millions of characters): the rest are asked for again, until a reply
        brings none of them."""
        pulled = 0
        while doc_ids:
            got = await self._pull_page(definition, shard, peer, doc_ids)
            if got is None:
                return None
            if not got:
                break
            pulled += len(got)
            doc_ids = [doc_id for doc_id in doc_ids if doc_id not in got]
        return pulled

    async def _pull_page(self, definition: CollectionDef, shard: int, peer: str,
                         doc_ids: list[str]) -> set[str] | None:
        """One request of :meth:`_pull_docs`: the ids of the documents that came and were
        applied. A reply naming a document we did not ask for is refused whole."""
        index = self.node.index
        assert index is not None
        ask = ShardChangesParams(collection=definition.name, shard=shard,
                                 doc_ids=tuple(doc_ids), limit=len(doc_ids))
        try:
            reply, _ = await self.node.client.call_parsed(
                peer, "shard.changes", ask.to_wire(),
                lambda wire: ShardChangesReply.from_wire(wire, limit=len(doc_ids)),
                timeout=30)
            asked = set(doc_ids)
            names = [doc.doc_id for doc in reply.docs]
            if not asked.issuperset(names) or len(set(names)) != len(names):
                raise RemoteProtocolError("shard.changes answered documents not asked for",
                                          code=ErrorCode.BAD_REQUEST)
            records = records_from_wire(reply.docs, definition.dim)
        except (JobError, ProtocolError) as exc:
            self._pull_failed(definition, shard, peer, exc)
            return None
        if records:
            await index.call(definition, shard, functools.partial(_apply, records=records),
                             writes=True)
        return {record.doc_id for record in records}

    def _pull_failed(self, definition: CollectionDef, shard: int, peer: str,
                     exc: JobError | ProtocolError) -> None:
        if isinstance(exc, ProtocolError):
            self.node.rejections.reject("bad_reply", peer, f"shard.changes: {exc}")
        log.info("pull of %s/%s from %s failed: %s", definition.name, shard, peer,
                 exc.code.value)

    async def run_sync(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        """Sync rounds forever (items fail alone, see :meth:`sync_once`; the daemon restarts
        this loop with back-off should its own bookkeeping ever fail)."""
        task_status.started()
        while True:
            await self.sync_once()
            await trio.sleep(SYNC_INTERVAL)
