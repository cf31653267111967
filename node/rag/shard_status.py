"""The state of a collection's shards across the swarm (``GET /v1/shards``, ``calinode
shards``): per shard its owners, its live replicas and what each holds.

Every live holder is asked ``shard.info`` at once (its reply read through the typed view
``ShardInfoReply``); a holder that does not answer, or answers badly, is a replica of unknown
size, not healthy. This fan-out over the swarm was in the HTTP handler; it belongs to the
coordinator, which knows the placement and the holders.
"""

from __future__ import annotations

from typing import Any

import trio

from calinode.node.rag.ports import RagNode
from calinode.node.rag.swarm_view import SwarmView
from calinode.protocol.errors import JobError, groups_collapsed
from calinode.protocol.shard_replies import ShardInfoReply, ShardInfoRow

SHARD_INFO_TIMEOUT = 10.0


async def shard_rows(node: RagNode, view: SwarmView, name: str) -> list[dict[str, Any]]:
    """One row per shard of collection ``name``: owners, live replicas (each with its
    documents, chunks, health and digest prefix), and the replication wanted."""
    definition = node.book.get(name)
    placement = view.placement(definition)
    holders = view.holders(definition)
    infos: dict[str, dict[int, ShardInfoRow]] = {}

    async def ask(peer: str) -> None:
        try:
            reply, _ = await node.client.call_parsed(
                peer, "shard.info", {"collection": name}, ShardInfoReply.from_wire,
                timeout=SHARD_INFO_TIMEOUT)
        except JobError:
            return
        infos[peer] = {row.shard: row for row in reply.shards}

    peers = {p for shard_holders in holders.values() for p in shard_holders}
    with groups_collapsed():
        async with trio.open_nursery() as nursery:
            for peer in peers:
                nursery.start_soon(ask, peer)
    rows = []
    for shard in range(definition.shards):
        replicas = []
        for peer in sorted(holders.get(shard, {})):
            info = infos.get(peer, {}).get(shard)
            replicas.append({"peer": peer, "docs": None if info is None else info.docs,
                             "chunks": None if info is None else info.chunks,
                             "healthy": info is not None and not info.problems,
                             "digest": holders[shard][peer][:16]})
        rows.append({"collection": name, "shard": shard, "owners": list(placement.owners(shard)),
                     "replicas": replicas, "live_replicas": len(replicas),
                     "wanted": definition.replicas})
    return rows
