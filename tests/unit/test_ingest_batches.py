"""How one ingest request is cut into embed_chunks batches (node/rag/plan.py: ingest_batches)."""

from __future__ import annotations

import random

import pytest

from calinode.node.rag.plan import INGEST_BATCH, ingest_batches


def _docs(rng: random.Random, n: int, longest: int = 3000) -> list[dict[str, str]]:
    return [{"_id": str(i), "text": "x" * rng.randrange(1, longest)} for i in range(n)]


@pytest.mark.parametrize("embedders", [1, 2, 3, 5])
@pytest.mark.parametrize("count", [1, 2, 3, 15, 16, 17, 64, 100, 300])
def test_every_document_once_in_order_in_bounded_batches(count: int, embedders: int) -> None:
    docs = _docs(random.Random(count * 10 + embedders), count)
    batches = ingest_batches(docs, embedders)
    assert [d for batch in batches for d in batch] == docs
    assert all(1 <= len(batch) <= 2 * INGEST_BATCH for batch in batches)
    if count >= embedders:  # every embedder gets the same number of batches
        assert len(batches) % embedders == 0


def test_batches_carry_about_equal_text() -> None:
    docs = _docs(random.Random(7), 64)
    batches = ingest_batches(docs, 3)
    sizes = [sum(len(d["text"]) for d in batch) for batch in batches]
    assert len(batches) == 6  # 4 batches of 16 would give one of 3 embedders two
    assert max(sizes) <= 1.5 * sum(sizes) / len(sizes)


def test_a_huge_document_does_not_make_an_oversized_batch() -> None:
    docs = [{"_id": "big", "text": "x" * 1_000_000}, *_docs(random.Random(1), 500, 10)]
    batches = ingest_batches(docs, 2)
    assert [d for batch in batches for d in batch] == docs
    assert max(len(batch) for batch in batches) <= 2 * INGEST_BATCH
    assert ingest_batches([], 3) == []
