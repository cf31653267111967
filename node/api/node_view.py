"""What the HTTP API uses of the running node: :class:`ApiNode`, exactly the attributes and
methods its routes read, and nothing else.

The daemon's ``Node`` (node/daemon.py) satisfies it structurally; the API never imports the
daemon, which is the composition root above it (the daemon starts the API, not the other way
round). A test can serve the routes from a fake with just these members. Every type named
here lives in a layer the API may import (rag, index, inference, jobs, p2p, core).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from calinode.models.registry import ModelRegistry
    from calinode.node.blobs.service import ModelTransfers
    from calinode.node.config import NodeConfig
    from calinode.node.index.collections import CollectionBook
    from calinode.node.inference.services import LocalModels
    from calinode.node.jobs.activity import JobActivity
    from calinode.node.jobs.client import JobClient, JobResult
    from calinode.node.jobs.dispatch import Dispatcher
    from calinode.node.p2p.peer_table import PeerTable
    from calinode.node.rag.coordinator import Coordinator
    from calinode.node.readiness import Readiness
    from calinode.protocol.capabilities import Capabilities

__all__ = ["ApiNode"]


class ApiNode(Protocol):
    """The node as the local HTTP API sees it (read-only members: the API never rebinds
    them)."""

    @property
    def peer_id(self) -> str: ...

    @property
    def config(self) -> NodeConfig: ...

    @property
    def api_token(self) -> str: ...

    @property
    def swarm_key(self) -> str | None: ...

    @property
    def swarm_mode(self) -> str: ...

    @property
    def table(self) -> PeerTable: ...

    @property
    def book(self) -> CollectionBook: ...

    @property
    def models(self) -> LocalModels: ...

    @property
    def model_registry(self) -> ModelRegistry: ...

    @property
    def transfers(self) -> ModelTransfers | None: ...  # model blobs (node/blobs/)

    @property
    def dispatcher(self) -> Dispatcher: ...

    @property
    def coordinator(self) -> Coordinator: ...

    @property
    def activity(self) -> JobActivity: ...

    @property
    def client(self) -> JobClient: ...

    def network_facts(self) -> dict[str, Any]: ...

    def capabilities(self) -> Capabilities: ...

    def status(self) -> dict[str, Any]: ...

    def peers(self) -> list[dict[str, Any]]: ...

    def routable_addrs(self) -> list[str]: ...

    def readiness(self) -> Readiness: ...  # GET /readyz

    async def scrape(self) -> bytes: ...  # GET /metrics: the Prometheus text

    def invite(self) -> str: ...

    async def run_job(self, peer_id: str, kind: str, params: dict[str, Any], *,
                      timeout: float) -> JobResult: ...

    async def ping(self, peer_id: str, *, count: int, timeout: float) -> dict[str, Any]: ...
