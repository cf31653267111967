"""The daemon: one root nursery running the libp2p host, membership, the job server and the
local HTTP API. ``run_node(config)`` is what ``calinode start`` runs.

Start-up order: identity -> host (Noise only, optional PSK, allowlist gate) -> stream handlers
-> listen -> membership heartbeats -> optional mDNS -> HTTP API -> ``node.json`` in the home
and the ready-to-paste ``--bootstrap`` line. SIGINT/SIGTERM cancel the root nursery; the
node removes ``node.json`` on the way out.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import signal
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import trio
from libp2p.abc import IHost
from libp2p.custom_types import TProtocol
from libp2p.peer.id import ID
from multiaddr import Multiaddr

from calinode import node as _node_pkg
from calinode.models.registry import ModelRegistry
from calinode.node.access import AccessPolicy
from calinode.node.blobs.service import ModelTransfers
from calinode.node.blobs.startup import models_to_pull, pull_missing_models
from calinode.node.config import NodeConfig
from calinode.node.hlc import HybridClock
from calinode.node.home import (
    check_api_free,
    check_free,
    lock_home,
    make_private_home,
    resolve_swarm_key,
    unlock_home,
)
from calinode.node.identity import load_or_create_identity
from calinode.node.index.collections import CollectionBook
from calinode.node.index.replicas import LocalIndex
from calinode.node.index.shard_jobs import register_index_jobs
from calinode.node.inference.jobs import register_inference_jobs
from calinode.node.inference.services import LocalModels
from calinode.node.invite import decode_invite, encode_invite
from calinode.node.jobs.activity import JobActivity
from calinode.node.jobs.builtin import register_builtin_jobs
from calinode.node.jobs.client import JobClient, JobResult
from calinode.node.jobs.dispatch import Dispatcher
from calinode.node.jobs.server import JobRegistry, JobServer
from calinode.node.metrics import (
    NodeMetrics,
    NodeState,
    ResourceLoad,
    ShardSizes,
    measure_replicas,
)
from calinode.node.node_file import remove_node_file, write_node_file
from calinode.node.p2p.addresses import expand_wildcards, interface_ipv4_addresses
from calinode.node.p2p.host import GuardStats, PeerGate, PeerPolicy, build_host, guarded
from calinode.node.p2p.identity_conflict import IdentityConflicts, OwnIdWatch
from calinode.node.p2p.membership import Membership
from calinode.node.p2p.peer_table import PeerTable
from calinode.node.p2p.reachability import (
    HandshakeFailures,
    connection_facts,
    watch_inbound_handshakes,
)
from calinode.node.p2p.records import SEQ_FILE, RecordSigner
from calinode.node.private_files import load_or_create_api_token
from calinode.node.rag.coordinator import Coordinator
from calinode.node.readiness import Readiness, readiness
from calinode.node.rejections import REASONS, Rejections
from calinode.node.supervision import supervised
from calinode.protocol.blobs import BLOB_PROTOCOL
from calinode.protocol.capabilities import MAX_LINKS, Capabilities, ModelOffer
from calinode.protocol.errors import BadRequest, ConfigError, ErrorCode, JobError
from calinode.protocol.ids import JOB_PROTOCOL, META_PROTOCOL, PROTOCOL_VERSION
from calinode.protocol.messages import CapabilityRecord, Load

if TYPE_CHECKING:  # trio-typing (a py-libp2p dependency) shadows trio's own types
    from trio_typing import TaskStatus

log = logging.getLogger(__name__)

VERSION = _node_pkg.__version__


@dataclass
class Node:
    """A running node: what the HTTP API and the CLI ask questions of."""

    config: NodeConfig
    host: IHost
    peer_id: str
    signer: RecordSigner
    table: PeerTable
    registry: JobRegistry
    server: JobServer
    client: JobClient
    policy: PeerPolicy
    models: LocalModels = field(default_factory=LocalModels)
    book: CollectionBook = field(default_factory=lambda: CollectionBook(Path("/nonexistent")))
    index: LocalIndex | None = None
    membership: Membership | None = None
    rejections: Rejections = field(default_factory=Rejections)
    #: evidence of another node running with our identity (a copied home)
    identity: IdentityConflicts | None = None
    #: streams each guarded handler (ours and py-libp2p's) ran, refused, failed
    guard_stats: GuardStats = field(default_factory=GuardStats)
    #: inbound connections that failed their handshake (a peer with another swarm key)
    handshakes: HandshakeFailures | None = None
    addrs: tuple[str, ...] = ()
    api_url: str = ""
    api_token: str = ""
    swarm_key: str | None = None  # None: an open swarm
    access: AccessPolicy = field(default_factory=lambda: AccessPolicy("", private=True))
    clock: HybridClock = field(default_factory=HybridClock)
    swarm_mode: str = "open"
    bootstrap: tuple[str, ...] = ()
    started_at: float = 0.0
    #: Prometheus metrics (``GET /metrics``); the server, client and models record into it
    metrics: NodeMetrics = field(default_factory=NodeMetrics)
    #: replica sizes as last measured for ``/metrics`` (disk: read at most every 5 s)
    shard_sizes: ShardSizes = field(default_factory=ShardSizes)
    #: models served to peers and pulled from them (``node/blobs/``)
    transfers: ModelTransfers | None = None

    @property
    def model_registry(self) -> ModelRegistry:
        return ModelRegistry(self.config.home / "models")

    @functools.cached_property
    def dispatcher(self) -> Dispatcher:
        """The one dispatcher of this node (it counts the jobs in flight to each peer)."""
        return Dispatcher(self)

    @functools.cached_property
    def coordinator(self) -> Coordinator:
        """The one coordinator of this node (it keeps sync state between rounds)."""
        return Coordinator(self)

    def capabilities(self) -> Capabilities:
        """What this node advertises, as the same typed view peers parse its record into."""
        held = self.index.held() if self.index is not None else {}
        advertised = self.models.advertised()
        return Capabilities(
            jobs=tuple(self.registry.kinds()),
            embed=tuple(ModelOffer.from_wire(m, "embed") for m in advertised["embed"]),
            generate=tuple(ModelOffer.from_wire(m, "generate") for m in advertised["generate"]),
            index=self.index is not None, shards=held,
            # unsigned definitions (made before owners existed) stay local: peers refuse them
            collections=tuple(d for d in self.book.all() if d.signature),
            links=tuple(sorted(e.peer_id for e in self.table.alive()
                               if self.connected(e.peer_id)))[:MAX_LINKS])

    def queue_depth(self) -> int:
        return sum(s.queue_depth for s in self.models.generate.values())

    def load(self) -> Load:
        return Load(in_flight=self.server.in_flight, queue_depth=self.queue_depth())

    def own_record(self) -> CapabilityRecord:
        return self.signer.issue(addrs=self.addrs, capabilities=self.capabilities().to_wire(),
                                 load=self.load())

    # -- what the API serves ---------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        stats = self.server.statistics()
        return {
            "peer_id": self.peer_id,
            "addrs": list(self.addrs),
            "version": VERSION,
            "protocol_version": PROTOCOL_VERSION,
            "capabilities": self.capabilities().to_wire(),
            "load": {"in_flight": stats.in_flight, "queue_depth": self.queue_depth()},
            "jobs": {"served": stats.served, "failed": stats.failed,
                     "rejected_overloaded": stats.rejected_overloaded,
                     "bad_frames": stats.bad_frames},
            "peers": {"known": len(self.table), "alive": len(self.table.alive()),
                      "candidates": len(self.membership.candidates) if self.membership else 0},
            "rejected_input": self.rejections.snapshot(),
            "model_transfers": (self.transfers.statistics() if self.transfers is not None
                                else {}),
            "identity_conflict": (self.identity.snapshot() if self.identity is not None
                                  else {"seen": 0, "addrs": []}),
            "sync_failures": {f"{c}/{s}": why for (c, s), why
                              in sorted(self.coordinator.sync_failures.items())},
            "replicas_not_ready": self.index.not_ready() if self.index is not None else {},
            "api": self.api_url,
            "private_swarm": self.swarm_key is not None,
            "swarm": self.swarm_mode,
            "allowlist": sorted(self.policy.allow),
            "uptime_s": round(time.monotonic() - self.started_at, 1),
        }

    def readiness(self) -> Readiness:
        """``GET /readyz``: models loaded, replicas synced (``node/readiness.py``)."""
        config = self.config
        return readiness(
            wanted_models=() if config.no_models else (*config.embed_models, *config.gen_models),
            loaded_models=[*self.models.embed, *self.models.generate],
            index=self.index is not None,
            membership_rounds=self.membership.rounds if self.membership is not None else 0,
            settled_sync_rounds=self.coordinator.settled_sync_rounds,
            not_ready=self.index.not_ready() if self.index is not None else {},
            pulling=self.transfers.pulls.describe() if self.transfers is not None else ())

    def metrics_state(self) -> NodeState:
        """What ``/metrics`` reads of the node's state at each scrape (``node/metrics.py``)."""
        alive = len(self.table.alive())
        resources = [
            *(ResourceLoad("embedder", name, s.queue_depth, s.in_flight)
              for name, s in self.models.embed.items()),
            *(ResourceLoad("generator", name, s.queue_depth, s.in_flight)
              for name, s in self.models.generate.items()),
            ResourceLoad("job_server", "", 0, self.server.in_flight)]
        replicas: dict[str, tuple[int, int]] = {}
        if self.index is not None:
            stores = self.index.limiter.statistics()
            resources.append(ResourceLoad("shard_stores", "", stores.tasks_waiting,
                                          stores.borrowed_tokens))
            for collection, shards in self.index.held(ready_only=False).items():
                ready = sum(1 for shard in shards if self.index.is_ready(collection, shard))
                replicas[collection] = (ready, len(shards) - ready)
        return NodeState(
            peer_id=self.peer_id, version=VERSION,
            uptime_s=time.monotonic() - self.started_at, ready=self.readiness().ready,
            peers={"alive": alive, "dead": len(self.table) - alive,
                   "candidate": len(self.membership.candidates) if self.membership else 0},
            rejected={reason: self.rejections.counts.get(reason, 0) for reason in REASONS},
            resources=resources,
            models=[(kind, name, s.manifest.sha256) for kind, services
                    in (("embed", self.models.embed), ("generate", self.models.generate))
                    for name, s in services.items()],
            replicas=replicas,
            sizes={c: size for c, size in self.shard_sizes.per_collection.items()
                   if c in replicas},
            sync_lag=self.coordinator.sync_lag())

    async def scrape(self) -> bytes:
        """``GET /metrics``: replica sizes measured off the loop when due, the state read on
        the loop, the text rendered in a worker thread."""
        if self.index is not None:
            await measure_replicas(self.index, self.book, self.shard_sizes)
        return await trio.to_thread.run_sync(self.metrics.render, self.metrics_state())

    @property
    def activity(self) -> JobActivity:
        """Counters of the jobs this node ran, per kind (the dashboard's ``/v1/activity``)."""
        return self.server.activity

    def connected(self, peer_id: str) -> bool:
        """This node holds an open libp2p connection to ``peer_id`` now."""
        try:
            return bool(self.host.get_network().get_connections(ID.from_base58(peer_id)))
        except Exception:  # a malformed id in a record the table kept: not connected
            return False

    def peers(self) -> list[dict[str, Any]]:
        now = trio.current_time()
        rows: list[dict[str, Any]] = [{
            "peer_id": self.peer_id, "addrs": list(self.addrs), "self": True,
            "capabilities": self.capabilities().to_wire(),
            "load": {"in_flight": self.server.in_flight, "queue_depth": self.queue_depth()},
            "alive": True, "last_seen": 0.0, "version": VERSION, "rtt_ms": 0.0,
        }]
        for entry in self.table.entries():
            record = entry.record
            rows.append({
                "peer_id": record.peer_id, "addrs": list(record.addrs), "self": False,
                "capabilities": entry.caps.to_wire(),
                "load": {"in_flight": record.load.in_flight,
                         "queue_depth": record.load.queue_depth},
                "alive": entry.alive,
                "last_seen": None if entry.last_seen is None else round(now - entry.last_seen, 2),
                "version": record.version,
                "rtt_ms": None if entry.rtt_ms is None else round(entry.rtt_ms, 2),
                "connected": self.connected(record.peer_id),
            })
        return rows

    def network_facts(self) -> dict[str, Any]:
        """How peers reach this node (``calinode doctor``): connections by direction, the
        addresses peers observed for us, and the inbound handshakes that failed."""
        facts = connection_facts(self.host)
        facts["handshake_failures"] = (self.handshakes.snapshot() if self.handshakes is not None
                                       else {"failed": 0, "sources": {}, "last_s_ago": None})
        return facts

    def routable_addrs(self) -> list[str]:
        """Our addresses, the ones other machines can reach first."""
        return [a for a in self.addrs if "/ip4/127." not in a] + [
            a for a in self.addrs if "/ip4/127." in a]

    def invite(self) -> str:
        """The one paste that lets another machine join this private swarm."""
        assert self.swarm_key is not None
        return encode_invite(self.routable_addrs(), self.swarm_key)

    def _check_peer(self, peer_id: str) -> None:
        if peer_id == self.peer_id:
            return
        try:
            ID.from_base58(peer_id)
        except Exception:
            raise BadRequest(f"{peer_id!r} is not a peer id") from None
        if peer_id not in self.table:
            raise JobError(f"peer {peer_id} is not in this node's peer table "
                           "(see: calinode peers)", code=ErrorCode.UNKNOWN_PEER)

    async def run_job(self, peer_id: str, kind: str, params: dict[str, Any], *,
                      timeout: float) -> JobResult:
        self._check_peer(peer_id)
        return await self.client.call(peer_id, kind, params, timeout=timeout)

    async def ping(self, peer_id: str, *, count: int, timeout: float) -> dict[str, Any]:
        self._check_peer(peer_id)
        rtts: list[float] = []
        served_by = ""
        for _ in range(count):
            result = await self.client.call(peer_id, "ping", {}, timeout=timeout)
            rtts.append(round(result.elapsed_ms, 3))
            served_by = result.served_by
        return {"peer_id": peer_id, "served_by": served_by, "rtt_ms": rtts}


def shift_wall_clock_for_tests(seconds: float) -> None:
    """TEST ONLY (``calinode start --test-only-clock-offset SECONDS``, hidden from ``--help``):
    shift ``time.time``/``time.time_ns`` of this whole process by ``seconds``,
    as a machine with a wrong clock would have them (monotonic time is left alone, as it is on
    such a machine). Everything that reads the wall clock (record issue times, the ``ping``
    job's ``time_ms``, hybrid clocks) then runs ``seconds`` off."""
    if not seconds:
        return
    real_time, real_time_ns = time.time, time.time_ns
    time.time = lambda: real_time() + seconds
    time.time_ns = lambda: real_time_ns() + int(seconds * 1e9)
    log.warning("TEST ONLY: this node's wall clock runs %+.0f s off", seconds)


def _banner(node: Node) -> str:
    lines = [
        f"calinode {VERSION} ready: peer id {node.peer_id}",
        *(f"  listening on {addr}" for addr in node.addrs),
        f"  local API    {node.api_url}",
        f"  swarm        {node.swarm_mode}",
    ]
    if node.swarm_key is not None:
        lines += ["join this swarm from another machine with (a secret: it holds the swarm "
                  "key):", f"  calinode start --join {node.invite()}"]
    else:
        lines += ["join this swarm from another machine with:",
                  f"  calinode start --bootstrap {node.routable_addrs()[0]}"]
    return "\n".join(lines)


def ready_line(node: Node) -> str:
    """``calinode start --json``: the one JSON line printed once the node is ready."""
    return json.dumps({
        "ready": True, "peer_id": node.peer_id, "addrs": list(node.addrs),
        "api": node.api_url, "home": str(node.config.home), "swarm": node.swarm_mode,
        "version": VERSION,
        # the same secret the banner prints: the invite carries the swarm key
        "join": (f"calinode start --join {node.invite()}" if node.swarm_key is not None
                 else f"calinode start --bootstrap {node.routable_addrs()[0]}"),
    })


async def build_node(config: NodeConfig) -> Node:
    """The node's parts; its files (identity, swarm key, collections) are read off the loop."""
    key_pair = await trio.to_thread.run_sync(load_or_create_identity, config.home)
    invite = decode_invite(config.join) if config.join else None
    psk, swarm_mode = await trio.to_thread.run_sync(functools.partial(
        resolve_swarm_key, config.home, listen=config.listen, key_file=config.swarm_key,
        join_key=invite.key if invite else None, open_swarm=config.open_swarm))
    if config.open_swarm:
        log.warning("running an OPEN swarm (--open): anyone who reaches %s may join, run jobs "
                    "and see what this node advertises", ", ".join(config.listen))
    book = await trio.to_thread.run_sync(CollectionBook, config.home / "collections")
    policy = PeerPolicy.from_ids(config.allow)
    rejections, guard_stats = Rejections(), GuardStats()
    host = build_host(key_pair, psk=psk, policy=policy, stats=guard_stats, rejections=rejections)
    handshakes = HandshakeFailures(rejections)
    watch_inbound_handshakes(host, handshakes)
    signer = RecordSigner(key_pair, version=VERSION, protocol_version=PROTOCOL_VERSION)
    await signer.resume_from(config.home / SEQ_FILE)  # seqs continue above the last run's
    registry = JobRegistry()
    register_builtin_jobs(registry)
    metrics = NodeMetrics()
    models = LocalModels(metrics)
    register_inference_jobs(registry, models)
    # every peer that can connect is a member, unless the swarm was opened on purpose: a
    # keyless node on loopback only is reachable from this machine alone
    access = AccessPolicy(self_id=signer.peer_id, private=not config.open_swarm,
                          trusted=frozenset(config.trust))
    clock = HybridClock()
    index = LocalIndex(config.home / "shards", book) if config.index else None
    if index is not None:
        register_index_jobs(registry, index, access=access, clock=clock)
    server = JobServer(registry, peer_id=signer.peer_id, max_total=config.max_jobs,
                       max_per_peer=config.max_jobs_per_peer, rejections=rejections,
                       metrics=metrics)
    table = PeerTable(signer.peer_id, dead_after=config.dead_after, drop_after=config.drop_after)
    node = Node(config=config, host=host, peer_id=signer.peer_id, signer=signer, table=table,
                registry=registry, server=server, client=JobClient(host, server),
                policy=policy, models=models, book=book, index=index, rejections=rejections,
                guard_stats=guard_stats, handshakes=handshakes,
                identity=IdentityConflicts(signer, rejections),
                swarm_key=psk, swarm_mode=swarm_mode, access=access, clock=clock,
                bootstrap=(*config.bootstrap, *(invite.addrs if invite else ())),
                metrics=metrics)
    node.transfers = ModelTransfers(
        host, node.model_registry, table, rejections=rejections, metrics=metrics,
        max_transfers=config.blob_max_transfers, rate=config.blob_rate,
        corrupt_for_tests=config.test_only_corrupt_chunks)
    if config.test_only_corrupt_chunks:
        log.warning("TEST ONLY: this node serves every model chunk corrupted")
    return node


async def _serve_signals(cancel: trio.CancelScope) -> None:
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async for signum in signals:
            log.info("received %s, shutting down", signal.Signals(signum).name)
            cancel.cancel()
            return


def _progress(message: str) -> None:
    print(f"calinode: {message}", file=sys.stderr, flush=True)


async def load_models(node: Node, nursery: trio.Nursery) -> None:
    """Prepare (once) and load the configured models; nothing when ``no_models``."""
    from calinode.models.defaults import ensure_models

    config = node.config
    if config.no_models:
        return
    names = [*config.embed_models, *config.gen_models]
    registry = node.model_registry
    await trio.to_thread.run_sync(
        lambda: ensure_models(registry, names, progress=_progress))
    await node.models.load(registry, names, nursery=nursery, threads=config.threads or None,
                           stream_interval=config.stream_interval,
                           test_token_delay=config.test_token_delay,
                           test_only_embed_slowdown=config.test_only_embed_slowdown)


async def run_node(
    config: NodeConfig,
    *,
    handle_signals: bool = True,
    announce: bool = True,
    ready_json: bool = False,
    task_status: TaskStatus[Node] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Run a node until cancelled (or until SIGINT/SIGTERM when ``handle_signals``).

    Once ready it prints the banner (``announce``), or one JSON line (``ready_json``:
    :func:`ready_line`) for scripts.

    The home is made private and locked first (one daemon per home), and the listen addresses
    are checked to be free: each is a one-line ``ConfigError`` before anything else starts."""
    await trio.to_thread.run_sync(make_private_home, config.home)
    lock = await trio.to_thread.run_sync(lock_home, config.home)
    try:
        await trio.to_thread.run_sync(check_free, config.listen)
        await trio.to_thread.run_sync(check_api_free, config.api)
        await _run_locked(config, handle_signals=handle_signals, announce=announce,
                          ready_json=ready_json, task_status=task_status)
    finally:
        unlock_home(lock)


async def _run_locked(config: NodeConfig, *, handle_signals: bool, announce: bool,
                      ready_json: bool, task_status: TaskStatus[Node]) -> None:
    from calinode.node.api.app import serve_api  # the HTTP stack is only needed by a running node

    node = await build_node(config)
    node.started_at = time.monotonic()
    network = node.host.get_network()
    network.register_notifee(PeerGate(node.policy, node.rejections))
    if node.identity is not None:
        network.register_notifee(OwnIdWatch(node.identity))
    node.host.set_stream_handler(TProtocol(JOB_PROTOCOL), guarded(
        node.server.rpc_job, node.policy, "job", stats=node.guard_stats,
        rejections=node.rejections))
    assert node.transfers is not None
    node.host.set_stream_handler(TProtocol(BLOB_PROTOCOL), guarded(
        node.transfers.server.rpc_blob, node.policy, "blob", stats=node.guard_stats,
        rejections=node.rejections))
    try:
        listen = [Multiaddr(addr) for addr in config.listen]
    except Exception as exc:
        raise ConfigError(f"bad --listen address: {exc}") from exc
    with trio.CancelScope() as root_scope:
        async with node.host.run(listen_addrs=listen), trio.open_nursery() as nursery:
            if handle_signals:
                nursery.start_soon(_serve_signals, root_scope)
            # the API first: /healthz and /readyz (503 until ready) answer while models load
            node.api_token = await trio.to_thread.run_sync(load_or_create_api_token, config.home)
            binds = await nursery.start(serve_api, node)
            node.api_url = binds[0]
            # a configured model missing here is pulled from the swarm once membership runs
            to_pull = [] if config.no_models else await trio.to_thread.run_sync(functools.partial(
                models_to_pull, node.model_registry, [*config.embed_models, *config.gen_models],
                has_swarm=bool(node.bootstrap)))
            if not to_pull:
                await load_models(node, nursery)
            if node.index is not None:
                await node.index.open_existing()
            await nursery.start(supervised, "replica sync", node.coordinator.run_sync)
            await nursery.start(supervised, "record seq reservation", functools.partial(
                node.signer.keep_reserved, config.home / SEQ_FILE))
            bound = [str(addr) for addr in node.host.get_addrs()]
            node.addrs = tuple(expand_wildcards(bound, interface_ipv4_addresses()))
            node.membership = Membership(
                node.host, node.table, node.policy, node.own_record,
                bootstrap=node.bootstrap, heartbeat_interval=config.heartbeat_interval,
                rejections=node.rejections, identity=node.identity, metrics=node.metrics)
            node.host.set_stream_handler(TProtocol(META_PROTOCOL), guarded(
                node.membership.rpc_meta, node.policy, "meta", stats=node.guard_stats,
                rejections=node.rejections))
            await nursery.start(supervised, "membership", node.membership.run)
            if to_pull:
                membership = node.membership
                await pull_missing_models(node.transfers, to_pull, self_id=node.peer_id,
                                          rounds=lambda: membership.rounds, say=_progress)
                await load_models(node, nursery)
            if config.mdns:
                from calinode.node.p2p.mdns import run_mdns

                await nursery.start(run_mdns, node)
            await trio.to_thread.run_sync(write_node_file, config.home, {
                "peer_id": node.peer_id, "addrs": list(node.addrs),
                "api": node.api_url.removeprefix("http://"), "pid": os.getpid(),
                "version": VERSION,
            })
            if ready_json:
                print(ready_line(node), flush=True)
            elif announce:
                print(_banner(node), flush=True)
            task_status.started(node)
            try:
                await trio.sleep_forever()
            finally:
                with trio.CancelScope(shield=True):  # we are being cancelled: finish this
                    await trio.to_thread.run_sync(remove_node_file, config.home)
                    if node.index is not None:  # release the stores' locks (a node started
                        with trio.move_on_after(30):  # again in this process opens them)
                            await node.index.aclose()
