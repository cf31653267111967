"""Hostile job requests against real in-process nodes, sent by a real py-libp2p peer.

Each test asserts that the node refused the attack with a stable code, counted it, still
answers (ping, search, embed), and that nothing stored changed.
"""

from __future__ import annotations

import threading
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import trio
from test_embed_merging import FakeEmbedder

from calinode.node.daemon import Node
from calinode.node.index.collections import sign_definition
from calinode.node.index.placement import shard_of
from calinode.node.index.replicas import STORE_THREADS
from calinode.node.inference.services import EmbedService
from calinode.protocol.collections import CollectionDef
from calinode.protocol.limits import Limits
from calinode.protocol.search_budget import SearchBudget, plan_search
from calinode.protocol.vectors import encode_vectors
from hostile_peer import HostilePeer, open_hostile_peer
from node_harness import open_nodes, wait_until

DIM = 4
SHARDS = 8


def definition(shards: int = SHARDS) -> CollectionDef:
    return CollectionDef(name="papers", model="fake", model_sha256="0" * 64, dim=DIM,
                         pooling="mean", normalize=True, query_prefix="", passage_prefix="",
                         shards=shards, replicas=1)


def corpus(n: int, seed: int = 7) -> tuple[list[str], np.ndarray]:
    rng = np.random.default_rng(seed)
    vectors = rng.standard_normal((n, DIM)).astype(np.float32)
    return [f"doc-{i:05d}" for i in range(n)], vectors


async def seed_collection(evil: HostilePeer, node: Node, n: int) -> tuple[list[str], np.ndarray]:
    """Write ``n`` one-chunk documents through the node's real ``shard.write`` job."""
    ids, vectors = corpus(n)
    # the peer owns the collection it writes (members may create collections; a definition
    # must be signed by its owner)
    wire_def = sign_definition(replace(definition(), owner=evil.peer_id),
                               evil.key_pair).to_wire()
    for shard in range(SHARDS):
        docs = [{"doc_id": doc_id, "content_hash": f"h{i}", "version": 1, "deleted": False,
                 "chunks": [{"text": f"text of {doc_id}", "metadata": {"n": i}}],
                 "vectors": encode_vectors(vectors[i:i + 1])}
                for i, doc_id in enumerate(ids) if shard_of(doc_id, SHARDS) == shard]
        reply = await evil.job(node.peer_id, "shard.write", {
            "collection": "papers", "definition": wire_def, "shard": shard, "docs": docs,
            "seed": True})
        assert reply["t"] == "res", reply
    return ids, vectors


@asynccontextmanager
async def index_node(tmp_path: Path, bootstrap_of: Callable[[Node], str]
                     ) -> AsyncIterator[tuple[Node, HostilePeer]]:
    async with open_nodes(tmp_path) as start, open_hostile_peer() as evil:
        node = await start("index", index=True)
        await evil.connect(bootstrap_of(node))
        yield node, evil


def hit_counts(reply: dict[str, Any], shard: str) -> list[int]:
    """The hits per query row of one shard in a raw ``shard.search`` reply."""
    return np.frombuffer(reply["result"]["results"][shard]["counts"], dtype="<u4").tolist()


def digests(node: Node) -> dict[str, dict[int, str]]:
    assert node.index is not None
    return node.index.held(ready_only=False)


async def test_search_amplification_is_refused_before_it_runs_and_the_node_serves_on(
    tmp_path: Path, bootstrap_of: Callable[[Node], str]
) -> None:
    async with index_node(tmp_path, bootstrap_of) as (node, evil):
        await seed_collection(evil, node, 400)
        before = digests(node)
        query = encode_vectors(np.ones((1, DIM), dtype=np.float32))
        # every shard of the collection, for 2000 queries at k=1000: a reply of up to
        # 2000 x 1000 x 8 hits (190 MB) is over the budget, refused before any search
        attack = {"collection": "papers", "shards": list(range(SHARDS)) * 125,
                  "vectors": encode_vectors(np.ones((2000, DIM), dtype=np.float32)),
                  "k": 1000}
        with trio.fail_after(60):
            reply = await evil.job(node.peer_id, "shard.search", attack)
        assert reply["t"] == "err" and reply["code"] == "BAD_REQUEST", reply
        assert "search budget" in reply["message"]
        assert node.rejections.counts["over_budget"] == 1
        # [0] * 1000 is one shard, searched once
        reply = await evil.job(node.peer_id, "shard.search", {
            "collection": "papers", "shards": [0] * 1000, "vectors": query, "k": 1000})
        assert reply["t"] == "res" and list(reply["result"]["results"]) == ["0"]
        in_shard_0 = sum(shard_of(f"doc-{i:05d}", SHARDS) == 0 for i in range(400))
        assert hit_counts(reply, "0") == [in_shard_0]  # all of shard 0's documents
        # shards outside the collection, and malformed params, are clean BAD_REQUESTs
        for params in ({"collection": "papers", "shards": [SHARDS], "vectors": query, "k": 1},
                       {"collection": "papers", "shards": [0], "vectors": query, "k": True},
                       {"collection": "papers", "shards": [0], "vectors": query}):
            reply = await evil.job(node.peer_id, "shard.search", params)
            assert reply["t"] == "err" and reply["code"] == "BAD_REQUEST", reply
        assert node.rejections.counts["bad_params"] == 2
        # still serving: a search and a ping answered, nothing stored changed
        reply = await evil.job(node.peer_id, "shard.search", {
            "collection": "papers", "shards": [1, 2], "vectors": query, "k": 5})
        assert reply["t"] == "res" and hit_counts(reply, "1") == [5]
        assert (await evil.job(node.peer_id, "ping", {}))["t"] == "res"
        assert digests(node) == before


async def test_coordinator_search_with_k_1000_is_split_to_fit_and_complete(
    tmp_path: Path, bootstrap_of: Callable[[Node], str]
) -> None:
    async with index_node(tmp_path, bootstrap_of) as (node, evil):
        ids, vectors = await seed_collection(evil, node, 1600)
        queries = np.random.default_rng(3).standard_normal((5, DIM)).astype(np.float32)
        # a coordinator with small frames: its search is cut into many requests that fit
        budget = SearchBudget(Limits(max_frame=64 * 1024))
        per_block, groups = plan_search(5, 1000, list(range(SHARDS)), budget)
        assert per_block < 5 and len(groups) == SHARDS  # query blocks, one shard a request
        node.coordinator.search_budget = budget
        with trio.fail_after(120):
            results = await node.coordinator.search_vectors(definition(), queries, k=1000,
                                                            timeout=100)
        for q, found in enumerate(results):
            assert not found["partial"] and found["missing_shards"] == []
            expected = [ids[i] for i in np.argsort(-(vectors @ queries[q]), kind="stable")[:1000]]
            assert [h["doc_id"] for h in found["hits"]] == expected
        assert node.rejections.counts["over_budget"] == 0


async def test_a_saturated_shard_store_limiter_does_not_block_embed_or_ping(
    tmp_path: Path, bootstrap_of: Callable[[Node], str]
) -> None:
    """64 shard-store calls held busy in their worker threads (more than trio's default of
    40 threads) while another node asks for an embed and a ping."""
    gate = threading.Event()
    async with open_nodes(tmp_path) as start, trio.open_nursery() as nursery:
        server = await start("server", index=True)
        service = EmbedService(FakeEmbedder())  # type: ignore[arg-type]  # a fake model
        await nursery.start(service.run)
        server.models.embed["fake"] = service
        caller = await start("caller", bootstrap=(bootstrap_of(server),))
        await wait_until(lambda: server.peer_id in {e.peer_id for e in caller.table.alive()})
        index = server.index
        assert index is not None
        wide = definition(shards=64)
        for shard in range(64):
            await index.store(wide, shard)
        busy = 0

        async def hold(shard: int) -> None:
            nonlocal busy
            busy += 1
            await index.call(wide, shard, lambda _store: gate.wait(120))

        try:
            for shard in range(64):
                nursery.start_soon(hold, shard)
            await wait_until(lambda: index.limiter.borrowed_tokens == STORE_THREADS, 60)
            assert busy == 64
            with trio.fail_after(60):
                pong = await caller.ping(server.peer_id, count=1, timeout=30)
                embedded = await caller.run_job(server.peer_id, "embed", {
                    "model": "fake", "texts": ["hello"]}, timeout=30)
            assert pong["served_by"] == server.peer_id
            assert embedded.result["dim"] == DIM
            assert index.limiter.borrowed_tokens == STORE_THREADS  # still saturated
        finally:
            gate.set()
        nursery.cancel_scope.cancel()


async def test_bad_frames_and_params_are_counted_and_the_node_answers(
    tmp_path: Path, bootstrap_of: Callable[[Node], str]
) -> None:
    async with index_node(tmp_path, bootstrap_of) as (node, evil):
        for _ in range(50):  # one WARNING line per reason and interval, not per frame
            await evil.send_raw(node.peer_id, "/calinode/job/1.0.0", b"\x00\x00\x00\x02\xc1\xc1")
        assert node.rejections.counts["bad_frame"] == 50
        for params in ({"texts": "not a list", "model": "m"}, {"model": 5, "texts": ["a"]},
                       {"model": "m", "texts": ["a"], "dimensions": 1.5}):
            reply = await evil.job(node.peer_id, "embed", params)
            assert reply["t"] == "err" and reply["code"] == "BAD_REQUEST", reply
        reply = await evil.job(node.peer_id, "generate", {"model": "m", "prompt": "x",
                                                         "temperature": float("nan")})
        assert reply["t"] == "err" and reply["code"] == "BAD_REQUEST", reply
        assert node.rejections.counts["bad_params"] == 4
        assert (await evil.job(node.peer_id, "ping", {}))["t"] == "res"


