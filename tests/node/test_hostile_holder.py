"""A hostile shard holder: a real py-libp2p peer that says it holds every shard of a
collection and answers ``shard.search`` / ``shard.fetch`` with broken replies (missing keys,
NaN scores, wrong shard numbers, more hits than asked, chunk ids nobody asked for, keys that
are not the chunk's). The coordinator counts each as one failed holder (``bad_reply``), takes
the answer from the other holder, and its search stays complete and exact; the node keeps
serving and nothing stored changes.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import trio
from libp2p.abc import INetStream
from libp2p.custom_types import TProtocol

from calinode.node.daemon import Node
from calinode.node.index.collections import sign_definition
from calinode.node.index.placement import shard_of
from calinode.protocol.collections import CollectionDef
from calinode.protocol.ids import JOB_PROTOCOL, META_PROTOCOL
from calinode.protocol.shard_params import encode_ids
from calinode.protocol.vectors import encode_vectors
from hostile_peer import HostilePeer, decode_last, frame, open_hostile_peer, read_all
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


class HostileHolder:
    """Serves calinode's job protocol on the hostile peer: a broken reply of ``mode``;
    ``shard.search`` relayed to the real node (a correct answer) while ``mode`` breaks only
    fetches, so that the coordinator fetches from this peer first."""

    def __init__(self, evil: HostilePeer, node: Node) -> None:
        self.evil, self.node, self.mode = evil, node, ""
        self.asked: dict[str, int] = {}
        evil.host.set_stream_handler(TProtocol(JOB_PROTOCOL), self.serve)
        evil.host.set_stream_handler(TProtocol(META_PROTOCOL), self.exchange)

    def record(self) -> dict[str, Any]:
        """This peer's record: an index peer holding every shard of the collection."""
        return self.evil.record(capabilities={
            "jobs": ["shard.search", "shard.fetch"], "index": True,
            "shards": {"papers": {str(s): "ab" * 8 for s in range(SHARDS)}}})

    async def exchange(self, stream: INetStream) -> None:
        """Answer the node's peer exchanges with the record (so the node keeps this peer
        alive and its connection open, as it would a real holder)."""
        await read_all(stream)
        await stream.write(frame(self.evil.exchange_wire(self.record())))
        await stream.close()

    async def claim_every_shard(self) -> None:
        """Tell the node directly, so that it counts this peer as alive at once."""
        await self.evil.exchange(self.node.peer_id, self.evil.exchange_wire(self.record()))

    async def serve(self, stream: INetStream) -> None:
        request = decode_last(await read_all_request(stream))
        kind, params = request["kind"], request["params"]
        self.asked[kind] = self.asked.get(kind, 0) + 1
        if kind == "shard.search" and self.mode not in SEARCH_MODES:
            relayed = await self.evil.job(self.node.peer_id, kind, params)
            result = relayed["result"]
        elif kind == "shard.search":
            result = bad_search(self.mode, params)
        elif kind == "shard.fetch":
            result = bad_fetch(self.mode, params)
        elif kind == "shard.info" and self.mode in INFO_MODES:
            result = bad_info(self.mode)
        else:
            reply = {"t": "err", "id": request["id"], "code": "UNKNOWN_KIND", "message": kind}
            await stream.write(frame(reply))
            await stream.close()
            return
        await stream.write(frame({"t": "res", "id": request["id"], "result": result,
                                  "served_by": self.evil.peer_id}))
        await stream.close()


async def read_all_request(stream: INetStream) -> bytes:
    """The request frame (the coordinator half-closes after sending it)."""
    return await read_all(stream)


async def seed(evil: HostilePeer, node: Node) -> CollectionDef:
    """A collection owned by the hostile peer, R=2, written through the node's real
    ``shard.write`` job (every document in its ``shard_of`` shard)."""
    definition = sign_definition(replace(CollectionDef(
        name="papers", model="fake", model_sha256="0" * 64, dim=DIM, pooling="mean",
        normalize=True, query_prefix="", passage_prefix="", shards=SHARDS, replicas=2),
        owner=evil.peer_id), evil.key_pair)
    ids, vectors = corpus()
    for shard in range(SHARDS):
        docs = [{"doc_id": doc_id, "content_hash": f"h{i}", "version": 1, "deleted": False,
                 "chunks": [{"text": f"text of {doc_id}", "metadata": {"n": i}}],
                 "vectors": encode_vectors(vectors[i:i + 1])}
                for i, doc_id in enumerate(ids) if shard_of(doc_id, SHARDS) == shard]
        reply = await evil.job(node.peer_id, "shard.write", {
            "collection": "papers", "definition": definition.to_wire(), "shard": shard,
            "docs": docs, "seed": True})
        assert reply["t"] == "res", reply
    return definition


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
        definition = await seed(evil, node)
        holder = HostileHolder(evil, node)
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
            asked, refused = holder.asked.get(kind, 0), node.rejections.counts["bad_reply"]
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
                if holder.asked.get(kind, 0) > asked:
                    break
                await holder.claim_every_shard()
            assert holder.asked.get(kind, 0) > asked, f"{mode}: the hostile holder was not asked"
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
        definition = await seed(evil, node)
        holder = HostileHolder(evil, node)
        assert node.index is not None
        before = node.index.held(ready_only=False)
        ids, _ = corpus()
        for mode in INFO_MODES:
            holder.mode = mode
            await holder.claim_every_shard()
            await wait_until(lambda: all(evil.peer_id in held for held in
                                         node.coordinator.holders(definition).values()),
                             timeout=60)
            asked, refused = holder.asked.get("shard.info", 0), node.rejections.counts[
                "bad_reply"]
            with trio.fail_after(60):
                rows = await node.coordinator.shard_rows("papers")
            assert holder.asked.get("shard.info", 0) > asked, mode
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
