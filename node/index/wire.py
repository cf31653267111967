"""Shard documents in their wire form, both ways, and the page of a ``shard.fetch`` reply.

The coordinator sends documents with :func:`docs_to_wire` (``shard.write``) and a holder
answers ``shard.changes`` with it; the views of ``protocol/wire_docs.py`` validate what
arrives (:class:`~calinode.protocol.job_params.WireDoc`) before :func:`records_from_wire` makes
store records of it. Pure (no I/O), but :func:`fetch_reply` measures JSON and msgpack sizes:
call it from a worker thread.
"""

from __future__ import annotations

import json
from typing import Any

import msgpack
import numpy as np

from calinode.models.store.records import ChunkWrite, DocRecord, DocWrite
from calinode.protocol.search_budget import (
    FETCH_ENTRY_BYTES,
    FETCH_ENTRY_OBJECTS,
    FetchPage,
    SearchBudget,
    msgpack_objects,
)
from calinode.protocol.vectors import encode_vectors
from calinode.protocol.wire_docs import WireDoc

__all__ = ["docs_to_wire", "fetch_reply", "records_from_wire"]


def docs_to_wire(docs: list[DocWrite] | list[DocRecord]) -> list[dict[str, Any]]:
    out = []
    for doc in docs:
        item: dict[str, Any] = {"doc_id": doc.doc_id, "content_hash": doc.content_hash,
                                "version": doc.version,
                                "deleted": bool(getattr(doc, "deleted", False)),
                                "chunks": [{"text": c.text, "metadata": dict(c.metadata)}
                                           for c in doc.chunks]}
        if doc.chunks:
            item["vectors"] = encode_vectors(np.stack([c.vector for c in doc.chunks]))
        out.append(item)
    return out


def records_from_wire(docs: tuple[WireDoc, ...], dim: int) -> list[DocRecord]:
    """Store records of validated wire documents, their vectors pinned to ``dim``."""
    return [DocRecord(doc_id=doc.doc_id, content_hash=doc.content_hash, version=doc.version,
                      deleted=doc.deleted,
                      chunks=[ChunkWrite(text=c.text, vector=np.asarray(v, dtype=np.float32),
                                         metadata=dict(c.metadata))
                              for c, v in zip(doc.chunks, doc.vectors_of(dim), strict=True)])
            for doc in docs]


def fetch_reply(ids: list[int], found: dict[int, tuple[str, int, str, str]], *, text: bool,
                budget: SearchBudget) -> dict[str, Any]:
    """The ``shard.fetch`` reply for ``ids``: entries ``[id, doc_id, chunk(, text,
    metadata)]`` for the found ids of the longest prefix that fits ``budget`` (at least one
    id), and ``done``, the length of that prefix. Blocking (JSON and msgpack sizes)."""
    page = FetchPage(budget)
    entries: list[list[Any]] = []
    done = 0
    for fid in ids:
        hit = found.get(fid)
        if hit is not None:
            doc_id, chunk, body, metadata_json = hit
            entry: list[Any] = [fid, doc_id, chunk]
            size = FETCH_ENTRY_BYTES + len(doc_id.encode())
            objects = FETCH_ENTRY_OBJECTS
            if text:
                metadata = json.loads(metadata_json)
                entry += [body, metadata]
                size += len(body.encode()) + len(msgpack.packb(metadata))
                objects += msgpack_objects(metadata)
            if not page.admit(size, objects):
                break
            entries.append(entry)
        done += 1
    return {"chunks": entries, "done": done}


