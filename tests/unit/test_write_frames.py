"""How ingest cuts shard writes by size (node/index/write_frames.py): the estimate is an upper bound
of the real msgpack frame, groups stay within their budget, and a document too large for one
frame is named with its chunk count instead of failing the whole write."""

from __future__ import annotations

import numpy as np

from calinode.models.store.records import ChunkWrite, DocRecord
from calinode.node.index.wire import docs_to_wire
from calinode.node.index.write_frames import (
    GROUP_BYTES,
    MAX_DOC_BYTES,
    doc_wire_bytes,
    too_large,
    write_groups,
)
from calinode.node.ingest_input import SEND_BYTES, send_batches
from calinode.protocol.codec import pack
from calinode.protocol.limits import DEFAULT_LIMITS

WORDS = ["the", "river", "flows", "past", "the", "mill", "where", "the", "miller", "grinds",
         "wheat", "into", "flour"]


def document(doc_id: str, chunks: int, chars: int = 900, dim: int = 384) -> DocRecord:
    rng = np.random.default_rng(len(doc_id) + chunks)
    text = " ".join(WORDS[i % len(WORDS)] for i in range(chars // 5))[:chars]
    return DocRecord(doc_id=doc_id, content_hash="h" * 64, version=1, deleted=False, chunks=[
        ChunkWrite(text=text, vector=rng.standard_normal(dim).astype(np.float32),
                   metadata={"title": "A title", "position": i, "start": i * chars,
                             "end": (i + 1) * chars})
        for i in range(chunks)])


def test_the_estimate_bounds_the_real_frame() -> None:
    for doc in (document("small", 1), document("mid", 300), document("cjk", 50, chars=300)):
        real = len(pack({"docs": docs_to_wire([doc])}))
        assert real <= doc_wire_bytes(doc) <= real * 1.2 + 1024


def test_a_five_megabyte_document_fits_one_frame_and_travels_alone() -> None:
    # 5 million characters of English make ~6 200 chunks of ~950 characters (200 tokens)
    big = document("big", 6_200, chars=950)
    assert too_large(big) is None
    frame = pack({"collection": "c", "shard": 0, "docs": docs_to_wire([big])})
    assert GROUP_BYTES < len(frame) <= DEFAULT_LIMITS.max_frame
    small = [document(f"s{i}", 3) for i in range(5)]
    groups = write_groups([*small[:2], big, *small[2:]])
    assert [[d.doc_id for d in g] for g in groups] == [["s0", "s1"], ["big"], ["s2", "s3", "s4"]]


def test_groups_stay_within_the_budget_in_order() -> None:
    docs = [document(f"d{i}", 40) for i in range(60)]
    groups = write_groups(docs, budget=500_000)
    assert [d for g in groups for d in g] == docs
    assert len(groups) > 1
    assert all(sum(doc_wire_bytes(d) for d in g) <= 500_000 for g in groups)
    assert write_groups([]) == []


def test_a_document_over_one_frame_is_named_with_its_chunk_count() -> None:
    huge = document("huge", 20_000, chars=1_500)
    message = too_large(huge)
    assert message is not None and "20,000 chunks" in message
    assert doc_wire_bytes(huge) > MAX_DOC_BYTES or "vectors" in message


def test_send_batches_cut_by_count_and_by_bytes() -> None:
    docs = [{"_id": str(i), "text": "x" * 1000} for i in range(10)]
    assert [len(b) for b in send_batches(docs, 4)] == [4, 4, 2]
    assert [len(b) for b in send_batches(docs, 100, max_bytes=3_500)] == [3, 3, 3, 1]
    huge = {"_id": "h", "text": "y" * (SEND_BYTES + 10)}
    assert [len(b) for b in send_batches([docs[0], huge, docs[1]], 100)] == [1, 1, 1]


def test_write_rounds_keep_every_owner_request_within_a_frame() -> None:
    from calinode.node.index.write_frames import write_rounds

    big = document("big", 6_200, chars=950)
    small = {shard: [document(f"s{shard}-{i}", 2) for i in range(3)] for shard in range(4)}
    writes = {0: small[0], 1: [*small[1], big], 2: small[2], 3: small[3]}
    rounds = write_rounds(writes)
    assert [d.doc_id for r in rounds for docs in r.values() for d in docs] == [
        d.doc_id for docs in writes.values() for d in docs]  # every document once, in order
    assert any(list(r) == [1] and r[1] == [big] for r in rounds)  # the big one alone
    assert all(sum(doc_wire_bytes(d) for docs in r.values() for d in docs) <= GROUP_BYTES
               for r in rounds if not any(big in docs for docs in r.values()))
    assert len(write_rounds({0: [document(f"t{i}", 1) for i in range(10)]}, max_docs=4)) == 3
    assert write_rounds({}) == []
