"""Who may change and read data (issue 9), with real nodes and a real hostile libp2p peer.

- In an ``--open`` swarm a stranger may connect, but may not create, write, read, delete or
  drop a collection it is not listed on: ``UNAUTHORIZED``, and nothing changes.
- In a private swarm a member (it holds the key) that is not a collection's owner or admin may
  neither drop nor redefine it.
- A write of an older version is never acknowledged; a version far in the future is refused.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from calinode.models.store.records import ChunkWrite, DocRecord
from calinode.node.daemon import Node
from calinode.node.hlc import COUNTER_BITS
from calinode.node.identity import write_swarm_key
from calinode.node.index.collections import sign_definition
from calinode.node.index.placement import shard_of
from calinode.protocol.collections import CollectionDef
from calinode.protocol.vectors import encode_vectors
from hostile_peer import HostilePeer, open_hostile_peer
from node_harness import open_nodes

Bootstrap = Callable[[Node], str]
SHARDS = 2


def base_definition(owner: str, **extra: Any) -> CollectionDef:
    return CollectionDef(name="papers", model="m", model_sha256="0" * 64, dim=4,
                         pooling="mean", normalize=True, shards=SHARDS, replicas=1,
                         owner=owner, **extra)


def wire_doc(doc_id: str, version: int, text: str = "text") -> dict[str, Any]:
    return {"doc_id": doc_id, "content_hash": f"h-{text}", "version": version,
            "deleted": False, "chunks": [{"text": text, "metadata": {}}],
            "vectors": encode_vectors(np.full((1, 4), 0.5, dtype=np.float32))}


def now_version() -> int:
    return int(time.time() * 1000) << COUNTER_BITS


async def owned_collection(node: Node, **extra: Any) -> CollectionDef:
    """A collection the node owns, signed by it, with one stored document per shard."""
    assert node.index is not None
    definition = sign_definition(base_definition(node.peer_id, **extra), node.signer.key_pair)
    node.book.merge(definition)
    for shard in range(SHARDS):
        doc_id = next(f"d{i}" for i in range(100) if shard_of(f"d{i}", SHARDS) == shard)
        record = DocRecord(doc_id=doc_id, content_hash="h", version=now_version(),
                           deleted=False, chunks=[ChunkWrite(
                               text="x", vector=np.full(4, 0.5, dtype=np.float32))])
        await node.index.call(definition, shard, lambda s, r=record: s.apply([r]), writes=True)
        await node.index.mark_ready("papers", shard)
    return definition


def state(node: Node) -> tuple[object, ...]:
    assert node.index is not None
    return (node.index.held(ready_only=False), node.book.all())


@asynccontextmanager
async def open_node(tmp_path: Path, bootstrap_of: Bootstrap, *, key: Path | None = None,
                    **config: Any) -> AsyncIterator[tuple[Node, HostilePeer]]:
    if key is not None:
        config["swarm_key"] = key
    async with open_nodes(tmp_path) as start, open_hostile_peer(swarm_key=key) as evil:
        node = await start("owner", index=True, **config)
        await evil.connect(bootstrap_of(node))
        yield node, evil


async def test_a_stranger_in_an_open_swarm_may_not_touch_a_collection(
    tmp_path: Path, bootstrap_of: Bootstrap
) -> None:
    async with open_node(tmp_path, bootstrap_of, open_swarm=True) as (node, evil):
        definition = await owned_collection(node)
        before = state(node)
        shard0 = shard_of("d0", SHARDS)
        attempts = {
            "create": ("shard.write", {
                "collection": "evil", "shard": 0, "docs": [], "seed": True,
                "definition": sign_definition(replace(base_definition(evil.peer_id),
                                                      name="evil"), evil.key_pair).to_wire()}),
            "write": ("shard.write", {"collection": "papers", "shard": shard0,
                                      "docs": [wire_doc("d0", now_version(), "evil")]}),
            "delete": ("shard.write", {"collection": "papers", "shard": shard0, "docs": [{
                "doc_id": "d0", "content_hash": "", "version": now_version(),
                "deleted": True, "chunks": []}]}),
            "read (search)": ("shard.search", {
                "collection": "papers", "shards": [0, 1], "k": 5,
                "vectors": encode_vectors(np.full((1, 4), 0.5, dtype=np.float32))}),
            "read (sync)": ("shard.changes", {"collection": "papers", "shard": 0}),
            "read (info)": ("shard.info", {"collection": "papers"}),
            "drop": ("shard.write", {  # a drop signed by the stranger
                "collection": "papers", "shard": 0, "docs": [], "seed": True,
                "definition": sign_definition(definition.dropped_copy(),
                                              evil.key_pair).to_wire()}),
            "take over": ("shard.write", {  # a newer version naming itself the owner
                "collection": "papers", "shard": 0, "docs": [], "seed": True,
                "definition": sign_definition(replace(definition, owner=evil.peer_id,
                                                      version=9), evil.key_pair).to_wire()}),
        }
        for what, (kind, params) in attempts.items():
            reply = await evil.job(node.peer_id, kind, params)
            assert reply.get("code") == "UNAUTHORIZED", (what, reply)
        assert state(node) == before
        assert (await node.client.call(node.peer_id, "ping", {}, timeout=30)).served_by


async def test_writers_and_readers_of_an_open_swarm(tmp_path: Path,
                                                    bootstrap_of: Bootstrap) -> None:
    async with (open_node(tmp_path, bootstrap_of, open_swarm=True) as (node, evil),
                open_hostile_peer() as reader):
        await reader.connect(bootstrap_of(node))
        await owned_collection(node, writers=(evil.peer_id,), readers=(reader.peer_id,))
        shard0 = shard_of("d0", SHARDS)
        write = {"collection": "papers", "shard": shard0,
                 "docs": [wire_doc("d0", now_version(), "new")]}
        assert (await evil.job(node.peer_id, "shard.write", write))["t"] == "res"
        assert (await reader.job(node.peer_id, "shard.write", write))["code"] == "UNAUTHORIZED"
        changes = {"collection": "papers", "shard": shard0}
        assert (await reader.job(node.peer_id, "shard.changes", changes))["t"] == "res"


async def test_a_member_that_is_not_the_owner_may_not_drop_or_redefine(
    tmp_path: Path, bootstrap_of: Bootstrap
) -> None:
    key = tmp_path / "swarm.key"
    write_swarm_key(key)
    async with open_node(tmp_path, bootstrap_of, key=key) as (node, member):
        definition = await owned_collection(node)
        before = state(node)
        for what, forged in {
            "drop": sign_definition(definition.dropped_copy(), member.key_pair),
            "redefine": sign_definition(replace(definition, replicas=1, shards=1,
                                                version=5), member.key_pair),
            "take over": sign_definition(replace(definition, owner=member.peer_id, version=5),
                                         member.key_pair),
        }.items():
            reply = await member.job(node.peer_id, "shard.write", {
                "collection": "papers", "shard": 0, "docs": [], "seed": True,
                "definition": forged.to_wire()})
            assert reply.get("code") == "UNAUTHORIZED", (what, reply)
        assert state(node) == before
        # as a member it may still write documents (private swarm: every key holder may)
        reply = await member.job(node.peer_id, "shard.write", {
            "collection": "papers", "shard": shard_of("d0", SHARDS),
            "docs": [wire_doc("d0", now_version(), "member")]})
        assert reply["t"] == "res" and reply["result"]["outcomes"] == {"d0": "replaced"}


@pytest.mark.parametrize("ahead", [3600 * 1000, None])
async def test_versions_far_in_the_future_are_refused(
    tmp_path: Path, bootstrap_of: Bootstrap, ahead: int | None
) -> None:
    async with open_node(tmp_path, bootstrap_of) as (node, member):
        await owned_collection(node)
        before = state(node)
        version = 2**63 - 1 if ahead is None else (int(time.time() * 1000) + ahead) << 16
        reply = await member.job(node.peer_id, "shard.write", {
            "collection": "papers", "shard": shard_of("d0", SHARDS),
            "docs": [wire_doc("d0", version, "future")]})
        assert reply.get("code") == "BAD_REQUEST" and "ahead" in reply["message"], reply
        assert state(node) == before


async def test_a_stale_write_is_not_acknowledged(tmp_path: Path,
                                                 bootstrap_of: Bootstrap) -> None:
    async with open_node(tmp_path, bootstrap_of) as (node, member):
        definition = await owned_collection(node)
        shard0 = shard_of("d0", SHARDS)
        newer = now_version() + 10
        reply = await member.job(node.peer_id, "shard.write", {
            "collection": "papers", "shard": shard0, "docs": [wire_doc("d0", newer, "peer")]})
        assert reply["result"]["outcomes"] == {"d0": "replaced"}
        # this node now writes an older version (its clock was behind when it made it)
        older = DocRecord(doc_id="d0", content_hash="h-old", version=newer - 5, deleted=False,
                          chunks=[ChunkWrite(text="old",
                                             vector=np.full(4, 0.5, dtype=np.float32))])
        (settled,) = await node.coordinator.writes.write_all(definition, {shard0: [older]})
        assert not settled.acknowledged and settled.outcome == "CONFLICT"
        assert node.clock.tick() > newer  # and the node's next version comes after the peer's
