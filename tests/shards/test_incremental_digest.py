"""The digest a store keeps current on every write equals the digest rebuilt from every row,
after any mix of inserts, replaces, re-ingests, stale writes, deletes and synced records."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np

from calinode.models.store.digest import DigestSum, shard_digest
from calinode.models.store.records import ChunkWrite, DocRecord, DocWrite
from calinode.models.store.shard_store import ShardStore

DIM = 8


def _doc(rng: random.Random, doc_id: str, version: int) -> DocWrite:
    content = rng.randrange(3)  # few contents: same-content re-writes (bumps) happen often
    vector = np.full(DIM, 1.0 + content, dtype=np.float32)
    vector[rng.randrange(DIM)] += rng.random()
    vector /= np.linalg.norm(vector)
    return DocWrite(doc_id, f"c{content}", version,
                    [ChunkWrite(f"{doc_id} text {content}", vector)] * (1 + content))


def test_running_digest_equals_a_full_rebuild_after_random_writes(tmp_path: Path) -> None:
    rng = random.Random(10)
    ids = [f"doc-{n}" for n in range(40)]
    with ShardStore.open(tmp_path / "a", dim=DIM) as store:
        assert store.digest() == store.full_digest() == shard_digest([])
        seen = {store.digest()}
        for step in range(300):
            version = rng.randrange(1, 60)  # older than stored at times: stale writes
            what = rng.random()
            if what < 0.55:
                batch = rng.sample(ids, rng.randrange(1, 6))
                store.upsert([_doc(rng, doc_id, version) for doc_id in batch])
            elif what < 0.75:
                store.delete(rng.sample(ids, rng.randrange(1, 4)), version)
            else:  # records of a peer replica, tombstones included
                batch = rng.sample(ids, rng.randrange(1, 4))
                records = []
                for doc_id in batch:
                    if rng.random() < 0.3:
                        records.append(DocRecord(doc_id, "", version, True, ()))
                    else:
                        doc = _doc(rng, doc_id, version)
                        records.append(DocRecord(doc_id, doc.content_hash, version, False,
                                                 tuple(doc.chunks)))
                store.apply(records)
            assert store.digest() == store.full_digest(), step
            seen.add(store.digest())
        assert len(seen) > 50  # the writes really changed the shard
        final = store.digest()
    with ShardStore.open(tmp_path / "a", dim=DIM) as reopened:  # the sum read back at open
        assert reopened.digest() == final


def test_digest_depends_on_the_rows_not_their_order() -> None:
    rows = [(f"d{n}", f"h{n}", n, n % 3 == 0) for n in range(50)]
    shuffled = rows[:]
    random.Random(1).shuffle(shuffled)
    assert shard_digest(rows) == shard_digest(shuffled)
    running = DigestSum(rows)
    running.remove(*rows[7])
    assert running.hexdigest() == shard_digest(rows[:7] + rows[8:])
    running.add("d7", "h7", 8, False)  # the same document at another version
    assert running.hexdigest() not in (shard_digest(rows), shard_digest(rows[:7] + rows[8:]))
