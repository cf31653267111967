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
- :func:`shard_digest`: a hash of the sorted ``(doc_id, content_hash, version, deleted)`` rows
  of a shard; two replicas holding the same document states have the same digest.
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Iterable
from enum import Enum
from typing import Final, NamedTuple

__all__ = ["MAX_VERSION", "DocState", "Outcome", "chunk_faiss_id", "resolve", "shard_digest"]

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


def shard_digest(rows: Iterable[tuple[str, str, int, bool | int]]) -> str:
    """Hex digest of ``(doc_id, content_hash, version, deleted)`` rows sorted by ``doc_id``.

    The rows must come sorted by ``doc_id`` in code-point order, which is also the UTF-8 byte
    order of SQLite's default ``BINARY`` collation (``ORDER BY doc_id``). Every field is
    length-prefixed or fixed-width, so different row sets cannot hash the same input.
    """
    h = hashlib.blake2b(digest_size=32, person=b"calinode.shard")
    for doc_id, content_hash, version, deleted in rows:
        doc = doc_id.encode("utf-8")
        content = content_hash.encode("utf-8")
        h.update(_CHUNK.pack(len(doc)))
        h.update(doc)
        h.update(_CHUNK.pack(len(content)))
        h.update(content)
        h.update(_ROW_TAIL.pack(version, bool(deleted)))
    return h.hexdigest()
