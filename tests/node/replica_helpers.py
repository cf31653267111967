"""Replicas written and read straight through a real node's ``LocalIndex``, for node-tier
tests of sync and collection life: a collection owned by a node, documents stored as
acknowledged writes would store them, and what each replica holds."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import numpy as np
import trio

from calinode.models.store.records import ChunkWrite, DocRecord
from calinode.node.daemon import Node
from calinode.node.hlc import COUNTER_BITS
from calinode.node.index.collections import sign_definition
from calinode.node.index.placement import shard_of
from calinode.protocol.collections import CollectionDef

__all__ = ["apply", "definition_of", "doc_ids_of", "held", "now_version", "record", "sees"]


def definition_of(owner: Node, **extra: Any) -> CollectionDef:
    """``papers``, owned and signed by ``owner``: dim 4, 2 shards, R=2 unless ``extra``
    says otherwise."""
    settings: dict[str, Any] = {"name": "papers", "model": "m", "model_sha256": "0" * 64,
                                "dim": 4, "pooling": "mean", "normalize": True,
                                "shards": 2, "replicas": 2, "owner": owner.peer_id,
                                "created": 1, **extra}
    return sign_definition(CollectionDef(**settings), owner.signer.key_pair)


def now_version() -> int:
    return int(time.time() * 1000) << COUNTER_BITS


def record(doc_id: str, version: int | None = None, text: str = "", dim: int = 4) -> DocRecord:
    """A live document of one chunk (its text, or its id) at ``version`` (now)."""
    vector = np.full(dim, 1 / np.sqrt(dim), dtype=np.float32)
    return DocRecord(doc_id=doc_id, content_hash=f"h-{doc_id}-{text}",
                     version=now_version() if version is None else version, deleted=False,
                     chunks=[ChunkWrite(text=text or doc_id, vector=vector)])


async def apply(node: Node, definition: CollectionDef, records: Sequence[DocRecord]) -> None:
    """Write records straight into ``node``'s replicas (as acknowledged writes would)."""
    assert node.index is not None
    await trio.to_thread.run_sync(node.book.merge, definition)
    for shard in range(definition.shards):
        mine = [r for r in records if shard_of(r.doc_id, definition.shards) == shard]
        await node.index.call(definition, shard, lambda s, r=mine: s.apply(r), writes=True)
        await node.index.mark_ready(definition.name, shard)


async def doc_ids_of(node: Node, definition: CollectionDef) -> set[str]:
    """Every live document id ``node`` holds of the collection."""
    assert node.index is not None
    found: set[str] = set()
    for shard in node.index.held(ready_only=False).get(definition.name, {}):
        found.update(await node.index.call(definition, shard, lambda s: s.doc_ids()))
    return found


def held(node: Node, name: str = "papers") -> dict[int, str]:
    """shard -> digest of every replica ``node`` holds of ``name``, ready or not."""
    assert node.index is not None
    return node.index.held(ready_only=False).get(name, {})


def sees(a: Node, b: Node) -> bool:
    return any(e.peer_id == b.peer_id for e in a.table.alive())
