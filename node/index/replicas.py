"""The shard replicas this node hosts (``--index``): :class:`LocalIndex`. The job kinds that
answer over them are in :mod:`calinode.node.index.shard_jobs`.

Stores live in ``$CALINODE_HOME/shards/<collection>/<shard>/`` (``models/store/``:
SQLite is the truth, FAISS is rebuilt from it at open, so a write acknowledged here survives
kill -9). Every store call is blocking and runs in a worker thread, one call per store at a
time (a trio lock per store), under the stores' own ``CapacityLimiter`` (``LocalIndex.limiter``).

Freshness: ``READY`` on disk means "this copy was complete once"; in memory, ready means
"current". A copy found ready at start-up is *recovering* (not advertised, refused by
``shard.search``) until the sync loop pulled every other live copy (``node/rag.py``). Each
replica folder also records its collection's incarnation (``INCARNATION``,
``CollectionDef.created``): a copy of an earlier incarnation of the name is deleted, never
opened for the new one; ``purge`` deletes every replica of a dropped collection.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import shutil
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import faiss
import trio

from calinode.models.store.shard_store import ShardStore
from calinode.node.index.collections import CollectionBook
from calinode.protocol.collections import CollectionDef
from calinode.protocol.errors import BadRequest, CalinodeError, ErrorCode, JobError

log = logging.getLogger(__name__)
T = TypeVar("T")
#: Worker threads for all shard stores together (each store also runs one call at a time).
#: Writes mostly wait on fsync, so several stores writing at once is worth it; the cap only
#: keeps a flood of store work from taking every worker thread of the process.
STORE_THREADS = 8


class LocalIndex:
    def __init__(self, root: Path, book: CollectionBook) -> None:
        # one FAISS thread: a shard is small, and OpenMP's thread wake-ups cost more than
        # they save on a busy small machine (measured: 32 ms vs 14 ms p50 on 2 cores)
        faiss.omp_set_num_threads(1)
        self.root = root
        self.book = book
        self._stores: dict[tuple[str, int], ShardStore] = {}
        self._locks: dict[tuple[str, int], trio.Lock] = {}
        self._digests: dict[tuple[str, int], str] = {}
        self._ready: set[tuple[str, int]] = set()
        #: replicas found ready on disk at this start: not served until the sync loop has
        #: pulled what the other live copies hold (``mark_ready(..., caught_up=True)``)
        self._recovering: set[tuple[str, int]] = set()
        #: the incarnation (``CollectionDef.created``) each open replica belongs to
        self._created: dict[tuple[str, int], int] = {}
        #: when each replica last took a write from a coordinator (``shard.write``, not a
        #: sync pull): see :meth:`written_within`
        self._written: dict[tuple[str, int], float] = {}
        self._open_lock = trio.Lock()
        #: Worker threads of the shard stores (not trio's shared default limiter): a flood of
        #: searches or writes waits here and never starves the embedders or the generator.
        self.limiter = trio.CapacityLimiter(STORE_THREADS)

    def folder(self, collection: str, shard: int) -> Path:
        return self.root / collection / str(shard)

    def held(self, *, ready_only: bool = True) -> dict[str, dict[int, str]]:
        """Shard replicas with their digests; by default only *ready* ones (what capability
        records carry, and so what searches and syncs use).

        A replica is ready once it holds the shard's documents: it was seeded by the first
        writes of a shard no one held, or it completed a pull from a ready replica. An owner's
        fresh, empty replica is not ready, so it is never searched as if it were complete.
        Nor is one found ready on disk at start-up (its ``READY`` marker): it is *recovering*
        until the sync loop has pulled every other live copy (see :meth:`mark_ready`), since
        writes were acknowledged without it while its node was down.
        """
        held: dict[str, dict[int, str]] = {}
        for key, digest in sorted(self._digests.items()):
            if not ready_only or self.is_ready(*key):
                held.setdefault(key[0], {})[key[1]] = digest
        return held

    def digest_of(self, collection: str, shard: int) -> str:
        digest = self._digests.get((collection, shard))
        if digest is None:
            raise shard_unavailable(collection, shard)
        return digest

    def not_ready(self) -> dict[str, list[int]]:
        """Replicas on disk that are not served (yet, or any more): a copy on its way in
        (pulling) or out (given up, waiting to be collected), or recovering. ``status``
        shows them: the shard map lists only served copies, and these still take disk."""
        found: dict[str, list[int]] = {}
        for collection, shard in sorted(self._digests):
            if not self.is_ready(collection, shard):
                found.setdefault(collection, []).append(shard)
        return found

    def is_ready(self, collection: str, shard: int) -> bool:
        """Served: ready, and of the collection as the book now knows it (not dropped, not an
        earlier incarnation of the name; the sync loop deletes such copies soon after)."""
        key = (collection, shard)
        if key not in self._ready:
            return False
        try:
            current = self.book.get(collection, include_dropped=True)
        except JobError:
            return False
        return not current.dropped and current.created <= self._created.get(key, 0)

    def is_recovering(self, collection: str, shard: int) -> bool:
        """Ready before this start, not yet caught up with the other live copies."""
        return (collection, shard) in self._recovering

    async def mark_ready(self, collection: str, shard: int, *, caught_up: bool = False) -> None:
        """Serve this replica from now on. A recovering replica (see :meth:`store`) becomes
        ready only with ``caught_up`` (the sync loop pulled from every other live copy):
        a seed write or a pull from one holder is not enough for a copy that may have missed
        acknowledged writes while its node was down."""
        key = (collection, shard)
        if key in self._recovering:
            if not caught_up:
                return
            self._recovering.discard(key)
        if key in self._ready:
            return
        marker = self.folder(collection, shard) / "READY"
        await trio.to_thread.run_sync(_write_marker, marker, limiter=self.limiter)
        self._ready.add(key)

    async def open_existing(self) -> None:
        """Open every replica found on disk (at start-up). A replica that cannot be opened
        (a corrupt file, a shard number the definition does not have, a full disk) is left
        where it is and logged, never fatal: the sync loop tries again and reports it."""
        found = await trio.to_thread.run_sync(_replica_folders, self.root)
        for collection, shards in found.items():
            try:
                definition = self.book.get(collection, include_dropped=True)
            except JobError:
                log.warning("shards of unknown collection %s left alone", collection)
                continue
            if definition.dropped:  # dropped while this node was down: delete, never open
                await self.purge(definition)
                continue
            for shard in shards:
                try:
                    await self.store(definition, shard)
                except (CalinodeError, OSError, sqlite3.Error, RuntimeError) as exc:
                    log.error("replica %s/%s could not be opened, left alone: %s",
                              collection, shard, exc)

    async def store(self, definition: CollectionDef, shard: int) -> ShardStore:
        if not 0 <= shard < definition.shards:
            raise BadRequest(f"shard {shard} out of range for {definition.name} "
                      f"({definition.shards} shards)")
        key = (definition.name, shard)
        if key in self._stores and definition.created > self._created.get(key, 0):
            await self.drop(*key)  # a copy of an earlier incarnation: the name was re-created
        async with self._open_lock:
            if key not in self._stores:
                opener = functools.partial(
                    _open_replica, self.folder(definition.name, shard), dim=definition.dim,
                    index_kind=definition.index_kind, created=definition.created)
                store, digest, was_ready = await trio.to_thread.run_sync(opener,
                                                                         limiter=self.limiter)
                self._stores[key] = store
                self._locks.setdefault(key, trio.Lock())
                self._digests[key] = digest
                self._created[key] = definition.created
                if was_ready:  # ready before this start: maybe behind, see mark_ready
                    self._recovering.add(key)
        return self._stores[key]

    def note_write(self, collection: str, shard: int) -> None:
        """A coordinator's write reached this replica now (its peers get theirs at the same
        time: the replicas are writing, not diverging)."""
        self._written[(collection, shard)] = trio.current_time()

    def written_within(self, collection: str, shard: int, seconds: float) -> bool:
        """This replica took a coordinator's write in the last ``seconds``."""
        last = self._written.get((collection, shard))
        return last is not None and trio.current_time() - last < seconds

    def has(self, collection: str, shard: int) -> bool:
        return (collection, shard) in self._stores

    async def call(self, definition: CollectionDef, shard: int,
                   fn: Callable[[ShardStore], T], *, writes: bool = False) -> T:
        """``fn(store)`` in a worker thread under the shard's lock. A write opens (or starts)
        the replica; a read needs one this node holds (else ``SHARD_UNAVAILABLE``)."""
        key = (definition.name, shard)
        while True:
            store = await self.store(definition, shard) if writes else self._held_store(key)
            async with self._locks[key]:
                if writes and self._stores.get(key) is not store:
                    continue  # dropped while we waited: a write starts the replica again
                self._check_current(key, store)
                if not writes:
                    return await trio.to_thread.run_sync(fn, store, limiter=self.limiter)
                # the write and its new digest in one worker-thread hop (the store keeps its
                # digest current as it writes: reading it costs one hash)
                done: tuple[T, str] = await trio.to_thread.run_sync(
                    _with_digest, fn, store, limiter=self.limiter)
                self._digests[key] = done[1]
                return done[0]

    async def call_many(self, definition: CollectionDef, shards: list[int],
                        fn: Callable[[ShardStore], T]) -> list[T]:
        """``fn`` on several shards' stores in one worker-thread hop (read-only calls)."""
        stores = [self._held_store((definition.name, shard)) for shard in shards]
        locks = [self._locks[(definition.name, shard)] for shard in sorted(set(shards))]
        async with contextlib.AsyncExitStack() as stack:
            for lock in locks:  # always in shard order: no lock-order deadlock
                await stack.enter_async_context(lock)
            for shard, store in zip(shards, stores, strict=True):
                self._check_current((definition.name, shard), store)
            return await trio.to_thread.run_sync(lambda: [fn(store) for store in stores],
                                                 limiter=self.limiter)

    def _held_store(self, key: tuple[str, int]) -> ShardStore:
        store = self._stores.get(key)
        if store is None:
            raise shard_unavailable(*key)
        return store

    def _check_current(self, key: tuple[str, int], store: ShardStore) -> None:
        """Under the shard's lock: the replica was not dropped while we waited for it."""
        if self._stores.get(key) is not store:
            raise shard_unavailable(*key, "was just dropped from this node")

    async def drop(self, collection: str, shard: int) -> bool:
        """Close and delete this node's replica of a shard (one it no longer owns, once its
        owners hold the same documents). Calls waiting for it get ``SHARD_UNAVAILABLE``."""
        key = (collection, shard)
        async with self._open_lock:
            store = self._stores.get(key)
            if store is None:
                return False
            async with self._locks[key]:
                del self._stores[key]
                self._digests.pop(key, None)
                self._ready.discard(key)
                self._recovering.discard(key)
                self._written.pop(key, None)
                self._created.pop(key, None)
                await trio.to_thread.run_sync(store.close, limiter=self.limiter)
                await trio.to_thread.run_sync(shutil.rmtree, self.folder(collection, shard),
                                              limiter=self.limiter)
        return True

    async def drop_other_incarnations(self, definition: CollectionDef) -> list[int]:
        """Delete the open replicas of an earlier incarnation of ``definition``'s name."""
        old = [shard for (name, shard), created in list(self._created.items())
               if name == definition.name and created < definition.created]
        return [shard for shard in old if await self.drop(definition.name, shard)]

    async def purge(self, definition: CollectionDef) -> list[int]:
        """Close and delete every replica of a dropped collection, open or only on disk
        (the shards deleted). Nothing happens unless the book still says it is dropped: a
        new incarnation of the name may have arrived meanwhile."""
        name = definition.name
        dropped = [shard for (collection, shard) in list(self._stores) if collection == name]
        for shard in dropped:
            await self.drop(name, shard)
        async with self._open_lock:
            try:
                if not self.book.get(name, include_dropped=True).dropped:
                    return dropped
            except JobError:
                return dropped
            if any(collection == name for collection, _ in self._stores):
                return dropped  # a write of a new incarnation opened one: leave it
            await trio.to_thread.run_sync(functools.partial(
                shutil.rmtree, self.root / name, ignore_errors=True), limiter=self.limiter)
        return dropped

    async def aclose(self) -> None:
        for key, store in list(self._stores.items()):
            async with self._locks[key]:
                await trio.to_thread.run_sync(store.close, limiter=self.limiter)
        self._stores.clear()


def shard_unavailable(collection: str, shard: int,
                      why: str = "is not on this node") -> JobError:
    return JobError(f"shard {shard} of {collection} {why}", code=ErrorCode.SHARD_UNAVAILABLE)


def _open_replica(folder: Path, *, dim: int, index_kind: str,
                  created: int = 0) -> tuple[ShardStore, str, bool]:
    """Blocking: a replica's store, its digest, and whether it is marked ready. A folder of
    an earlier incarnation of the collection (its ``INCARNATION`` differs from ``created``:
    the name was dropped and created again while this node was away) is deleted first, so
    the new collection starts empty, whatever its dimension."""
    marker = folder / "INCARNATION"
    if created and folder.is_dir():
        try:
            found = int(marker.read_text().strip())
        except (OSError, ValueError):
            found = created  # made before incarnations were recorded: keep it
        if found > created:  # we were handed an outdated definition: never delete newer data
            raise shard_unavailable(folder.parent.name, int(folder.name),
                                    f"belongs to a newer incarnation ({found}, not {created})")
        if found != created:
            log.warning("deleting %s: a replica of an earlier incarnation (%s, now %s)",
                        folder, found, created)
            shutil.rmtree(folder)
    store = ShardStore.open(folder, dim=dim, index_kind=index_kind)  # type: ignore[arg-type]
    if created and not marker.exists():
        _write_marker(marker, str(created))
    return store, store.digest(), (folder / "READY").exists()


def _with_digest(fn: Callable[[ShardStore], T], store: ShardStore) -> tuple[T, str]:
    """Blocking: ``fn(store)`` and the store's digest after it."""
    return fn(store), store.digest()


def _replica_folders(root: Path) -> dict[str, list[int]]:
    """Blocking: collection -> shard numbers of the replica folders under ``root``."""
    if not root.is_dir():
        return {}
    return {c.name: sorted(int(p.name) for p in c.iterdir() if p.name.isdigit())
            for c in sorted(root.iterdir()) if c.is_dir()}


def _write_marker(path: Path, text: str = "ready") -> None:
    with path.open("w") as fh:
        fh.write(text + "\n")
        fh.flush()
        os.fsync(fh.fileno())
