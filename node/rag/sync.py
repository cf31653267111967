"""Replica sync (every ``SYNC_INTERVAL``): definitions are merged from peers' records; a node
opens the shards it owns, and for every shard it holds compares with any live holder whose
shard digest differs from its own: it lists the holder's document states (keys only) and pulls
whole only the documents whose state there wins over its own (both sides do, so replicas
converge, deletes included). A ready replica taking a coordinator's writes waits with this
until they pause (``SYNC_QUIET``), at most ``MAX_SYNC_DEFER`` seconds.

A replica a node holds but no longer owns is kept in sync until all R owners have held the
same documents (equal digests) for ``replica_gc_after`` seconds without a break; then it is
deleted (``may_drop_replica``, ``LocalIndex.drop``). A replica ready before its node restarted
is *recovering*: it serves again only once this node knows the live swarm (two heartbeat
rounds) and has pulled every other live copy (``_recover``), so acknowledged writes it missed
while down are visible to every search. Replicas of a dropped collection are deleted
(``LocalIndex.purge``), and so are those of an earlier incarnation of a name.
"""

from __future__ import annotations

import functools
import logging
from typing import Any

import trio

from calinode.models.store.digest import DocState, Outcome, resolve
from calinode.models.store.records import DocRecord
from calinode.models.store.shard_store import ShardStore
from calinode.node.index.placement import PlacementMap, may_drop_replica, shard_of
from calinode.node.index.wire import records_from_wire
from calinode.node.rag.ports import RagNode
from calinode.node.rag.swarm_view import SwarmView
from calinode.node.rejections import RateLimitedLog
from calinode.protocol.collections import CollectionDef
from calinode.protocol.errors import (
    CalinodeError,
    ErrorCode,
    JobError,
    ProtocolError,
    RemoteProtocolError,
)
from calinode.protocol.shard_params import ShardChangesParams
from calinode.protocol.sync_replies import DocKey, ShardChangesReply, ShardKeysReply

log = logging.getLogger(__name__)
quiet = RateLimitedLog(log)

SYNC_INTERVAL = 2.0
#: A ready replica that took a coordinator's write in the last SYNC_QUIET seconds skips its
#: sync round: while an ingest runs, every replica's digest differs from its peers' by the
#: writes in flight to them, and comparing (a keys listing per holder, each round) would only
#: find those. It compares again once the writes pause, and at least every MAX_SYNC_DEFER
#: seconds whatever the writes, so a write one replica missed is still found under a
#: continuous load. Recovering and not yet ready replicas never wait.
SYNC_QUIET = SYNC_INTERVAL
MAX_SYNC_DEFER = 30.0
PULL_PAGE = 200  # documents per shard.changes request of whole documents
KEYS_PAGE = 1000  # document states per keys-only shard.changes page


def _apply(store: ShardStore, *, records: list[DocRecord]) -> object:
    return store.apply(records)


def _states(store: ShardStore, *, doc_ids: list[str]) -> dict[str, DocState]:
    return store.states(doc_ids)


class ReplicaSync:
    def __init__(self, node: RagNode, view: SwarmView) -> None:
        self.node = node
        self.view = view
        # (collection, shard) -> since when this node's non-owned replica has been covered by
        # all of the shard's owners (see may_drop_replica)
        self._covered_since: dict[tuple[str, int], float] = {}
        #: (collection, shard) -> when its replica here last compared with the holders
        self._synced_at: dict[tuple[str, int], float] = {}
        #: (collection, shard) -> why its last sync round failed (cleared by a good round)
        self.failures: dict[tuple[str, int], str] = {}
        #: (collection, shard) -> when its replica here was first synced, and when it last
        #: matched every live holder (pulled what differed): the replica sync lag metric
        self._held_since: dict[tuple[str, int], float] = {}
        self._matched_at: dict[tuple[str, int], float] = {}
        #: sync rounds completed that started once membership had settled (``/readyz``)
        self.settled_rounds = 0

    async def sync_once(self) -> None:
        """One round: merge peers' definitions, then converge every shard this node owns or
        holds. Each definition and each shard is one item: a failing item (a full disk, a
        broken store, a peer's bad reply) is logged, reported in ``failures`` and skipped;
        the round goes on with the next."""
        node = self.node
        await self._merge_definitions()
        if not node.config.index or node.index is None:
            return
        for definition in node.book.all():
            try:  # a dropped collection's replicas go; so do those of an earlier incarnation
                if definition.dropped:
                    await self.drop_replicas(definition)
                    continue
                await node.index.drop_other_incarnations(definition)
            except Exception as exc:
                self._sync_failed((definition.name, -1), exc)
                continue
            await self._sync_collection(definition)

    async def _merge_definitions(self) -> None:
        """Merge the collection definitions live peers advertise (each checked alone: a bad
        one is a rejection of its peer, a failing merge a rate-limited warning)."""
        node = self.node
        for peer, caps in self.view.alive_caps():
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

    async def _sync_collection(self, definition: CollectionDef) -> None:
        """Owners open their shards; every holder, owner or not, converges with the others;
        then the replicas no longer owned are collected. Each shard fails alone."""
        index = self.node.index
        assert index is not None
        placement = self.view.placement(definition)
        holders = self.view.holders(definition)
        held = index.held(ready_only=False).get(definition.name, {})
        for shard in sorted(set(placement.shards_of(self.node.peer_id)) | set(held)):
            key = (definition.name, shard)
            try:
                await self._sync_shard(definition, shard, holders.get(shard, {}),
                                       placement.owners(shard))
                self.failures.pop(key, None)
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

    async def drop_replicas(self, definition: CollectionDef) -> None:
        """Close and delete this node's replicas of a dropped collection."""
        index = self.node.index
        if index is None or definition.name not in index.held(ready_only=False):
            return
        for shard in await index.purge(definition):
            log.info("deleted replica %s/%s: the collection was dropped", definition.name,
                     shard)

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
        self._held_since.setdefault(key, now)
        if ready and index.written_within(definition.name, shard, SYNC_QUIET) \
                and now - self._synced_at.setdefault(key, now) < MAX_SYNC_DEFER:
            return  # writes in flight: the digests differ by them, not by a missed write
        self._synced_at[key] = now
        matched = True
        for peer, digest in holders.items():
            stale = peer != self.node.peer_id and (digest != mine or not ready)
            if stale and await self._pull(definition, shard, peer):
                await index.mark_ready(definition.name, shard)
                ready = True
            elif stale:
                matched = False
        if matched and ready:
            self._matched_at[key] = now

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
        self._matched_at[(definition.name, shard)] = trio.current_time()
        log.info("replica %s/%s is current again (caught up with %d live copies): serving it",
                 definition.name, shard, len(others))

    def _sync_failed(self, key: tuple[str, int], exc: Exception) -> None:
        what = f"{type(exc).__name__}: {exc}"[:300]
        self.failures[key] = what
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
        (:func:`~calinode.models.store.digest.resolve`: newer, or deleted there) are fetched
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
            got = await self._pull_listed(definition, shard, peer, reply.keys)
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

    async def _pull_listed(self, definition: CollectionDef, shard: int, peer: str,
                           keys: tuple[DocKey, ...]) -> int | None:
        """One page of :meth:`_pull`'s listing: the documents whose state there wins over
        ours, pulled whole; how many came, ``None`` when the page or a pull failed."""
        index = self.node.index
        assert index is not None
        if any(shard_of(key.doc_id, definition.shards) != shard for key in keys):
            self._pull_failed(definition, shard, peer, RemoteProtocolError(
                "shard.changes listed a document of another shard",
                code=ErrorCode.BAD_REQUEST))
            return None
        ids = [key.doc_id for key in keys]
        mine = await index.call(definition, shard, functools.partial(_states, doc_ids=ids))
        wanted = [key.doc_id for key in keys if resolve(
            DocState(key.version, key.deleted, key.content_hash), mine.get(key.doc_id))
            not in (Outcome.UNCHANGED, Outcome.STALE)]
        pulled = 0
        for start in range(0, len(wanted), PULL_PAGE):
            got = await self._pull_docs(definition, shard, peer, wanted[start:start + PULL_PAGE])
            if got is None:
                return None
            pulled += got
        return pulled

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

    def lag(self) -> dict[str, float]:
        """collection -> seconds since its replica here that is furthest behind last matched
        every live holder (since it was first synced, if it never did)."""
        index, now = self.node.index, trio.current_time()
        lags: dict[str, float] = {}
        for collection, shards in (index.held(ready_only=False) if index else {}).items():
            for shard in shards:
                key = (collection, shard)
                since = self._matched_at.get(key, self._held_since.get(key, now))
                lags[collection] = max(lags.get(collection, 0.0), now - since)
        return lags

    async def run_sync(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        """Sync rounds forever (items fail alone, see :meth:`sync_once`; the daemon restarts
        this loop with back-off should its own bookkeeping ever fail)."""
        task_status.started()
        while True:
            settled = self.membership_settled()
            await self.sync_once()
            self.settled_rounds += settled
            await trio.sleep(SYNC_INTERVAL)
