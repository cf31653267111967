"""Collection definitions: what a collection pins, as a typed, bounded view of peer input.

A collection pins its embedding model (name, sha256, dim, pooling, normalization, prefixes) and
its layout (metric, shard count S, replication factor R, write quorum, index kind, chunking),
so vectors of another model are never mixed in and queries are embedded the same way.

Definitions travel inside capability records and ``shard.write`` requests, so every field is
checked strictly when a :class:`CollectionDef` is built: ints are ints (never bools or floats:
``shards = 2.5`` is refused), strings have length limits, enums are closed. A definition that
fails raises :class:`~calinode.protocol.errors.LocalProtocolError` (``BAD_REQUEST``) when
built locally and, through :meth:`CollectionDef.from_wire`, a
:class:`~calinode.protocol.errors.RemoteProtocolError` when it came from a peer.

A definition's ``replicas`` (and ``write_quorum``) may change in a later version signed by the
owner or an admin (``calinode collections update``); its model, dimension and shard count
never do. ``created`` names the incarnation: the version a name was (re)created with.

Definitions converge by ``version``: the higher one wins; ties go to the lexically larger
canonical JSON, so every node picks the same. Dropping a collection is a definition with
``dropped=True`` and a higher version.

Who may change a collection: a definition records its ``owner`` (the peer that created it),
the ``admins`` the owner named, and is signed by its ``signer`` (the owner or an admin) over
:meth:`CollectionDef.signing_payload`; ``signer_key`` is the signer's serialized public key.
Checking the signature needs libp2p's crypto, so it happens in ``node/`` (this package stays
free of it); the rule every node applies (``node/index/collections.py``) is: a new definition
needs a valid signature by its owner or one of its admins, and a change of a known collection
needs the *known* owner or one of the *known* admins. ``writers`` and ``readers`` list the
peers that may write and read the collection's documents in an ``--open`` swarm (in a private
swarm every holder of the swarm key is a member).
"""

from __future__ import annotations

import dataclasses
import json
import re
from dataclasses import asdict, dataclass
from typing import Any, Final

from .validation import (
    BASE58,
    MAX_INT64,
    MODEL_NAME,
    SHA256,
    check_instance,
    check_int,
    check_str,
    from_peer,
    invalid,
)

__all__ = ["COLLECTION_NAME", "MAX_SHARDS", "CollectionDef"]

#: A collection's name: lowercase letters, digits, ``_`` and ``-``, at most 64 characters.
COLLECTION_NAME: Final = re.compile(r"[a-z0-9][a-z0-9_-]{0,63}")
MAX_SHARDS: Final = 4096
MAX_REPLICAS: Final = 16
MAX_DIM: Final = 16384
MAX_PREFIX: Final = 64
MAX_CHUNK_TOKENS: Final = 8192
MAX_ADMINS: Final = 16
MAX_MEMBERS: Final = 256
_HEX: Final = re.compile(r"[0-9a-f]*")


def _check_bool(name: str, value: object) -> None:
    check_instance(name, value, bool)


@dataclass(frozen=True, kw_only=True, slots=True)
class CollectionDef:
    """One collection's definition (see module docstring)."""

    name: str
    model: str
    model_sha256: str
    dim: int
    pooling: str
    normalize: bool
    query_prefix: str = ""
    passage_prefix: str = ""
    metric: str = "ip"
    shards: int = 16
    replicas: int = 2
    write_quorum: int = 0  # 0: a majority of the replicas
    index_kind: str = "flat"
    chunk_tokens: int = 200
    chunk_overlap: int = 32
    version: int = 1
    dropped: bool = False
    #: the version this incarnation of the name was created with (a name dropped and created
    #: again starts a new one); replicas remember it, so a copy of an earlier incarnation is
    #: deleted, never reused. 0: not recorded (definitions made before it existed), and then
    #: left out of the wire form, so their signatures still verify.
    created: int = 0
    #: the creating peer; "" only for definitions built locally in tests (peers refuse them)
    owner: str = ""
    admins: tuple[str, ...] = ()
    writers: tuple[str, ...] = ()
    readers: tuple[str, ...] = ()
    #: who signed this version, their public key (hex) and the signature (hex)
    signer: str = ""
    signer_key: str = ""
    signature: str = ""

    def __post_init__(self) -> None:
        check_str("collection name", self.name, max_len=64, pattern=COLLECTION_NAME)
        check_str("model", self.model, max_len=128, pattern=MODEL_NAME)
        check_str("model_sha256", self.model_sha256, min_len=64, max_len=64, pattern=SHA256)
        check_int("dim", self.dim, lo=1, hi=MAX_DIM)
        if self.pooling not in ("mean", "cls"):
            invalid(f"pooling must be mean or cls, not {self.pooling!r}")
        _check_bool("normalize", self.normalize)
        check_str("query_prefix", self.query_prefix, min_len=0, max_len=MAX_PREFIX)
        check_str("passage_prefix", self.passage_prefix, min_len=0, max_len=MAX_PREFIX)
        if self.metric != "ip":
            invalid("metric must be ip (inner product on normalized vectors)")
        check_int("shards", self.shards, lo=1, hi=MAX_SHARDS)
        check_int("replicas", self.replicas, lo=1, hi=MAX_REPLICAS)
        check_int("write_quorum", self.write_quorum, lo=0, hi=self.replicas)
        if self.index_kind not in ("flat", "hnsw"):
            invalid(f"index kind must be flat or hnsw, not {self.index_kind!r}")
        check_int("chunk_tokens", self.chunk_tokens, lo=8, hi=MAX_CHUNK_TOKENS)
        check_int("chunk_overlap", self.chunk_overlap, lo=0, hi=self.chunk_tokens // 2 - 1)
        check_int("version", self.version, lo=1, hi=MAX_INT64 - 1)
        _check_bool("dropped", self.dropped)
        check_int("created", self.created, lo=0, hi=self.version)
        for name, value in (("owner", self.owner), ("signer", self.signer)):
            check_str(name, value, min_len=0, max_len=128)
            if value and BASE58.fullmatch(value) is None:
                invalid(f"{name} must be a peer id")
        for name, peers, limit in (("admins", self.admins, MAX_ADMINS),
                                   ("writers", self.writers, MAX_MEMBERS),
                                   ("readers", self.readers, MAX_MEMBERS)):
            check_instance(name, peers, tuple)
            if len(peers) > limit:
                invalid(f"{name} may list at most {limit} peers")
            for peer in peers:
                check_str(f"{name} item", peer, max_len=128, pattern=BASE58)
        check_str("signer_key", self.signer_key, min_len=0, max_len=256, pattern=_HEX)
        check_str("signature", self.signature, min_len=0, max_len=512, pattern=_HEX)

    @property
    def quorum(self) -> int:
        return self.write_quorum or self.replicas // 2 + 1

    def to_wire(self) -> dict[str, Any]:
        wire = asdict(self)
        for name in ("admins", "writers", "readers"):
            wire[name] = list(wire[name])
        if not self.created:
            del wire["created"]
        return wire

    def signing_payload(self) -> bytes:
        """What the signer signs: the canonical JSON of every field but ``signature``."""
        wire = self.to_wire()
        del wire["signature"]
        return json.dumps(wire, sort_keys=True, separators=(",", ":")).encode()

    def may_change(self, peer: str) -> bool:
        """``peer`` may sign a new version of this collection (owner or admin)."""
        return bool(peer) and (peer == self.owner or peer in self.admins)

    def may_write(self, peer: str) -> bool:
        return self.may_change(peer) or peer in self.writers

    def may_read(self, peer: str) -> bool:
        return self.may_write(peer) or peer in self.readers

    @classmethod
    def from_wire(cls, data: object) -> CollectionDef:
        """The definition a peer sent; raises ``RemoteProtocolError`` (``BAD_REQUEST``)."""
        with from_peer():
            if not isinstance(data, dict):
                invalid(f"a collection definition must be a map, not {type(data).__name__}")
            names = {f.name for f in dataclasses.fields(cls)}
            unknown = sorted(repr(k)[:40] for k in data if k not in names)[:8]
            if unknown:
                invalid(f"collection definition has unknown fields {unknown}")
            missing = sorted(f.name for f in dataclasses.fields(cls)
                             if f.default is dataclasses.MISSING and f.name not in data)
            if missing:
                invalid(f"collection definition lacks {missing}")
            fields = dict(data)
            for name in ("admins", "writers", "readers"):
                if name in fields:
                    check_instance(name, fields[name], list)
                    fields[name] = tuple(fields[name])
            return cls(**fields)

    def canonical(self) -> str:
        return json.dumps(self.to_wire(), sort_keys=True, separators=(",", ":"))

    def newer_than(self, other: CollectionDef) -> bool:
        return (self.version, self.canonical()) > (other.version, other.canonical())

    def dropped_copy(self) -> CollectionDef:
        return dataclasses.replace(self, dropped=True, version=self.version + 1)
