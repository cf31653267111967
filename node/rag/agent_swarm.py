"""The agent's ports on the swarm: :class:`SwarmModel` (generate on the best peer, the reply
constrained by a JSON schema that travels as ``GenerateParams.json_schema``) and
:class:`SwarmTools` (the collection's search, the same per-document search ``ask`` uses, and
:func:`fetch_document`).

A document is stored as chunks keyed by ``chunk_faiss_id(doc_id, chunk)`` in the shard
``shard_of(doc_id)``; there was no way to read one by id, so :func:`fetch_document` asks the
shard's holders (``shard.fetch``, the reply checked by its typed view: every chunk must hash
to the id asked) for the first :data:`FETCH_CHUNKS` chunks, joins them without the overlap the
chunker repeats, and keeps :data:`FETCH_DOC_CHARS` characters: bounded in size whatever the
document's length.
"""

from __future__ import annotations

import functools
import logging
from typing import Any, Final

import numpy as np
import trio

from calinode.models.store.digest import chunk_faiss_id
from calinode.node.index.placement import shard_of
from calinode.node.rag.agent import Generation
from calinode.node.rag.agent_steps import SEARCH_HITS, Document, Hit
from calinode.node.rag.ports import RagNode
from calinode.node.rag.search import Search
from calinode.node.rag.swarm_view import SwarmView
from calinode.protocol.errors import ErrorCode, JobError
from calinode.protocol.shard_params import ShardFetchParams
from calinode.protocol.shard_replies import FetchedChunk, ShardFetchReply

log = logging.getLogger(__name__)

#: Chunks of one document a fetch reads, and characters it keeps of them.
FETCH_CHUNKS: Final = 8
FETCH_DOC_CHARS: Final = 4000
#: Sampling temperature of the agent's steps (low: an action, not prose).
AGENT_TEMPERATURE: Final = 0.2


class SwarmModel:
    """The agent's model: ``model`` on the best peer that serves it (``Dispatcher``)."""

    def __init__(self, node: RagNode, model: str) -> None:
        self.node, self.model = node, model

    async def generate(self, messages: list[dict[str, str]], *, schema: str, max_tokens: int,
                       deadline: float) -> Generation:
        params = {"model": self.model, "messages": messages, "max_tokens": max_tokens,
                  "temperature": AGENT_TEMPERATURE, "json_schema": schema}
        reply = await self.node.dispatcher.generate(params, deadline=deadline)
        usage = reply.get("usage") or {}
        return Generation(text=str(reply["text"]),
                          completion_tokens=int(usage.get("completion_tokens", 0)),
                          prompt_tokens=int(usage.get("prompt_tokens", 0)),
                          served_by=str(reply.get("served_by", "")))


class SwarmTools:
    """The agent's tools on one collection of the swarm."""

    def __init__(self, node: RagNode, view: SwarmView, search: Search, name: str) -> None:
        self.node, self.view, self.searches, self.name = node, view, search, name

    async def search(self, query: str, *, deadline: float) -> list[Hit]:
        (found,) = await self.searches.search(self.name, [query], k=SEARCH_HITS,
                                              deadline=deadline, per_doc=True)
        return [_hit(h) for h in found["hits"]]

    async def fetch(self, doc_id: str, *, deadline: float) -> Document | None:
        return await fetch_document(self.node, self.view, self.name, doc_id, deadline=deadline)


def _title(metadata: Any) -> str:
    title = metadata.get("title") if isinstance(metadata, dict) else None
    return title.strip() if isinstance(title, str) else ""


def _without_title(text: str, title: str) -> str:
    """A chunk's text starts with the title (``make_document_text``): shown once is enough."""
    return text[len(title):].lstrip() if title and text.startswith(title) else text


def _hit(hit: dict[str, Any]) -> Hit:
    title = _title(hit.get("metadata"))
    return Hit(doc_id=hit["doc_id"], title=title,
               text=_without_title(str(hit.get("text", "")), title))


def join_chunks(texts: list[str], limit: int = FETCH_DOC_CHARS) -> str:
    """Consecutive chunks as one text, each without the start it repeats of the one before
    (the chunker's overlap), cut at ``limit`` characters."""
    out = ""
    for text in texts:
        overlap = 0
        for size in range(min(len(out), len(text), 2000), 19, -1):
            if out.endswith(text[:size]):
                overlap = size
                break
        out = (out + ("" if overlap or not out else " ") + text[overlap:])
        if len(out) >= limit:
            break
    return out[:limit]


async def fetch_document(node: RagNode, view: SwarmView, name: str, doc_id: str, *,
                         deadline: float) -> Document | None:
    """The start of document ``doc_id`` of collection ``name`` (None: no holder has it), from
    the first holder of its shard that answers; ``SHARD_UNAVAILABLE`` when none could."""
    definition = node.book.get(name)
    shard = shard_of(doc_id, definition.shards)
    holders = next((p.holders for p in view.plan(definition) if p.shard == shard), [])
    ids = np.asarray([chunk_faiss_id(doc_id, c) for c in range(FETCH_CHUNKS)], dtype=np.int64)
    for peer in holders[:3]:
        chunks: dict[int, FetchedChunk] = {}
        todo = ids
        try:
            while len(todo):
                part = todo  # a holder may answer a prefix of the ids (its reply budget)
                reply, _ = await node.client.call_parsed(
                    peer, "shard.fetch", ShardFetchParams(
                        collection=name, shard=shard, ids=part, text=True).to_wire(),
                    functools.partial(ShardFetchReply.from_wire, ids=part, text=True,
                                      chunk_id=chunk_faiss_id),
                    timeout=max(0.01, deadline - trio.current_time()))
                chunks.update(reply.chunks)
                todo = todo[reply.done:]
        except JobError as exc:
            log.info("fetch of %r from %s failed: %s", doc_id[:64], peer[:16], exc.code.value)
            continue
        found = sorted((c for c in chunks.values() if c.doc_id == doc_id), key=lambda c: c.chunk)
        if not found:
            return None
        title = _title(found[0].metadata)
        texts = [_without_title(found[0].text, title), *(c.text for c in found[1:])]
        return Document(doc_id=doc_id, title=title, text=join_chunks(texts))
    raise JobError(f"no holder of shard {shard} of {name} answered the fetch of "
                   f"{doc_id[:64]!r}", code=ErrorCode.SHARD_UNAVAILABLE)
