"""LocalIndex.drop: deleting a replica while other calls want it (real SQLite + FAISS stores)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import trio
import trio.testing

from calinode.models.store.records import ChunkWrite, DocRecord
from calinode.models.store.shard_store import ShardStore
from calinode.node.index.collections import CollectionBook, CollectionDef
from calinode.node.index.replicas import LocalIndex
from calinode.protocol.errors import ErrorCode, JobError

DEFINITION = CollectionDef(name="papers", model="m", model_sha256="0" * 64, dim=4,
                           pooling="mean", normalize=True, shards=2)


def doc(doc_id: str, version: int = 1) -> DocRecord:
    vector = np.ones(4, dtype=np.float32) / 2
    return DocRecord(doc_id=doc_id, content_hash=f"h-{doc_id}-{version}", version=version,
                     deleted=False, chunks=[ChunkWrite(text=doc_id, vector=vector)])


async def written_index(tmp_path: Path) -> LocalIndex:
    book = CollectionBook(tmp_path / "collections")
    book.merge(DEFINITION)
    index = LocalIndex(tmp_path / "shards", book)
    await index.call(DEFINITION, 0, lambda s: s.apply([doc("a"), doc("b")]), writes=True)
    await index.mark_ready("papers", 0)
    return index


async def test_drop_deletes_the_replica_and_reads_then_fail_clearly(tmp_path: Path) -> None:
    index = await written_index(tmp_path)
    assert index.held() == {"papers": {0: index.digest_of("papers", 0)}}
    assert await index.drop("papers", 0)
    assert index.held(ready_only=False) == {} and not index.is_ready("papers", 0)
    assert not index.folder("papers", 0).exists()
    with pytest.raises(JobError) as err:
        await index.call(DEFINITION, 0, lambda s: s.count())
    assert err.value.code is ErrorCode.SHARD_UNAVAILABLE
    assert not index.folder("papers", 0).exists()  # a read does not bring it back
    assert not await index.drop("papers", 0)
    await index.aclose()


async def test_calls_waiting_for_a_dropped_replica(tmp_path: Path) -> None:
    index = await written_index(tmp_path)
    started = trio.Event()
    release = trio.Event()
    outcomes: dict[str, object] = {}

    async def slow_read() -> None:  # holds the shard's lock while the others queue
        def hold(store: ShardStore) -> tuple[int, int]:
            trio.from_thread.run_sync(started.set)
            trio.from_thread.run(release.wait)
            return store.count()
        outcomes["slow"] = await index.call(DEFINITION, 0, hold)

    async def read() -> None:
        try:
            await index.call(DEFINITION, 0, lambda s: s.count())
        except JobError as exc:
            outcomes["read"] = exc.code

    async def write() -> None:
        await index.call(DEFINITION, 0, lambda s: s.apply([doc("c")]), writes=True)
        outcomes["write"] = True

    async with trio.open_nursery() as nursery:
        nursery.start_soon(slow_read)
        await started.wait()
        nursery.start_soon(index.drop, "papers", 0)  # queues first on the shard's lock
        await trio.testing.wait_all_tasks_blocked()
        nursery.start_soon(read)  # then a read and a write of the same replica
        nursery.start_soon(write)
        await trio.testing.wait_all_tasks_blocked()
        release.set()
    assert outcomes["slow"] == (2, 2)  # the call that held the replica finished on it
    assert outcomes["read"] is ErrorCode.SHARD_UNAVAILABLE  # never an empty answer
    assert outcomes["write"] is True  # a write starts the replica again, not ready
    ids = await index.call(DEFINITION, 0, lambda s: s.doc_ids())
    assert ids == ["c"] and not index.is_ready("papers", 0)
    await index.aclose()
