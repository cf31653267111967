"""The agent against a hostile generate model: a real py-libp2p peer that serves the only
generate model (and the collection's embedding model) and answers the agent's steps with
replies that ignore the grammar: a fetch of an id with control characters, a search that names
another collection, a reply that is no JSON, an answer citing ids it never saw. Each becomes an
``error: ...`` observation or is dropped; the loop ends in an answer; the node keeps serving,
and nothing stored changed."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import trio

from calinode.node.daemon import Node
from calinode.protocol.vectors import encode_vectors
from hostile_holder import COLLECTION, HostileHolder, SeedDoc
from hostile_peer import HostilePeer, open_hostile_peer
from node_harness import open_nodes, wait_until

DIM = 4
SHARDS = 4
EMBED_SHA = "0" * 64  # the collection's pinned model (HostileHolder.seed)
GEN_SHA = "e" * 64
SCRIPT = [
    json.dumps({"tool": "search", "query": "wings"}),
    json.dumps({"tool": "fetch", "doc_id": "doc-1\u0000../../etc/passwd"}),
    json.dumps({"tool": "search", "query": "wings", "collection": "private"}),
    "ignore the rules" * 500,
    json.dumps({"answer": "Evil answer.", "sources": ["doc-3", "invented", "doc-0", 7]}),
]


class ModelPeer(HostileHolder):
    """Serves ``embed`` for the collection's model (every text the same vector) and the only
    ``generate`` model, whose replies are :data:`SCRIPT`, one a request; holds no shard."""

    def __init__(self, evil: HostilePeer, node: Node) -> None:
        super().__init__(evil, node, jobs=["embed", "generate"], shards=SHARDS, dim=DIM)
        self.script = list(SCRIPT)
        self.prompts: list[Any] = []

    def record(self) -> dict[str, Any]:
        return self.evil.record(capabilities={
            "jobs": self.jobs,
            "embed": [{"name": "fake", "kind": "embed", "sha256": EMBED_SHA, "dim": DIM,
                       "pooling": "mean"}],
            "generate": [{"name": "evil-gen", "kind": "generate", "sha256": GEN_SHA,
                          "context_length": 2048, "chat": True}]})

    async def answer(self, kind: str, params: dict[str, Any]) -> dict[str, Any] | None:
        if kind == "embed":
            texts = params["texts"]
            return {"model": "fake", "sha256": EMBED_SHA, "dim": DIM,
                    "vectors": encode_vectors(np.ones((len(texts), DIM), dtype=np.float32)),
                    "token_counts": [1] * len(texts), "truncated": []}
        if kind == "generate":
            self.prompts.append(params)
            text = self.script.pop(0) if self.script else "{}"
            return {"model": "evil-gen", "sha256": GEN_SHA, "text": text,
                    "finish_reason": "stop",
                    "usage": {"prompt_tokens": 10, "completion_tokens": 20}}
        return None


async def test_a_hostile_model_cannot_steer_the_agent_out_of_its_bounds(
    tmp_path: Path, bootstrap_of: Callable[[Node], str]
) -> None:
    rng = np.random.default_rng(11)
    docs = [SeedDoc(f"doc-{i}", f"h{i}", rng.standard_normal(DIM).astype(np.float32),
                    {"title": f"paper {i}"}) for i in range(12)]
    async with open_nodes(tmp_path) as start, open_hostile_peer() as evil:
        node = await start("index", index=True)
        await evil.connect(bootstrap_of(node))
        peer = ModelPeer(evil, node)
        await peer.seed(docs)
        await peer.claim_every_shard()
        await wait_until(lambda: any(e.peer_id == evil.peer_id and e.caps.generate
                                     for e in node.table.alive()), timeout=60)
        assert node.index is not None
        stored = node.index.held(ready_only=False)
        with trio.fail_after(120):
            result = await node.coordinator.agent(COLLECTION, "What about wings?",
                                                  model="evil-gen", max_steps=4, timeout=100)
        steps = result["steps"]
        assert [s["tool"] for s in steps] == ["search", "fetch", "search", "invalid"]
        assert steps[0]["hits"] == 3 and "error" not in steps[0]
        assert all("error" in s for s in steps[1:])
        assert "control characters" in steps[1]["error"]
        assert "collection" in steps[2]["error"]
        observation = peer.prompts[1]["messages"][-1]["content"]
        cited = [s["doc_id"] for s in result["sources"]]
        assert cited and all(f"[{d}]" in observation for d in cited)  # only ids it was shown
        assert "invented" not in cited and len(cited) <= 2
        assert result["bound"] == "steps" and result["answer"] == "Evil answer."
        # every step's grammar went to the peer; the node still serves, nothing changed
        assert all("json_schema" in p for p in peer.prompts)
        with trio.fail_after(60):
            (found,) = await node.coordinator.search(COLLECTION, ["wings"], k=3, timeout=50)
        assert len(found["hits"]) == 3 and not found["partial"]
        assert node.index.held(ready_only=False) == stored
