"""The coordinator: collections across the swarm, as one object the API and the daemon use.

A thin composition: it creates, updates and drops collection definitions itself, and hands
ingest (``ingest.py``, writes through ``writes.py``), search (``search.py``), replica sync
(``sync.py``) and the shard report (``shard_status.py``) to the parts it owns, which share one
view of the swarm (``swarm_view.py``). ``ask`` and chat with a collection retrieve and prompt
through :meth:`Coordinator.rag_messages` (``prompt.py``).

- **Lifecycle**: ``create`` picks min(2, live index peers) replicas when none are asked;
  ``update`` signs a new version with another replication; ``ingest`` is refused before
  anything is embedded when the write quorum is out of reach (``require_write_quorum``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Awaitable, Callable
from typing import Any

import numpy as np
import trio

from calinode.node.index.collections import sign_definition
from calinode.node.index.placement import PlacementMap
from calinode.node.jobs.dispatch import default_model
from calinode.node.rag.agent import OnStep, run_agent
from calinode.node.rag.agent_steps import AgentBounds
from calinode.node.rag.agent_swarm import SwarmModel, SwarmTools
from calinode.node.rag.ingest import Ingest, Progress
from calinode.node.rag.plan import ShardPlan, deadline_of, replication_notes
from calinode.node.rag.ports import RagNode
from calinode.node.rag.prompt import no_sources_reply, rag_prompt
from calinode.node.rag.search import SEARCH_TIMEOUT, Search
from calinode.node.rag.shard_status import shard_rows
from calinode.node.rag.swarm_view import SwarmView
from calinode.node.rag.sync import ReplicaSync
from calinode.node.rag.write_quorum import DocSettlement
from calinode.node.rag.writes import ShardWriter
from calinode.protocol.capabilities import ModelOffer
from calinode.protocol.collections import CollectionDef
from calinode.protocol.errors import BadRequest, ErrorCode, JobError, groups_collapsed
from calinode.protocol.search_budget import SearchBudget

DEFAULT_REPLICAS = 2  # replicas of a new collection, at most the live index peers


class Coordinator:
    def __init__(self, node: RagNode) -> None:
        self.node = node
        self.view = SwarmView(node)
        self.writes = ShardWriter(node, self.view)
        self.ingestion = Ingest(node, self.view, self.writes)
        self.searches = Search(node, self.view)
        self.replicas = ReplicaSync(node, self.view)

    # -- views of the swarm ----------------------------------------------------------------

    def index_peers(self) -> list[str]:
        return self.view.index_peers()

    def placement(self, definition: CollectionDef) -> PlacementMap:
        return self.view.placement(definition)

    def holders(self, definition: CollectionDef) -> dict[int, dict[str, str]]:
        """shard -> {peer: digest} for live holders (this node included)."""
        return self.view.holders(definition)

    def plan(self, definition: CollectionDef) -> list[ShardPlan]:
        return self.view.plan(definition)

    async def shard_rows(self, name: str) -> list[dict[str, Any]]:
        """The state of every shard of ``name`` across the swarm (``shard_status.py``)."""
        return await shard_rows(self.node, self.view, name)

    @property
    def search_budget(self) -> SearchBudget:
        """The hit budget of one shard.search request (see ``Search.budget``)."""
        return self.searches.budget

    @search_budget.setter
    def search_budget(self, budget: SearchBudget) -> None:
        self.searches.budget = budget

    @property
    def sync_failures(self) -> dict[tuple[str, int], str]:
        """(collection, shard) -> why its last sync round failed (cleared by a good round)."""
        return self.replicas.failures

    @property
    def settled_sync_rounds(self) -> int:
        """Sync rounds completed since membership settled (``/readyz``)."""
        return self.replicas.settled_rounds

    def sync_lag(self) -> dict[str, float]:
        """collection -> replica sync lag in seconds (``ReplicaSync.lag``)."""
        return self.replicas.lag()

    # -- collections -----------------------------------------------------------------------

    def _model_info(self, model: str) -> ModelOffer:
        local = self.node.models.embed.get(model)
        if local is not None:
            return ModelOffer.from_wire(local.manifest.advertised(), "embed")
        for _, caps in self.view.alive_caps():
            offer = caps.offer("embed", model)
            if offer is not None:
                return offer
        raise JobError(f"no live peer has embedding model {model!r}",
                       code=ErrorCode.UNKNOWN_MODEL)

    def replication_notes(self, replicas: int, quorum: int) -> list[str]:
        """What a user should know about ``replicas`` copies with ``quorum`` on the live index
        peers (``plan.replication_notes``)."""
        return replication_notes(replicas, quorum, len(self.index_peers()))

    async def create(self, name: str, *, model: str, shards: int, replicas: int | None = None,
                     write_quorum: int = 0, index_kind: str = "flat",
                     admins: tuple[str, ...] = (), writers: tuple[str, ...] = (),
                     readers: tuple[str, ...] = ()) -> tuple[CollectionDef, list[str]]:
        """A new collection owned by this node and signed by it (see protocol/collections.py
        for who may change it, and who may read and write it in an open swarm), and notes
        for the user: the replication chosen when ``replicas`` is None (min(2, live index
        peers), so one node is a valid swarm) and :meth:`replication_notes`."""
        book = self.node.book
        info = self._model_info(model)
        version = 1
        try:
            existing = book.get(name, include_dropped=True)
        except JobError:
            existing = None
        if existing is not None:
            if not existing.dropped:
                raise BadRequest(f"collection {name} exists")
            version = existing.version + 1
        live = len(self.index_peers())
        if not live:
            raise JobError("no index peer is alive to host the collection; start nodes with "
                           "--index", code=ErrorCode.NO_CAPABLE_PEER)
        notes = []
        if replicas is None:
            replicas = min(DEFAULT_REPLICAS, live)
            notes.append(f"replicas: {replicas} (the default, min({DEFAULT_REPLICAS}, "
                         f"{live} live index peer{'' if live == 1 else 's'})); raise it "
                         f"later with: calinode collections update {name} --replicas N")
        assert info.dim is not None and info.pooling is not None  # an embed offer has both
        definition = CollectionDef(
            name=name, model=model, model_sha256=info.sha256, dim=info.dim,
            pooling=info.pooling, normalize=info.normalize, query_prefix=info.query_prefix,
            passage_prefix=info.passage_prefix, shards=shards, replicas=replicas,
            write_quorum=write_quorum, index_kind=index_kind, version=version,
            created=version, owner=self.node.peer_id, admins=admins, writers=writers,
            readers=readers)
        notes.extend(self.replication_notes(definition.replicas, definition.quorum))
        definition = sign_definition(definition, self.node.signer.key_pair)
        placement = self.placement(definition)
        await trio.to_thread.run_sync(book.merge, definition)
        outcomes: dict[int, list[DocSettlement]] = {}
        with groups_collapsed():
            async with trio.open_nursery() as nursery:  # every shard starts empty and ready
                for shard in range(definition.shards):
                    nursery.start_soon(self.writes.write_shard, definition, placement, shard, [],
                                       outcomes, True)
        return definition, notes

    def _changeable(self, name: str, action: str) -> CollectionDef:
        current = self.node.book.get(name)
        if current.owner and not current.may_change(self.node.peer_id):
            raise JobError(f"collection {name} belongs to {current.owner}; only its owner or "
                           f"an admin may {action} it", code=ErrorCode.UNAUTHORIZED)
        return current

    async def update(self, name: str, *, replicas: int, write_quorum: int | None = None
                     ) -> tuple[CollectionDef, list[str]]:
        """A new signed version of the definition with another replication (only its owner
        or an admin may, ``UNAUTHORIZED``). It spreads like any definition; the sync rounds
        then open and pull the shards on their new owners, and drop the copies no longer
        owned once the owners hold the same documents (``replica_gc_after``)."""
        current = self._changeable(name, "update")
        quorum = current.write_quorum if write_quorum is None else write_quorum
        changed = dataclasses.replace(current, replicas=replicas,
                                      write_quorum=min(quorum, replicas),
                                      version=current.version + 1)
        changed = sign_definition(changed, self.node.signer.key_pair)
        await trio.to_thread.run_sync(self.node.book.merge, changed)
        return changed, self.replication_notes(changed.replicas, changed.quorum)

    async def drop(self, name: str) -> CollectionDef:
        """Drop a collection: only its owner or an admin may (``UNAUTHORIZED``). The dropped
        definition spreads like any; every holder's sync round then deletes its replicas."""
        current = self._changeable(name, "drop")
        dropped = sign_definition(current.dropped_copy(), self.node.signer.key_pair)
        await trio.to_thread.run_sync(self.node.book.merge, dropped)
        await self.replicas.drop_replicas(dropped)
        return dropped

    def require_write_quorum(self, definition: CollectionDef) -> None:
        self.ingestion.require_write_quorum(definition)

    # -- ingest, search, sync: delegated ---------------------------------------------------

    async def ingest(self, name: str, docs: list[dict[str, Any]], *,
                     progress: Progress | None = None) -> dict[str, Any]:
        return await self.ingestion.ingest(name, docs, progress=progress)

    async def delete(self, name: str, doc_ids: list[str]) -> dict[str, Any]:
        """Tombstone documents on every owner of their shards (quorum acknowledged)."""
        return await self.ingestion.delete(name, doc_ids)

    async def search(self, name: str, queries: list[str], *, k: int = 10,
                     deadline: float | None = None, timeout: float = SEARCH_TIMEOUT,
                     per_doc: bool = False, text: bool = True) -> list[dict[str, Any]]:
        """Embed the queries and search by ``deadline`` (see ``Search.search``)."""
        return await self.searches.search(name, queries, k=k, deadline=deadline,
                                          timeout=timeout, per_doc=per_doc, text=text)

    async def search_by_vector(self, name: str, vector: Any, model_sha256: Any, *,
                               k: int = 10, deadline: float | None = None,
                               per_doc: bool = False, text: bool = True) -> dict[str, Any]:
        """Search with a client's query vector, checked against the collection's model
        (see ``Search.search_by_vector``)."""
        return await self.searches.search_by_vector(name, vector, model_sha256, k=k,
                                                    deadline=deadline, per_doc=per_doc,
                                                    text=text)

    async def search_vectors(self, definition: CollectionDef, vectors: np.ndarray, *, k: int,
                             deadline: float | None = None, timeout: float = SEARCH_TIMEOUT,
                             per_doc: bool = False, text: bool = True) -> list[dict[str, Any]]:
        """Search every shard by ``deadline`` and merge (see ``Search.search_vectors``)."""
        return await self.searches.search_vectors(definition, vectors, k=k, deadline=deadline,
                                                  timeout=timeout, per_doc=per_doc, text=text)

    async def sync_once(self) -> None:
        await self.replicas.sync_once()

    async def run_sync(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        await self.replicas.run_sync(task_status=task_status)

    # -- ask -------------------------------------------------------------------------------

    async def rag_messages(self, name: str, question: str, *, k: int,
                           deadline: float | None = None, timeout: float = SEARCH_TIMEOUT
                           ) -> tuple[list[dict[str, str]], list[dict[str, Any]], dict[str, Any]]:
        """Chat messages with numbered context passages, the sources, and the search result,
        retrieved by ``deadline`` (the caller's whole budget: generation spends what is left).
        The sources are the ``k`` best distinct documents (per-document search), each by its
        best chunk, so ``k`` sources never name one document twice. A retrieval that found
        nothing because the budget ran out is ``DEADLINE_EXCEEDED``, not an answer that the
        collection has nothing."""
        deadline = deadline_of(deadline, timeout)
        (found,) = await self.search(name, [question], k=k, deadline=deadline, per_doc=True)
        if not found["hits"] and found["partial"] and trio.current_time() >= deadline:
            raise JobError(f"retrieval from {name} ran out of its budget before the shards "
                           f"{found['missing_shards']} answered",
                           code=ErrorCode.DEADLINE_EXCEEDED)
        messages, sources = rag_prompt(question, found["hits"])
        return messages, sources, found

    def no_sources_reply(self, name: str, found: dict[str, Any]) -> dict[str, Any]:
        """What ``ask`` and chat with a collection answer when retrieval found nothing
        (``prompt.no_sources_reply``), served by this node."""
        return no_sources_reply(name, found, self.node.peer_id)

    async def ask(self, name: str, question: str, *, k: int = 5, model: str | None = None,
                  max_tokens: int = 256, on_text: Callable[[str], Awaitable[None]] | None = None,
                  deadline: float | None = None, timeout: float = 300.0) -> dict[str, Any]:
        """Retrieve, then generate, both by one ``deadline`` (trio time, set once at the edge;
        ``timeout`` from now only for a caller without a budget). No hits: the answer says
        so and ``no_sources`` is true (see :meth:`no_sources_reply`)."""
        deadline = deadline_of(deadline, timeout)
        messages, sources, found = await self.rag_messages(name, question, k=k,
                                                           deadline=deadline)
        if not sources:
            result = self.no_sources_reply(name, found)
            if on_text is not None:
                await on_text(result["text"])
        else:
            dispatcher = self.node.dispatcher
            params = {"model": model or default_model(self.node, "generate"),
                      "messages": messages, "max_tokens": max_tokens, "temperature": 0.2}
            result = await dispatcher.generate(params, deadline=deadline, on_text=on_text)
        return {"answer": result["text"], "sources": sources, "no_sources": not sources,
                "partial": found["partial"], "missing_shards": found["missing_shards"],
                "served_by": result["served_by"], "finish_reason": result["finish_reason"]}

    async def agent(self, name: str, question: str, *, model: str | None = None,
                    max_steps: int | None = None, max_tokens: int | None = None,
                    on_step: OnStep | None = None, deadline: float | None = None,
                    timeout: float = 180.0) -> dict[str, Any]:
        """Answer with the agent (``agent.py``): the model searches and fetches from ``name``
        in a bounded loop (``max_steps``, ``max_tokens``: None for the defaults), by one
        ``deadline``; ``on_step`` gets each step as it is done."""
        deadline = deadline_of(deadline, timeout)
        self.node.book.get(name)  # an unknown collection is refused before any generation
        bounds = AgentBounds.of(max_steps, max_tokens)
        chosen = model or default_model(self.node, "generate")
        result = await run_agent(name, question, SwarmModel(self.node, chosen),
                                 SwarmTools(self.node, self.view, self.searches, name),
                                 bounds, deadline=deadline, on_step=on_step)
        return {**result, "model": chosen}
