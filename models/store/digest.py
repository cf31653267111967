"""What replicas of a shard compare, and the rule by which they converge. Pure functions.

- :func:`chunk_faiss_id`: the FAISS id of chunk ``chunk`` of document ``doc_id``: the first
  8 bytes of ``blake2b(chunk as 4-byte big-endian || doc_id as UTF-8, person="calinode.chunk")``
  as a big-endian integer, masked to 63 bits (FAISS ids are int64 and ``-1`` means "no hit").
  The fixed-width prefix makes the input injective; the id is the same on every replica, across
  restarts and across shards, so hits of several shards merge with one tie-break key.
- :class:`DocState` and :func:`resolve`: every document is a last-writer-wins register whose
  state is ordered by the key ``(version, deleted, content_hash)`` (a tombstone's hash is
  ``""``). A write wins when its key is greater than the stored one, so at equal versions a
  delete beats a live document and, between two live contents, the greater hash wins. The only
  special case keeps a re-ingest idempotent: the same content with another version never
  rewrites chunks (a newer version only advances the stored version: :attr:`Outcome.BUMP`).
  The stored state is therefore always the maximum of every state a replica has seen, whatever
  their order: replicas that have seen the same writes hold the same states.
- :func:`shard_digest`: a hash of the set of ``(doc_id, content_hash, version, deleted)`` rows
  of a shard; two replicas holding the same document states have the same digest. It is a
  sum: every row hashes to a 256-bit number (:func:`row_hash`), the rows' numbers are added
  modulo 2**256 (:class:`DigestSum`), and the digest is a hash of that sum. Because a sum
  does not depend on order and a row can be subtracted again, a store keeps its digest
  current on every write in time proportional to the write (the rows it changed), never to
  the shard: it never re-reads the whole docs table under its lock.
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Iterable
from enum import Enum
from typing import Final, NamedTuple

__all__ = ["MAX_VERSION", "DigestSum", "DocState", "Outcome", "chunk_faiss_id", "resolve",
           "row_hash", "shard_digest"]

#: Versions are SQLite INTEGERs: 0 <= version <= MAX_VERSION.
MAX_VERSION: Final = 2**63 - 1

_ID_MASK: Final = 2**63 - 1
_CHUNK: Final = struct.Struct(">I")
_ROW_TAIL: Final = struct.Struct(">qB")


def chunk_faiss_id(doc_id: str, chunk: int) -> int:
    """The stable 63-bit FAISS id of ``(doc_id, chunk)`` (see the module docstring)."""
    h = hashlib.blake2b(_CHUNK.pack(chunk), digest_size=8, person=b"calinode.chunk")
    h.update(doc_id.encode("utf-8"))
    return int.from_bytes(h.digest(), "big") & _ID_MASK


class DocState(NamedTuple):
    """The state of one document as the docs table stores it (tombstone: ``deleted``, hash "")."""

    version: int
    deleted: bool
    content_hash: str


class Outcome(Enum):
    """What writing a :class:`DocState` over the stored one does."""

    INSERT = "insert"  # no live document before (absent or tombstoned): write its chunks
    REPLACE = "replace"  # a live document with other content: replace every chunk
    DELETE = "delete"  # a live document becomes a tombstone: remove its chunks
    TOMBSTONE = "tombstone"  # no live document before: write or advance the tombstone only
    BUMP = "bump"  # same live content, newer version: only the version changes
    UNCHANGED = "unchanged"  # nothing to write
    STALE = "stale"  # older than the stored state: ignored


def resolve(incoming: DocState, stored: DocState | None) -> Outcome:
    """The outcome of writing ``incoming`` where ``stored`` is (``None``: never seen)."""
    if stored is None:
        return Outcome.TOMBSTONE if incoming.deleted else Outcome.INSERT
    if (
        not incoming.deleted
        and not stored.deleted
        and incoming.content_hash == stored.content_hash
    ):
        return Outcome.BUMP if incoming.version > stored.version else Outcome.UNCHANGED
    if incoming == stored:
        return Outcome.UNCHANGED
    if incoming < stored:
        return Outcome.STALE
    if incoming.deleted:
        return Outcome.TOMBSTONE if stored.deleted else Outcome.DELETE
    return Outcome.INSERT if stored.deleted else Outcome.REPLACE


_SUM_MODULUS: Final = 2**256


def row_hash(doc_id: str, content_hash: str, version: int, deleted: bool | int) -> int:
    """The 256-bit number of one docs row. Every field is length-prefixed or fixed-width, so
    different rows cannot hash the same input."""
    doc = doc_id.encode("utf-8")
    content = content_hash.encode("utf-8")
    h = hashlib.blake2b(digest_size=32, person=b"calinode.row")
    h.update(_CHUNK.pack(len(doc)))
    h.update(doc)
    h.update(_CHUNK.pack(len(content)))
    h.update(content)
    h.update(_ROW_TAIL.pack(version, bool(deleted)))
    return int.from_bytes(h.digest(), "big")


class DigestSum:
    """The running sum of a shard's row hashes: :meth:`add` a row when it is written,
    :meth:`remove` the row it replaced; :meth:`hexdigest` is then :func:`shard_digest` of the
    rows the shard holds."""

    __slots__ = ("total",)

    def __init__(self, rows: Iterable[tuple[str, str, int, bool | int]] = ()) -> None:
        self.total = 0
        for row in rows:
            self.add(*row)

    def add(self, doc_id: str, content_hash: str, version: int, deleted: bool | int) -> None:
        self.total = (self.total + row_hash(doc_id, content_hash, version, deleted)) \
            % _SUM_MODULUS

    def remove(self, doc_id: str, content_hash: str, version: int, deleted: bool | int) -> None:
        self.total = (self.total - row_hash(doc_id, content_hash, version, deleted)) \
            % _SUM_MODULUS

    def hexdigest(self) -> str:
        h = hashlib.blake2b(self.total.to_bytes(32, "big"), digest_size=32,
                            person=b"calinode.shard")
        return h.hexdigest()


def shard_digest(rows: Iterable[tuple[str, str, int, bool | int]]) -> str:
    """Hex digest of the set of ``(doc_id, content_hash, version, deleted)`` rows (in any
    order; a shard holds each ``doc_id`` once): the hash of the sum of their
    :func:`row_hash` numbers modulo 2**256. The empty shard has a digest too."""
    return DigestSum(rows).hexdigest()
