"""PlacementCache: one build per (collection, shards, r, peer set); a change of any rebuilds."""

from __future__ import annotations

import pytest

from calinode.node.index.placement import PlacementCache, PlacementMap

PEERS = ["peer-c", "peer-a", "peer-b"]


def test_same_key_is_served_from_the_cache() -> None:
    cache = PlacementCache()
    first = cache.get("papers", 16, PEERS, 2)
    again = cache.get("papers", 16, [*reversed(PEERS), "peer-a"], 2)  # same set
    assert again is first and cache.builds == 1
    assert first == PlacementMap.build("papers", 16, PEERS, 2)


@pytest.mark.parametrize(("shards", "peers", "r"), [
    (16, [*PEERS, "peer-d"], 2),  # a peer joined
    (16, PEERS[:2], 2),  # a peer left
    (16, ["peer-a", "peer-b", "peer-x"], 2),  # one left, another joined: same count
    (8, PEERS, 2),  # the definition changed its shard count
    (16, PEERS, 3),  # ... or its replication factor
])
def test_a_change_of_peers_or_definition_rebuilds(shards: int, peers: list[str],
                                                   r: int) -> None:
    cache = PlacementCache()
    before = cache.get("papers", 16, PEERS, 2)
    after = cache.get("papers", shards, peers, r)
    assert cache.builds == 2 and after != before
    assert after == PlacementMap.build("papers", shards, peers, r)
    assert cache.get("papers", shards, peers, r) is after and cache.builds == 2


def test_collections_are_cached_apart_and_bounded() -> None:
    cache = PlacementCache(max_entries=2)
    a = cache.get("a", 4, PEERS, 2)
    b = cache.get("b", 4, PEERS, 2)
    assert a.collection == "a" and b.collection == "b"
    assert cache.get("a", 4, PEERS, 2) is a and cache.builds == 2
    cache.get("c", 4, PEERS, 2)  # evicts b, the least recently used
    assert len(cache) == 2
    assert cache.get("a", 4, PEERS, 2) is a
    assert cache.get("b", 4, PEERS, 2) is not b and cache.builds == 4
    with pytest.raises(ValueError, match="max_entries"):
        PlacementCache(max_entries=0)
