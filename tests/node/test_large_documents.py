"""A document of the maximum size travels between real nodes (issue 12): the coordinator's
write to two owners (one frame for the large document, bounded groups for the rest), and a
replica that pulls it by sync (``shard.changes`` pages end where a frame would overflow).

5 million characters of English make ~6 200 chunks of ~950 characters at the default 200-token
window: with their 384-d vectors about 15 MiB, more than a 16 MiB frame carried with its
envelope before frames were 32 MiB. The chunks here are written as ingest would write them
after embedding (random unit vectors stand in for the model's; the model is not under test).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import trio

from calinode.models.store.records import ChunkWrite, DocRecord
from calinode.node.daemon import Node
from calinode.node.hlc import COUNTER_BITS
from calinode.node.index.collections import sign_definition
from calinode.node.index.write_frames import GROUP_BYTES, doc_wire_bytes
from calinode.protocol.collections import CollectionDef
from node_harness import open_nodes, wait_until

pytestmark = pytest.mark.slow
Bootstrap = Callable[[Node], str]
SAFETY = 300.0  # seconds: a safety net for a loaded machine, never the thing under test
DIM = 384
BIG_CHUNKS = 6_200
SENTENCE = "The boundary layer thickens downstream of the leading edge of the flat plate. "


def definition_of(owner: Node) -> CollectionDef:
    return sign_definition(CollectionDef(
        name="books", model="m", model_sha256="0" * 64, dim=DIM, pooling="mean",
        normalize=True, shards=1, replicas=2, owner=owner.peer_id, created=1),
        owner.signer.key_pair)


def document(doc_id: str, chunks: int) -> DocRecord:
    rng = np.random.default_rng(abs(hash(doc_id)) % 2**32)
    vectors = rng.standard_normal((chunks, DIM)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    text = (SENTENCE * 13)[:950]
    version = int(time.time() * 1000) << COUNTER_BITS
    return DocRecord(doc_id=doc_id, content_hash=f"h-{doc_id}", version=version, deleted=False,
                     chunks=[ChunkWrite(text=f"{i} {text}", vector=vectors[i],
                                        metadata={"title": "A long book", "position": i,
                                                  "start": i * 800, "end": i * 800 + 950})
                             for i in range(chunks)])


async def chunk_counts(node: Node, definition: CollectionDef) -> dict[str, int]:
    """Chunks per document in ``node``'s replica of shard 0."""
    assert node.index is not None

    def count(store: object) -> dict[str, int]:
        out: dict[str, int] = {}
        for record in store.changes(0, 10_000):  # type: ignore[attr-defined]
            out[record.doc_id] = len(record.chunks)
        return out

    return await node.index.call(definition, 0, count)


async def test_a_document_of_the_maximum_size_is_written_and_pulled_whole(
    tmp_path: Path, bootstrap_of: Bootstrap
) -> None:
    big = document("book", BIG_CHUNKS)
    assert doc_wire_bytes(big) > 15 * 2**20 > GROUP_BYTES  # one frame of its own
    tome = document("tome", 8_000)  # with the book, more than one frame: two pages
    small = [document(f"note{i}", 3) for i in range(40)]
    expected = {"book": BIG_CHUNKS, "tome": 8_000, **{d.doc_id: 3 for d in small}}
    async with open_nodes(tmp_path) as start:
        a = await start("a", index=True)
        b = await start("b", index=True, bootstrap=(bootstrap_of(a),))
        await wait_until(lambda: any(e.peer_id == b.peer_id for e in a.table.alive()), SAFETY)
        definition = definition_of(a)
        await trio.to_thread.run_sync(a.book.merge, definition)
        await wait_until(lambda: "books" in b.book.names(), SAFETY)
        with trio.fail_after(SAFETY):
            settled = await a.coordinator.writes.write_all(  # what ingest writes after embedding
                definition, {0: [*small[:20], big, tome, *small[20:]]})
        assert all(d.acknowledged for d in settled), [d for d in settled if not d.acknowledged]
        assert await chunk_counts(a, definition) == expected
        assert await chunk_counts(b, definition) == expected

        # a third owner joins with an empty copy: it pulls the book and the tome, each in a
        # page of its own (together they exceed a frame)
        c = await start("c", index=True, bootstrap=(bootstrap_of(a),))
        await wait_until(lambda: any(e.peer_id == c.peer_id for e in a.table.alive()), SAFETY)
        await a.coordinator.update("books", replicas=3)
        await wait_until(lambda: c.index is not None and c.index.is_ready("books", 0), SAFETY)
        assert await chunk_counts(c, a.book.get("books")) == expected
