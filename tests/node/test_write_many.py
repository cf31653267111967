"""``shard.write_many``: an ingest batch's writes to one owner in one request (issue 10:
ingest at the model's speed), with real nodes and a real hostile libp2p peer.

- Sent by a hostile peer: each shard of the request is written or refused alone (a shard out
  of the collection's range, vectors of another width), a malformed request is refused
  whole, and the node keeps serving with nothing else changed.
- Answered by a hostile owner: a broken reply (a shard missing, a shard nobody asked for,
  an unknown error code, no map at all) is one failed replica for each of its shards (the
  typed view's refusals counted as a bad reply); the honest owner's copy is written, and
  the documents are reported failed (the quorum of 2 was not reached), never acknowledged
  on a broken answer.
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

from calinode.models.store.records import ChunkWrite, DocRecord
from calinode.node.daemon import Node
from calinode.node.index.collections import sign_definition
from calinode.node.index.placement import shard_of
from calinode.protocol.collections import CollectionDef
from calinode.protocol.ids import JOB_PROTOCOL, META_PROTOCOL
from calinode.protocol.vectors import encode_vectors
from hostile_peer import HostilePeer, decode_last, frame, open_hostile_peer, read_all
from node_harness import open_nodes, wait_until
from replica_helpers import doc_ids_of

pytestmark = pytest.mark.slow
Bootstrap = Callable[[Node], str]
DIM = 4
SHARDS = 4
SAFETY = 60.0


def owned_by(evil: HostilePeer) -> CollectionDef:
    return sign_definition(replace(CollectionDef(
        name="papers", model="fake", model_sha256="0" * 64, dim=DIM, pooling="mean",
        normalize=True, query_prefix="", passage_prefix="", shards=SHARDS, replicas=2),
        owner=evil.peer_id), evil.key_pair)


def wire_doc(doc_id: str, dim: int = DIM) -> dict[str, Any]:
    return {"doc_id": doc_id, "content_hash": f"h-{doc_id}", "version": 1, "deleted": False,
            "chunks": [{"text": doc_id, "metadata": {}}],
            "vectors": encode_vectors(np.ones((1, dim), dtype=np.float32))}


def in_shard(shard: int, n: int, prefix: str = "d") -> list[str]:
    return [d for d in (f"{prefix}{i}" for i in range(1000)) if shard_of(d, SHARDS) == shard][:n]


async def test_each_shard_of_a_hostile_write_many_is_written_or_refused_alone(
    tmp_path: Path, bootstrap_of: Bootstrap
) -> None:
    async with open_nodes(tmp_path) as start, open_hostile_peer() as evil:
        node = await start("index", index=True)
        await evil.connect(bootstrap_of(node))
        definition = owned_by(evil)
        good, wide = in_shard(0, 2), in_shard(1, 1)
        reply = await evil.job(node.peer_id, "shard.write_many", {
            "collection": "papers", "definition": definition.to_wire(), "writes": [
                {"shard": 0, "docs": [wire_doc(d) for d in good], "seed": True},
                {"shard": 1, "docs": [wire_doc(d, DIM + 1) for d in wide], "seed": True},
                {"shard": SHARDS + 3, "docs": [wire_doc("far")], "seed": True}]})
        assert reply["t"] == "res", reply
        answers = {a["shard"]: a for a in reply["result"]["shards"]}
        assert answers[0]["result"]["inserted"] == 2
        assert answers[1]["error"] == answers[SHARDS + 3]["error"] == "BAD_REQUEST"
        assert await doc_ids_of(node, definition) == set(good)
        assert node.index is not None
        before = node.index.held(ready_only=False)
        for params in (  # refused whole: nothing of it is written
            {"collection": "papers", "writes": [{"shard": 2, "docs": [wire_doc("x")]}] * 2},
            {"collection": "papers", "writes": []},
            {"collection": "papers", "writes": [{"shard": 2, "docs": []}]},
            {"collection": "papers", "writes": "all of them"},
        ):
            reply = await evil.job(node.peer_id, "shard.write_many", params)
            assert reply["t"] == "err" and reply["code"] == "BAD_REQUEST", reply
        assert node.index.held(ready_only=False) == before
        assert await doc_ids_of(node, definition) == set(good)
        assert (await evil.job(node.peer_id, "ping", {}))["t"] == "res"


def bad_write_many(mode: str, params: dict[str, Any]) -> object:
    shards = [w["shard"] for w in params["writes"]]
    ok = {"inserted": 0, "replaced": 0, "deleted": 0, "unchanged": 0, "stale": 0,
          "outcomes": {}}
    if mode == "missing_shard":
        return {"shards": [{"shard": s, "result": ok} for s in shards[1:]]}
    if mode == "unknown_shard":
        return {"shards": [{"shard": s + SHARDS, "result": ok} for s in shards]}
    if mode == "unknown_code":
        return {"shards": [{"shard": s, "error": "NOPE"} for s in shards]}
    if mode == "not_a_map":
        return ["inserted"]
    raise AssertionError(mode)


class HostileOwner:
    """An index peer (so it owns every shard with R=2 beside the node) that answers
    ``shard.write_many`` brokenly."""

    def __init__(self, evil: HostilePeer, node: Node) -> None:
        self.evil, self.node, self.mode = evil, node, ""
        self.asked = 0
        evil.host.set_stream_handler(TProtocol(JOB_PROTOCOL), self.serve)
        evil.host.set_stream_handler(TProtocol(META_PROTOCOL), self.exchange)

    def record(self) -> dict[str, Any]:
        return self.evil.record(capabilities={
            "jobs": ["shard.write_many"], "index": True,
            "shards": {"papers": {str(s): "ab" * 8 for s in range(SHARDS)}}})

    async def exchange(self, stream: INetStream) -> None:
        await read_all(stream)
        await stream.write(frame(self.evil.exchange_wire(self.record())))
        await stream.close()

    async def serve(self, stream: INetStream) -> None:
        request = decode_last(await read_all(stream))
        if request["kind"] == "shard.write_many":
            self.asked += 1
            reply = {"t": "res", "id": request["id"], "served_by": self.evil.peer_id,
                     "result": bad_write_many(self.mode, request["params"])}
        else:
            reply = {"t": "err", "id": request["id"], "code": "UNKNOWN_KIND",
                     "message": request["kind"]}
        await stream.write(frame(reply))
        await stream.close()


async def test_a_hostile_owners_write_many_reply_is_one_failed_replica(
    tmp_path: Path, bootstrap_of: Bootstrap
) -> None:
    async with open_nodes(tmp_path) as start, open_hostile_peer() as evil:
        node = await start("index", index=True)
        await evil.connect(bootstrap_of(node))
        definition = owned_by(evil)
        reply = await evil.job(node.peer_id, "shard.write_many", {  # the node learns it
            "collection": "papers", "definition": definition.to_wire(),
            "writes": [{"shard": 0, "docs": [wire_doc(in_shard(0, 1)[0])], "seed": True}]})
        assert reply["t"] == "res", reply
        owner = HostileOwner(evil, node)
        await evil.exchange(node.peer_id, evil.exchange_wire(owner.record()))
        await wait_until(lambda: evil.peer_id in node.coordinator.index_peers(), SAFETY)
        vector = np.ones(DIM, dtype=np.float32) / 2
        for n, mode in enumerate(["missing_shard", "unknown_shard", "unknown_code",
                                  "not_a_map"]):
            owner.mode = mode
            ids = [d for s in range(SHARDS) for d in in_shard(s, 2, f"{mode}-")]
            writes: dict[int, list[DocRecord]] = {}
            for doc_id in ids:
                writes.setdefault(shard_of(doc_id, SHARDS), []).append(DocRecord(
                    doc_id=doc_id, content_hash=f"h{n}", version=10 + n, deleted=False,
                    chunks=[ChunkWrite(text=doc_id, vector=vector)]))
            asked, refused = owner.asked, node.rejections.counts["bad_reply"]
            await evil.exchange(node.peer_id, evil.exchange_wire(owner.record()))
            with trio.fail_after(SAFETY):
                settled = await node.coordinator.writes.write_all(definition, writes)
            assert owner.asked == asked + 1, mode  # one request for all the shards it owns
            if mode != "not_a_map":  # that one the frame layer refuses (PEER_UNREACHABLE)
                assert node.rejections.counts["bad_reply"] == refused + 1, mode
            assert {d.doc_id for d in settled} == set(ids)
            assert not any(d.acknowledged for d in settled), mode  # 1 of the 2 replicas
            assert {d.outcome for d in settled} == {"SHARD_UNAVAILABLE"}, mode
            assert set(ids) <= await doc_ids_of(node, definition)  # the honest copy is written
        assert (await evil.job(node.peer_id, "ping", {}))["t"] == "res"
