"""What the coordinator believes about the swarm for one collection: the live index peers, the
placement over them, who holds which shard (with its digest), and the order holders are asked.

Read from the peer table (the live peers' typed capabilities) and this node's own replicas;
shared by ingest (where writes go), search (who is asked) and sync (who is compared with).
"""

from __future__ import annotations

from calinode.node.index.placement import PlacementCache, PlacementMap
from calinode.node.rag.plan import ShardPlan, shard_plans
from calinode.node.rag.ports import RagNode
from calinode.protocol.capabilities import Capabilities
from calinode.protocol.collections import CollectionDef


class SwarmView:
    def __init__(self, node: RagNode) -> None:
        self.node = node
        #: collection -> its placement over the live index peers it was last built for
        self._placements = PlacementCache()

    def alive_caps(self) -> list[tuple[str, Capabilities]]:
        return [(e.peer_id, e.caps) for e in self.node.table.alive()]

    def index_peers(self) -> list[str]:
        peers = [pid for pid, caps in self.alive_caps() if caps.index]
        if self.node.config.index:
            peers.append(self.node.peer_id)
        return sorted(peers)

    def placement(self, definition: CollectionDef) -> PlacementMap:
        """The collection's placement over the live index peers: built once per (shards,
        replicas, peer set), not on every search, write batch and sync round."""
        return self._placements.get(definition.name, definition.shards, self.index_peers(),
                                    definition.replicas)

    def holders(self, definition: CollectionDef) -> dict[int, dict[str, str]]:
        """shard -> {peer: digest} for live holders (this node included)."""
        found: dict[int, dict[str, str]] = {}
        index = self.node.index
        sources = [(peer, caps.shards) for peer, caps in self.alive_caps()]
        if index is not None:
            sources.append((self.node.peer_id, index.held()))
        for peer, shards in sources:
            for shard, digest in (shards.get(definition.name) or {}).items():
                if shard < definition.shards:  # a peer's record may know an older layout
                    found.setdefault(shard, {})[peer] = digest
        return found

    def plan(self, definition: CollectionDef) -> list[ShardPlan]:
        return shard_plans(definition, self.placement(definition), self.holders(definition))
