"""The agent's ``fetch(doc_id)`` tool through a real node: a document's text read back by id
from its shard's holder with ``shard.fetch`` (its chunks in order, their overlap once, bounded
in size), and None for an id the collection does not hold."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import numpy as np
import trio

from calinode.node.daemon import Node
from calinode.node.index.collections import sign_definition
from calinode.node.index.placement import shard_of
from calinode.node.rag.agent_swarm import FETCH_DOC_CHARS, SwarmTools
from calinode.protocol.collections import CollectionDef
from calinode.protocol.vectors import encode_vectors
from hostile_peer import open_hostile_peer
from node_harness import open_nodes

DIM = 4
SHARDS = 4


def chunks_of(doc_id: str, count: int) -> list[str]:
    """``count`` chunks whose neighbours share five words (the chunker's overlap)."""
    words = [f"{doc_id}w{i}" for i in range(10 * count + 5)]
    return [" ".join(words[10 * c:10 * c + 15]) for c in range(count)]


async def test_fetch_reads_a_document_by_id_from_its_holder(
    tmp_path: Path, bootstrap_of: Callable[[Node], str]
) -> None:
    docs = {"short": chunks_of("short", 1), "long": chunks_of("long", 3),
            "huge": ["x" * 3000, "y" * 3000]}
    rng = np.random.default_rng(1)
    async with open_nodes(tmp_path) as start, open_hostile_peer() as writer:
        node = await start("index", index=True)
        await writer.connect(bootstrap_of(node))
        definition = sign_definition(replace(CollectionDef(
            name="papers", model="fake", model_sha256="0" * 64, dim=DIM, pooling="mean",
            normalize=True, query_prefix="", passage_prefix="", shards=SHARDS, replicas=1),
            owner=writer.peer_id), writer.key_pair)
        for shard in range(SHARDS):
            wire = [{"doc_id": d, "content_hash": d, "version": 1, "deleted": False,
                     "chunks": [{"text": t, "metadata": {"title": d.upper()}} for t in texts],
                     "vectors": encode_vectors(
                         rng.standard_normal((len(texts), DIM)).astype(np.float32))}
                    for d, texts in docs.items() if shard_of(d, SHARDS) == shard]
            reply = await writer.job(node.peer_id, "shard.write", {
                "collection": "papers", "definition": definition.to_wire(), "shard": shard,
                "docs": wire, "seed": True})
            assert reply["t"] == "res", reply
        coordinator = node.coordinator
        tools = SwarmTools(node, coordinator.view, coordinator.searches, "papers")
        with trio.fail_after(60):
            deadline = trio.current_time() + 50
            short = await tools.fetch("short", deadline=deadline)
            long = await tools.fetch("long", deadline=deadline)
            huge = await tools.fetch("huge", deadline=deadline)
            missing = await tools.fetch("nowhere", deadline=deadline)
        assert short is not None and short.text == docs["short"][0]
        assert short.title == "SHORT"
        words = [f"longw{i}" for i in range(35)]
        assert long is not None and long.text == " ".join(words)  # the overlap once
        assert huge is not None and len(huge.text) == FETCH_DOC_CHARS
        assert missing is None
