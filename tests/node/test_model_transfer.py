"""Model blobs between real in-process nodes (``/calinode/blob/1.0.0`` over real libp2p).

A fake model (random bytes standing for a GGUF file plus a tokenizer file: the transfer does
not load models) is installed in the serving nodes' homes; another node pulls it with the real
:class:`Pull`, and a hostile peer attacks the server. Each attack test asserts the refusal,
its count, that the node still answers a ping job, and that the served model is unchanged.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

import pytest
import trio

from calinode.models.manifest import ModelFile, ModelManifest
from calinode.models.registry import ModelRegistry
from calinode.node.blobs.pull_state import PartialFolder
from calinode.node.blobs.puller import STREAMS_PER_PEER, Pull
from calinode.node.daemon import Node
from calinode.protocol.blobs import BLOB_PROTOCOL, MIN_CHUNK_SIZE
from hostile_peer import HostilePeer, decode_last, frame, open_hostile_peer
from node_harness import open_nodes, wait_until

SIZE = 5 * MIN_CHUNK_SIZE + 12345  # six chunks, the last one short


def install_fake_model(home: Path, seed: int = 1) -> ModelManifest:
    """A 'generate' model of random bytes in ``home``'s registry (never loaded)."""
    source = home.parent / f"fake-source-{seed}"
    source.mkdir(parents=True, exist_ok=True)
    weights = source / "model.gguf"
    if not weights.exists():
        weights.write_bytes(os.urandom(SIZE))
        (source / "tokenizer.json").write_text('{"fake": true}')
    manifest = ModelManifest(name="fake-gen", kind="generate", context_length=512,
                             files=(ModelFile(path="x", sha256="0" * 64, size=0),),
                             chat_format="chatml")
    return ModelRegistry(home / "models").install(
        manifest, [(weights, "model.gguf"), (source / "tokenizer.json", "tokenizer.json")])


async def connected(puller: Node, *servers: Node) -> None:
    await wait_until(lambda: all(s.peer_id in puller.table and puller.table.get(s.peer_id)
                                 is not None and puller.table.get(s.peer_id).alive  # type: ignore[union-attr]
                                 for s in servers), timeout=60)


async def ping(evil: HostilePeer, node: Node) -> None:
    reply = await evil.job(node.peer_id, "ping", {})
    assert "res" in reply or reply.get("t") == "res", reply


@pytest.mark.slow
async def test_a_model_is_pulled_from_two_peers_and_a_corrupting_one_is_reported(
        tmp_path: Path) -> None:
    async with open_nodes(tmp_path) as start:
        good = await start("good")
        manifest = install_fake_model(good.config.home)
        bad = await start("bad", test_only_corrupt_chunks=True,
                          bootstrap=(good.addrs[0],))
        ModelRegistry(bad.config.home / "models").install(
            manifest, [(good.model_registry.path_of(manifest, f), f.path)
                       for f in manifest.files])
        puller = await start("puller", bootstrap=(good.addrs[0],))
        await connected(puller, good, bad)
        seen: list[tuple[int, int]] = []
        result = await Pull(puller.host, puller.model_registry, manifest.sha256,
                            rejections=puller.rejections,
                            progress=lambda d, t: seen.append((d, t))).run(
                                [bad.peer_id, good.peer_id])
        # each of the bad peer's streams got one corrupt chunk through, then it was dropped
        assert set(result.faulty_peers) == {bad.peer_id}
        assert 1 <= result.faulty_peers[bad.peer_id] <= STREAMS_PER_PEER
        assert puller.rejections.counts["bad_chunk"] == result.faulty_peers[bad.peer_id]
        pulled = puller.model_registry.get("fake-gen")
        assert pulled == manifest  # the same manifest: files, sizes, sha256s, chat format
        assert puller.model_registry.verify("fake-gen") == []
        assert result.fetched_bytes == manifest.primary.size + manifest.files[1].size
        assert seen[-1] == (result.size, result.size)
        assert not PartialFolder(puller.model_registry.root, manifest.sha256).path.exists()
        served = good.status()["model_transfers"]
        assert served["pulling"] == [] and served["served_chunks"] >= 1


@pytest.mark.slow
async def test_an_interrupted_pull_resumes_from_its_verified_chunks(tmp_path: Path) -> None:
    async with open_nodes(tmp_path) as start:
        server = await start("server", blob_rate=4 * MIN_CHUNK_SIZE)
        manifest = install_fake_model(server.config.home)
        puller = await start("puller", bootstrap=(server.addrs[0],))
        await connected(puller, server)
        first = Pull(puller.host, puller.model_registry, manifest.sha256,
                     rejections=puller.rejections)
        with trio.CancelScope() as scope:
            first.progress = lambda done, _total: scope.cancel() if done >= 2 * MIN_CHUNK_SIZE \
                else None
            await first.run([server.peer_id])
        assert "fake-gen" not in puller.model_registry
        # a torn line at the end of the verified-chunk list (a crash mid-append) is ignored
        folder = PartialFolder(puller.model_registry.root, manifest.sha256)
        with folder.log.open("a") as fh:
            fh.write("0 ")
        second = await Pull(puller.host, puller.model_registry, manifest.sha256,
                            rejections=puller.rejections).run([server.peer_id])
        assert second.resumed_bytes >= 2 * MIN_CHUNK_SIZE
        assert second.fetched_bytes + second.resumed_bytes == second.size
        assert second.fetched_bytes < second.size
        assert puller.model_registry.verify("fake-gen") == []


async def blob_request(evil: HostilePeer, node: Node, request: Any) -> dict[str, Any]:
    raw = await evil.send_raw(node.peer_id, BLOB_PROTOCOL, frame(request))
    return decode_last(raw)


def served_digest(node: Node) -> str:
    registry = node.model_registry
    manifest = registry.get("fake-gen")
    return hashlib.sha256(registry.path_of(manifest).read_bytes()).hexdigest()


@pytest.mark.slow
async def test_unknown_hashes_absurd_ranges_and_floods_are_refused_and_the_node_serves(
        tmp_path: Path) -> None:
    async with open_nodes(tmp_path) as start, open_hostile_peer() as evil:
        node = await start("server", blob_max_transfers=2)
        manifest = install_fake_model(node.config.home)
        before = served_digest(node)
        await evil.connect(node.addrs[0])
        unknown = await blob_request(evil, node, {"op": "manifest", "sha256": "ab" * 32})
        assert unknown == {"ok": False, "code": "UNKNOWN_MODEL", "message": unknown["message"]}
        sha = manifest.sha256
        for absurd in ({"op": "chunk", "sha256": sha, "file": 0, "chunk": 10**12},
                       {"op": "chunk", "sha256": sha, "file": -1, "chunk": 0},
                       {"op": "chunk", "sha256": sha, "file": 1, "chunk": 5},
                       {"op": "chunk", "sha256": sha, "file": 0, "chunk": 6},
                       {"op": "chunk", "sha256": sha, "file": "0", "chunk": 0},
                       {"op": "manifest", "sha256": sha, "extra": 1},
                       {"op": "delete", "sha256": sha}):
            reply = await blob_request(evil, node, absurd)
            assert reply["ok"] is False and reply["code"] == "BAD_REQUEST", (absurd, reply)
        # a frame far over the request cap is refused at its length prefix (stream reset)
        await evil.send_raw(node.peer_id, BLOB_PROTOCOL, (1 << 30).to_bytes(4, "big"))
        refused = node.rejections.counts["bad_blob_request"]
        assert refused >= 9
        # a flood of concurrent chunk requests: at most two are served at once, the rest are
        # refused OVERLOADED at once (never queued)
        replies: list[dict[str, Any]] = []

        async def one(i: int) -> None:
            replies.append(await blob_request(
                evil, node, {"op": "chunk", "sha256": sha, "file": 0, "chunk": i % 6}))

        async with trio.open_nursery() as nursery:
            for i in range(40):
                nursery.start_soon(one, i)
        codes = [r.get("code", "ok") for r in replies]
        assert len(codes) == 40
        assert "OVERLOADED" in codes and "ok" in codes, codes
        assert set(codes) <= {"OVERLOADED", "ok"}
        assert node.rejections.counts["overloaded"] == codes.count("OVERLOADED")
        await ping(evil, node)
        assert served_digest(node) == before
        assert node.model_registry.verify("fake-gen") == []
