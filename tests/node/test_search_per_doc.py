"""Search per document through a real node: the k best distinct documents, each by its best
chunk, exact against brute force over every chunk (documents of several chunks, in 8
shards); and the chunk search of the same node for comparison."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import httpx
import numpy as np
import trio

from calinode.node.daemon import Node
from calinode.protocol.ranking import rank_key
from hostile_peer import open_hostile_peer
from node_harness import open_nodes
from seeded_collection import seed_collection

DIM = 4
SHARDS = 8


async def test_per_doc_search_gives_the_k_best_distinct_documents_exactly(
    tmp_path: Path, bootstrap_of: Callable[[Node], str]
) -> None:
    rng = np.random.default_rng(5)
    docs = {f"doc-{i:04d}": rng.standard_normal((int(rng.integers(1, 6)), DIM)).astype(
        np.float32) for i in range(300)}
    async with open_nodes(tmp_path) as start, open_hostile_peer() as writer:
        node = await start("index", index=True)
        await writer.connect(bootstrap_of(node))
        definition = await seed_collection(writer, node, docs, shards=SHARDS,
                                           model_sha256="0" * 64)
        queries = rng.standard_normal((4, DIM)).astype(np.float32)
        for k in (1, 10, 50):
            with trio.fail_after(60):
                per_doc = await node.coordinator.search_vectors(definition, queries, k=k,
                                                                timeout=50, per_doc=True)
                chunks = await node.coordinator.search_vectors(definition, queries, k=k,
                                                               timeout=50)
            for q, query in enumerate(queries):
                every = sorted(((d, c, float(s)) for d, v in docs.items()
                                for c, s in enumerate(v @ query)),
                               key=lambda h: rank_key(h[2], h[0], h[1]))
                best: dict[str, tuple[str, int, float]] = {}
                for hit in every:
                    best.setdefault(hit[0], hit)
                want = list(best.values())[:k]
                got = per_doc[q]["hits"]
                assert [(h["doc_id"], h["chunk"]) for h in got] == [(d, c) for d, c, _ in want]
                assert np.allclose([h["score"] for h in got], [s for *_, s in want], atol=1e-5)
                assert all(h["text"] == f"{h['doc_id']}#{h['chunk']}" for h in got)
                assert [(h["doc_id"], h["chunk"]) for h in chunks[q]["hits"]] == [
                    (d, c) for d, c, _ in every[:k]]


async def test_the_search_route_takes_group_by_doc_or_chunk_only(tmp_path: Path) -> None:
    async with open_nodes(tmp_path) as start:
        node = await start("api", index=True)
        async with httpx.AsyncClient(base_url=node.api_url, timeout=120, headers={
                "Authorization": f"Bearer {node.api_token}"}) as client:
            for body in ({"group_by": "page"}, {"group_by": 1}, {"text": "no"}):
                response = await client.post("/v1/search", json={
                    "collection": "papers", "query": "x", **body})
                assert response.status_code == 400, response.text
                assert response.json()["error"]["code"] == "BAD_REQUEST"
