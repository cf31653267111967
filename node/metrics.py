"""Prometheus metrics of one node: :class:`NodeMetrics`, with a ``CollectorRegistry`` of its
own (never prometheus_client's process-wide default: node-tier tests run several nodes in one
process, and each must count only its own work). ``GET /metrics`` renders it (token needed).

Two kinds of numbers, so nothing is counted twice:

- **counted where the work happens**: each a Counter or Histogram below, recorded by one call
  in the job server and client, the dispatcher, the model services, search, ingest,
  membership and the framed streams;
- **read from the node's state when scraped**: :class:`StateCollector` turns a
  :class:`NodeState` snapshot, which the daemon builds from its parts on the event loop at
  scrape time (the text itself is rendered in a worker thread), into metric families
  (peers by state, queues, replicas, refused input, readiness). Replica sizes need the
  disk: :func:`measure_replicas` reads them in the stores' worker threads, at most every
  ``ShardSizes.max_age`` seconds, so a scrape never does disk I/O on the event loop.

Counted where the work happens (name, type, labels: meaning):

- ``calinode_jobs_total`` counter (kind, hop, outcome): jobs this node's server ran, hop
  ``local`` (its own calls) or ``remote`` (a peer's), outcome ``served`` or ``failed``;
- ``calinode_job_failures_total`` counter (kind, code): those that failed, by error code
  (a job refused before its request was read counts under kind ``other``);
- ``calinode_job_retries_total`` counter (kind): jobs sent again to another peer after a
  retryable failure (embed, generate, shard.search, shard.fetch);
- ``calinode_job_hedges_total`` counter (kind): shard.search requests sent to further
  holders because a search round was slow;
- ``calinode_generations_resumed_total`` counter: generations this node relayed that moved
  to another peer mid-stream because the serving one died or stalled (issue 14);
- ``calinode_job_duration_seconds`` histogram (kind, hop): jobs this node sent, to itself
  (local) or a peer (remote), from sending to the reply, answered or not;
- ``calinode_embed_texts_total`` counter (model): texts embedded by this node's own models
  (ingest's chunks included);
- ``calinode_generate_tokens_total`` counter (model, type): tokens of this node's own
  generations, type ``prompt`` or ``completion``;
- ``calinode_membership_round_trip_seconds`` histogram: answered peer exchanges
  (heartbeats) this node started, dial included;
- ``calinode_membership_exchanges_total`` counter (outcome): those exchanges, ``answered``
  or ``failed``;
- ``calinode_p2p_bytes_total`` counter (protocol, direction): framed bytes read (``in``) and
  written (``out``) on calinode's protocols;
- ``calinode_searches_total`` counter: searches this node coordinated (one request of n
  queries counts 1; an ask's retrieval is one);
- ``calinode_search_partial_answers_total`` counter: those answered without some shard;
- ``calinode_ingest_documents_total`` counter (outcome): documents of ingests this node
  coordinated, ``acknowledged`` (on the write quorum) or ``failed``;
- ``calinode_blob_chunks_total`` counter (outcome): model blob chunks this node ``served``,
  ``fetched`` (verified on arrival) or refused as ``corrupt`` (``node/blobs/``).

Read from the node's state at scrape time:

- ``calinode_peers`` gauge (state): ``alive``, ``dead`` (known, silent), ``candidate``
  (relayed by a peer, not met yet);
- ``calinode_queue_depth`` / ``calinode_in_flight`` gauges (resource, model): requests
  waiting for / being worked on by the ``embedder`` and ``generator`` of each model, the
  ``shard_stores`` (worker threads) and the ``job_server`` (admitted jobs);
- ``calinode_rejected_input_total`` counter (reason): refused peer input, as counted by
  ``node/rejections.py`` (every reason, zeros included);
- ``calinode_shard_replicas`` gauge (collection, state): replicas held, ``ready`` (served)
  or ``not_ready`` (pulling, recovering, given up);
- ``calinode_shard_documents``, ``calinode_shard_chunks``, ``calinode_shard_bytes`` gauges
  (collection): live documents, live chunks and bytes on disk of the replicas held (measured
  at most every 5 s);
- ``calinode_replica_sync_lag_seconds`` gauge (collection): seconds since this node's
  replica of the collection that is furthest behind last matched every live holder;
- ``calinode_model_info`` gauge (kind, model, sha256): 1 per model this node serves;
- ``calinode_ready`` gauge: 1 when ``/readyz`` answers 200;
- ``calinode_info`` gauge (version, peer_id): 1; ``calinode_uptime_seconds`` gauge.

Labels stay bounded; no label value comes from a peer unchecked:

- ``kind``: :data:`JOB_KINDS`, anything else ``other``; ``hop``: local, remote;
  ``outcome``, ``state``, ``direction``, ``type``: the closed sets above;
- ``code``: the ``ErrorCode`` enum (``protocol/errors.py``);
- ``reason``: ``node/rejections.py`` ``REASONS``;
- ``model``, ``sha256``: models this node loaded (those it was started with);
- ``protocol``: calinode's protocol ids (``protocol/ids.py``: job, meta);
- ``resource``: embedder, generator, shard_stores, job_server;
- ``collection``: collections this node holds replicas of, at most ``MAX_COLLECTIONS``
  (the collection book's cap, ``protocol/capabilities.py``);
- ``peer_id``: this node's own id only (never a peer's).
"""

from __future__ import annotations

import functools
import math
import os
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol, TypeVar

import trio
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    Metric,
)

from calinode.protocol.collections import CollectionDef
from calinode.protocol.errors import ErrorCode
from calinode.protocol.ids import JOB_PROTOCOL, META_PROTOCOL

__all__ = ["JOB_KINDS", "ByteMeter", "NodeMetrics", "NodeState", "ResourceLoad",
           "ShardSizes", "StateCollector", "job_kind", "measure_replicas"]

T = TypeVar("T")

#: Every job kind calinode defines (label values of ``kind``; anything else is ``other``).
JOB_KINDS = ("ping", "echo", "embed", "embed_chunks", "generate", "shard.write",
             "shard.write_many", "shard.search", "shard.fetch", "shard.changes", "shard.info")
OTHER_KIND = "other"
HOPS = ("local", "remote")
PROTOCOLS = (JOB_PROTOCOL, META_PROTOCOL)
PEER_STATES = ("alive", "dead", "candidate")

#: Job latency buckets (s): a ping on loopback (ms) to a long generation (minutes).
JOB_BUCKETS = (0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
               60.0, 120.0, 300.0)
#: Peer exchange round trips (s): loopback to a slow WAN link.
RTT_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


def job_kind(kind: str) -> str:
    """``kind`` as a label value: a known job kind, else ``other`` (a peer or an API caller
    may name any kind; label values stay a closed set)."""
    return kind if kind in JOB_KINDS else OTHER_KIND


class ByteMeter:
    """Counts the bytes of one protocol's framed streams (``FramedStream(meter=...)``)."""

    def __init__(self, received: Counter, sent: Counter) -> None:
        self._received = received
        self._sent = sent

    def received(self, size: int) -> None:
        self._received.inc(size)

    def sent(self, size: int) -> None:
        self._sent.inc(size)


class NodeMetrics:
    """The metrics of one node (see the module docstring for the list and the labels)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.jobs = Counter("calinode_jobs", "Jobs this node's server ran, by kind, hop "
                            "(local: its own calls; remote: a peer's) and outcome",
                            ["kind", "hop", "outcome"], registry=r)
        self.job_failures = Counter("calinode_job_failures", "Jobs this node's server failed, "
                                    "by error code", ["kind", "code"], registry=r)
        self.job_retries = Counter("calinode_job_retries", "Jobs sent again to another peer "
                                   "after a retryable failure", ["kind"], registry=r)
        self.generations_resumed = Counter(
            "calinode_generations_resumed", "Generations this node relayed that moved to "
            "another peer mid-stream (the serving one died or stalled)", registry=r)
        self.job_hedges = Counter("calinode_job_hedges", "Extra requests sent because the "
                                  "first ones were slow (hedging)", ["kind"], registry=r)
        self.job_seconds = Histogram("calinode_job_duration_seconds", "Jobs this node sent, "
                                     "from sending to the reply, by kind and hop",
                                     ["kind", "hop"], buckets=JOB_BUCKETS, registry=r)
        self.embed_texts = Counter("calinode_embed_texts", "Texts embedded by this node's "
                                   "own models", ["model"], registry=r)
        self.generate_tokens = Counter("calinode_generate_tokens", "Tokens of this node's "
                                       "generations (prompt, completion)", ["model", "type"],
                                       registry=r)
        self.exchange_seconds = Histogram("calinode_membership_round_trip_seconds",
                                          "Answered peer exchanges (heartbeats), send to reply",
                                          buckets=RTT_BUCKETS, registry=r)
        self.exchanges = Counter("calinode_membership_exchanges", "Peer exchanges this node "
                                 "started, answered or failed", ["outcome"], registry=r)
        self.p2p_bytes = Counter("calinode_p2p_bytes", "Framed bytes on calinode's protocols",
                                 ["protocol", "direction"], registry=r)
        self.blob_chunks = Counter("calinode_blob_chunks", "Model blob chunks this node "
                                   "served, fetched (verified) or refused as corrupt",
                                   ["outcome"], registry=r)
        self.searches = Counter("calinode_searches", "Searches this node coordinated",
                                registry=r)
        self.search_partial = Counter("calinode_search_partial_answers", "Searches answered "
                                      "without some shard (partial)", registry=r)
        self.ingest_docs = Counter("calinode_ingest_documents", "Documents of ingests this "
                                   "node coordinated, acknowledged or failed", ["outcome"],
                                   registry=r)
        for kind in JOB_KINDS:  # every series exists from the start (rate() needs a zero)
            for hop in HOPS:
                for outcome in ("served", "failed"):
                    self.jobs.labels(kind, hop, outcome)
        for outcome in ("answered", "failed"):
            self.exchanges.labels(outcome)
        for outcome in ("acknowledged", "failed"):
            self.ingest_docs.labels(outcome)
        for outcome in ("served", "fetched", "corrupt"):
            self.blob_chunks.labels(outcome)
        self._meters = {protocol: ByteMeter(self.p2p_bytes.labels(protocol, "in"),
                                            self.p2p_bytes.labels(protocol, "out"))
                        for protocol in PROTOCOLS}

    # -- recording (one call where the work happens) ---------------------------------------

    def job_done(self, kind: str, *, local: bool, code: ErrorCode | None = None) -> None:
        """One job this node's server ran: served (``code`` None) or failed with ``code``."""
        kind = job_kind(kind)
        self.jobs.labels(kind, HOPS[not local], "served" if code is None else "failed").inc()
        if code is not None:
            self.job_failures.labels(kind, code.value).inc()

    def job_sent(self, kind: str, *, local: bool, seconds: float) -> None:
        """One job this node sent, answered or not, and how long it took."""
        self.job_seconds.labels(job_kind(kind), HOPS[not local]).observe(seconds)

    def job_retried(self, kind: str) -> None:
        self.job_retries.labels(job_kind(kind)).inc()

    def generation_resumed(self) -> None:
        self.generations_resumed.inc()

    def job_hedged(self, kind: str, count: int = 1) -> None:
        self.job_hedges.labels(job_kind(kind)).inc(count)

    def texts_embedded(self, model: str, count: int) -> None:
        self.embed_texts.labels(model).inc(count)

    def tokens_generated(self, model: str, *, prompt: int, completion: int) -> None:
        self.generate_tokens.labels(model, "prompt").inc(max(0, prompt))
        self.generate_tokens.labels(model, "completion").inc(max(0, completion))

    def exchange(self, rtt_seconds: float | None) -> None:
        """One peer exchange this node started: its round trip, or None when it failed."""
        self.exchanges.labels("failed" if rtt_seconds is None else "answered").inc()
        if rtt_seconds is not None:
            self.exchange_seconds.observe(rtt_seconds)

    def traffic(self, protocol: str) -> ByteMeter:
        """The byte meter of one of calinode's protocols (``PROTOCOLS``)."""
        return self._meters[protocol]

    def search_answered(self, *, partial: bool) -> None:
        self.searches.inc()
        if partial:
            self.search_partial.inc()

    def ingested(self, *, acknowledged: int, failed: int) -> None:
        self.ingest_docs.labels("acknowledged").inc(acknowledged)
        self.ingest_docs.labels("failed").inc(failed)

    # -- the scrape --------------------------------------------------------------------------

    def render(self, state: NodeState | None = None) -> bytes:
        """The Prometheus text of the counters above, then of ``state`` (the node's state,
        read on the event loop when scraped). Thread-safe: the daemon renders in a worker
        thread (a few hundred series take milliseconds), never on the event loop."""
        text = generate_latest(self.registry)
        if state is not None:
            snapshot = CollectorRegistry(auto_describe=False)
            snapshot.register(StateCollector(lambda: state))
            text += generate_latest(snapshot)
        return text


# -- the state read at scrape time ----------------------------------------------------------


@dataclass(frozen=True)
class ResourceLoad:
    """One resource's queue: requests waiting and requests being worked on."""

    resource: str  # embedder | generator | shard_stores | job_server
    model: str  # the model's name; "" for the shard stores and the job server
    queued: int
    in_flight: int


@dataclass(frozen=True)
class ReplicaSize:
    docs: int
    chunks: int
    bytes: int


@dataclass
class ShardSizes:
    """Sizes of the replicas held, per collection, as last measured (see measure_replicas)."""

    max_age: float = 5.0
    per_collection: dict[str, ReplicaSize] = field(default_factory=dict)
    measured_at: float = -math.inf

    def due(self, now: float) -> bool:
        return now - self.measured_at >= self.max_age


@dataclass(frozen=True)
class NodeState:
    """What the node is, read from its parts when scraped (the daemon builds it)."""

    peer_id: str
    version: str
    uptime_s: float
    ready: bool
    peers: Mapping[str, int]  # PEER_STATES -> count
    rejected: Mapping[str, int]  # reason -> count (every reason, zeros included)
    resources: Sequence[ResourceLoad]
    models: Sequence[tuple[str, str, str]]  # (kind, name, sha256)
    replicas: Mapping[str, tuple[int, int]]  # collection -> (ready, not ready)
    sizes: Mapping[str, ReplicaSize]  # collection -> sizes (as last measured)
    sync_lag: Mapping[str, float]  # collection -> seconds


class StateCollector:
    """A prometheus_client collector reading :class:`NodeState` at every scrape."""

    def __init__(self, state: Callable[[], NodeState]) -> None:
        self.state = state

    def describe(self) -> Iterable[Metric]:
        return ()  # names are not checked against the counters' (none overlap)

    def collect(self) -> Iterator[Metric]:
        yield from state_families(self.state())


def state_families(state: NodeState) -> list[Metric]:
    """The metric families of one snapshot (pure: unit tests call it directly)."""
    info = GaugeMetricFamily("calinode_info", "This node", labels=["version", "peer_id"])
    info.add_metric([state.version, state.peer_id], 1)
    uptime = GaugeMetricFamily("calinode_uptime_seconds", "Seconds since the node started",
                               value=state.uptime_s)
    ready = GaugeMetricFamily("calinode_ready", "1 when /readyz answers 200",
                              value=1 if state.ready else 0)
    peers = GaugeMetricFamily("calinode_peers", "Peers by state", labels=["state"])
    for name in PEER_STATES:
        peers.add_metric([name], state.peers.get(name, 0))
    rejected = CounterMetricFamily("calinode_rejected_input", "Peer input refused, by reason",
                                   labels=["reason"])
    for reason, count in sorted(state.rejected.items()):
        rejected.add_metric([reason], count)
    queued = GaugeMetricFamily("calinode_queue_depth", "Requests waiting for a resource",
                               labels=["resource", "model"])
    working = GaugeMetricFamily("calinode_in_flight", "Requests a resource is working on",
                                labels=["resource", "model"])
    for load in state.resources:
        queued.add_metric([load.resource, load.model], load.queued)
        working.add_metric([load.resource, load.model], load.in_flight)
    models = GaugeMetricFamily("calinode_model_info", "Models this node serves",
                               labels=["kind", "model", "sha256"])
    for kind, name, sha256 in state.models:
        models.add_metric([kind, name, sha256], 1)
    replicas = GaugeMetricFamily("calinode_shard_replicas", "Shard replicas held",
                                 labels=["collection", "state"])
    for collection, (ready_count, not_ready) in sorted(state.replicas.items()):
        replicas.add_metric([collection, "ready"], ready_count)
        replicas.add_metric([collection, "not_ready"], not_ready)
    docs = GaugeMetricFamily("calinode_shard_documents", "Live documents in the replicas held",
                             labels=["collection"])
    chunks = GaugeMetricFamily("calinode_shard_chunks", "Live chunks in the replicas held",
                               labels=["collection"])
    size = GaugeMetricFamily("calinode_shard_bytes", "Bytes on disk of the replicas held",
                             labels=["collection"])
    for collection, sizes in sorted(state.sizes.items()):
        docs.add_metric([collection], sizes.docs)
        chunks.add_metric([collection], sizes.chunks)
        size.add_metric([collection], sizes.bytes)
    lag = GaugeMetricFamily("calinode_replica_sync_lag_seconds", "Seconds since the oldest "
                            "replica here last matched every live holder",
                            labels=["collection"])
    for collection, seconds in sorted(state.sync_lag.items()):
        lag.add_metric([collection], seconds)
    return [info, uptime, ready, peers, rejected, queued, working, models, replicas, docs,
            chunks, size, lag]


# -- replica sizes (disk, read in worker threads) -------------------------------------------


class _Store(Protocol):
    def count(self) -> tuple[int, int]: ...


class _Replicas(Protocol):
    """What :func:`measure_replicas` reads of the node's ``LocalIndex``."""

    def held(self, *, ready_only: bool = True) -> dict[str, dict[int, str]]: ...

    def folder(self, collection: str, shard: int) -> Path: ...

    async def call(self, definition: CollectionDef, shard: int, fn: Callable[[_Store], T], *,
                   writes: bool = False) -> T: ...


class _Definitions(Protocol):
    def get(self, name: str, *, include_dropped: bool = False) -> CollectionDef: ...


def folder_bytes(folder: Path) -> int:
    """Bytes of the files under ``folder`` (a replica: SQLite and its WAL, markers)."""
    total = 0
    for root, _, files in os.walk(folder):
        for name in files:
            try:
                total += os.stat(os.path.join(root, name)).st_size
            except OSError:  # a file removed meanwhile (a checkpointed WAL)
                continue
    return total


def _replica_size(store: _Store, *, folder: Path) -> tuple[tuple[int, int], int]:
    """(documents, chunks) and bytes on disk of one replica (blocking: a worker thread)."""
    return store.count(), folder_bytes(folder)


async def measure_replicas(index: _Replicas, book: _Definitions, sizes: ShardSizes, *,
                           budget: float = 2.0) -> None:
    """Measure every replica held (documents, chunks, bytes) into ``sizes`` when the last
    measure is older than ``sizes.max_age``: each in the store's worker thread under its lock
    (``LocalIndex.call``), all within ``budget`` seconds (a replica busy with a long write
    keeps its collection's last figures)."""
    now = trio.current_time()
    if not sizes.due(now):
        return
    sizes.measured_at = now
    found: dict[str, ReplicaSize] = {}
    with trio.move_on_after(budget) as scope:
        for collection, shards in index.held(ready_only=False).items():
            docs = chunks = size = 0
            for shard in shards:
                folder = index.folder(collection, shard)
                try:
                    definition = book.get(collection, include_dropped=True)
                    (d, c), b = await index.call(
                        definition, shard, functools.partial(_replica_size, folder=folder))
                except Exception:  # dropped meanwhile, closed, unreadable: not measured
                    continue
                docs, chunks, size = docs + d, chunks + c, size + b
            found[collection] = ReplicaSize(docs, chunks, size)
    if scope.cancelled_caught:  # keep the previous figures of what was not measured
        found = {**sizes.per_collection, **found}
    sizes.per_collection = found
