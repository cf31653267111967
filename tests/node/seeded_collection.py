"""A collection of multi-chunk documents with known vectors, written by a real libp2p peer
straight into a real index node's shards (``shard.write`` with ``seed``), for search tests
that compare the node's answers with brute force over the same vectors."""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from calinode.node.daemon import Node
from calinode.node.index.collections import sign_definition
from calinode.node.index.placement import shard_of
from calinode.protocol.collections import CollectionDef
from calinode.protocol.vectors import encode_vectors
from hostile_peer import HostilePeer

__all__ = ["seed_collection"]


async def seed_collection(writer: HostilePeer, node: Node, docs: dict[str, np.ndarray], *,
                          shards: int, model_sha256: str) -> CollectionDef:
    """Write ``docs`` (doc id -> one vector per chunk) into collection ``papers`` owned by
    ``writer``; chunk ``c`` of doc ``d`` has text ``"d#c"`` and metadata ``{"c": c}``."""
    dim = next(iter(docs.values())).shape[1]
    definition = sign_definition(replace(CollectionDef(
        name="papers", model="fake", model_sha256=model_sha256, dim=dim, pooling="mean",
        normalize=True, query_prefix="", passage_prefix="", shards=shards, replicas=1),
        owner=writer.peer_id), writer.key_pair)
    for shard in range(shards):
        wire = [{"doc_id": d, "content_hash": d, "version": 1, "deleted": False,
                 "chunks": [{"text": f"{d}#{c}", "metadata": {"c": c}} for c in range(len(v))],
                 "vectors": encode_vectors(v)}
                for d, v in docs.items() if shard_of(d, shards) == shard]
        reply = await writer.job(node.peer_id, "shard.write", {
            "collection": "papers", "definition": definition.to_wire(), "shard": shard,
            "docs": wire, "seed": True})
        assert reply["t"] == "res", reply
    return definition
