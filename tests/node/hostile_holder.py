"""A hostile shard holder for node-tier tests: a real py-libp2p peer (``tests/hostile_peer.py``)
that owns a collection, seeds it onto a real node through the node's own ``shard.write`` job,
says it holds every shard, and answers the node's jobs as a test subclass decides.

    holder = MyHolder(evil, node, jobs=["shard.search"], shards=8)
    definition = await holder.seed(docs)          # docs: SeedDoc rows
    await holder.claim_every_shard()              # the node now counts it as a live holder
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
from libp2p.abc import INetStream
from libp2p.custom_types import TProtocol

from calinode.node.daemon import Node
from calinode.node.index.collections import sign_definition
from calinode.node.index.placement import shard_of
from calinode.protocol.collections import CollectionDef
from calinode.protocol.ids import JOB_PROTOCOL, META_PROTOCOL
from calinode.protocol.vectors import encode_vectors
from hostile_peer import HostilePeer, decode_last, frame, read_all

__all__ = ["COLLECTION", "HostileHolder", "SeedDoc"]

COLLECTION = "papers"


@dataclass(frozen=True)
class SeedDoc:
    """One document the hostile owner writes to the node: one chunk, one vector."""

    doc_id: str
    content_hash: str
    vector: np.ndarray
    metadata: dict[str, Any] = field(default_factory=dict)

    @property
    def text(self) -> str:
        return f"text of {self.doc_id}"


class HostileHolder:
    """Owns ``papers`` (``shards`` shards, R=2) and claims every shard with a digest of its
    own. Its job stream handler counts each request under :meth:`label` and answers with
    :meth:`answer`'s result, or ``UNKNOWN_KIND`` when that gives ``None``. Its meta handler
    answers the node's peer exchanges with its record, so that the node keeps it alive and
    its connection open, as it would a real holder."""

    def __init__(self, evil: HostilePeer, node: Node, *, jobs: list[str], shards: int,
                 dim: int) -> None:
        self.evil, self.node, self.jobs, self.shards, self.dim = evil, node, jobs, shards, dim
        self.mode = ""
        self.asked: Counter[str] = Counter()
        evil.host.set_stream_handler(TProtocol(JOB_PROTOCOL), self.serve)
        evil.host.set_stream_handler(TProtocol(META_PROTOCOL), self.exchange)

    def record(self) -> dict[str, Any]:
        """This peer's record: an index peer holding every shard of the collection."""
        return self.evil.record(capabilities={
            "jobs": self.jobs, "index": True,
            "shards": {COLLECTION: {str(s): "ab" * 8 for s in range(self.shards)}}})

    async def seed(self, docs: list[SeedDoc]) -> CollectionDef:
        """Define the collection (owned by this peer) and write every document to its
        ``shard_of`` shard through the node's real ``shard.write`` job."""
        definition = sign_definition(replace(CollectionDef(
            name=COLLECTION, model="fake", model_sha256="0" * 64, dim=self.dim,
            pooling="mean", normalize=True, query_prefix="", passage_prefix="",
            shards=self.shards, replicas=2), owner=self.evil.peer_id), self.evil.key_pair)
        for shard in range(self.shards):
            wire = [{"doc_id": d.doc_id, "content_hash": d.content_hash, "version": 1,
                     "deleted": False, "chunks": [{"text": d.text, "metadata": d.metadata}],
                     "vectors": encode_vectors(d.vector[None].astype(np.float32))}
                    for d in docs if shard_of(d.doc_id, self.shards) == shard]
            reply = await self.evil.job(self.node.peer_id, "shard.write", {
                "collection": COLLECTION, "definition": definition.to_wire(), "shard": shard,
                "docs": wire, "seed": True})
            assert reply["t"] == "res", reply
        return definition

    async def exchange(self, stream: INetStream) -> None:
        await read_all(stream)
        await stream.write(frame(self.evil.exchange_wire(self.record())))
        await stream.close()

    async def claim_every_shard(self) -> None:
        """Tell the node directly, so that it counts this peer as alive at once."""
        await self.evil.exchange(self.node.peer_id, self.evil.exchange_wire(self.record()))

    def label(self, kind: str, params: dict[str, Any]) -> str:
        """What :attr:`asked` counts a request under: its kind."""
        return kind

    async def answer(self, kind: str, params: dict[str, Any]) -> dict[str, Any] | None:
        """The result to send for a request, or ``None`` for ``UNKNOWN_KIND``."""
        return None

    async def serve(self, stream: INetStream) -> None:
        request = decode_last(await read_all(stream))
        kind, params = request["kind"], request["params"]
        self.asked[self.label(kind, params)] += 1
        result = await self.answer(kind, params)
        if result is None:
            reply = {"t": "err", "id": request["id"], "code": "UNKNOWN_KIND", "message": kind}
        else:
            reply = {"t": "res", "id": request["id"], "result": result,
                     "served_by": self.evil.peer_id}
        await stream.write(frame(reply))
        await stream.close()
