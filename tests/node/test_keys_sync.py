"""Replica sync compares keys before it pulls (issue 10: ingest at the model's speed), with
real nodes and a real hostile libp2p peer.

A replica whose digest differs from a holder's lists the holder's document states
(``shard.changes`` with ``keys_only``) and fetches whole, by id, only the documents whose
state there wins over its own. Here:

- two replicas that differ both ways (a replica down while writes and a delete were
  acknowledged, and a delete and a newer version that reached only the other copy) converge
  to the same digests and documents, and only the differing documents travel;
- under writes that never pause, a replica still finds a write it missed (a replica taking
  writes defers its sync round, at most ``MAX_SYNC_DEFER`` seconds);
- a hostile holder answering the keys-only listing or the fetch by id with broken replies
  (out of order, over the asked limit, a tombstone with a hash, no digest, a key of another
  shard, a document nobody asked for, vectors of another width) is counted as a bad reply
  each time; the node keeps syncing, serving, and stores nothing of it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import trio

from calinode.models.store.records import DocRecord
from calinode.models.store.shard_store import ShardStore
from calinode.node.daemon import Node
from calinode.node.index.placement import shard_of
from calinode.node.index.wire import docs_to_wire
from calinode.node.rag import sync as rag_sync
from calinode.protocol.collections import CollectionDef
from calinode.protocol.vectors import encode_vectors
from hostile_holder import HostileHolder, SeedDoc
from hostile_peer import HostilePeer, open_hostile_peer
from node_harness import open_nodes, wait_until
from replica_helpers import apply, definition_of, held, now_version, record, sees

pytestmark = pytest.mark.slow  # real nodes stop and start: several seconds a test
Bootstrap = Callable[[Node], str]
SHARDS = 2
DIM = 4
SAFETY = 60.0  # seconds: a safety net, never the thing under test


def tombstone(doc_id: str, version: int) -> DocRecord:
    return DocRecord(doc_id=doc_id, content_hash="", version=version, deleted=True, chunks=[])


async def live_docs(node: Node, definition: CollectionDef) -> dict[str, str]:
    """doc_id -> text of the first chunk, of every live document ``node`` holds."""
    assert node.index is not None
    found: dict[str, str] = {}
    for shard in node.index.held(ready_only=False).get(definition.name, {}):
        ids = await node.index.call(definition, shard, lambda s: s.doc_ids())
        chunks = await node.index.call(definition, shard,
                                       lambda s, i=ids: s.fetch([(d, 0) for d in i]))
        found.update({key[0]: chunk.text for key, chunk in chunks.items()})
    return found


COMMON = [f"doc{i:02d}" for i in range(24)]


async def test_replicas_that_differ_both_ways_converge_and_only_the_differences_travel(
    tmp_path: Path, bootstrap_of: Bootstrap, monkeypatch: pytest.MonkeyPatch
) -> None:
    fetched: list[str] = []
    records_of = ShardStore.records

    def spy(self: ShardStore, doc_ids: Sequence[str]) -> list[DocRecord]:
        fetched.extend(doc_ids)
        return records_of(self, doc_ids)

    monkeypatch.setattr(ShardStore, "records", spy)
    v1 = now_version()
    async with open_nodes(tmp_path) as start_a:
        a = await start_a("a", index=True)
        definition = definition_of(a)
        async with open_nodes(tmp_path) as start_b:
            b = await start_b("b", index=True, bootstrap=(bootstrap_of(a),))
            await wait_until(lambda: sees(a, b) and sees(b, a), SAFETY)
            for node in (a, b):
                await apply(node, definition, [record(d, v1) for d in COMMON])
            await wait_until(lambda: held(a) == held(b) != {}, SAFETY)
            # writes that reached only b: a delete and a newer version
            await apply(b, definition, [tombstone("doc01", v1 + 1),
                                        record("doc02", v1 + 1, "newer on b")])
        # acknowledged while b was down: new documents, a delete, a newer version
        await apply(a, definition, [record("new0", v1 + 2), record("new1", v1 + 2),
                                    tombstone("doc03", v1 + 2),
                                    record("doc04", v1 + 2, "newer on a")])
        fetched.clear()
        async with open_nodes(tmp_path) as start_b:
            b = await start_b("b", index=True, bootstrap=(bootstrap_of(a),))
            assert b.index is not None

            def converged() -> bool:
                assert b.index is not None
                return (held(a) == held(b) and len(held(b)) == SHARDS
                        and not any(b.index.is_recovering("papers", s)
                                    for s in range(SHARDS)))

            await wait_until(converged, SAFETY)
            want = {d: d for d in COMMON if d not in ("doc01", "doc03")}
            want |= {"doc02": "newer on b", "doc04": "newer on a", "new0": "new0",
                     "new1": "new1"}
            assert await live_docs(a, definition) == want
            assert await live_docs(b, definition) == want
            # only the documents whose state differed were fetched whole, none of the rest
            assert set(fetched) == {"doc01", "doc02", "doc03", "doc04", "new0", "new1"}
            assert b.coordinator.sync_failures == {} and a.coordinator.sync_failures == {}


# -- a hostile holder ------------------------------------------------------------------------

EVIL_DOC = "zz-evil"  # a document only the hostile holder claims


def evil_shard() -> int:
    return shard_of(EVIL_DOC, SHARDS)


def bad_changes(mode: str, params: dict[str, Any]) -> dict[str, Any]:
    """A broken ``shard.changes`` result for ``params`` (keys-only or by id)."""
    digest = "ab" * 8
    if params.get("keys_only"):
        claim = [[EVIL_DOC, "h-evil", 2**62, False]] if params["shard"] == evil_shard() else []
        if mode == "keys_backwards":
            return {"keys": [["zz", "h", 1, False], ["aa", "h", 1, False]], "digest": digest}
        if mode == "keys_over_limit":
            return {"keys": [[f"k{i:05d}", "", 1, True] for i in range(params["limit"] + 1)],
                    "digest": digest}
        if mode == "keys_tombstone_with_hash":
            return {"keys": [["zz", "h", 1, True]], "digest": digest}
        if mode == "keys_no_digest":
            return {"keys": claim}
        if mode == "keys_other_shard":  # a key of a document of another shard
            other = next(f"o{i}" for i in range(100) if shard_of(f"o{i}", SHARDS)
                         != params["shard"])
            return {"keys": [[other, "h", 1, False]], "digest": digest}
        return {"keys": claim, "digest": digest}  # the docs_* modes: a valid claim
    vectors = np.ones((1, DIM), dtype=np.float32)
    doc = {"doc_id": EVIL_DOC, "content_hash": "h-evil", "version": 2**62, "deleted": False,
           "chunks": [{"text": "forged", "metadata": {}}]}
    if mode == "docs_not_asked":
        return {"docs": [{**doc, "doc_id": "zz-other", "vectors": encode_vectors(vectors)}],
                "digest": digest}
    if mode == "docs_wrong_width":
        return {"docs": [{**doc, "vectors": encode_vectors(np.ones((1, DIM + 1),
                                                                   dtype=np.float32))}],
                "digest": digest}
    raise AssertionError(mode)


KEY_MODES = ["keys_backwards", "keys_over_limit", "keys_tombstone_with_hash",
             "keys_no_digest", "keys_other_shard"]
MODES = [*KEY_MODES, "docs_not_asked", "docs_wrong_width"]


class KeysHolder(HostileHolder):
    """Claims every shard (so the node's sync lists its keys every round) and answers
    ``shard.changes`` brokenly, as ``mode`` says; counts listings and fetches apart."""

    def __init__(self, evil: HostilePeer, node: Node) -> None:
        super().__init__(evil, node, jobs=["shard.changes"], shards=SHARDS, dim=DIM)

    def label(self, kind: str, params: dict[str, Any]) -> str:
        return f"{kind}:{'keys' if params.get('keys_only') else 'docs'}"

    async def answer(self, kind: str, params: dict[str, Any]) -> dict[str, Any] | None:
        return bad_changes(self.mode, params) if kind == "shard.changes" and self.mode else None


SEED = [SeedDoc(doc_id, f"h{i}", np.eye(DIM, dtype=np.float32)[i % DIM])
        for i, doc_id in enumerate(COMMON)]


async def test_a_hostile_keys_or_fetch_reply_is_refused_and_the_node_keeps_syncing(
    tmp_path: Path, bootstrap_of: Bootstrap
) -> None:
    async with open_nodes(tmp_path) as start, open_hostile_peer() as evil:
        node = await start("index", index=True)
        await evil.connect(bootstrap_of(node))
        holder = KeysHolder(evil, node)
        definition = await holder.seed(SEED)
        assert node.index is not None
        before = node.index.held(ready_only=False)
        for mode in MODES:
            holder.mode = mode
            what = "shard.changes:keys" if mode in KEY_MODES else "shard.changes:docs"
            asked, refused = holder.asked[what], node.rejections.counts["bad_reply"]
            await holder.claim_every_shard()
            with trio.fail_after(SAFETY):  # the sync loop asks again every round
                while not (holder.asked[what] > asked
                           and node.rejections.counts["bad_reply"] > refused):
                    await holder.claim_every_shard()
                    await trio.sleep(0.2)
            assert node.index.held(ready_only=False) == before, mode  # nothing stored
        # still serving: a ping and a search answered, every document intact, none forged
        assert (await evil.job(node.peer_id, "ping", {}))["t"] == "res"
        query = {"collection": "papers", "shards": list(range(SHARDS)), "k": 3,
                 "vectors": encode_vectors(np.eye(DIM, dtype=np.float32)[:1])}
        answer = await evil.job(node.peer_id, "shard.search", query)
        assert answer["t"] == "res", answer
        assert set(await live_docs(node, definition)) == set(COMMON)
        assert node.index.held(ready_only=False) == before


async def test_a_write_one_replica_missed_is_found_while_writes_keep_coming(
    tmp_path: Path, bootstrap_of: Bootstrap, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Replicas taking writes defer their sync round (their digests differ by the writes in
    flight), but never longer than MAX_SYNC_DEFER: under writes that never pause, a document
    only one replica has still reaches the other."""
    monkeypatch.setattr(rag_sync, "MAX_SYNC_DEFER", 4.0)
    async with open_nodes(tmp_path) as start:
        a = await start("a", index=True)
        b = await start("b", index=True, bootstrap=(bootstrap_of(a),))
        await wait_until(lambda: sees(a, b) and sees(b, a), SAFETY)
        definition = definition_of(a)
        version = now_version()
        for node in (a, b):
            await apply(node, definition, [record(d, version) for d in COMMON])
        missed = record("missed", version + 1)
        shard = shard_of("missed", SHARDS)

        async def keep_writing() -> None:
            """A coordinator's writes to both replicas of the shard, never pausing long
            enough (SYNC_QUIET) for a sync round."""
            for n in range(100_000):
                docs = docs_to_wire([record(f"w{n}-{i}", version + 2)
                                     for i in range(50) if shard_of(f"w{n}-{i}", SHARDS)
                                     == shard][:1])
                for node in (a, b):
                    await a.client.call(node.peer_id, "shard.write", {
                        "collection": "papers", "definition": definition.to_wire(),
                        "shard": shard, "docs": docs}, timeout=30)
                await trio.sleep(0.2)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(keep_writing)
            await wait_until(lambda: b.index is not None and b.index.written_within(
                "papers", shard, rag_sync.SYNC_QUIET), SAFETY)
            assert a.index is not None
            await a.index.call(definition, shard, lambda s: s.apply([missed]), writes=True)
            with trio.fail_after(SAFETY):
                while "missed" not in await live_docs(b, definition):  # noqa: ASYNC110
                    await trio.sleep(0.1)
            nursery.cancel_scope.cancel()
