"""How many documents one ``shard.write`` (or one ``shard.changes`` page) carries: by size.

Pure logic. A frame is at most ``DEFAULT_LIMITS.max_frame`` bytes (32 MiB) and one bin (a
document's vectors) at most ``max_bin`` (16 MiB). A document's wire size is estimated from
what dominates it (chunk texts in UTF-8, metadata as JSON, 4 bytes per vector component, a
small overhead per chunk and per document); the estimate is an upper bound of its msgpack form
for the shapes ingest makes, so a group within :data:`GROUP_BYTES` always encodes.

- Several documents go together up to :data:`GROUP_BYTES` (a quarter of a frame, so the
  replicas' admission budget of two frames per peer admits a few writes at once) and
  ``MAX_BATCH`` documents.
- One document larger than that travels alone, up to :data:`MAX_DOC_BYTES` (a frame less
  1 MiB for the request's envelope and the collection definition).
- A document over :data:`MAX_DOC_BYTES`, or whose vectors exceed one bin, cannot be written:
  :func:`too_large` says why, and ingest reports it as that document's failure.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Final

from calinode.models.store.records import DocRecord
from calinode.protocol.job_params import MAX_BATCH
from calinode.protocol.limits import DEFAULT_LIMITS

__all__ = ["GROUP_BYTES", "MAX_DOC_BYTES", "doc_wire_bytes", "too_large", "write_groups",
           "write_rounds"]

MAX_DOC_BYTES: Final = DEFAULT_LIMITS.max_frame - 1024 * 1024
GROUP_BYTES: Final = DEFAULT_LIMITS.max_frame // 4
MAX_VECTOR_BYTES: Final = DEFAULT_LIMITS.max_bin
_CHUNK_OVERHEAD: Final = 32
_DOC_OVERHEAD: Final = 256


def _vector_bytes(doc: DocRecord) -> int:
    size = 0
    for chunk in doc.chunks:
        size += 4 * len(chunk.vector)
    return size


def doc_wire_bytes(doc: DocRecord) -> int:
    """An upper estimate of ``doc``'s size on the wire (``docs_to_wire`` then msgpack)."""
    size = _DOC_OVERHEAD + len(doc.doc_id.encode("utf-8", "surrogatepass"))
    for chunk in doc.chunks:
        size += (_CHUNK_OVERHEAD + len(chunk.text.encode("utf-8", "surrogatepass"))
                 + len(json.dumps(chunk.metadata, ensure_ascii=False).encode(
                     "utf-8", "surrogatepass")))
    return size + _vector_bytes(doc)


def too_large(doc: DocRecord) -> str | None:
    """Why ``doc`` cannot be written in one frame, or None when it can."""
    vectors = _vector_bytes(doc)
    if vectors > MAX_VECTOR_BYTES:
        return (f"the document makes {len(doc.chunks):,} chunks whose vectors take "
                f"{vectors / 2**20:.1f} MiB, more than one write carries "
                f"({MAX_VECTOR_BYTES / 2**20:.0f} MiB): split it into smaller documents")
    size = doc_wire_bytes(doc)
    if size > MAX_DOC_BYTES:
        return (f"the document makes {len(doc.chunks):,} chunks, {size / 2**20:.1f} MiB with "
                f"their vectors, more than one write carries ({MAX_DOC_BYTES / 2**20:.0f} MiB):"
                " split it into smaller documents")
    return None


def write_groups(docs: Sequence[DocRecord], budget: int = GROUP_BYTES) -> list[list[DocRecord]]:
    """``docs`` in order, cut into groups of at most ``budget`` estimated bytes (a document
    larger than ``budget`` alone in its group)."""
    # the packing of write_rounds, for one shard and no count bound
    return [round_[0] for round_ in write_rounds({0: docs}, budget, max_docs=len(docs) or 1)]


def write_rounds(writes: Mapping[int, Sequence[DocRecord]], budget: int = GROUP_BYTES,
                 max_docs: int = MAX_BATCH) -> list[dict[int, list[DocRecord]]]:
    """The documents of ``writes`` (shard -> documents) cut into rounds of at most ``budget``
    estimated bytes and ``max_docs`` documents in all (a document larger than ``budget``
    alone in its round), in order: every owner's ``shard.write_many`` of a round then fits a
    frame, whichever of the round's shards it owns. A shard's documents may span rounds."""
    rounds: list[dict[int, list[DocRecord]]] = []
    current: dict[int, list[DocRecord]] = {}
    size = count = 0
    for shard, docs in writes.items():
        for doc in docs:
            doc_bytes = doc_wire_bytes(doc)
            if current and (size + doc_bytes > budget or count >= max_docs):
                rounds.append(current)
                current, size, count = {}, 0, 0
            current.setdefault(shard, []).append(doc)
            size += doc_bytes
            count += 1
    if current:
        rounds.append(current)
    return rounds
