"""What a node says it can do: the typed, bounded view of a record's ``capabilities`` map.

A :class:`~calinode.protocol.records.CapabilityRecord` carries ``capabilities`` as a free-form
map, because the signature covers whatever the peer sent. Before any code reads it, it is
parsed into a :class:`Capabilities` with :meth:`Capabilities.from_wire`; a map that does not
fit is refused with :class:`~calinode.protocol.errors.RemoteProtocolError` and the whole record
with it. The wire form (what :meth:`Capabilities.to_wire` writes)::

    {"jobs": ["embed", "ping", ...],                    # at most MAX_JOB_KINDS job kinds
     "embed": [ModelOffer...], "generate": [ModelOffer...],   # at most MAX_MODELS each
                                                        # (each may carry its measured rate)
     "index": true,                                     # hosts shard replicas
     "collections": [CollectionDef...],                 # at most MAX_COLLECTIONS
     "shards": {"papers": {"0": "<digest>", ...}},      # at most MAX_HELD_SHARDS in all
     "links": ["12D3KooW...", ...]}                     # at most MAX_LINKS peer ids

Unknown top-level keys are ignored (a newer node may say more); every known key has a type and
a bound, so whatever the record held, a node reading the view holds at most a few hundred KB
for it (records are size-capped too: ``MAX_RECORD_BYTES`` in records.py).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from .collections import COLLECTION_NAME, MAX_SHARDS, CollectionDef
from .errors import RemoteProtocolError
from .validation import (
    BASE58,
    DIGEST,
    JOB_KIND,
    MODEL_NAME,
    SHA256,
    check_instance,
    check_int,
    check_str,
    from_peer,
    invalid,
)

__all__ = [
    "MAX_COLLECTIONS",
    "MAX_HELD_SHARDS",
    "MAX_JOB_KINDS",
    "MAX_LINKS",
    "MAX_MODELS",
    "MAX_RATE",
    "Capabilities",
    "ModelOffer",
]

MAX_JOB_KINDS: Final = 64
MAX_MODELS: Final = 16
MAX_COLLECTIONS: Final = 64
MAX_HELD_SHARDS: Final = 1024
#: Peers a record names as open connections (the dashboard's topology; a node with more
#: connections names the first MAX_LINKS in order).
MAX_LINKS: Final = 64
#: Largest advertised model rate (texts or tokens per second): far above any one machine.
MAX_RATE: Final = 1e6
_SHARD_KEY: Final = re.compile(r"0|[1-9][0-9]{0,3}")


@dataclass(frozen=True, kw_only=True, slots=True)
class ModelOffer:
    """One model a peer serves (``embed`` or ``generate``), as its record advertises it."""

    name: str
    kind: str
    sha256: str
    dim: int | None = None
    pooling: str | None = None
    normalize: bool = True
    query_prefix: str = ""
    passage_prefix: str = ""
    max_tokens: int = 256
    context_length: int | None = None
    chat: bool = True
    #: measured speed on the serving node: texts/s (embed) or tokens/s (generate); None:
    #: not measured yet. Sizes the first batches a coordinator sends (``work_queue.py``).
    rate: float | None = None

    def __post_init__(self) -> None:
        check_str("model name", self.name, max_len=128, pattern=MODEL_NAME)
        if self.kind not in ("embed", "generate"):
            invalid(f"model kind must be embed or generate, not {self.kind!r}")
        check_str("model sha256", self.sha256, min_len=64, max_len=64, pattern=SHA256)
        if self.kind == "embed":
            check_int("model dim", self.dim, lo=1, hi=16384)
            if self.pooling not in ("mean", "cls"):
                invalid(f"model pooling must be mean or cls, not {self.pooling!r}")
        elif self.dim is not None or self.pooling is not None:
            invalid("a generation model has no dim or pooling")
        check_instance("model normalize", self.normalize, bool)
        check_str("query_prefix", self.query_prefix, min_len=0, max_len=64)
        check_str("passage_prefix", self.passage_prefix, min_len=0, max_len=64)
        check_int("model max_tokens", self.max_tokens, lo=1, hi=1 << 20)
        if self.kind == "generate":
            check_int("model context_length", self.context_length, lo=1, hi=1 << 24)
        elif self.context_length is not None:
            invalid("an embedding model has no context_length")
        check_instance("model chat", self.chat, bool)
        if self.rate is not None:
            if isinstance(self.rate, bool) or not isinstance(self.rate, int | float):
                invalid(f"model rate must be a number, not {type(self.rate).__name__}")
            if not 0 < self.rate <= MAX_RATE:  # also refuses NaN
                invalid(f"model rate must be over 0 and at most {MAX_RATE:g}")

    def to_wire(self) -> dict[str, Any]:
        """The advertised map (the same keys a model manifest advertises)."""
        out: dict[str, Any] = {"name": self.name, "kind": self.kind, "sha256": self.sha256}
        if self.kind == "embed":
            out.update(dim=self.dim, pooling=self.pooling, normalize=self.normalize,
                       query_prefix=self.query_prefix, passage_prefix=self.passage_prefix,
                       max_tokens=self.max_tokens)
        else:
            out.update(context_length=self.context_length, chat=self.chat)
        if self.rate is not None:
            out["rate"] = self.rate
        return out

    @classmethod
    def from_wire(cls, data: object, kind: str) -> ModelOffer:
        if not isinstance(data, dict):
            invalid(f"a {kind} model entry must be a map, not {type(data).__name__}")
        allowed = {"name", "kind", "sha256", "dim", "pooling", "normalize", "query_prefix",
                   "passage_prefix", "max_tokens", "context_length", "chat", "rate"}
        unknown = [repr(k)[:40] for k in data if k not in allowed]
        if unknown:
            invalid(f"{kind} model entry has unknown fields {sorted(unknown)[:8]}")
        missing = sorted({"name", "sha256"} - data.keys())
        if missing:
            invalid(f"{kind} model entry lacks {missing}")
        if data.get("kind", kind) != kind:
            invalid(f"a model listed under {kind} says kind {data.get('kind')!r}")
        return cls(**{**data, "kind": kind})


def _tuple(name: str, value: object, limit: int) -> list[Any]:
    if not isinstance(value, list | tuple):
        invalid(f"{name} must be a list, not {type(value).__name__}")
    if len(value) > limit:
        invalid(f"{name} may list at most {limit} items, has {len(value)}")
    return list(value)


def _held_shards(value: object) -> dict[str, dict[int, str]]:
    if not isinstance(value, dict):
        invalid(f"shards must be a map, not {type(value).__name__}")
    if len(value) > MAX_COLLECTIONS:
        invalid(f"shards may name at most {MAX_COLLECTIONS} collections")
    held: dict[str, dict[int, str]] = {}
    total = 0
    for collection, shards in value.items():
        check_str("shards collection", collection, max_len=64, pattern=COLLECTION_NAME)
        if not isinstance(shards, dict):
            invalid(f"shards of {collection} must be a map")
        total += len(shards)
        if total > MAX_HELD_SHARDS:
            invalid(f"shards may list at most {MAX_HELD_SHARDS} replicas in all")
        per: dict[int, str] = {}
        for shard, digest in shards.items():
            check_str("shard number", shard, max_len=4, pattern=_SHARD_KEY)
            number = int(shard)
            if number >= MAX_SHARDS:
                invalid(f"shard number {number} is over {MAX_SHARDS - 1}")
            check_str("shard digest", digest, max_len=128, pattern=DIGEST)
            per[number] = digest
        held[collection] = per
    return held


@dataclass(frozen=True, kw_only=True, slots=True)
class Capabilities:
    """The typed view of a record's ``capabilities`` (see module docstring)."""

    jobs: tuple[str, ...] = ()
    embed: tuple[ModelOffer, ...] = ()
    generate: tuple[ModelOffer, ...] = ()
    index: bool = False
    collections: tuple[CollectionDef, ...] = ()
    #: collection -> shard -> digest of the replicas the peer holds and has ready
    shards: Mapping[str, Mapping[int, str]] = field(default_factory=dict)
    #: peer ids of the swarm the peer holds an open connection to (who is connected to whom)
    links: tuple[str, ...] = ()

    def models(self, kind: str) -> tuple[ModelOffer, ...]:
        """The offers of ``kind`` (``"embed"`` or ``"generate"``)."""
        return self.embed if kind == "embed" else self.generate if kind == "generate" else ()

    def offer(self, kind: str, name: str) -> ModelOffer | None:
        return next((m for m in self.models(kind) if m.name == name), None)

    def to_wire(self) -> dict[str, Any]:
        return {
            "jobs": list(self.jobs),
            "embed": [m.to_wire() for m in self.embed],
            "generate": [m.to_wire() for m in self.generate],
            "index": self.index,
            "collections": [d.to_wire() for d in self.collections],
            "shards": {c: {str(s): d for s, d in sorted(per.items())}
                       for c, per in sorted(self.shards.items())},
            "links": list(self.links),
        }

    @classmethod
    def from_wire(cls, data: object) -> Capabilities:
        """Parse a record's ``capabilities``; raises ``RemoteProtocolError`` (BAD_REQUEST)."""
        try:
            with from_peer():
                return cls._parse(data)
        except RemoteProtocolError as exc:
            raise RemoteProtocolError(f"capabilities: {exc.message}", code=exc.code) from None

    @classmethod
    def _parse(cls, data: object) -> Capabilities:
        if not isinstance(data, dict):
            invalid(f"capabilities must be a map, not {type(data).__name__}")
        jobs = _tuple("jobs", data.get("jobs", []), MAX_JOB_KINDS)
        for kind in jobs:
            check_str("job kind", kind, max_len=64, pattern=JOB_KIND)
        embed = tuple(ModelOffer.from_wire(m, "embed")
                      for m in _tuple("embed", data.get("embed", []), MAX_MODELS))
        generate = tuple(ModelOffer.from_wire(m, "generate")
                         for m in _tuple("generate", data.get("generate", []), MAX_MODELS))
        index = data.get("index", False)
        check_instance("index", index, bool)
        collections = tuple(CollectionDef.from_wire(d) for d in
                            _tuple("collections", data.get("collections", []), MAX_COLLECTIONS))
        if len({d.name for d in collections}) != len(collections):
            invalid("collections lists one name twice")
        links = _tuple("links", data.get("links", []), MAX_LINKS)
        for peer in links:
            check_str("linked peer id", peer, max_len=128, pattern=BASE58)
        return cls(jobs=tuple(jobs), embed=embed, generate=generate, index=index,
                   collections=collections, shards=_held_shards(data.get("shards", {})),
                   links=tuple(links))
