"""Collection definitions: what a collection pins, and how definitions converge.

A collection pins its embedding model (name, sha256, dim, pooling, normalization, prefixes)
and its layout (metric, shard count S, replication factor R, write quorum, index kind), so
vectors of another model are never mixed in and queries are embedded the same way.

Definitions spread through the swarm inside capability records: every node advertises the
definitions it knows, and a node keeps, per name, the one with the highest ``version`` (ties:
the lexically larger canonical JSON, so every node picks the same). Dropping a collection is a
definition with ``dropped=True`` and a higher version. :class:`CollectionBook` persists them in
``$CALINODE_HOME/collections/<name>.json`` (small files: plain blocking writes, called from a
worker thread by the daemon).
"""

from __future__ import annotations

import json
import os
import re
import threading
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from calinode.protocol.errors import ErrorCode, JobError

NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")


def _bad(message: str) -> JobError:
    return JobError(message, code=ErrorCode.BAD_REQUEST)


@dataclass(frozen=True, kw_only=True)
class CollectionDef:
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

    def __post_init__(self) -> None:
        if not NAME.match(self.name):
            raise _bad(f"collection name {self.name!r}: lowercase letters, digits, _ and -")
        if not re.fullmatch(r"[0-9a-f]{64}", self.model_sha256):
            raise _bad("model_sha256 must be 64 hex digits")
        if self.dim <= 0 or self.pooling not in ("mean", "cls"):
            raise _bad("dim must be positive and pooling mean or cls")
        if self.metric != "ip":
            raise _bad("metric must be ip (inner product on normalized vectors)")
        if not 1 <= self.shards <= 4096 or not 1 <= self.replicas <= 16:
            raise _bad("shards must be 1..4096 and replicas 1..16")
        if not 0 <= self.write_quorum <= self.replicas:
            raise _bad("write quorum must be 0 (majority) .. replicas")
        if self.index_kind not in ("flat", "hnsw"):
            raise _bad("index kind must be flat or hnsw")
        if not self.chunk_tokens >= 8 or not 0 <= self.chunk_overlap < self.chunk_tokens // 2:
            raise _bad("chunk_tokens >= 8 and 0 <= chunk_overlap < chunk_tokens / 2")
        if self.version < 1:
            raise _bad("version must be positive")

    @property
    def quorum(self) -> int:
        return self.write_quorum or self.replicas // 2 + 1

    def to_wire(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_wire(cls, data: Any) -> CollectionDef:
        if not isinstance(data, dict):
            raise _bad("a collection definition must be a map")
        try:
            return cls(**data)
        except TypeError as exc:
            raise _bad(f"bad collection definition: {exc}") from None

    def canonical(self) -> str:
        return json.dumps(self.to_wire(), sort_keys=True, separators=(",", ":"))

    def newer_than(self, other: CollectionDef) -> bool:
        return (self.version, self.canonical()) > (other.version, other.canonical())

    def dropped_copy(self) -> CollectionDef:
        return replace(self, dropped=True, version=self.version + 1)


class CollectionBook:
    """The definitions this node knows, on disk and in memory."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self._defs: dict[str, CollectionDef] = {}
        self._lock = threading.Lock()  # merges come from worker threads
        if folder.is_dir():
            for path in sorted(folder.glob("*.json")):
                self._defs[path.stem] = CollectionDef.from_wire(json.loads(path.read_text()))

    def get(self, name: str, *, include_dropped: bool = False) -> CollectionDef:
        found = self._defs.get(name)
        if found is None or (found.dropped and not include_dropped):
            known = ", ".join(sorted(self.names())) or "none"
            raise JobError(f"no collection {name!r} (known: {known}); "
                           f"create it: calinode collections create {name}",
                           code=ErrorCode.UNKNOWN_COLLECTION)
        return found

    def names(self) -> list[str]:
        return sorted(n for n, d in self._defs.items() if not d.dropped)

    def all(self) -> list[CollectionDef]:
        return [self._defs[n] for n in sorted(self._defs)]

    def merge(self, definition: CollectionDef) -> bool:
        """Keep ``definition`` if it is newer than ours; True when something changed."""
        with self._lock:
            current = self._defs.get(definition.name)
            if current is not None and not definition.newer_than(current):
                return False
            self._write(definition)
            self._defs[definition.name] = definition
            return True

    def _write(self, definition: CollectionDef) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        path = self.folder / f"{definition.name}.json"
        tmp = path.with_suffix(".tmp")
        with tmp.open("w", encoding="utf-8") as fh:
            fh.write(definition.canonical() + "\n")
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
