"""A collection's life across nodes that stop and start (issue 10), with real nodes.

- Drop means gone: every holder closes and deletes its replicas of a dropped collection; the
  name created again (here with another dimension, as another model would have) starts empty,
  also on a holder that was down during the drop and the re-creation, and every node starts
  again afterwards.
- Only the owner changes the replication; every node learns the new version, and a new owner
  opens and pulls its shards.
- A replica that was ready before its node stopped is not served after the restart until it
  has pulled what the other live copies acknowledged meanwhile.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import trio

from calinode.models.store.digest import chunk_faiss_id
from calinode.node.daemon import Node
from calinode.node.index.placement import shard_of
from calinode.protocol.collections import CollectionDef
from calinode.protocol.errors import ErrorCode, JobError
from calinode.protocol.shard_replies import ShardSearchReply
from calinode.protocol.vectors import encode_vectors
from node_harness import open_nodes, wait_until
from replica_helpers import apply, definition_of, doc_ids_of, held, record, sees

pytestmark = pytest.mark.slow  # nodes start, stop and start again: ~5 s a test
Bootstrap = Callable[[Node], str]
SHARDS = 2
SAFETY = 60.0  # seconds: a safety net, never the thing under test


async def store_docs(node: Node, definition: CollectionDef, doc_ids: list[str]) -> None:
    await apply(node, definition, [record(d, dim=definition.dim) for d in doc_ids])


OLD = [f"old{i}" for i in range(8)]
NEW = [f"new{i}" for i in range(6)]


async def test_drop_deletes_every_replica_and_the_name_starts_again_empty(
    tmp_path: Path, bootstrap_of: Bootstrap
) -> None:
    async with open_nodes(tmp_path) as start:
        a = await start("a", index=True)
        b = await start("b", index=True, bootstrap=(bootstrap_of(a),))
        await wait_until(lambda: sees(a, b) and sees(b, a), SAFETY)
        first = definition_of(a)
        for node in (a, b):
            await store_docs(node, first, OLD)
        dropped = await a.coordinator.drop("papers")
        assert held(a) == {} and not (tmp_path / "a" / "shards" / "papers").exists()
        await wait_until(lambda: held(b) == {} and not (
            tmp_path / "b" / "shards" / "papers").exists(), SAFETY)  # b's sync saw the drop

        again = definition_of(a, dim=8, version=dropped.version + 1,
                              created=dropped.version + 1)
        await store_docs(a, again, NEW)
        await wait_until(lambda: len(held(b)) == SHARDS  # b owns both shards (R=2) and pulls
                         and b.index is not None
                         and all(b.index.is_ready("papers", s) for s in range(SHARDS)), SAFETY)
        assert await doc_ids_of(a, again) == set(NEW)
        assert await doc_ids_of(b, again) == set(NEW)

    async with open_nodes(tmp_path) as start:  # the next start of every node works
        a = await start("a", index=True)
        b = await start("b", index=True, bootstrap=(bootstrap_of(a),))
        for node in (a, b):
            assert node.book.get("papers").dim == 8
            assert await doc_ids_of(node, again) == set(NEW)
            assert not node.coordinator.sync_failures
            assert (await node.client.call(node.peer_id, "ping", {}, timeout=30)).served_by


async def test_a_holder_that_was_down_during_drop_and_create_deletes_its_old_copy(
    tmp_path: Path, bootstrap_of: Bootstrap
) -> None:
    async with open_nodes(tmp_path) as start_a:
        a = await start_a("a", index=True)
        first = definition_of(a)
        async with open_nodes(tmp_path) as start_b:
            b = await start_b("b", index=True, bootstrap=(bootstrap_of(a),))
            await wait_until(lambda: sees(a, b) and sees(b, a), SAFETY)
            for node in (a, b):
                await store_docs(node, first, OLD)
        # b is down: the collection is dropped and created again, with another dimension
        dropped = await a.coordinator.drop("papers")
        again = definition_of(a, dim=8, version=dropped.version + 1,
                              created=dropped.version + 1)
        await store_docs(a, again, NEW)

        async with open_nodes(tmp_path) as start_b:
            b = await start_b("b", index=True, bootstrap=(bootstrap_of(a),))
            assert b.book.get("papers").created == 1  # b still believes in the old one
            assert b.index is not None
            assert not any(b.index.is_ready("papers", s) for s in range(SHARDS))
            await wait_until(lambda: b.book.get("papers").created == again.created
                             and len(held(b)) == SHARDS and b.index is not None
                             and all(b.index.is_ready("papers", s) for s in range(SHARDS)),
                             SAFETY)
            assert await doc_ids_of(b, again) == set(NEW)  # nothing of the old incarnation
            for shard in range(SHARDS):
                marker = tmp_path / "b" / "shards" / "papers" / str(shard) / "INCARNATION"
                assert marker.read_text().strip() == str(again.created)
            assert not b.coordinator.sync_failures


async def search_on(asker: Node, holder: Node, definition: CollectionDef,
                    shard: int) -> set[int] | None:
    """The chunk ids ``holder`` answers for ``shard`` (all of them: k covers every doc), or
    None when it refuses to serve the shard (``SHARD_UNAVAILABLE``)."""
    vectors = encode_vectors(np.full((1, definition.dim), 0.5, dtype=np.float32))
    params = {"collection": definition.name, "shards": [shard], "vectors": vectors, "k": 100}
    try:
        result = await asker.client.call(holder.peer_id, "shard.search", params, timeout=30)
    except JobError as exc:
        assert exc.code is ErrorCode.SHARD_UNAVAILABLE, exc
        return None
    reply = ShardSearchReply.from_wire(result.result, shards=[shard], queries=1, k=100)
    ids, _scores = reply.results[shard].rows()[0]
    return set(ids.tolist())


async def test_a_restarted_replica_serves_only_once_it_has_caught_up(
    tmp_path: Path, bootstrap_of: Bootstrap
) -> None:
    async with open_nodes(tmp_path) as start_a:
        a = await start_a("a", index=True)
        definition = definition_of(a)
        async with open_nodes(tmp_path) as start_b:
            b = await start_b("b", index=True, bootstrap=(bootstrap_of(a),))
            await wait_until(lambda: sees(a, b) and sees(b, a), SAFETY)
            for node in (a, b):
                await store_docs(node, definition, OLD)
        await store_docs(a, definition, NEW)  # acknowledged while b was down

        async with open_nodes(tmp_path) as start_b:
            b = await start_b("b", index=True, bootstrap=(bootstrap_of(a),))
            assert b.index is not None
            assert all(b.index.is_recovering("papers", s) for s in range(SHARDS))
            assert b.index.held() == {}  # not advertised while recovering
            expected = {s: {chunk_faiss_id(d, 0) for d in OLD + NEW
                            if shard_of(d, SHARDS) == s} for s in range(SHARDS)}
            served: dict[int, set[int]] = {}
            with trio.fail_after(SAFETY):
                while len(served) < SHARDS:  # every answer b gives is complete, or a refusal
                    for shard in range(SHARDS):
                        for asker in (b, a):  # b itself answers from the first moment
                            answer = await search_on(asker, b, definition, shard)
                            if answer is not None:
                                assert answer == expected[shard]
                                served[shard] = answer
                    await trio.sleep(0.02)
            assert set(held(b)) == set(range(SHARDS))
            assert not any(b.index.is_recovering("papers", s) for s in range(SHARDS))


async def test_a_lone_node_serves_its_replicas_again_after_a_restart(
    tmp_path: Path,
) -> None:
    async with open_nodes(tmp_path) as start:
        a = await start("a", index=True)
        definition = definition_of(a, replicas=1)
        await store_docs(a, definition, OLD)
    async with open_nodes(tmp_path) as start:
        a = await start("a", index=True)
        await wait_until(lambda: a.index is not None and set(
            a.index.held().get("papers", {})) == set(range(SHARDS)), SAFETY)
        assert await doc_ids_of(a, replace(definition)) == set(OLD)


async def test_only_the_owner_changes_the_replication_and_every_node_learns_it(
    tmp_path: Path, bootstrap_of: Bootstrap
) -> None:
    async with open_nodes(tmp_path) as start:
        a = await start("a", index=True)
        b = await start("b", index=True, bootstrap=(bootstrap_of(a),))
        await wait_until(lambda: sees(a, b) and sees(b, a), SAFETY)
        first = definition_of(a, replicas=1)
        await store_docs(a, first, OLD)
        await wait_until(lambda: b.book.names() == ["papers"], SAFETY)
        with pytest.raises(JobError) as err:  # b is a member, not the owner
            await b.coordinator.update("papers", replicas=2)
        assert err.value.code is ErrorCode.UNAUTHORIZED
        assert b.book.get("papers") == first
        changed, notes = await a.coordinator.update("papers", replicas=2)
        assert changed.version == first.version + 1 and changed.created == first.created
        assert notes == []  # two live index peers: nothing to warn about
        await wait_until(lambda: b.book.get("papers") == changed, SAFETY)
        await wait_until(lambda: b.index is not None and all(  # b now owns both shards
            b.index.is_ready("papers", s) for s in range(SHARDS)), SAFETY)
        assert await doc_ids_of(b, changed) == set(OLD)
        _, notes = await a.coordinator.update("papers", replicas=3)
        assert any("only 2 live index peers" in n for n in notes)
