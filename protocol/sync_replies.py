"""Typed, frozen, bounded views of the ``shard.changes`` replies a syncing replica reads: the
documents themselves (:class:`ShardChangesReply`, as ``WireDoc``) or, with ``keys_only``,
their states (:class:`ShardKeysReply` of :class:`DocKey`), compared with the puller's own
before anything is fetched (node/rag/sync.py). Same rules as
:mod:`calinode.protocol.shard_replies`."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .job_params import (
    MAX_CHANGES_LIMIT,
    MAX_CONTENT_HASH,
    MAX_DOC_ID_CHARS,
    MAX_KEYS_LIMIT,
    check_keys,
    check_list,
)
from .validation import (
    DIGEST,
    MAX_INT64,
    check_instance,
    check_int,
    check_str,
    from_peer,
    invalid,
)
from .wire_docs import WireDoc

__all__ = ["DocKey", "ShardChangesReply", "ShardKeysReply"]


@dataclass(frozen=True, kw_only=True, slots=True)
class ShardChangesReply:
    """``shard.changes``: a page of documents in (version, doc_id) order, and the digest of
    the serving replica."""

    docs: tuple[WireDoc, ...]
    digest: str

    def __post_init__(self) -> None:
        check_str("digest", self.digest, max_len=128, pattern=DIGEST)
        keys = [(d.version, d.doc_id) for d in self.docs]
        if keys != sorted(keys):
            invalid("documents must come in (version, doc_id) order")

    @classmethod
    def from_wire(cls, data: object, *, limit: int = MAX_CHANGES_LIMIT) -> ShardChangesReply:
        with from_peer():
            keys = frozenset({"docs", "digest"})
            wire = check_keys("shard.changes reply", data, keys, keys)
            docs = tuple(WireDoc.from_wire(d)
                         for d in check_list("docs", wire["docs"], max_len=limit))
            return cls(docs=docs, digest=wire["digest"])

    def to_wire(self) -> dict[str, Any]:
        return {"docs": [d.to_wire() for d in self.docs], "digest": self.digest}


@dataclass(frozen=True, slots=True)
class DocKey:
    """One document's state in a keys-only ``shard.changes`` page (a tombstone: ``deleted``
    and an empty ``content_hash``; a live document: a non-empty one)."""

    doc_id: str
    content_hash: str
    version: int
    deleted: bool

    def __post_init__(self) -> None:
        check_str("doc_id", self.doc_id, max_len=MAX_DOC_ID_CHARS)
        check_instance("deleted", self.deleted, bool)
        check_str("content_hash", self.content_hash, min_len=0 if self.deleted else 1,
                  max_len=0 if self.deleted else MAX_CONTENT_HASH)
        check_int("version", self.version, lo=0, hi=MAX_INT64)

    @classmethod
    def from_wire(cls, data: object) -> DocKey:
        item = check_list("key", data, min_len=4, max_len=4)
        return cls(item[0], item[1], item[2], item[3])

    def to_wire(self) -> list[Any]:
        return [self.doc_id, self.content_hash, self.version, self.deleted]


@dataclass(frozen=True, kw_only=True, slots=True)
class ShardKeysReply:
    """``shard.changes`` with ``keys_only``: up to the asked ``limit`` document states after
    the asked ``after_doc_id``, in strictly increasing doc_id order (so a page never repeats
    or goes back, and paging ends), and the digest of the serving replica."""

    keys: tuple[DocKey, ...]
    digest: str

    def __post_init__(self) -> None:
        check_str("digest", self.digest, max_len=128, pattern=DIGEST)

    @classmethod
    def from_wire(cls, data: object, *, after: str = "", limit: int = MAX_KEYS_LIMIT
                  ) -> ShardKeysReply:
        with from_peer():
            keys = frozenset({"keys", "digest"})
            wire = check_keys("shard.changes keys reply", data, keys, keys)
            items = tuple(DocKey.from_wire(k) for k in check_list(
                "keys", wire["keys"], max_len=min(limit, MAX_KEYS_LIMIT)))
            last = after
            for key in items:
                if key.doc_id <= last:
                    invalid(f"keys must come after {after!r} in increasing doc_id order")
                last = key.doc_id
            return cls(keys=items, digest=wire["digest"])

    def to_wire(self) -> dict[str, Any]:
        return {"keys": [k.to_wire() for k in self.keys], "digest": self.digest}
