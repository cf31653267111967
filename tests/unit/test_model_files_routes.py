"""The files of the node's embedding models by sha256 (node/api/model_files_routes.py), through
the real app and its guard: streamed with the sha256 as ETag and an immutable cache, 404
UNKNOWN_MODEL for any hash the node does not serve, and never bytes that no longer match; and
the graph a browser runs (the file itself, or its copy spelling out a saturating int8 kernel)
under its own sha256."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import httpx
import pytest
from test_browser_graph import int8_model

from calinode.models.manifest import ModelFile, ModelManifest
from calinode.models.registry import ModelRegistry
from calinode.node.api.app import build_app
from calinode.node.api.guard import ApiGuard
from calinode.node.inference.services import LocalModels

TOKEN = "t" * 43
BASE = "http://127.0.0.1:7412"
GRAPH, _ = int8_model()  # a real ONNX graph, larger than one FileResponse chunk (64 KiB)
TOKENIZER = b'{"model": {"type": "WordPiece", "vocab": {"[UNK]": 0}}}'


def install(tmp_path: Path) -> tuple[ModelRegistry, ModelManifest]:
    sources = tmp_path / "sources"
    sources.mkdir()
    (sources / "model.onnx").write_bytes(GRAPH)
    (sources / "tokenizer.json").write_bytes(TOKENIZER)
    registry = ModelRegistry(tmp_path / "models")
    placeholder = ModelFile(path="model.onnx", sha256="0" * 64, size=0)
    manifest = registry.install(
        ModelManifest(name="tiny-embed", kind="embed", files=(placeholder,), dim=8,
                      pooling="mean", query_prefix="query: ", passage_prefix="passage: ",
                      max_tokens=128),
        [(sources / "model.onnx", "model.onnx"), (sources / "tokenizer.json",
                                                  "tokenizer.json")])
    return registry, manifest


def client_for(registry: ModelRegistry, manifest: ModelManifest) -> httpx.AsyncClient:
    models = LocalModels()
    models.embed["tiny-embed"] = SimpleNamespace(embedder=SimpleNamespace(manifest=manifest))
    node: Any = SimpleNamespace(peer_id="12D3KooWtest", models=models, model_registry=registry)
    app = ApiGuard(build_app(node), token=TOKEN)
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=BASE,
                             headers={"Authorization": f"Bearer {TOKEN}"})


async def test_the_model_file_streams_under_its_sha256_and_is_cached_forever(
        tmp_path: Path) -> None:
    registry, manifest = install(tmp_path)
    sha = hashlib.sha256(GRAPH).hexdigest()
    assert manifest.sha256 == sha
    async with client_for(registry, manifest) as client:
        got = await client.get(f"/v1/models/{sha}/file")
        assert got.status_code == 200
        assert got.content == GRAPH
        assert got.headers["etag"] == f'"{sha}"'
        assert "immutable" in got.headers["cache-control"]
        assert got.headers["content-type"] == "application/octet-stream"
        again = await client.get(f"/v1/models/{sha}/file", headers={"If-None-Match": f'"{sha}"'})
        assert again.status_code == 304 and again.content == b""
        assert again.headers["etag"] == f'"{sha}"'
        other = await client.get(f"/v1/models/{sha}/file",
                                 headers={"If-None-Match": '"' + "1" * 64 + '"'})
        assert other.status_code == 200 and other.content == GRAPH


async def test_the_tokenizer_and_manifest_say_how_the_node_embeds(tmp_path: Path) -> None:
    registry, manifest = install(tmp_path)
    tok_sha = hashlib.sha256(TOKENIZER).hexdigest()
    async with client_for(registry, manifest) as client:
        got = await client.get(f"/v1/models/{manifest.sha256}/tokenizer")
        assert got.status_code == 200 and got.content == TOKENIZER
        assert got.headers["etag"] == f'"{tok_sha}"'
        assert "immutable" in got.headers["cache-control"]
        view = (await client.get(f"/v1/models/{manifest.sha256}/manifest")).json()
    assert view["sha256"] == manifest.sha256 and view["kind"] == "embed"
    assert (view["dim"], view["pooling"], view["normalize"], view["max_tokens"]) == (
        8, "mean", True, 128)
    assert (view["query_prefix"], view["passage_prefix"]) == ("query: ", "passage: ")
    assert view["tokenizer"] == {"path": "tokenizer.json", "sha256": tok_sha,
                                 "size": len(TOKENIZER)}


async def test_the_browser_graph_is_served_under_the_sha256_the_manifest_names(
        tmp_path: Path) -> None:
    registry, manifest = install(tmp_path)
    async with client_for(registry, manifest) as client:
        named = (await client.get(f"/v1/models/{manifest.sha256}/manifest")).json()
        graph = named["browser_graph"]
        got = await client.get(f"/v1/models/{manifest.sha256}/browser-graph")
        assert got.status_code == 200
        assert hashlib.sha256(got.content).hexdigest() == graph["sha256"]
        assert len(got.content) == graph["size"]
        assert got.headers["etag"] == f'"{graph["sha256"]}"'
        assert "immutable" in got.headers["cache-control"]
        again = await client.get(f"/v1/models/{manifest.sha256}/browser-graph",
                                 headers={"If-None-Match": f'"{graph["sha256"]}"'})
        assert again.status_code == 304
    if graph["emulates"] is None:
        assert got.content == GRAPH and graph["sha256"] == manifest.sha256
    else:
        assert graph["emulates"] == "u8s8-int16-pair-saturation"
        assert graph["sha256"] != manifest.sha256


@pytest.mark.parametrize("sha", ["f" * 64, "F" * 64, "abc", "0" * 63 + "g", "%2e%2e"])
async def test_a_hash_the_node_does_not_serve_is_unknown_model(tmp_path: Path,
                                                               sha: str) -> None:
    registry, manifest = install(tmp_path)
    async with client_for(registry, manifest) as client:
        for what in ("file", "tokenizer", "manifest", "browser-graph"):
            got = await client.get(f"/v1/models/{sha}/{what}")
            assert got.status_code == 404, got.text
            assert got.json()["error"]["code"] == "UNKNOWN_MODEL"


async def test_the_files_need_the_api_token(tmp_path: Path) -> None:
    registry, manifest = install(tmp_path)
    async with client_for(registry, manifest) as client:
        got = await client.get(f"/v1/models/{manifest.sha256}/file",
                               headers={"Authorization": "Bearer wrong"})
    assert got.status_code == 401
    assert got.json()["error"]["code"] == "UNAUTHENTICATED"


async def test_bytes_changed_on_disk_are_refused_not_served_under_the_old_hash(
        tmp_path: Path) -> None:
    registry, manifest = install(tmp_path)
    path = registry.folder("tiny-embed") / "model.onnx"
    async with client_for(registry, manifest) as client:
        assert (await client.get(f"/v1/models/{manifest.sha256}/file")).status_code == 200
        tampered = bytearray(GRAPH)
        tampered[1000] ^= 0xFF
        path.write_bytes(bytes(tampered))  # same size, other bytes
        stat = path.stat()
        os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
        got = await client.get(f"/v1/models/{manifest.sha256}/file")
        assert got.status_code == 500
        assert got.json()["error"]["code"] == "CONFIG"
        assert "calinode models verify tiny-embed" in got.json()["error"]["message"]
        path.write_bytes(GRAPH)  # repaired: served again
        os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 2 * 10**9))
        assert (await client.get(f"/v1/models/{manifest.sha256}/file")).content == GRAPH
