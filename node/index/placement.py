"""Where a collection's documents live: document -> shard -> replica peers. Pure functions.

The rules (they decide where data sits on disk across the swarm, so they are a contract: a
change of hash, digest size or byte order relocates every document of every collection):

- **Document -> shard.** :func:`shard_of` is ``int.from_bytes(blake2b(doc_id.encode("utf-8"),
  digest_size=8).digest(), "big") % shards``. Never Python's ``hash()``, which is salted per
  process. 64 bits modulo a shard count of at most a few thousand is uniform for all purposes.
- **Shard -> replicas.** :func:`replicas_for` is rendezvous (highest random weight) hashing:
  every peer gets the weight ``int.from_bytes(blake2b(f"{collection}/{shard}/{peer}"
  .encode("utf-8"), digest_size=16).digest(), "big")`` and the ``r`` heaviest peers own the
  shard, heaviest first (the preferred replica). Equal weights (never seen in practice) fall
  back to the peer id, ascending. Duplicate peer ids count once.
- **Minimal movement.** Because a peer's weight for a shard does not depend on the other
  peers, adding a peer changes only the shards where it enters the top ``r`` (each of them
  drops exactly its former ``r``-th owner, or nobody when there were fewer than ``r`` peers),
  and removing a peer changes only the shards it owned (each gains at most one new owner).
  :func:`moves` lists exactly those shards.
- **Write quorum.** :func:`write_quorum` is a majority of ``r`` (``r // 2 + 1``) unless a
  collection configures another value in ``1..r``.
- **Dropping a replica.** :func:`may_drop_replica`: a peer deletes a replica it no longer
  owns only while all ``r`` owners hold the same documents (equal digests).

:class:`PlacementMap` is the whole map of one collection for one set of index peers; the
daemon rebuilds it when membership changes and asks :func:`moves` what to pull or drop.
:class:`PlacementCache` keeps the map of each collection for the current peer set, so that
searches, write batches and sync rounds do not hash ``shards x peers`` weights each time.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from hashlib import blake2b

__all__ = [
    "Move",
    "PlacementCache",
    "PlacementMap",
    "moves",
    "replica_weight",
    "replicas_for",
    "shard_of",
    "write_quorum",
]

_SHARD_DIGEST_SIZE = 8
_WEIGHT_DIGEST_SIZE = 16


def shard_of(doc_id: str, shards: int) -> int:
    """The shard (``0..shards-1``) of document ``doc_id``; identical on every machine.

    Raises ValueError for ``shards < 1``, and UnicodeEncodeError (a ValueError) for an id
    that is not valid Unicode (a lone surrogate, which JSON can smuggle in).
    """
    if shards < 1:
        raise ValueError(f"shards must be >= 1, got {shards}")
    digest = blake2b(doc_id.encode("utf-8"), digest_size=_SHARD_DIGEST_SIZE).digest()
    return int.from_bytes(digest, "big") % shards


def replica_weight(collection: str, shard: int, peer: str) -> int:
    """The rendezvous weight of ``peer`` for ``shard`` of ``collection`` (higher wins)."""
    key = f"{collection}/{shard}/{peer}".encode()
    return int.from_bytes(blake2b(key, digest_size=_WEIGHT_DIGEST_SIZE).digest(), "big")


def replicas_for(collection: str, shard: int, peers: Sequence[str], r: int) -> list[str]:
    """The ``min(r, len(set(peers)))`` owners of ``shard``, the preferred replica first."""
    if r < 1:
        raise ValueError(f"replication factor must be >= 1, got {r}")
    if shard < 0:
        raise ValueError(f"shard must be >= 0, got {shard}")
    ranked = sorted(set(peers), key=lambda peer: (-replica_weight(collection, shard, peer), peer))
    return ranked[:r]


def write_quorum(r: int, configured: int | None = None) -> int:
    """Replicas that must hold a write durably before it is acknowledged.

    A majority of ``r`` by default, so that any two quorums intersect; ``configured`` may set
    anything in ``1..r`` (1 trades safety for speed, ``r`` for availability of writes).
    """
    if r < 1:
        raise ValueError(f"replication factor must be >= 1, got {r}")
    if configured is None:
        return r // 2 + 1
    if not 1 <= configured <= r:
        raise ValueError(f"write quorum must be in 1..{r}, got {configured}")
    return configured


@dataclass(frozen=True)
class Move:
    """A shard whose owner set changed: ``gained`` must pull it, ``lost`` may drop it.

    ``gained`` is in the new map's preference order, ``lost`` in the old map's.
    """

    shard: int
    gained: tuple[str, ...]
    lost: tuple[str, ...]


@dataclass(frozen=True)
class PlacementMap:
    """Owners of every shard of one collection over one set of index peers.

    ``peers`` is sorted and without duplicates; ``assignment[shard]`` is that shard's owners,
    preferred first. Build it with :meth:`build`; two maps built from the same collection,
    shard count, replication factor and peer set (in any order) are equal.
    """

    collection: str
    shards: int
    r: int
    peers: tuple[str, ...]
    assignment: tuple[tuple[str, ...], ...]

    def __post_init__(self) -> None:
        if self.shards < 1:
            raise ValueError(f"shards must be >= 1, got {self.shards}")
        if self.r < 1:
            raise ValueError(f"replication factor must be >= 1, got {self.r}")
        if len(self.assignment) != self.shards:
            raise ValueError(
                f"assignment covers {len(self.assignment)} shards, expected {self.shards}"
            )

    @classmethod
    def build(cls, collection: str, shards: int, peers: Iterable[str], r: int) -> PlacementMap:
        """The map of ``collection`` (``shards`` shards, ``r`` replicas) over ``peers``."""
        if shards < 1:
            raise ValueError(f"shards must be >= 1, got {shards}")
        members = tuple(sorted(set(peers)))
        assignment = tuple(
            tuple(replicas_for(collection, shard, members, r)) for shard in range(shards)
        )
        return cls(collection, shards, r, members, assignment)

    def owners(self, shard: int) -> tuple[str, ...]:
        """The owners of ``shard``, the preferred replica first (empty without peers)."""
        if not 0 <= shard < self.shards:
            raise ValueError(f"shard {shard} out of range 0..{self.shards - 1}")
        return self.assignment[shard]

    def shards_of(self, peer: str) -> tuple[int, ...]:
        """The shards ``peer`` owns, ascending (empty for a peer outside the map)."""
        return tuple(shard for shard, owners in enumerate(self.assignment) if peer in owners)

    def is_under_replicated(self) -> bool:
        """True when there are fewer peers than ``r``, so no shard can have ``r`` replicas."""
        return len(self.peers) < self.r

    def as_rows(self) -> list[dict[str, object]]:
        """One JSON-ready row per shard: ``{"shard", "owners"}`` (for ``calinode shards``)."""
        return [
            {"shard": shard, "owners": list(owners)} for shard, owners in enumerate(self.assignment)
        ]


class PlacementCache:
    """The :class:`PlacementMap` of each collection for the peer set it was last asked with.

    A map is a pure function of ``(collection, shards, r, peer set)``: :meth:`get` builds it
    once per such key and hands the same map back until the peer set, the shard count or the
    replication factor changes (then it builds the new one). At most ``max_entries``
    collections are kept, the least recently used going first, so the cache is bounded
    however many collection names the swarm has seen.
    """

    def __init__(self, max_entries: int = 256) -> None:
        if max_entries < 1:
            raise ValueError(f"max_entries must be >= 1, got {max_entries}")
        self.max_entries = max_entries
        self.builds = 0  # maps built (for tests and status: a hit builds nothing)
        self._maps: OrderedDict[str, PlacementMap] = OrderedDict()

    def get(self, collection: str, shards: int, peers: Iterable[str], r: int) -> PlacementMap:
        members = tuple(sorted(set(peers)))
        cached = self._maps.get(collection)
        if (cached is not None and cached.peers == members and cached.shards == shards
                and cached.r == r):
            self._maps.move_to_end(collection)
            return cached
        placement = PlacementMap.build(collection, shards, members, r)
        self.builds += 1
        self._maps[collection] = placement
        self._maps.move_to_end(collection)
        while len(self._maps) > self.max_entries:
            self._maps.popitem(last=False)
        return placement

    def __len__(self) -> int:
        return len(self._maps)


def moves(old: PlacementMap, new: PlacementMap) -> list[Move]:
    """The shards whose owner *set* differs between ``old`` and ``new``, ascending.

    A change of preference order alone is not a move (no data has to travel). Both maps must
    describe the same collection with the same shard count: re-sharding is not a move.
    """
    if old.collection != new.collection:
        raise ValueError(f"maps of different collections: {old.collection!r}, {new.collection!r}")
    if old.shards != new.shards:
        raise ValueError(f"shard count changed from {old.shards} to {new.shards}")
    result: list[Move] = []
    for shard, (before, after) in enumerate(zip(old.assignment, new.assignment, strict=True)):
        if set(before) == set(after):
            continue
        gained = tuple(peer for peer in after if peer not in before)
        lost = tuple(peer for peer in before if peer not in after)
        result.append(Move(shard, gained, lost))
    return result


def may_drop_replica(me: str, owners: Sequence[str], holders: dict[str, str],
                     mine: str | None, r: int) -> bool:
    """Whether ``me`` may delete its replica of a shard whose ``owners`` it is not among.

    Only when the shard has its full ``r`` owners and every one of them holds a ready copy
    whose digest (``holders``: peer -> digest) equals ``mine``: the documents are then on
    ``r`` other peers, including any this replica took while it was an owner."""
    return (me not in owners and mine is not None and len(owners) >= r
            and all(holders.get(peer) == mine for peer in owners))
