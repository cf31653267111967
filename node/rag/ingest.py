"""The ingest path: validate documents, cut and embed them on embedding peers, write them to
their shards' owners (quorum), and delete documents by id.

Documents are cut and embedded on an embedding peer (``embed_chunks``, with the collection's
pinned model: a reply from another model file is refused), each document goes to shard
``shard_of(doc_id, S)``, and to that shard's R owners by rendezvous hashing over the live
index peers (``writes.py``). A document is acknowledged only once ``quorum`` owners said it is
durable. An ingest is refused before anything is embedded when the write quorum is out of
reach (:meth:`Ingest.require_write_quorum`).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import numpy as np
import trio

from calinode.models.store.records import ChunkWrite, DocRecord
from calinode.node.index.chunking import content_hash, text_pieces
from calinode.node.index.placement import shard_of
from calinode.node.index.write_frames import too_large
from calinode.node.ingest_input import MAX_DOCUMENT_CHARS, document_size, make_document_text
from calinode.node.jobs.work_queue import RatedSpread
from calinode.node.rag.pinned_model import pinned_model_not_served
from calinode.node.rag.plan import ingest_batches, write_quorum_problem
from calinode.node.rag.ports import RagNode
from calinode.node.rag.swarm_view import SwarmView
from calinode.node.rag.write_quorum import DocSettlement
from calinode.node.rag.writes import ShardWriter
from calinode.protocol.collections import CollectionDef
from calinode.protocol.errors import (
    BadRequest,
    CalinodeError,
    ErrorCode,
    JobError,
    groups_collapsed,
)
from calinode.protocol.job_params import MAX_TEXT_CHARS
from calinode.protocol.job_replies import EmbedChunksReply

_SUMMARY_KEY = {"inserted": "added", "replaced": "replaced", "unchanged": "unchanged"}
BATCHES_PER_EMBEDDER = 2
MAX_BATCHES_IN_FLIGHT = 8
Progress = Callable[[dict[str, Any]], Awaitable[None]]
#: One chunk of an embedded document: its text, its offsets into the document, its vector.
_EmbeddedChunk = tuple[str, int, int, "np.ndarray[Any, np.dtype[np.float32]]"]


def validate_docs(batch: list[dict[str, Any]]
                  ) -> tuple[list[tuple[str, str] | None], list[dict[str, Any]]]:
    """(doc_id, content hash) per document, None for a rejected one; and the rejections."""
    out: list[tuple[str, str] | None] = []
    rejected: list[dict[str, Any]] = []
    for i, doc in enumerate(batch):
        doc_id = doc.get("_id") if isinstance(doc, dict) else None
        text = doc.get("text") if isinstance(doc, dict) else None
        problem = None
        if not isinstance(doc_id, str) or not doc_id:
            problem = f"document {i} of the batch needs a non-empty string _id"
        elif not isinstance(text, str) or not text.strip():
            problem = "the document has no text"
        elif (size := document_size(doc) or 0) > MAX_DOCUMENT_CHARS:
            problem = (f"the document has {size:,} characters, more than the maximum "
                       f"document size of {MAX_DOCUMENT_CHARS:,} (title and text)")
        else:
            try:
                out.append((doc_id, content_hash(doc)))
                continue
            except ValueError as exc:
                problem = f"metadata cannot be stored: {exc}"
        out.append(None)
        rejected.append({"_id": doc_id, "error": "BAD_REQUEST", "message": problem})
    return out, rejected


def _record_of(doc: dict[str, Any], doc_id: str, chash: str, version: int,
               chunks: list[_EmbeddedChunk]) -> DocRecord:
    """One embedded document as the record its shard stores (metadata on every chunk)."""
    metadata = {k: v for k, v in doc.items() if k not in ("_id", "text")}
    chunk_writes = [
        ChunkWrite(text=text, vector=vector,
                   metadata={**metadata, "position": position, "start": begin, "end": end})
        for position, (text, begin, end, vector) in enumerate(chunks)]
    return DocRecord(doc_id=doc_id, content_hash=chash, version=version, deleted=False,
                     chunks=chunk_writes)


class Ingest:
    def __init__(self, node: RagNode, view: SwarmView, writer: ShardWriter) -> None:
        self.node = node
        self.view = view
        self.writer = writer

    def require_write_quorum(self, definition: CollectionDef) -> None:
        """Refuse an ingest that no shard could acknowledge, before anything is embedded:
        every shard has min(R, live index peers) owners, so all or none reach the quorum."""
        problem = write_quorum_problem(definition, len(self.view.index_peers()))
        if problem is not None:
            raise JobError(problem, code=ErrorCode.SHARD_UNAVAILABLE)

    async def ingest(self, name: str, docs: list[dict[str, Any]], *,
                     progress: Progress | None = None) -> dict[str, Any]:
        definition = self.node.book.get(name)
        self.require_write_quorum(definition)  # fail before embedding anything
        started = trio.current_time()
        summary: dict[str, Any] = {"collection": name, "documents": len(docs), "chunks": 0,
                                   "acknowledged": 0, "added": 0, "replaced": 0,
                                   "unchanged": 0, "failed": []}
        # BATCHES_PER_EMBEDDER batches in flight per embedding peer: while one batch is
        # written to its shards, the next is already queued at the embedder, so the model
        # never waits for the writes (with one batch per embedder it did after every batch)
        embedders = len(self.node.dispatcher.candidates("embed", definition.model, definition))
        limiter = trio.CapacityLimiter(
            max(1, min(MAX_BATCHES_IN_FLIGHT, BATCHES_PER_EMBEDDER * embedders)))
        spread = RatedSpread()
        done = 0

        async def run(batch: list[dict[str, Any]]) -> None:
            nonlocal done
            async with limiter:
                try:
                    settled, failed, chunks = await self.ingest_batch(definition, batch,
                                                                      spread)
                except CalinodeError as exc:
                    settled, failed, chunks = [], [{"_id": d.get("_id"), "error": exc.code.value,
                                                    "message": exc.message} for d in batch], 0
            for doc in settled:
                if doc.acknowledged:
                    summary["acknowledged"] += 1
                    summary[_SUMMARY_KEY.get(doc.outcome, "unchanged")] += 1
                else:
                    failed.append({"_id": doc.doc_id, "error": doc.outcome,
                                   "message": doc.message})
            summary["chunks"] += chunks
            summary["failed"].extend(failed)
            done += len(batch)
            if progress is not None:
                await progress({"done": done, "total": len(docs),
                                "acknowledged": summary["acknowledged"]})

        with groups_collapsed():
            async with trio.open_nursery() as nursery:
                for batch in ingest_batches(docs, embedders):
                    nursery.start_soon(run, batch)
        summary["seconds"] = round(trio.current_time() - started, 3)
        self.node.metrics.ingested(acknowledged=summary["acknowledged"],
                                   failed=len(summary["failed"]))
        return summary

    async def ingest_batch(self, definition: CollectionDef, batch: list[dict[str, Any]],
                           spread: RatedSpread | None = None,
                           ) -> tuple[list[DocSettlement], list[dict[str, Any]], int]:
        """Each valid document's settlement, the documents refused before writing, and the
        number of chunks written."""
        records, rejected = validate_docs(batch)
        batch = [doc for doc, record in zip(batch, records, strict=True) if record is not None]
        valid = [record for record in records if record is not None]
        if not batch:
            return [], rejected, 0
        texts = [make_document_text(doc.get("title"), doc["text"]) for doc in batch]
        embedded = await self._embed_documents(definition, texts, spread or RatedSpread())
        version = self.node.clock.tick()
        # records and their sizes in a worker thread: a batch of long documents is thousands
        # of chunks whose texts are encoded and measured
        writes, too_big, row = await trio.to_thread.run_sync(
            _shard_writes, batch, valid, embedded, version, definition.shards)
        return await self.writer.write_all(definition, writes), rejected + too_big, row

    async def _embed_documents(self, definition: CollectionDef, texts: list[str],
                               spread: RatedSpread) -> list[list[_EmbeddedChunk]]:
        """Every text cut into chunks and embedded: per text its chunks ``(text, start, end,
        vector)``, offsets into that text.

        One ``embed_chunks`` request carries the texts of up to ``MAX_TEXT_CHARS``
        characters; a longer one (up to ``MAX_DOCUMENT_CHARS``) is cut into pieces
        (``text_pieces``), each piece a request of its own, run on the embedders at once, and
        its chunks' offsets moved back into the whole text."""
        short = [i for i, text in enumerate(texts) if len(text) <= MAX_TEXT_CHARS]
        requests: list[list[tuple[int, int, str]]] = []  # (text index, offset, text) each
        if short:
            requests.append([(i, 0, texts[i]) for i in short])
        for i, text in enumerate(texts):
            if len(text) > MAX_TEXT_CHARS:
                requests.extend([(i, offset, piece)]
                                for offset, piece in text_pieces(text, MAX_TEXT_CHARS))
        out: list[list[_EmbeddedChunk]] = [[] for _ in texts]
        replies: list[EmbedChunksReply | None] = [None] * len(requests)
        embedders = len(self.node.dispatcher.candidates("embed", definition.model, definition))
        limiter = trio.CapacityLimiter(max(1, BATCHES_PER_EMBEDDER * embedders))

        async def embed(n: int) -> None:
            async with limiter:
                replies[n] = await self._embed_request(
                    definition, [text for _, _, text in requests[n]], spread)

        with groups_collapsed():
            async with trio.open_nursery() as nursery:
                for n in range(len(requests)):
                    nursery.start_soon(embed, n)
        for request, reply in zip(requests, replies, strict=True):
            assert reply is not None
            row = 0
            for (i, offset, _), spans in zip(request, reply.chunks, strict=True):
                for span in spans:
                    out[i].append((span.text, offset + span.start, offset + span.end,
                                   np.array(reply.vectors[row], dtype=np.float32)))
                    row += 1
        return out

    async def _embed_request(self, definition: CollectionDef, texts: list[str],
                             spread: RatedSpread) -> EmbedChunksReply:
        """One ``embed_chunks`` request, on the embedder that would finish it soonest: this
        ingest's requests in flight on each, over its advertised rate (``RatedSpread``; the
        others are its fallbacks). A peer 5x slower gets about a fifth of a fast one's share
        instead of as many requests as any other."""
        params = {"model": definition.model, "docs": texts,
                  "chunk_tokens": definition.chunk_tokens,
                  "chunk_overlap": definition.chunk_overlap}
        dispatcher = self.node.dispatcher
        ranked = dispatcher.candidates("embed", definition.model, definition)
        order = spread.order(ranked, dispatcher.advertised_rates("embed", definition.model,
                                                                 ranked),
                             lambda candidate: candidate.peer_id)
        deadline = trio.current_time() + 120
        count = len(texts)
        with spread.running(order[0].peer_id if order else ""):
            reply, _ = await dispatcher.run_with_retry(
                order, "embed_chunks", params, deadline,
                lambda wire: EmbedChunksReply.from_wire(wire, docs=count, dim=definition.dim))
        if reply.sha256 != definition.model_sha256:
            raise pinned_model_not_served(definition, reply.sha256, what="the documents")
        return reply

    async def delete(self, name: str, doc_ids: list[str]) -> dict[str, Any]:
        """Tombstone documents on every owner of their shards (quorum acknowledged)."""
        definition = self.node.book.get(name)
        if not doc_ids or not all(isinstance(d, str) and d for d in doc_ids):
            raise BadRequest("doc_ids must be a non-empty list of strings")
        version = self.node.clock.tick()
        writes: dict[int, list[DocRecord]] = {}
        for doc_id in dict.fromkeys(doc_ids):
            writes.setdefault(shard_of(doc_id, definition.shards), []).append(
                DocRecord(doc_id=doc_id, content_hash="", version=version, deleted=True,
                          chunks=[]))
        settled = await self.writer.write_all(definition, writes)
        return {"collection": name,
                "deleted": [d.doc_id for d in settled if d.acknowledged
                            and d.outcome == "deleted"],
                "not_found": [d.doc_id for d in settled if d.acknowledged
                              and d.outcome != "deleted"],
                "failed": [{"_id": d.doc_id, "error": d.outcome, "message": d.message}
                           for d in settled if not d.acknowledged]}


def _shard_writes(batch: list[dict[str, Any]], valid: list[tuple[str, str]],
                  embedded: list[list[_EmbeddedChunk]], version: int, shards: int
                  ) -> tuple[dict[int, list[DocRecord]], list[dict[str, Any]], int]:
    """The batch's records by shard, the documents too large for one write (each fails
    alone, ``PAYLOAD_TOO_LARGE``), and the number of chunks to write."""
    writes: dict[int, list[DocRecord]] = {}
    too_big: list[dict[str, Any]] = []
    row = 0
    for doc, (doc_id, chash), chunks in zip(batch, valid, embedded, strict=True):
        record = _record_of(doc, doc_id, chash, version, chunks)
        problem = too_large(record)
        if problem is not None:
            too_big.append({"_id": doc_id, "error": ErrorCode.PAYLOAD_TOO_LARGE.value,
                            "message": problem})
            continue
        row += len(record.chunks)
        writes.setdefault(shard_of(doc_id, shards), []).append(record)
    return writes, too_big, row
