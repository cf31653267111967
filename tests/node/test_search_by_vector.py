"""POST /v1/search with a query vector the client embedded (the dashboard's in-browser
embedding), through a real node holding a real collection: the hits are exactly those of the
coordinator's own vector search, and a vector of another model, dimension or kind is refused
(400 BAD_REQUEST naming why) with the node still serving and its shards unchanged."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import trio

from calinode.node.daemon import Node
from hostile_peer import open_hostile_peer
from node_harness import open_nodes
from seeded_collection import seed_collection

DIM = 4
SHARDS = 4
SHA = "5" * 64


async def test_a_vector_search_finds_what_the_nodes_own_vector_search_finds(
    tmp_path: Path, bootstrap_of: Callable[[Node], str]
) -> None:
    rng = np.random.default_rng(13)
    docs = {f"doc-{i:03d}": rng.standard_normal((2, DIM)).astype(np.float32)
            for i in range(60)}
    async with open_nodes(tmp_path) as start, open_hostile_peer() as writer:
        node = await start("index", index=True)
        await writer.connect(bootstrap_of(node))
        definition = await seed_collection(writer, node, docs, shards=SHARDS,
                                           model_sha256=SHA)
        query = [0.5, -1.0, 2.0, 0.25]
        unit = np.asarray([query], dtype=np.float32) / np.linalg.norm(query)
        async with httpx.AsyncClient(base_url=node.api_url, timeout=120, headers={
                "Authorization": f"Bearer {node.api_token}"}) as client:

            async def search(**body: Any) -> httpx.Response:
                with trio.fail_after(60):
                    return await client.post("/v1/search", json={
                        "collection": "papers", "timeout": 50, **body})

            for extra in ({"k": 7}, {"k": 5, "group_by": "doc"}, {"k": 3, "text": False}):
                got = await search(vector=query, model_sha256=SHA, **extra)
                assert got.status_code == 200, got.text
                (answer,) = got.json()
                with trio.fail_after(60):
                    (want,) = await node.coordinator.search_vectors(
                        definition, unit, k=extra["k"], timeout=50,
                        per_doc="group_by" in extra, text=extra.get("text", True))
                assert answer["query_id"] == "q" and not answer["partial"]
                assert len(answer["hits"]) == extra["k"]
                assert [(h["doc_id"], h["chunk"]) for h in answer["hits"]] == [
                    (h["doc_id"], h["chunk"]) for h in want["hits"]]
                assert np.allclose([h["score"] for h in answer["hits"]],
                                   [h["score"] for h in want["hits"]], atol=1e-6)
            before = (await search(vector=query, model_sha256=SHA, k=20)).json()

            refusals = [
                ({"vector": query, "model_sha256": "6" * 64}, "is not the model of collection"),
                ({"vector": query}, "model_sha256 must be given"),
                ({"vector": query[:3], "model_sha256": SHA}, "has dimension 4"),
                ({"vector": [*query, 1.0], "model_sha256": SHA}, "has dimension 4"),
                ({"vector": [0.5, True, 2.0, 0.25], "model_sha256": SHA}, "vector[1]"),
                ({"vector": [0.5, "1", 2.0, 0.25], "model_sha256": SHA}, "vector[1]"),
                ({"vector": [0.5, 1e39, 2.0, 0.25], "model_sha256": SHA}, "float32"),
                ({"vector": [0, 0, 0, 0], "model_sha256": SHA}, "all zeros"),
                ({"vector": "0.5,1", "model_sha256": SHA}, "list of numbers"),
                ({"vector": query, "model_sha256": SHA, "query": "x"}, "not both"),
                ({"vector": query, "model_sha256": SHA, "k": 0}, "k must be"),
            ]
            for body, says in refusals:
                got = await search(**body)
                assert got.status_code == 400, (body, got.text)
                error = got.json()["error"]
                assert error["code"] == "BAD_REQUEST" and says in error["message"], error
            unknown = await client.post("/v1/search", json={
                "collection": "nope", "vector": query, "model_sha256": SHA})
            assert unknown.status_code == 404
            assert unknown.json()["error"]["code"] == "UNKNOWN_COLLECTION"
            # still serving, and nothing stored moved
            after = (await search(vector=query, model_sha256=SHA, k=20)).json()
            assert after == before
            with trio.fail_after(60):
                assert (await writer.job(node.peer_id, "ping", {}))["t"] == "res"
