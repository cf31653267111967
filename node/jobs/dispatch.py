"""Routed jobs: embed and generate on whichever node has the model.

The receiving node ranks candidates (``routing.py``): itself when it has the model and is not
busy, else the least-loaded live peer with a byte-identical copy, then lowest RTT (a peer's
load: what its record says, or the jobs this node has in flight to it, whichever is more). A
large embed batch is cut into batches that every candidate pulls when free (``work_queue.py``),
reassembled in order; a batch whose peer fails goes to the others, a stalled one is hedged.
A generation whose peer dies, times out or is overloaded is retried once on another
candidate within the caller's deadline (a generation only if no text has been streamed yet;
after that, a generation resumes on another peer: see ``generate_resume.py``).
``embed`` and ``generate`` take the caller's absolute ``deadline`` (trio time): a request that
is part of a search or an ask spends what is left of one budget, and each job carries what is
left when it is sent (``JobClient.call`` writes it into ``deadline_ms``).
Every reply is parsed into its typed view (``protocol/job_replies.py``); one that does not fit
counts as a failed candidate (``bad_reply``).
"""

from __future__ import annotations

import contextlib
import logging
import math
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

import numpy as np
import trio

from calinode.node.jobs.client import ReplyParser
from calinode.node.jobs.generate_resume import ResumeBook, resumable_request
from calinode.node.jobs.routing import (
    Candidate,
    SentJobs,
    model_offers,
    rank_candidates,
    require_candidates,
)
from calinode.node.jobs.work_queue import Batch, WorkQueue, batch_size, soonest_first
from calinode.protocol.collections import CollectionDef
from calinode.protocol.errors import ErrorCode, JobError, ProtocolError, groups_collapsed
from calinode.protocol.job_params import GenerateParams
from calinode.protocol.job_replies import EmbedReply, GenerateChunk, GenerateReply

if TYPE_CHECKING:
    from calinode.models.manifest import ModelManifest
    from calinode.node.access import AccessPolicy
    from calinode.node.config import NodeConfig
    from calinode.node.jobs.client import JobClient
    from calinode.node.jobs.server import JobServer
    from calinode.node.metrics import NodeMetrics
    from calinode.node.p2p.peer_table import PeerTable

log = logging.getLogger(__name__)
V = TypeVar("V")

RETRYABLE = {ErrorCode.PEER_UNREACHABLE, ErrorCode.DEADLINE_EXCEEDED, ErrorCode.OVERLOADED,
             ErrorCode.UNKNOWN_MODEL, ErrorCode.UNKNOWN_KIND, ErrorCode.INTERNAL}
#: An embed of at most this many texts is not worth splitting: it runs whole on the best
#: candidate (the receiving node when it has the model and is idle), retried once elsewhere.
MIN_SPLIT = 32
#: How often an idle embed worker looks for a stalled batch to hedge (when nothing changed).
HEDGE_POLL_SECONDS = 0.25


class _LocalService(Protocol):
    """One model this node serves itself, as routing sees it."""

    @property
    def manifest(self) -> ModelManifest: ...

    @property
    def busy(self) -> bool: ...


class _LocalModelNames(Protocol):
    @property
    def embed(self) -> Mapping[str, _LocalService]: ...

    @property
    def generate(self) -> Mapping[str, _LocalService]: ...


class ModelSources(Protocol):
    """What :func:`default_model` reads of a node: its own models, its peers, its config (the
    HTTP API and the coordinator pass theirs, not the daemon's whole ``Node``)."""

    @property
    def models(self) -> _LocalModelNames: ...

    @property
    def table(self) -> PeerTable: ...

    @property
    def config(self) -> NodeConfig: ...


def default_model(node: ModelSources, kind: str) -> str:
    """The model a request names none for: a local one of ``kind``, else one a live peer
    offers, else the first configured (empty: none known)."""
    local = node.models.embed if kind == "embed" else node.models.generate
    if local:
        return next(iter(local))
    for entry in node.table.alive():
        for model in entry.caps.models(kind):
            return model.name
    configured = node.config.embed_models if kind == "embed" else node.config.gen_models
    return configured[0] if configured else ""


class DispatchNode(ModelSources, Protocol):
    """What the :class:`Dispatcher` reads of the node (the daemon's ``Node`` satisfies it;
    the jobs layer never imports the daemon)."""

    @property
    def peer_id(self) -> str: ...

    @property
    def access(self) -> AccessPolicy: ...

    @property
    def server(self) -> JobServer: ...

    @property
    def client(self) -> JobClient: ...

    @property
    def metrics(self) -> NodeMetrics: ...  # retries


@dataclass
class EmbedOutcome:
    model: str
    sha256: str
    vectors: np.ndarray
    token_counts: list[int]
    truncated: list[int]
    served_by: list[str]  # one peer id per part, in order


class Dispatcher:
    def __init__(self, node: DispatchNode) -> None:
        self.node = node
        #: the jobs this node has sent and not yet heard back from, per peer: the load a
        #: peer's record advertises is up to a heartbeat old, so 4 generations sent at once
        #: all saw the same idle peer (the daemon keeps one Dispatcher for its lifetime)
        self.sent = SentJobs(clock=trio.current_time)

    def candidates(self, kind: str, name: str,
                   collection: CollectionDef | None = None) -> list[Candidate]:
        """Where a job of ``kind`` on model ``name`` may run, best first. Such jobs carry
        texts or prompts, so only peers the access policy lets see them qualify (in an
        ``--open`` swarm: trusted peers, or ``collection``'s members for its work)."""
        node = self.node
        local_services = node.models.embed if kind == "embed" else node.models.generate
        local = local_services.get(name)
        sent = self.sent
        # a peer's load: what its record advertised, or what this node alone has sent it
        # and not yet heard back from, whichever is more (the record may be stale)
        peers = [(e.peer_id, e.caps, sent.record_load(
                     e.peer_id, e.record.load.in_flight + e.record.load.queue_depth,
                     e.record_at), e.rtt_ms)
                 for e in node.table.alive()
                 if node.access.may_send_data(e.peer_id, collection)]
        offers = model_offers(name, kind, local.manifest.sha256 if local else None,
                              peers, node.peer_id,
                              max(node.server.in_flight, sent.count(node.peer_id)))
        known = [m.name for _, caps, _, _ in peers for m in caps.models(kind)]
        known += list(local_services)
        require_candidates(offers, name, kind, known)
        spare = local is not None and not local.busy and not sent.count(node.peer_id)
        return rank_candidates(offers, local_spare=spare)

    def node_sent(self, peer: str) -> contextlib.AbstractContextManager[None]:
        """Count a job to ``peer`` in flight while the block runs."""
        return self.sent.running(peer)

    async def run_with_retry(
        self, order: list[Candidate], kind: str, params: dict[str, Any], deadline: float,
        parse: ReplyParser[V],
        on_chunk: Callable[[dict[str, Any]], Awaitable[None]] | None = None,
        may_retry: Callable[[], bool] = lambda: True,
    ) -> tuple[V, str]:
        """Run job ``kind`` on the first of ``order``, then once on the next if the first
        died, timed out, was overloaded or sent a reply that ``parse`` refused; returns
        ``(reply view, served_by)``."""
        last: JobError | None = None
        for attempt, candidate in enumerate(order[:2]):
            remaining = deadline - trio.current_time()
            if remaining <= 0:
                break
            if attempt:
                self.node.metrics.job_retried(kind)
            has_fallback = attempt == 0 and len(order) > 1
            budget = remaining / 2 if has_fallback else remaining
            try:
                with self.node_sent(candidate.peer_id):
                    reply, result = await self.node.client.call_parsed(
                        candidate.peer_id, kind, params, parse, timeout=budget,
                        on_chunk=on_chunk)
                return reply, result.served_by
            except JobError as exc:
                last = exc
                if exc.code not in RETRYABLE or not may_retry():
                    raise
                log.warning("%s on %s failed (%s); trying another peer", kind,
                            candidate.peer_id, exc.code.value)
        raise last or JobError(f"{kind} ran out of time before any peer answered",
                               code=ErrorCode.DEADLINE_EXCEEDED)

    async def embed(self, model: str, texts: list[str], *, input_type: str = "passage",
                    dimensions: int | None = None, timeout: float = 60.0,
                    deadline: float | None = None) -> EmbedOutcome:
        """Embed ``texts`` by ``deadline`` (trio time; else ``timeout`` seconds from now):
        a caller with a budget of its own passes its deadline, never a fresh timeout.

        A batch of more than ``MIN_SPLIT`` texts goes through a pull-based work queue
        (``work_queue.py``) over every candidate, this node included: each takes the next
        batch when it has a free slot, so a fast peer serves more, and a stalled batch is
        hedged on an idle peer."""
        deadline = trio.current_time() + timeout if deadline is None else deadline
        ranked = self.candidates("embed", model)
        params: dict[str, Any] = {"model": model, "input_type": input_type}
        if dimensions is not None:
            params["dimensions"] = dimensions
        if len(texts) <= MIN_SPLIT or len(ranked) == 1:
            count = len(texts)
            reply = await self.run_with_retry(
                ranked, "embed", dict(params, texts=texts), deadline,
                lambda wire: EmbedReply.from_wire(wire, texts=count))
            return self._assemble(model, [(0, count)], [reply])
        queue = WorkQueue(len(texts), batch_size(len(texts), len(ranked)),
                          advertised=self.advertised_rates("embed", model, ranked),
                          peers=len(ranked))
        results = await self.run_queue(
            queue, ranked, "embed", deadline,
            lambda batch: dict(params, texts=texts[batch.start:batch.stop]),
            lambda batch: lambda wire: EmbedReply.from_wire(wire, texts=batch.size))
        return self._assemble(model, [(b.start, b.stop) for b in queue.batches], results)

    def advertised_rates(self, kind: str, model: str,
                          ranked: list[Candidate]) -> dict[str, float | None]:
        """Texts/s (embed) or tokens/s (generate) each candidate measured and advertised
        (this node: its own service's)."""
        rates: dict[str, float | None] = {}
        for candidate in ranked:
            if candidate.is_self:
                services = self.node.models.embed if kind == "embed" else self.node.models.generate
                rates[candidate.peer_id] = getattr(services.get(model), "rate", None)
                continue
            entry = self.node.table.get(candidate.peer_id)
            offer = entry.caps.offer(kind, model) if entry is not None else None
            rates[candidate.peer_id] = offer.rate if offer is not None else None
        return rates

    async def run_queue(
        self, queue: WorkQueue, ranked: list[Candidate], kind: str, deadline: float,
        params_of: Callable[[Batch], dict[str, Any]],
        parser_of: Callable[[Batch], ReplyParser[V]],
    ) -> list[tuple[V, str] | None]:
        """Run every batch of ``queue`` on the ``ranked`` candidates, pull-based: each
        candidate runs ``queue.slots(peer)`` workers that take the next batch when free
        (a stalled one, hedged, once nothing is left). Returns ``(reply view, served_by)``
        per batch, in order. A candidate that fails takes no more batches; the request fails
        when a batch failed ``MAX_FAILURES`` times, every candidate is out, a reply is
        refused for a reason no other peer fixes, or the deadline passes."""
        results: list[tuple[V, str] | None] = [None] * len(queue.batches)
        running: dict[tuple[int, str], trio.CancelScope] = {}
        changed = trio.Event()
        last_error: list[JobError] = []
        peers = [c.peer_id for c in ranked]

        def notify() -> None:
            nonlocal changed
            changed.set()
            changed = trio.Event()

        async def run_batch(peer: str, batch: Batch) -> None:
            remaining = deadline - trio.current_time()
            with trio.CancelScope() as scope:
                running[(batch.index, peer)] = scope
                try:
                    with self.node_sent(peer):
                        reply, result = await self.node.client.call_parsed(
                            peer, kind, params_of(batch), parser_of(batch),
                            timeout=max(0.001, remaining))
                except JobError as exc:
                    if exc.code not in RETRYABLE:
                        raise
                    log.warning("%s batch %d on %s failed (%s); its work goes to the others",
                                kind, batch.index, peer, exc.code.value)
                    last_error[:] = [exc]
                    if not queue.failed(batch, peer):
                        raise
                    return
                finally:
                    running.pop((batch.index, peer), None)
                    notify()
                if queue.finished(batch, peer, trio.current_time()):
                    results[batch.index] = (reply, result.served_by)
                    for other in queue.others_running(batch):  # a hedge lost the race
                        if (scope_of := running.get((batch.index, other))) is not None:
                            scope_of.cancel()

        async def worker(peer: str) -> None:
            while not queue.complete and not queue.is_out(peer):
                if queue.stranded(peers):
                    return
                batch = queue.next_for(peer, trio.current_time())
                if batch is None:
                    with trio.move_on_after(HEDGE_POLL_SECONDS):
                        await changed.wait()
                    continue
                await run_batch(peer, batch)

        with trio.move_on_at(deadline), groups_collapsed():
            async with trio.open_nursery() as nursery:
                for candidate in ranked:
                    for _ in range(queue.slots(candidate.peer_id)):
                        nursery.start_soon(worker, candidate.peer_id)
        if not queue.complete:
            if last_error and trio.current_time() < deadline:
                raise last_error[0]  # every candidate failed
            raise JobError(f"{kind} ran out of time before every batch was answered",
                           code=ErrorCode.DEADLINE_EXCEEDED)
        if queue.hedged:
            log.info("%s: %d stalled batch(es) hedged on idle peers", kind, queue.hedged)
        return results

    @staticmethod
    def _assemble(model: str, parts: list[tuple[int, int]],
                  results: list[tuple[EmbedReply, str] | None]) -> EmbedOutcome:
        blocks: list[np.ndarray] = []
        tokens: list[int] = []
        truncated: list[int] = []
        served: list[str] = []
        shas: set[str] = set()
        for (start, _), item in zip(parts, results, strict=True):
            assert item is not None
            reply, served_by = item
            blocks.append(reply.vectors)
            tokens.extend(reply.token_counts)
            truncated.extend(start + i for i in reply.truncated)
            served.append(served_by)
            shas.add(reply.sha256)
        if len(shas) != 1:  # routing only picks one sha256; a peer that swapped models lies
            raise JobError("peers answered with different model files", code=ErrorCode.INTERNAL)
        if len({block.shape[1] for block in blocks}) != 1:
            raise JobError("peers answered with vectors of different widths",
                           code=ErrorCode.INTERNAL)
        return EmbedOutcome(model, shas.pop(), np.concatenate(blocks), tokens, truncated, served)

    async def generate(self, params: dict[str, Any], *, timeout: float = 300.0,
                       deadline: float | None = None,
                       on_text: Callable[[str], Awaitable[None]] | None = None
                       ) -> dict[str, Any]:
        """Generate by ``deadline`` (trio time; else ``timeout`` seconds from now).

        Candidates are taken soonest-finishing first (:func:`soonest_first`). Before any text
        has streamed, a failed peer is replaced once (a plain retry). After,
        a peer that dies, fails or sends nothing for ``generate_stall_timeout`` seconds is
        replaced by the next candidate (same model sha256), which replays the tokens received
        so far and goes on (``generate_resume.py``), at most ``MAX_RESUMES`` times; the
        caller's stream goes on as if nothing happened, and the reply lists the switches in
        ``resumed``."""
        deadline = trio.current_time() + timeout if deadline is None else deadline
        model = str(params.get("model"))
        ranked = self.candidates("generate", model)
        # the peer that would finish one more generation soonest: its jobs in flight over its
        # advertised tokens/s (a 5x slower peer gets a sixth of concurrent generations, not half)
        order = soonest_first(ranked, self.advertised_rates("generate", model, ranked),
                              lambda c: c.peer_id, load=lambda c: c.load)
        asked = GenerateParams.from_wire(dict(params))
        book = ResumeBook(max_tokens=asked.max_tokens)
        # a resumable request streams from its peer even for a whole reply: the pieces
        # carry the token ids a resume needs
        wire = dict(params, stream=on_text is not None or resumable_request(asked))
        attempt_wire, retried = wire, False
        last: JobError | None = None
        while order:
            candidate = order.pop(0)
            remaining = deadline - trio.current_time()
            if remaining <= 0:
                break
            try:
                reply, served_by = await self._generate_on(
                    candidate, attempt_wire, book, deadline,
                    first_wait=remaining / 2 if order else remaining, on_text=on_text)
                return dict(book.finish(reply).to_wire(), served_by=served_by)
            except JobError as exc:
                last = exc
                resuming = "resume_tokens" in attempt_wire  # an old peer may refuse those
                if exc.code not in RETRYABLE and not (resuming and
                                                      exc.code == ErrorCode.BAD_REQUEST):
                    raise
                if not order:
                    raise
                if book.can_resume():
                    attempt_wire = book.switch(candidate.peer_id, order[0].peer_id, wire)
                    self.node.metrics.generation_resumed()
                    log.warning("generate on %s failed after %d tokens (%s: %s); resuming on "
                                "%s", candidate.peer_id, len(book.tokens), exc.code.value,
                                exc.message, order[0].peer_id)
                    continue
                if book.streamed or retried:
                    raise
                retried = True
                self.node.metrics.job_retried("generate")
                log.warning("generate on %s failed (%s); trying another peer",
                            candidate.peer_id, exc.code.value)
        raise last or JobError("generate ran out of time before any peer answered",
                               code=ErrorCode.DEADLINE_EXCEEDED)

    async def _generate_on(
        self, candidate: Candidate, wire: dict[str, Any], book: ResumeBook, deadline: float,
        *, first_wait: float, on_text: Callable[[str], Awaitable[None]] | None,
    ) -> tuple[GenerateReply, str]:
        """One attempt of a generation on ``candidate``: its first piece within
        ``first_wait`` seconds, each next one within the stall timeout (the clock stops
        while a piece is passed on to the caller), its reply by ``deadline``. A stall, like
        a piece or reply that fails its typed view, is a retryable ``JobError``."""
        stall = self.node.config.generate_stall_timeout
        peer = candidate.peer_id
        with trio.CancelScope(deadline=trio.current_time() + first_wait) as watch:

            async def on_chunk(data: dict[str, Any]) -> None:
                try:
                    chunk = GenerateChunk.from_wire(data)
                except ProtocolError as exc:
                    self.node.server.rejections.reject("bad_reply", peer,
                                                       f"generate chunk: {exc.message}")
                    raise JobError(f"{peer} sent an invalid generate chunk: {exc.message}",
                                   code=ErrorCode.INTERNAL) from None
                watch.deadline = math.inf
                text = book.received(chunk)
                if text and on_text is not None:
                    await on_text(text)
                watch.deadline = trio.current_time() + stall

            with self.node_sent(peer):  # counted as load: concurrent generations spread
                reply, result = await self.node.client.call_parsed(
                    peer, "generate", wire, GenerateReply.parser_for(wire),
                    timeout=deadline - trio.current_time(), on_chunk=on_chunk)
            if reply.sha256 != candidate.sha256:  # routing picked one file; the peer swapped it
                raise JobError(f"{peer} answered with another model file than it offers",
                               code=ErrorCode.INTERNAL)
            return reply, result.served_by
        what = "its first piece" if not book.pieces else "a piece"
        raise JobError(f"generate on {peer} stalled: no {what} in time",
                       code=ErrorCode.DEADLINE_EXCEEDED)
