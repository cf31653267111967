"""A node's model transfers in one object: the blob server it registers on its host, and
the pulls it runs (``calinode models pull`` through the API, and ``calinode start`` with a
model it does not have).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any

from libp2p.abc import IHost

from calinode.models.registry import ModelRegistry
from calinode.node.blobs.catalog import ModelCatalog
from calinode.node.blobs.puller import Pull, PullResult
from calinode.node.blobs.server import BlobServer
from calinode.node.blobs.swarm_models import ModelPulls, PullProgress, holders, swarm_models
from calinode.node.metrics import NodeMetrics
from calinode.node.p2p.peer_table import PeerTable
from calinode.node.rejections import Rejections
from calinode.protocol.errors import ErrorCode, JobError

log = logging.getLogger(__name__)

#: Called with (verified bytes, total bytes) of the model being pulled.
OnProgress = Callable[[int, int], None]


class ModelTransfers:
    def __init__(self, host: IHost, registry: ModelRegistry, table: PeerTable, *,
                 rejections: Rejections, metrics: NodeMetrics | None = None,
                 max_transfers: int = 4, rate: int = 0,
                 corrupt_for_tests: bool = False) -> None:
        self.host = host
        self.registry = registry
        self.table = table
        self.rejections = rejections
        self.metrics = metrics
        self.server = BlobServer(ModelCatalog(registry), rejections=rejections,
                                 max_transfers=max_transfers, rate=rate,
                                 corrupt_for_tests=corrupt_for_tests, metrics=metrics)
        self.pulls = ModelPulls()

    def statistics(self) -> dict[str, Any]:
        """``calinode status``: pulls in progress and what this node served."""
        return {"pulling": [p.to_wire() for p in self.pulls.active.values()],
                "served_chunks": self.server.served_chunks,
                "served_bytes": self.server.served_bytes}

    def swarm(self) -> list[dict[str, Any]]:
        """``calinode models list --swarm``: models the live peers advertise, and who."""
        return [m.to_wire() for m in swarm_models(self.table.entries())]

    def installed_sha(self, sha256: str) -> str | None:
        """The name of the installed model ``sha256`` (blocking: reads manifests)."""
        for manifest in self.registry.manifests():
            if manifest.sha256 == sha256:
                return manifest.name
        return None

    async def pull(self, ref: str, *, on_progress: OnProgress | None = None,
                   exclude: Sequence[str] = ()) -> PullResult:
        """Pull the model ``ref`` (name or sha256) from the live peers advertising it."""
        import trio

        model, peers = holders(self.table.entries(), ref)
        peers = [p for p in peers if p not in exclude]
        if not peers:
            raise JobError(f"no other peer advertises {ref!r}", code=ErrorCode.UNKNOWN_MODEL)

        async def run(progress: PullProgress) -> PullResult:
            installed = await trio.to_thread.run_sync(self.installed_sha, model.sha256)
            if installed is not None:
                return PullResult(name=installed, sha256=model.sha256, size=0,
                                  fetched_bytes=0, resumed_bytes=0, peers=[],
                                  already_installed=True)

            def note(done: int, total: int) -> None:
                progress.done, progress.total = done, total
                if on_progress is not None:
                    on_progress(done, total)

            log.info("pulling model %s (%s) from %d peer(s)", model.name, model.sha256[:16],
                     len(peers))
            result = await Pull(self.host, self.registry, model.sha256,
                                rejections=self.rejections, metrics=self.metrics,
                                progress=note).run(peers)
            log.info("pulled model %s: %d bytes fetched, %d resumed, in %.1f s%s",
                     result.name, result.fetched_bytes, result.resumed_bytes, result.seconds,
                     f"; faulty peers: {result.faulty_peers}" if result.faulty_peers else "")
            return result

        result: PullResult = await self.pulls.run(model.sha256, model.name, run)
        return result
