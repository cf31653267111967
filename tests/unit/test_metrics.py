"""node/metrics.py and node/readiness.py: the pure parts (no network, no daemon).

Every figure is read back through prometheus_client's own parser of the text a scrape
returns, as Prometheus would read it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import trio
from prometheus_client.parser import text_string_to_metric_families

from calinode.node.index.collections import CollectionBook
from calinode.node.index.replicas import LocalIndex
from calinode.node.index.shard_jobs import register_index_jobs
from calinode.node.inference.jobs import register_inference_jobs
from calinode.node.inference.services import LocalModels
from calinode.node.jobs.builtin import register_builtin_jobs
from calinode.node.jobs.server import JobContext, JobRegistry, JobServer
from calinode.node.metrics import (
    JOB_KINDS,
    NodeMetrics,
    NodeState,
    ReplicaSize,
    ResourceLoad,
    ShardSizes,
    job_kind,
    measure_replicas,
)
from calinode.node.readiness import readiness
from calinode.node.rejections import REASONS
from calinode.protocol.collections import CollectionDef
from calinode.protocol.errors import ErrorCode, JobError
from calinode.protocol.ids import JOB_PROTOCOL, META_PROTOCOL
from calinode.protocol.messages import JobRequest

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def scrape(metrics: NodeMetrics, snapshot: NodeState | None = None) -> Samples:
    """Every sample of a scrape, parsed by prometheus_client: (name, sorted labels) -> value."""
    found: Samples = {}
    for family in text_string_to_metric_families(metrics.render(snapshot).decode()):
        for sample in family.samples:
            found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def state(**overrides: Any) -> NodeState:
    base: dict[str, Any] = dict(
        peer_id="12D3KooWself", version="0.1.0", uptime_s=12.5, ready=False,
        peers={"alive": 2, "dead": 1, "candidate": 4},
        rejected={reason: 0 for reason in REASONS} | {"bad_frame": 3},
        resources=[ResourceLoad("embedder", "minilm-l6-int8", 5, 1),
                   ResourceLoad("shard_stores", "", 0, 2)],
        models=[("embed", "minilm-l6-int8", "ab" * 32)],
        replicas={"papers": (3, 1)},
        sizes={"papers": ReplicaSize(docs=40, chunks=90, bytes=123456)},
        sync_lag={"papers": 7.5})
    base.update(overrides)
    return NodeState(**base)


# -- registries and labels ------------------------------------------------------------------


def test_each_node_counts_in_its_own_registry() -> None:
    """Node-tier tests run several nodes in one process: one node's work never shows in
    another's scrape (no global default registry)."""
    first, second = NodeMetrics(), NodeMetrics()
    first.texts_embedded("minilm-l6-int8", 7)
    first.job_done("embed", local=False)
    assert value(scrape(first), "calinode_embed_texts_total", model="minilm-l6-int8") == 7
    assert value(scrape(second), "calinode_embed_texts_total", model="minilm-l6-int8") == 0
    assert value(scrape(first), "calinode_jobs_total", kind="embed", hop="remote",
                 outcome="served") == 1
    assert value(scrape(second), "calinode_jobs_total", kind="embed", hop="remote",
                 outcome="served") == 0


def test_a_kind_outside_the_known_set_is_one_label_value() -> None:
    """A peer (or an API caller) may name any job kind: the label set stays closed."""
    metrics = NodeMetrics()
    for kind in ("x" * 10_000, "shard.search\n", "../../etc", "🙂"):
        metrics.job_done(kind, local=False, code=ErrorCode.UNKNOWN_KIND)
        metrics.job_sent(kind, local=False, seconds=0.01)
    samples = scrape(metrics)
    kinds = {dict(labels).get("kind") for (_, labels) in samples}
    assert kinds - {None} <= {*JOB_KINDS, "other"}
    assert value(samples, "calinode_job_failures_total", kind="other", code="UNKNOWN_KIND") == 4
    assert value(samples, "calinode_jobs_total", kind="other", hop="remote",
                 outcome="failed") == 4
    assert job_kind("generate") == "generate"


def test_the_known_kinds_are_exactly_the_kinds_a_node_registers(tmp_path: Path) -> None:
    """A new job kind must be added to JOB_KINDS, or its jobs would count as ``other``."""
    registry = JobRegistry()
    register_builtin_jobs(registry)
    register_inference_jobs(registry, LocalModels())
    register_index_jobs(registry, LocalIndex(tmp_path / "shards", CollectionBook(tmp_path)))
    assert sorted(registry.kinds()) == sorted(JOB_KINDS)


def test_every_series_of_jobs_exists_from_the_start() -> None:
    """rate() over a counter needs its zero: jobs, exchanges, ingest and bytes are there
    before anything happened."""
    samples = scrape(NodeMetrics())
    for kind in JOB_KINDS:
        assert ("calinode_jobs_total", (("hop", "local"), ("kind", kind),
                                        ("outcome", "served"))) in samples
    for protocol in (JOB_PROTOCOL, META_PROTOCOL):
        for direction in ("in", "out"):
            assert ("calinode_p2p_bytes_total", (("direction", direction),
                                                 ("protocol", protocol))) in samples
    assert value(samples, "calinode_ingest_documents_total", outcome="failed") == 0


# -- recording ------------------------------------------------------------------------------


def test_recorded_work_moves_exactly_its_counters() -> None:
    metrics = NodeMetrics()
    metrics.tokens_generated("smollm2-135m", prompt=12, completion=30)
    metrics.tokens_generated("smollm2-135m", prompt=3, completion=5)
    metrics.exchange(0.004)
    metrics.exchange(0.02)
    metrics.exchange(None)
    metrics.traffic(JOB_PROTOCOL).sent(100)
    metrics.traffic(JOB_PROTOCOL).received(40)
    metrics.traffic(META_PROTOCOL).received(7)
    metrics.search_answered(partial=False)
    metrics.search_answered(partial=True)
    metrics.ingested(acknowledged=9, failed=2)
    metrics.job_retried("embed")
    metrics.job_hedged("shard.search", 3)
    samples = scrape(metrics)
    assert value(samples, "calinode_generate_tokens_total", model="smollm2-135m",
                 type="completion") == 35
    assert value(samples, "calinode_generate_tokens_total", model="smollm2-135m",
                 type="prompt") == 15
    assert value(samples, "calinode_membership_exchanges_total", outcome="answered") == 2
    assert value(samples, "calinode_membership_exchanges_total", outcome="failed") == 1
    assert value(samples, "calinode_membership_round_trip_seconds_count") == 2
    assert value(samples, "calinode_membership_round_trip_seconds_bucket", le="0.005") == 1
    assert value(samples, "calinode_p2p_bytes_total", protocol=JOB_PROTOCOL,
                 direction="out") == 100
    assert value(samples, "calinode_p2p_bytes_total", protocol=JOB_PROTOCOL,
                 direction="in") == 40
    assert value(samples, "calinode_p2p_bytes_total", protocol=META_PROTOCOL,
                 direction="in") == 7
    assert value(samples, "calinode_searches_total") == 2
    assert value(samples, "calinode_search_partial_answers_total") == 1
    assert value(samples, "calinode_ingest_documents_total", outcome="acknowledged") == 9
    assert value(samples, "calinode_ingest_documents_total", outcome="failed") == 2
    assert value(samples, "calinode_job_retries_total", kind="embed") == 1
    assert value(samples, "calinode_job_hedges_total", kind="shard.search") == 3


async def test_the_job_server_counts_served_and_failed_jobs_by_kind_and_code() -> None:
    """What the server ran, through its real code path (a local call: hop ``local``)."""
    async def fails(ctx: JobContext, params: dict[str, Any]) -> dict[str, Any]:
        raise JobError("no such thing here", code=ErrorCode.UNKNOWN_MODEL)

    async def ignore(_: dict[str, Any]) -> None:
        return None

    registry = JobRegistry()
    register_builtin_jobs(registry)
    registry.register("embed", fails)
    metrics = NodeMetrics()
    server = JobServer(registry, peer_id="self", max_total=4, max_per_peer=4, metrics=metrics)
    for n in range(3):
        await server.execute(JobRequest(id=f"p{n}", kind="ping", deadline_ms=5000, params={}),
                             "self", ignore)
    with pytest.raises(JobError):
        await server.execute(JobRequest(id="e", kind="embed", deadline_ms=5000, params={}),
                             "self", ignore)
    samples = scrape(metrics)
    assert value(samples, "calinode_jobs_total", kind="ping", hop="local",
                 outcome="served") == 3
    assert value(samples, "calinode_jobs_total", kind="embed", hop="local",
                 outcome="failed") == 1
    assert value(samples, "calinode_job_failures_total", kind="embed",
                 code="UNKNOWN_MODEL") == 1
    assert value(samples, "calinode_jobs_total", kind="ping", hop="remote",
                 outcome="served") == 0


# -- state read at scrape time --------------------------------------------------------------


def test_the_node_state_is_rendered_after_the_counters() -> None:
    metrics = NodeMetrics()
    metrics.search_answered(partial=False)
    samples = scrape(metrics, state())
    assert value(samples, "calinode_searches_total") == 1
    assert value(samples, "calinode_peers", state="alive") == 2
    assert value(samples, "calinode_peers", state="dead") == 1
    assert value(samples, "calinode_peers", state="candidate") == 4
    for reason in REASONS:  # every reason, zeros included
        assert (("calinode_rejected_input_total", (("reason", reason),)) in samples)
    assert value(samples, "calinode_rejected_input_total", reason="bad_frame") == 3
    assert value(samples, "calinode_queue_depth", resource="embedder",
                 model="minilm-l6-int8") == 5
    assert value(samples, "calinode_in_flight", resource="shard_stores", model="") == 2
    assert value(samples, "calinode_shard_replicas", collection="papers", state="ready") == 3
    assert value(samples, "calinode_shard_replicas", collection="papers",
                 state="not_ready") == 1
    assert value(samples, "calinode_shard_documents", collection="papers") == 40
    assert value(samples, "calinode_shard_chunks", collection="papers") == 90
    assert value(samples, "calinode_shard_bytes", collection="papers") == 123456
    assert value(samples, "calinode_replica_sync_lag_seconds", collection="papers") == 7.5
    assert value(samples, "calinode_model_info", kind="embed", model="minilm-l6-int8",
                 sha256="ab" * 32) == 1
    assert value(samples, "calinode_info", version="0.1.0", peer_id="12D3KooWself") == 1
    assert value(samples, "calinode_ready") == 0
    samples = scrape(metrics, state(ready=True, peers={"alive": 3}))  # each scrape its own
    assert value(samples, "calinode_ready") == 1
    assert value(samples, "calinode_peers", state="alive") == 3
    assert value(samples, "calinode_peers", state="dead") == 0


class FakeStore:
    def __init__(self, docs: int, chunks: int) -> None:
        self.docs, self.chunks = docs, chunks

    def count(self) -> tuple[int, int]:
        return self.docs, self.chunks


class FakeReplicas:
    """``LocalIndex`` as measure_replicas reads it: held replicas, folders, store calls."""

    def __init__(self, root: Path, stores: dict[tuple[str, int], FakeStore]) -> None:
        self.root, self.stores, self.calls = root, stores, 0

    def held(self, *, ready_only: bool = True) -> dict[str, dict[int, str]]:
        held: dict[str, dict[int, str]] = {}
        for collection, shard in self.stores:
            held.setdefault(collection, {})[shard] = "d"
        return held

    def folder(self, collection: str, shard: int) -> Path:
        return self.root / collection / str(shard)

    async def call(self, definition: CollectionDef, shard: int, fn: Any, *,
                   writes: bool = False) -> Any:
        self.calls += 1
        return await trio.to_thread.run_sync(fn, self.stores[(definition.name, shard)])


class FakeBook:
    def get(self, name: str, *, include_dropped: bool = False) -> CollectionDef:
        return CollectionDef(name=name, model="m", model_sha256="a" * 64, dim=4, pooling="mean",
                             normalize=True, shards=2)


async def test_replica_sizes_are_measured_off_the_loop_and_at_most_every_max_age(
    tmp_path: Path,
) -> None:
    stores = {("papers", 0): FakeStore(3, 10), ("papers", 1): FakeStore(2, 5),
              ("notes", 0): FakeStore(1, 1)}
    for collection, shard in stores:
        folder = tmp_path / collection / str(shard)
        folder.mkdir(parents=True)
        (folder / "shard.sqlite").write_bytes(b"x" * (100 + shard))
    replicas, sizes = FakeReplicas(tmp_path, stores), ShardSizes(max_age=60.0)
    await measure_replicas(replicas, FakeBook(), sizes)
    assert sizes.per_collection == {"papers": ReplicaSize(5, 15, 201),
                                    "notes": ReplicaSize(1, 1, 100)}
    stores[("papers", 0)].docs = 99
    await measure_replicas(replicas, FakeBook(), sizes)  # within max_age: the cache
    assert replicas.calls == 3 and sizes.per_collection["papers"].docs == 5


# -- readiness ------------------------------------------------------------------------------


def ready_args(**overrides: Any) -> dict[str, Any]:
    args: dict[str, Any] = dict(wanted_models=["minilm-l6-int8", "smollm2-135m"],
                                loaded_models=["minilm-l6-int8", "smollm2-135m"], index=True,
                                membership_rounds=2, settled_sync_rounds=1, not_ready={})
    args.update(overrides)
    return args


def test_ready_when_models_are_loaded_and_replicas_synced() -> None:
    assert readiness(**ready_args()).to_wire() == {"ready": True, "reasons": []}
    # a node without an index waits for its models only
    assert readiness(**ready_args(index=False, membership_rounds=0, settled_sync_rounds=0,
                                  not_ready={"papers": [1]})).ready


@pytest.mark.parametrize(("overrides", "reason"), [
    ({"loaded_models": ["minilm-l6-int8"]}, "models not loaded yet: smollm2-135m"),
    ({"membership_rounds": 1}, "learning the swarm (1 of 2 heartbeat rounds done)"),
    ({"settled_sync_rounds": 0}, "replica sync has not completed a round"),
    ({"not_ready": {"papers": [0, 3]}}, "replicas not synced yet: papers/0, papers/3"),
])
def test_each_unmet_condition_is_one_reason(overrides: dict[str, Any], reason: str) -> None:
    verdict = readiness(**ready_args(**overrides))
    assert not verdict.ready
    assert len(verdict.reasons) == 1 and verdict.reasons[0].startswith(reason)


def test_a_long_list_of_unsynced_replicas_is_cut() -> None:
    verdict = readiness(**ready_args(not_ready={"papers": list(range(64))}))
    assert verdict.reasons[0].endswith("papers/7 and 56 more")
