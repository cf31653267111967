"""A hostile shard holder: a real py-libp2p peer that says it holds every shard of a
collection and answers ``shard.search`` / ``shard.fetch`` with broken replies (missing keys,
NaN scores, wrong shard numbers, more hits than asked, chunk ids nobody asked for, keys that
are not the chunk's). The coordinator counts each as one failed holder (``bad_reply``), takes
the answer from the other holder, and its search stays complete and exact; the node keeps
serving and nothing stored changes.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import trio

from calinode.node.daemon import Node
from calinode.node.index.placement import shard_of
from calinode.protocol.shard_params import encode_ids
from hostile_holder import HostileHolder, SeedDoc
from hostile_peer import HostilePeer, open_hostile_peer
from node_harness import open_nodes, wait_until

DIM = 4
SHARDS = 8
DOCS = 400


def corpus() -> tuple[list[str], np.ndarray]:
    rng = np.random.default_rng(7)
    return [f"doc-{i:05d}" for i in range(DOCS)], rng.standard_normal((DOCS, DIM)).astype(
        np.float32)


def bad_search(mode: str, params: dict[str, Any]) -> dict[str, Any]:
    """A broken ``shard.search`` result for ``params``."""
    shards, k = params["shards"], params["k"]
    rows = params["vectors"]["shape"][0]  # the coordinator sends a 2-D batch

    def answer(ids: list[int], scores: list[float]) -> dict[str, bytes]:
        return {"counts": np.full(rows, len(ids), dtype="<u4").tobytes(),
                "ids": encode_ids(ids * rows),
                "scores": np.array(scores * rows, dtype="<f4").tobytes()}

    if mode == "missing_keys":
        return {"results": {str(s): {"ids": b""} for s in shards}}
    if mode == "nan":
        return {"results": {str(s): answer([1, 2], [float("nan"), 0.5]) for s in shards}}
    if mode == "wrong_shard":
        return {"results": {str(s + 1): answer([1], [0.9]) for s in shards}}
    if mode == "too_many":
        return {"results": {str(s): answer(list(range(1, k + 2)), [0.5] * (k + 1))
                            for s in shards}}
    raise AssertionError(mode)


def bad_fetch(mode: str, params: dict[str, Any]) -> dict[str, Any]:
    """A broken ``shard.fetch`` result for ``params``."""
    asked = np.frombuffer(params["ids"], dtype="<i8").tolist()
    if mode == "unknown_ids":
        return {"chunks": [[asked[0] + 1, "doc-00000", 0, "t", {}]], "done": len(asked)}
    if mode == "wrong_key":  # a real document of another id: not the chunk asked for
        return {"chunks": [[asked[0], "doc-00001", 0, "forged", {}]], "done": len(asked)}
    if mode == "fetch_missing_keys":
        return {"chunks": [[asked[0]]]}
    raise AssertionError(mode)


def bad_info(mode: str) -> dict[str, Any]:
    """A broken ``shard.info`` result (``GET /v1/shards`` asks every holder for one)."""
    if mode == "info_missing_keys":
        return {"shards": [{"shard": 0}]}
    if mode == "info_not_a_list":
        return {"shards": "all of them"}
    if mode == "info_negative_docs":
        return {"shards": [{"shard": 0, "docs": -5, "chunks": 0, "problems": [],
                            "ready": True, "digest": "ab" * 8}]}
    raise AssertionError(mode)


class BrokenHolder(HostileHolder):
    """A broken reply of ``mode``; ``shard.search`` relayed to the real node (a correct
    answer) while ``mode`` breaks only fetches, so that the coordinator fetches from this
    peer first."""

    def __init__(self, evil: HostilePeer, node: Node) -> None:
        super().__init__(evil, node, jobs=["shard.search", "shard.fetch"], shards=SHARDS,
                         dim=DIM)

    async def answer(self, kind: str, params: dict[str, Any]) -> dict[str, Any] | None:
        if kind == "shard.search" and self.mode not in SEARCH_MODES:
            relayed = await self.evil.job(self.node.peer_id, kind, params)
            return dict(relayed["result"])
        if kind == "shard.search":
            return bad_search(self.mode, params)
        if kind == "shard.fetch":
            return bad_fetch(self.mode, params)
        if kind == "shard.info" and self.mode in INFO_MODES:
            return bad_info(self.mode)
        return None


def seed_docs() -> list[SeedDoc]:
    ids, vectors = corpus()
    return [SeedDoc(doc_id, f"h{i}", vectors[i], {"n": i}) for i, doc_id in enumerate(ids)]


SEARCH_MODES = ("missing_keys", "nan", "wrong_shard", "too_many")
INFO_MODES = ("info_missing_keys", "info_not_a_list", "info_negative_docs")
MODES = [*SEARCH_MODES, "unknown_ids", "wrong_key", "fetch_missing_keys"]


@pytest.mark.slow
async def test_broken_holder_replies_count_as_one_failed_holder_and_search_stays_exact(
    tmp_path: Path, bootstrap_of: Callable[[Node], str]
) -> None:
    async with open_nodes(tmp_path) as start, open_hostile_peer() as evil:
        node = await start("index", index=True)
        await evil.connect(bootstrap_of(node))
        holder = BrokenHolder(evil, node)
        definition = await holder.seed(seed_docs())
        assert node.index is not None
        before = node.index.held(ready_only=False)
        ids, vectors = corpus()
        queries = np.random.default_rng(3).standard_normal((3, DIM)).astype(np.float32)
        expected = [[ids[i] for i in np.argsort(-(vectors @ q), kind="stable")[:10]]
                    for q in queries]
        for mode in MODES:
            holder.mode = mode
            await holder.claim_every_shard()
            await wait_until(lambda: all(evil.peer_id in held for held in
                                         node.coordinator.holders(definition).values()),
                             timeout=60)
            kind = "shard.search" if mode in SEARCH_MODES else "shard.fetch"
            asked, refused = holder.asked[kind], node.rejections.counts["bad_reply"]
            # the node's own exchanges with this peer fail (it speaks no meta protocol), which
            # may reset the connection under a search: search until the peer was asked
            for _ in range(10):
                with trio.fail_after(60):
                    results = await node.coordinator.search_vectors(definition, queries, k=10,
                                                                    timeout=50)
                for q, found in enumerate(results):
                    assert not found["partial"], (mode, found["missing_shards"])
                    assert [h["doc_id"] for h in found["hits"]] == expected[q], mode
                    assert all(h["text"] == f"text of {h['doc_id']}" for h in found["hits"])
                if holder.asked[kind] > asked:
                    break
                await holder.claim_every_shard()
            assert holder.asked[kind] > asked, f"{mode}: the hostile holder was not asked"
            assert node.rejections.counts["bad_reply"] > refused, mode
        # still serving: a ping and a search answered; nothing stored changed
        assert (await evil.job(node.peer_id, "ping", {}))["t"] == "res"
        assert node.index.held(ready_only=False) == before


@pytest.mark.slow
async def test_broken_shard_info_replies_leave_the_shard_report_whole(
    tmp_path: Path, bootstrap_of: Callable[[Node], str]
) -> None:
    """The shard report (``GET /v1/shards``, ``Coordinator.shard_rows``) asks every holder
    for ``shard.info``: a broken reply is a counted ``bad_reply`` and a replica of unknown
    size, not healthy; the other replicas are still reported, and the node keeps serving."""
    async with open_nodes(tmp_path) as start, open_hostile_peer() as evil:
        node = await start("index", index=True)
        await evil.connect(bootstrap_of(node))
        holder = BrokenHolder(evil, node)
        definition = await holder.seed(seed_docs())
        assert node.index is not None
        before = node.index.held(ready_only=False)
        ids, _ = corpus()
        for mode in INFO_MODES:
            holder.mode = mode
            await holder.claim_every_shard()
            await wait_until(lambda: all(evil.peer_id in held for held in
                                         node.coordinator.holders(definition).values()),
                             timeout=60)
            asked, refused = holder.asked["shard.info"], node.rejections.counts[
                "bad_reply"]
            with trio.fail_after(60):
                rows = await node.coordinator.shard_rows("papers")
            assert holder.asked["shard.info"] > asked, mode
            assert node.rejections.counts["bad_reply"] > refused, mode
            assert [row["shard"] for row in rows] == list(range(SHARDS))
            for row in rows:
                replicas = {r["peer"]: r for r in row["replicas"]}
                evil_replica, own = replicas[evil.peer_id], replicas[node.peer_id]
                assert evil_replica["docs"] is None and not evil_replica["healthy"], mode
                assert own["healthy"] and own["docs"] == sum(
                    1 for doc_id in ids if shard_of(doc_id, SHARDS) == row["shard"])
        # still serving: a ping answered; nothing stored changed
        assert (await evil.job(node.peer_id, "ping", {}))["t"] == "res"
        assert node.index.held(ready_only=False) == before
