"""kill -9 of a process writing to a ShardStore: every acknowledged write survives, once.

A child process upserts batches in a loop (new documents plus a newer version of an earlier
one) and prints ``doc_id version`` for each document after ``upsert`` has returned. The test
kills it with SIGKILL after 3, 17 and 40 acknowledgements (the same store every time, so later
rounds also rebuild an index that earlier rounds wrote), reopens the store and checks that every
acknowledged document is there at its acknowledged version or newer, with exactly the chunks
of that version, searchable, and that FAISS and SQLite agree.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from shard_workload import workload_doc

from calinode.models.store.shard_store import ShardStore

DIM = 64

WRITER = """
import sys
from pathlib import Path
sys.path.insert(0, sys.argv[1])
from shard_workload import workload_doc
from calinode.models.store.shard_store import ShardStore

path, start, dim = Path(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
with ShardStore.open(path, dim=dim) as store:
    n = start
    while True:
        batch = [workload_doc(f"doc-{i:05d}", 1, dim) for i in range(n, n + 5)]
        if n:
            batch.append(workload_doc(f"doc-{n // 2:05d}", 2 + n, dim))
        store.upsert(batch)
        for doc in batch:
            print(doc.doc_id, doc.version, flush=True)
        n += 5
"""


def run_and_kill(path: Path, start: int, acks: int) -> dict[str, int]:
    """Run the writer until ``acks`` documents are acknowledged, SIGKILL it, return them."""
    child = subprocess.Popen(
        [sys.executable, "-c", WRITER, str(Path(__file__).parent), str(path), str(start),
         str(DIM)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    acknowledged: dict[str, int] = {}
    try:
        assert child.stdout is not None
        for count, line in enumerate(child.stdout, start=1):
            doc_id, version = line.split()
            acknowledged[doc_id] = max(int(version), acknowledged.get(doc_id, 0))
            if count >= acks:
                break
    finally:
        os.kill(child.pid, signal.SIGKILL)
        _, stderr = child.communicate(timeout=30)
    assert child.returncode == -signal.SIGKILL, stderr
    assert len(acknowledged) > 0, stderr
    return acknowledged


@pytest.mark.slow
def test_acknowledged_writes_survive_kill_9(tmp_path: Path) -> None:
    path = tmp_path / "shard"
    acknowledged: dict[str, int] = {}
    start = 0
    for acks in (3, 17, 40):
        for doc_id, version in run_and_kill(path, start, acks).items():
            acknowledged[doc_id] = max(version, acknowledged.get(doc_id, 0))
        with ShardStore.open(path, dim=DIM) as store:
            assert store.check() == []
            ids = store.doc_ids()
            assert len(ids) == len(set(ids))
            stats = store.statistics()
            assert store.count() == (len(ids), stats.chunks)
            assert stats.index_vectors == stats.chunks
            assert set(acknowledged) <= set(ids)
            for record in store.changes(0, 100_000):
                expected = workload_doc(record.doc_id, record.version, DIM)
                assert record.content_hash == expected.content_hash
                assert record.version >= acknowledged.get(record.doc_id, 0)
                assert len(record.chunks) == len(expected.chunks)  # never a partial document
                for stored, want in zip(record.chunks, expected.chunks, strict=True):
                    np.testing.assert_array_equal(stored.vector, want.vector)
            for doc_id in acknowledged:
                doc = workload_doc(doc_id, store.fetch([(doc_id, 0)])[doc_id, 0].version, DIM)
                hits = store.search(np.stack([c.vector for c in doc.chunks]), 2)
                assert [row[0].doc_id for row in hits] == [doc_id] * len(doc.chunks)
                assert [row[0].chunk for row in hits] == list(range(len(doc.chunks)))
            start = 1 + max(int(doc_id.split("-")[1]) for doc_id in ids)
            start += -start % 5
