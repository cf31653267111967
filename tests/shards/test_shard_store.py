"""ShardStore: version rules, exact search, HNSW recall, digests, replica sync, consistency."""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest
from shard_workload import unit_vectors, workload_doc

from calinode.models.store import sql, vector_index
from calinode.models.store.digest import DocState, Outcome, chunk_faiss_id, resolve
from calinode.models.store.records import ChunkWrite, DocRecord, DocWrite, Hit, hit_sort_key
from calinode.models.store.shard_store import ShardStore
from calinode.protocol.errors import ConfigError, ErrorCode, JobError

DIM = 32


@pytest.fixture
def store(tmp_path: Path) -> Iterator[ShardStore]:
    with ShardStore.open(tmp_path / "shard", dim=DIM) as s:
        yield s


def one_chunk_doc(doc_id: str, vector: npt.NDArray[np.float32], version: int = 1) -> DocWrite:
    return DocWrite(doc_id, f"h-{doc_id}-{version}", version, [ChunkWrite(doc_id, vector)])


def stored_vectors(
    docs: Sequence[DocWrite],
) -> tuple[list[tuple[str, int]], npt.NDArray[np.float32]]:
    keys = [(d.doc_id, c) for d in docs for c in range(len(d.chunks))]
    vectors = np.stack([chunk.vector for d in docs for chunk in d.chunks])
    return keys, vectors


def brute_force(
    keys: list[tuple[str, int]], vectors: npt.NDArray[np.float32], query: npt.NDArray[np.float32],
    k: int,
) -> list[Hit]:
    scores = vectors.astype(np.float64) @ query.astype(np.float64)
    order = sorted(range(len(keys)), key=lambda n: (-scores[n], chunk_faiss_id(*keys[n])))
    return [Hit(keys[n][0], keys[n][1], float(scores[n])) for n in order[:k]]


def assert_same_hits(got: list[Hit], want: list[Hit]) -> None:
    assert [(h.doc_id, h.chunk) for h in got] == [(h.doc_id, h.chunk) for h in want]
    np.testing.assert_allclose([h.score for h in got], [h.score for h in want], atol=1e-5)


# -- the pure rules --------------------------------------------------------------------------


def test_chunk_faiss_id_is_stable_63_bit_and_injective_on_the_pair() -> None:
    ids = {chunk_faiss_id(f"doc-{d}", c) for d in range(300) for c in range(10)}
    assert len(ids) == 3000
    assert all(0 <= i < 2**63 for i in ids)
    assert chunk_faiss_id("a", 1) == chunk_faiss_id("a", 1) != chunk_faiss_id("a", 2)
    assert chunk_faiss_id("ab", 0) != chunk_faiss_id("a", 0)
    assert chunk_faiss_id("doc-1", 0) == 0x463B197ACCFEBFF7  # must never change: stored ids


@pytest.mark.parametrize(
    ("incoming", "stored", "outcome"),
    [
        (DocState(1, False, "a"), None, Outcome.INSERT),
        (DocState(1, True, ""), None, Outcome.TOMBSTONE),
        (DocState(1, False, "a"), DocState(1, False, "a"), Outcome.UNCHANGED),
        (DocState(0, False, "a"), DocState(5, False, "a"), Outcome.UNCHANGED),
        (DocState(6, False, "a"), DocState(5, False, "a"), Outcome.BUMP),
        (DocState(6, False, "b"), DocState(5, False, "a"), Outcome.REPLACE),
        (DocState(4, False, "b"), DocState(5, False, "a"), Outcome.STALE),
        (DocState(5, False, "b"), DocState(5, False, "a"), Outcome.REPLACE),
        (DocState(5, False, "a"), DocState(5, False, "b"), Outcome.STALE),
        (DocState(5, True, ""), DocState(5, False, "a"), Outcome.DELETE),
        (DocState(4, True, ""), DocState(5, False, "a"), Outcome.STALE),
        (DocState(5, False, "a"), DocState(5, True, ""), Outcome.STALE),
        (DocState(6, False, "a"), DocState(5, True, ""), Outcome.INSERT),
        (DocState(6, True, ""), DocState(5, True, ""), Outcome.TOMBSTONE),
        (DocState(5, True, ""), DocState(5, True, ""), Outcome.UNCHANGED),
    ],
)
def test_resolve(incoming: DocState, stored: DocState | None, outcome: Outcome) -> None:
    assert resolve(incoming, stored) is outcome


# -- writes ----------------------------------------------------------------------------------


def test_upsert_is_idempotent(store: ShardStore) -> None:
    docs = [workload_doc(f"d{i}", 1, DIM) for i in range(20)]
    first = store.upsert(docs)
    assert (first.inserted, first.chunks_added) == (20, sum(len(d.chunks) for d in docs))
    digest, counts = store.digest(), store.count()
    again = store.upsert(docs)
    assert (again.unchanged, again.inserted, again.replaced, again.chunks_added) == (20, 0, 0, 0)
    assert (store.digest(), store.count()) == (digest, counts)
    assert counts == (20, first.chunks_added)
    assert store.check() == []


def test_new_content_replaces_every_chunk(store: ShardStore) -> None:
    rng = np.random.default_rng(1)
    old = DocWrite("doc", "h1", 1, [ChunkWrite(f"old {c}", v) for c, v in
                                    enumerate(unit_vectors(rng, 3, DIM))])
    others = [one_chunk_doc(f"o{i}", v) for i, v in enumerate(unit_vectors(rng, 10, DIM))]
    store.upsert([old, *others])
    new = DocWrite("doc", "h2", 2, [ChunkWrite("new", unit_vectors(rng, 1, DIM)[0], {"n": 1})])
    result = store.upsert([new])
    assert (result.replaced, result.chunks_removed, result.chunks_added) == (1, 3, 1)
    for chunk in old.chunks:
        hits = store.search(chunk.vector[None, :], 11)[0]
        assert all(h.doc_id != "doc" or h.chunk == 0 for h in hits)
        assert {h.doc_id for h in hits} == {"doc", *(d.doc_id for d in others)}
    assert store.search(new.chunks[0].vector[None, :], 1)[0][0].doc_id == "doc"
    fetched = store.fetch([("doc", 0), ("doc", 1), ("doc", 2)])
    assert list(fetched) == [("doc", 0)]
    assert fetched["doc", 0].text == "new" and fetched["doc", 0].metadata == {"n": 1}
    assert (fetched["doc", 0].content_hash, fetched["doc", 0].version) == ("h2", 2)
    assert store.count() == (11, 11)
    assert store.check() == []


def test_older_version_is_ignored_and_same_content_never_rewrites(store: ShardStore) -> None:
    store.upsert([workload_doc("doc", 5, DIM)])
    stale = store.upsert([workload_doc("doc", 4, DIM)])
    assert (stale.stale, stale.chunks_added) == (1, 0)
    assert store.fetch([("doc", 0)])["doc", 0].version == 5
    # the same content (hash) under a newer version: no chunk rewritten, the version advances
    same = workload_doc("doc", 5, DIM)
    bumped = store.upsert([DocWrite("doc", same.content_hash, 9, same.chunks)])
    assert (bumped.unchanged, bumped.chunks_added, bumped.chunks_removed) == (1, 0, 0)
    assert store.fetch([("doc", 0)])["doc", 0].version == 9
    assert store.changes()[0].version == 9
    assert store.check() == []


def test_delete_leaves_a_tombstone(store: ShardStore) -> None:
    docs = [workload_doc(f"d{i}", 3, DIM) for i in range(5)]
    store.upsert(docs)
    assert store.delete(["d1", "d3", "never-seen"], 3) == 2
    assert store.doc_ids() == ["d0", "d2", "d4"]
    assert store.count() == (3, sum(len(d.chunks) for d in docs if d.doc_id in {"d0", "d2", "d4"}))
    for doc in (docs[1], docs[3]):
        hits = store.search(np.stack([c.vector for c in doc.chunks]), 50)
        assert all(h.doc_id not in {"d1", "d3"} for row in hits for h in row)
    tombstones = {r.doc_id: r for r in store.changes() if r.deleted}
    assert set(tombstones) == {"d1", "d3", "never-seen"}
    assert all(r.content_hash == "" and not r.chunks and r.version == 3
               for r in tombstones.values())
    # a write of the deleted version (or older) loses; a newer one brings the document back
    late = store.upsert([workload_doc("d1", 3, DIM), workload_doc("never-seen", 2, DIM)])
    assert late.stale == 2
    assert store.delete(["d1"], 2) == 0
    revived = store.upsert([workload_doc("d1", 4, DIM)])
    assert revived.inserted == 1 and "d1" in store.doc_ids()
    assert store.check() == []


def test_bad_input_is_refused_and_nothing_is_written(store: ShardStore) -> None:
    store.upsert([workload_doc("keep", 1, DIM)])
    digest, counts = store.digest(), store.count()
    good = unit_vectors(np.random.default_rng(2), 1, DIM)[0]
    nan = good.copy()
    nan[3] = np.nan
    bad_docs = [
        DocWrite("", "h", 1, [ChunkWrite("t", good)]),
        DocWrite("x", "h", 1, [ChunkWrite("t", good[:-1])]),
        DocWrite("x", "h", 1, [ChunkWrite("t", good.astype(np.float64))]),
        DocWrite("x", "h", 1, [ChunkWrite("t", nan)]),
        DocWrite("x", "h", -1, [ChunkWrite("t", good)]),
        DocWrite("x", "", 1, [ChunkWrite("t", good)]),
        DocWrite("x", "h", 1, [ChunkWrite("t", good, {"f": float("inf")})]),
        DocWrite("x", "h", 1, [ChunkWrite("t", good, {"o": object()})]),
        DocWrite("x", "h", 1, [ChunkWrite("\ud800", good)]),
    ]
    for bad in bad_docs:
        with pytest.raises(JobError) as caught:
            store.upsert([workload_doc("fine", 1, DIM), bad])
        assert caught.value.code is ErrorCode.BAD_REQUEST
    with pytest.raises(JobError, match="twice"):
        store.upsert([workload_doc("dup", 1, DIM), workload_doc("dup", 2, DIM)])
    for queries, k in [(good, 3), (good[None, :-1], 3), (good[None, :].astype(np.float64), 3),
                       (nan[None, :], 3), (good[None, :], 0)]:
        with pytest.raises(JobError) as caught:
            store.search(queries, k)
        assert caught.value.code is ErrorCode.BAD_REQUEST
    assert (store.digest(), store.count()) == (digest, counts)


def test_a_faiss_id_collision_is_refused(
    store: ShardStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    store.upsert([workload_doc("first", 1, DIM)])
    monkeypatch.setattr(sql, "chunk_faiss_id", lambda doc_id, chunk: 42 + chunk)
    store.upsert([one_chunk_doc("a", workload_doc("a", 1, DIM).chunks[0].vector)])
    before = store.digest(), store.count()
    with pytest.raises(JobError, match="collision") as caught:
        store.upsert([workload_doc("b", 1, DIM), one_chunk_doc("c", unit_vectors(
            np.random.default_rng(3), 1, DIM)[0])])
    assert caught.value.code is ErrorCode.BAD_REQUEST
    assert (store.digest(), store.count()) == before
    assert store.doc_ids() == ["a", "first"]


def test_a_failed_faiss_update_is_repaired_from_sqlite(
    store: ShardStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    store.upsert([workload_doc(f"d{i}", 1, DIM) for i in range(10)])

    def out_of_memory(*args: object) -> None:
        raise MemoryError

    with monkeypatch.context() as patch:
        patch.setattr(vector_index.VectorIndex, "add", out_of_memory)
        with pytest.raises(MemoryError):  # the rebuild uses add too: the store gives up
            store.upsert([workload_doc("d10", 1, DIM)])
    with pytest.raises(JobError) as caught:
        store.count()
    assert caught.value.code is ErrorCode.SHARD_UNAVAILABLE
    store.close()
    with ShardStore.open(store.path, dim=DIM) as reopened:  # the write was durable
        assert "d10" in reopened.doc_ids() and reopened.check() == []

    with ShardStore.open(store.path.with_name("other"), dim=DIM) as other:
        other.upsert([workload_doc(f"d{i}", 1, DIM) for i in range(10)])
        calls = 0
        original = vector_index.VectorIndex.remove

        def fail_once(self: object, ids: npt.NDArray[np.int64]) -> None:
            nonlocal calls
            calls += 1
            if calls == 1:
                raise MemoryError
            original(self, ids)  # type: ignore[arg-type]

        monkeypatch.setattr(vector_index.VectorIndex, "remove", fail_once)
        result = other.upsert([workload_doc("d3", 2, DIM)])  # FAISS rebuilt from SQLite
        assert result.replaced == 1 and other.check() == []
        assert other.statistics().rebuild_seconds > 0


# -- search ----------------------------------------------------------------------------------


@pytest.mark.parametrize(("n_docs", "k"), [(1, 1), (40, 10), (300, 25), (60, 1000)])
def test_search_equals_brute_force(tmp_path: Path, n_docs: int, k: int) -> None:
    rng = np.random.default_rng(n_docs)
    docs = [workload_doc(f"doc-{i}", 1, DIM) for i in range(n_docs)]
    keys, vectors = stored_vectors(docs)
    queries = unit_vectors(rng, 30, DIM)
    with ShardStore.open(tmp_path / "s", dim=DIM) as store:
        for start in range(0, n_docs, 17):
            store.upsert(docs[start : start + 17])
        results = store.search(queries, k)
        assert len(results) == len(queries)
        for query, hits in zip(queries, results, strict=True):
            assert len(hits) == min(k, len(keys))
            assert_same_hits(hits, brute_force(keys, vectors, query, k))
        for query, hits in zip(queries[:3], results, strict=False):  # one query, not a batch
            assert_same_hits(store.search(query[None, :], k)[0], hits)


def test_search_of_an_empty_store(store: ShardStore) -> None:
    assert store.search(np.ones((2, DIM), dtype=np.float32), 5) == [[], []]
    assert store.search(np.ones((0, DIM), dtype=np.float32), 5) == []


def test_ties_are_ordered_by_doc_id_whatever_the_write_order(tmp_path: Path) -> None:
    vector = unit_vectors(np.random.default_rng(4), 1, DIM)[0]
    ids = [f"twin-{i}" for i in range(40)]
    expected = sorted(ids)[:7]  # the shared order (protocol/ranking.py), not the faiss ids
    shuffled = [ids[i] for i in np.random.default_rng(8).permutation(len(ids))]
    for n, order in enumerate((ids, ids[::-1], shuffled)):
        with ShardStore.open(tmp_path / f"s{n}", dim=DIM) as store:
            for doc_id in order:
                store.upsert([one_chunk_doc(doc_id, vector)])
            hits = store.search(vector[None, :], 7)[0]
            assert [h.doc_id for h in hits] == expected
            assert len({h.score for h in hits}) == 1
            assert sorted(hits, key=hit_sort_key) == hits


# -- HNSW ------------------------------------------------------------------------------------


def test_hnsw_recall_at_10_against_flat(tmp_path: Path) -> None:
    dim = 384
    rng = np.random.default_rng(5)
    vectors = unit_vectors(rng, 5000, dim)
    queries = unit_vectors(rng, 200, dim)
    docs = [one_chunk_doc(f"v{i}", v) for i, v in enumerate(vectors)]
    with (
        ShardStore.open(tmp_path / "flat", dim=dim) as flat,
        ShardStore.open(tmp_path / "hnsw", dim=dim, index_kind="hnsw") as hnsw,
    ):
        flat.upsert(docs)
        hnsw.upsert(docs)
        exact = flat.search(queries, 10)
        approx = hnsw.search(queries, 10)
    recall = np.mean([
        len({h.doc_id for h in a} & {h.doc_id for h in e}) / 10
        for a, e in zip(approx, exact, strict=True)
    ])
    print(f"HNSW (M=32, efConstruction=80, efSearch=256) recall@10 on 5k x 384: {recall:.4f}")
    assert recall >= 0.95


def test_hnsw_never_returns_removed_chunks_and_compacts(tmp_path: Path) -> None:
    with ShardStore.open(tmp_path / "h", dim=DIM, index_kind="hnsw") as store:
        docs = [workload_doc(f"d{i}", 1, DIM) for i in range(200)]
        store.upsert(docs)
        store.upsert([workload_doc(f"d{i}", 2, DIM) for i in range(20)])  # same ids, new vectors
        store.delete([f"d{i}" for i in range(20, 40)], 2)
        stats = store.statistics()
        assert stats.index_dead > 0 and stats.index_vectors - stats.index_dead == stats.chunks
        for doc in docs[:40]:  # no removed vector is found, even searched with itself
            hits = store.search(np.stack([c.vector for c in doc.chunks]), 1)
            assert all(row[0].score < 0.999 for row in hits)
        for doc in (workload_doc(f"d{i}", 2, DIM) for i in range(20)):
            assert store.search(doc.chunks[0].vector[None, :], 1)[0][0].doc_id == doc.doc_id
        assert store.check() == []
        store.delete([f"d{i}" for i in range(40, 120)], 2)  # past a quarter dead: rebuilt
        assert store.statistics().index_dead == 0
        assert store.check() == []


# -- digests and replica sync -----------------------------------------------------------------


def fill(store: ShardStore, ops: Sequence[tuple[str, object]]) -> None:
    for op, arg in ops:
        if op == "upsert":
            assert isinstance(arg, list)
            store.upsert(arg)
        else:
            assert isinstance(arg, tuple)
            store.delete(*arg)


def test_digest_is_independent_of_write_order(tmp_path: Path) -> None:
    v1 = [workload_doc(f"d{i}", 1, DIM) for i in range(30)]
    v2 = [workload_doc(f"d{i}", 2, DIM) for i in range(0, 30, 3)]
    ops: list[tuple[str, object]] = [
        ("upsert", v1[:10]), ("upsert", v1[10:]), ("upsert", v2), ("delete", (["d4", "d5"], 3)),
    ]
    with (
        ShardStore.open(tmp_path / "a", dim=DIM) as a,
        ShardStore.open(tmp_path / "b", dim=DIM) as b,
    ):
        fill(a, ops)
        fill(b, [ops[3], ("upsert", v2[::-1]), ("upsert", v1[::-1])])
        assert a.digest() == b.digest()
        assert a.doc_ids() == b.doc_ids() and a.count() == b.count()
        before = a.digest()
        a.upsert([workload_doc("d7", 5, DIM)])
        assert a.digest() != before == b.digest()
        b.upsert([workload_doc("d7", 5, DIM)])
        assert a.digest() == b.digest()
        b.delete(["d8"], 1)  # a delete beats a live document of the same version
        assert a.digest() != b.digest()


def sync(source: ShardStore, target: ShardStore, limit: int = 7) -> None:
    version, after = 0, ""
    while records := source.changes(version, limit, after_doc_id=after):
        target.apply(records)
        version, after = records[-1].version, records[-1].doc_id


def test_changes_and_apply_converge_two_replicas(tmp_path: Path) -> None:
    with (
        ShardStore.open(tmp_path / "a", dim=DIM) as a,
        ShardStore.open(tmp_path / "b", dim=DIM) as b,
    ):
        a.upsert([workload_doc(f"d{i}", 1, DIM) for i in range(40)])
        b.upsert([workload_doc(f"d{i}", 1, DIM) for i in range(20, 60)])
        a.upsert([workload_doc(f"d{i}", 3, DIM) for i in range(25, 30)])  # a is newer
        b.upsert([workload_doc(f"d{i}", 4, DIM) for i in range(28, 33)])  # b newer on 28, 29
        a.delete(["d1", "d21", "d50"], 2)
        b.delete(["d2", "d31"], 9)
        assert a.digest() != b.digest()
        sync(a, b)
        sync(b, a)
        assert a.digest() == b.digest()
        assert a.doc_ids() == b.doc_ids() and a.count() == b.count()
        assert "d21" not in a.doc_ids() and "d31" not in a.doc_ids()
        assert a.fetch([("d29", 0)])["d29", 0].version == 4
        assert a.fetch([("d26", 0)])["d26", 0].version == 3
        queries = unit_vectors(np.random.default_rng(6), 20, DIM)
        for hits_a, hits_b in zip(a.search(queries, 10), b.search(queries, 10), strict=True):
            assert_same_hits(hits_a, hits_b)
        assert a.check() == [] and b.check() == []
        digest = a.digest()
        for records in (a.changes(0, 1000), b.changes(0, 1000)):
            again = a.apply(records)
            assert (again.inserted, again.replaced, again.deleted, again.chunks_added) == (0,) * 4
        assert a.digest() == digest == b.digest()


def keys_sync(source: ShardStore, target: ShardStore, limit: int = 7) -> list[str]:
    """What replica sync does: page the source's keys, compare them with the target's
    states, and pull (by id) only the documents whose state there wins; the ids pulled."""
    pulled: list[str] = []
    after = ""
    while keys := source.keys(after, limit):
        mine = target.states([k[0] for k in keys])
        wanted = [doc_id for doc_id, content_hash, version, deleted in keys
                  if resolve(DocState(version, deleted, content_hash), mine.get(doc_id))
                  not in (Outcome.UNCHANGED, Outcome.STALE)]
        if wanted:
            records = source.records(wanted)
            assert [r.doc_id for r in records] == sorted(
                wanted, key=lambda d: (next(k[2] for k in keys if k[0] == d), d))
            target.apply(records)
        pulled += wanted
        after = keys[-1][0]
    return pulled


def test_keys_then_records_converge_two_replicas_pulling_only_what_differs(
        tmp_path: Path) -> None:
    with (
        ShardStore.open(tmp_path / "a", dim=DIM) as a,
        ShardStore.open(tmp_path / "b", dim=DIM) as b,
    ):
        common = [workload_doc(f"d{i:02d}", 1, DIM) for i in range(40)]
        a.upsert(common)
        b.upsert(common)
        assert keys_sync(a, b) == [] and keys_sync(b, a) == []  # equal: nothing moves
        a.upsert([workload_doc(f"d{i:02d}", 3, DIM) for i in range(5, 8)])  # newer on a
        a.upsert([workload_doc(f"n{i}", 1, DIM) for i in range(4)])  # b missed these
        a.delete(["d10", "d11"], 5)  # deleted on one copy only
        b.upsert([workload_doc(f"d{i:02d}", 4, DIM) for i in range(7, 9)])  # newer on b
        b.delete(["d20"], 6)
        b.delete(["never-seen"], 2)  # a tombstone of a document a never had
        assert keys_sync(a, b) == ["d05", "d06", "d10", "d11", "n0", "n1", "n2", "n3"]
        assert keys_sync(b, a) == ["d07", "d08", "d20", "never-seen"]
        assert a.digest() == b.digest() == a.full_digest()
        assert a.doc_ids() == b.doc_ids() and a.count() == b.count()
        assert not {"d10", "d11", "d20"} & set(a.doc_ids())
        assert a.states(["never-seen"])["never-seen"].deleted
        assert a.check() == [] and b.check() == []
        assert keys_sync(a, b) == [] and keys_sync(b, a) == []


def test_keys_page_in_doc_id_order_and_records_come_by_id(store: ShardStore) -> None:
    store.upsert([workload_doc(f"d{i}", 9 - i, DIM) for i in range(8)])
    store.delete(["d3", "zz"], 20)
    keys = store.keys("", 100)
    assert [k[0] for k in keys] == [*sorted(f"d{i}" for i in range(8)), "zz"]
    assert keys[3][1:] == ("", 20, True)  # a tombstone: no hash
    paged: list[tuple[str, str, int, bool]] = []
    after = ""
    while page := store.keys(after, 3):
        paged += page
        after = page[-1][0]
    assert paged == keys
    records = store.records(["d1", "d3", "nope", "d1"])
    assert [(r.doc_id, r.deleted, len(r.chunks)) for r in records] == [
        ("d1", False, len(workload_doc("d1", 8, DIM).chunks)), ("d3", True, 0)]
    assert set(store.states(["d1", "zz", "nope"])) == {"d1", "zz"}


def test_changes_pages_in_version_order(store: ShardStore) -> None:
    store.upsert([workload_doc(f"d{i}", i % 3, DIM) for i in range(10)])
    store.delete(["gone"], 1)
    records = store.changes(0, 100)
    keys = [(r.version, r.doc_id) for r in records]
    assert keys == sorted(keys) and len(keys) == 11
    assert [(r.version, r.doc_id) for r in store.changes(1, 100)] == [k for k in keys if k[0] >= 1]
    paged: list[DocRecord] = []
    version, after = 0, ""
    while page := store.changes(version, 3, after_doc_id=after):
        paged += page
        version, after = page[-1].version, page[-1].doc_id
    assert [(r.version, r.doc_id) for r in paged] == keys
    live = next(r for r in records if r.doc_id == "d4")
    original = workload_doc("d4", 1, DIM)
    assert [c.text for c in live.chunks] == [c.text for c in original.chunks]
    np.testing.assert_array_equal(live.chunks[0].vector, original.chunks[0].vector)


# -- consistency -----------------------------------------------------------------------------


def test_check_finds_a_tampered_store_and_reopening_rebuilds(tmp_path: Path) -> None:
    path = tmp_path / "s"
    docs = [workload_doc(f"d{i}", 1, DIM) for i in range(30)]
    with ShardStore.open(path, dim=DIM) as store:
        store.upsert(docs)
        with sqlite3.connect(path / "docs.sqlite") as raw:  # behind FAISS's back
            raw.execute("DELETE FROM chunks WHERE doc_id = 'd7'")
            raw.execute("UPDATE docs SET deleted = 1, chunks = 0, content_hash = '' "
                        "WHERE doc_id = 'd7'")
        raw.close()
        problems = store.check()
        assert problems and any("no chunk row" in p for p in problems)
        with pytest.raises(JobError) as caught:
            store.search(np.stack([c.vector for c in docs[7].chunks]), 1)
        assert caught.value.code is ErrorCode.INTERNAL
    with ShardStore.open(path, dim=DIM) as store:
        assert store.check() == []
        assert "d7" not in store.doc_ids()
        with sqlite3.connect(path / "docs.sqlite") as raw:  # now break SQLite itself
            raw.execute("DELETE FROM chunks WHERE doc_id = 'd8' AND chunk = 0")
        raw.close()
    with ShardStore.open(path, dim=DIM) as store:
        assert store.check() == [
            "1 live documents do not have their number of chunk rows"
        ]


# -- lifecycle -------------------------------------------------------------------------------


def test_a_store_is_opened_once_and_keeps_its_dimension(tmp_path: Path) -> None:
    path = tmp_path / "s"
    with ShardStore.open(path, dim=DIM) as store:
        store.upsert([workload_doc("d", 1, DIM)])
        with pytest.raises(ConfigError, match="already open"):
            ShardStore.open(path, dim=DIM)
    with pytest.raises(ConfigError, match="dim"):
        ShardStore.open(path, dim=DIM + 1)
    with ShardStore(path, dim=DIM, index_kind="hnsw") as store:  # FAISS is derived: any kind
        assert store.statistics().index_kind == "hnsw"
        assert store.search(workload_doc("d", 1, DIM).chunks[0].vector[None, :], 1)[0][0].doc_id \
            == "d"
    closed = ShardStore.open(path, dim=DIM)
    closed.close()
    closed.close()
    with pytest.raises(JobError) as caught:
        closed.count()
    assert caught.value.code is ErrorCode.SHARD_UNAVAILABLE


def test_calls_from_several_threads_are_serialized(store: ShardStore) -> None:
    errors: list[BaseException] = []
    queries = unit_vectors(np.random.default_rng(7), 4, DIM)

    def writer(t: int) -> None:
        try:
            for i in range(25):
                store.upsert([workload_doc(f"t{t}-{i}", 1, DIM)])
                store.search(queries, 5)
                if i % 5 == 0:
                    store.delete([f"t{t}-{i}"], 1)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(t,)) for t in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert store.count()[0] == 4 * 20
    assert store.check() == []
