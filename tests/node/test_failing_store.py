"""A replica sync fed a failing store: the node lives, keeps serving, and reports the shard.

Before issue 8, any ``OSError`` or ``sqlite3`` error in the sync loop (a full disk, a broken
folder) escaped ``run_sync`` and cancelled the node's root nursery. Here the second node's shard
folder is a real 256 KiB tmpfs (root only: CI runs as root), too small for the documents it must
pull from the first node.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from calinode.models.store.records import ChunkWrite, DocRecord
from calinode.node.daemon import Node
from calinode.node.index.collections import sign_definition
from calinode.protocol.collections import CollectionDef
from node_harness import open_nodes, wait_until

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="mounting a tmpfs needs root")

DEFINITION = CollectionDef(name="papers", model="m", model_sha256="0" * 64, dim=4,
                           pooling="mean", normalize=True, shards=2, replicas=2)


def documents(count: int, shard_of: Callable[[str], int], shard: int) -> list[DocRecord]:
    vector = np.ones(4, dtype=np.float32) / 2
    docs = []
    for i in range(count * 4):
        doc_id = f"doc-{i}"
        if shard_of(doc_id) == shard:
            docs.append(DocRecord(doc_id=doc_id, content_hash=f"h{i}", version=1, deleted=False,
                                  chunks=[ChunkWrite(text="x" * 4000, vector=vector)]))
    return docs[:count]


@pytest.fixture
def tiny_disk(tmp_path: Path) -> Iterator[Path]:
    folder = tmp_path / "b" / "shards"
    folder.mkdir(parents=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(folder)],
                   check=True)
    try:
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], check=False)


async def test_full_disk_during_sync_is_reported_and_the_node_keeps_serving(
    tmp_path: Path, tiny_disk: Path, bootstrap_of: Callable[[Node], str]
) -> None:
    from calinode.node.index.placement import shard_of

    async with open_nodes(tmp_path) as start:
        a = await start("a", index=True)
        assert a.index is not None
        definition = sign_definition(replace(DEFINITION, owner=a.peer_id), a.signer.key_pair)
        a.book.merge(definition)
        docs = documents(150, lambda d: shard_of(d, 2), 0)  # ~600 KB of text for shard 0
        await a.index.call(definition, 0, lambda s: s.apply(docs), writes=True)
        await a.index.mark_ready("papers", 0)
        before = a.index.digest_of("papers", 0)

        b = await start("b", index=True, bootstrap=(bootstrap_of(a),))
        # b owns shard 0 too (R=2 over two index peers), pulls it from a, and fills its disk
        await wait_until(lambda: ("papers", 0) in b.coordinator.sync_failures, timeout=120)
        failure = b.status()["sync_failures"]["papers/0"]
        assert "full" in failure.lower() or "space" in failure.lower(), failure

        # both nodes live and serve; a's replica is untouched
        assert (await b.client.call(a.peer_id, "ping", {}, timeout=30)).served_by == a.peer_id
        assert (await a.client.call(b.peer_id, "ping", {}, timeout=30)).served_by == b.peer_id
        assert a.index.digest_of("papers", 0) == before
        assert not b.index.is_ready("papers", 0)  # never advertised as a complete copy
        assert "papers" not in b.index.held()
