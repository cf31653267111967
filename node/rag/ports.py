"""What the rag layer reads of the node it runs in: ``RagNode``, a structural type.

Why a Protocol and not the daemon's ``Node``: the coordinator sits below the daemon (which
builds it), so importing ``Node`` here pointed an import back up the layers
(``tests/unit/test_import_direction.py``). These are exactly the node's parts the coordinator,
ingest, search and sync use; the daemon's ``Node`` satisfies this structurally (mypy checks
it where the daemon builds its ``Coordinator``), and a test may pass a smaller fake.
"""

from __future__ import annotations

from typing import Protocol

from calinode.node.access import AccessPolicy
from calinode.node.config import NodeConfig
from calinode.node.hlc import HybridClock
from calinode.node.index.collections import CollectionBook
from calinode.node.index.replicas import LocalIndex
from calinode.node.inference.services import LocalModels
from calinode.node.jobs.client import JobClient
from calinode.node.jobs.dispatch import Dispatcher
from calinode.node.metrics import NodeMetrics
from calinode.node.p2p.membership import Membership
from calinode.node.p2p.peer_table import PeerTable
from calinode.node.p2p.records import RecordSigner
from calinode.node.rejections import Rejections


class RagNode(Protocol):
    """The node's parts the rag layer uses (read-only: it never replaces one)."""

    @property
    def peer_id(self) -> str: ...
    @property
    def config(self) -> NodeConfig: ...
    @property
    def table(self) -> PeerTable: ...  # live peers and their capabilities
    @property
    def client(self) -> JobClient: ...  # shard.* jobs on other peers
    @property
    def dispatcher(self) -> Dispatcher: ...  # embed / generate on the best peer
    @property
    def models(self) -> LocalModels: ...  # this node's own embedding models
    @property
    def book(self) -> CollectionBook: ...  # collection definitions
    @property
    def index(self) -> LocalIndex | None: ...  # the replicas this node hosts (``--index``)
    @property
    def signer(self) -> RecordSigner: ...  # signs definitions this node changes
    @property
    def clock(self) -> HybridClock: ...  # document versions
    @property
    def access(self) -> AccessPolicy: ...  # who may own a definition
    @property
    def rejections(self) -> Rejections: ...  # peers' bad replies and definitions
    @property
    def membership(self) -> Membership | None: ...  # heartbeat rounds (recovery waits)
    @property
    def metrics(self) -> NodeMetrics: ...  # searches, partial answers, ingest acks
