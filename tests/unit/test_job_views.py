"""The typed views of job params and replies, and the search budget: what they accept, what
they refuse, and (fuzz) that whatever a peer sends, only a clean validation error comes out.

The fuzz properties run the Hypothesis profile's number of examples: 10 000 each with
``CI=true``, 500 otherwise (``tests/conftest.py``). Each starts from a valid map of its schema
and replaces, drops or adds fields with hostile values (wrong types, NaN, huge ints, deep or
long lists), or feeds an arbitrary value; the only exception allowed out is a
``ProtocolError``/``JobError`` with ``BAD_REQUEST``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from calinode.models.store.digest import chunk_faiss_id
from calinode.protocol.collections import CollectionDef
from calinode.protocol.errors import CalinodeError, ErrorCode, JobError, ProtocolError
from calinode.protocol.job_params import (
    EchoParams,
    EmbedChunksParams,
    EmbedParams,
    GenerateParams,
    PingParams,
)
from calinode.protocol.job_replies import EmbedChunksReply, EmbedReply, GenerateReply
from calinode.protocol.search_budget import (
    SEARCH_HIT_BYTES,
    FetchPage,
    SearchBudget,
    check_search,
    plan_search,
)
from calinode.protocol.shard_params import (
    ShardChangesParams,
    ShardFetchParams,
    ShardInfoParams,
    ShardSearchParams,
    ShardWriteManyParams,
    ShardWriteParams,
    encode_ids,
)
from calinode.protocol.shard_replies import (
    ShardFetchReply,
    ShardInfoReply,
    ShardSearchReply,
    ShardWriteFailure,
    ShardWriteManyReply,
    ShardWriteReply,
)
from calinode.protocol.sync_replies import ShardChangesReply, ShardKeysReply
from calinode.protocol.vectors import encode_vectors
from calinode.protocol.wire_docs import WireDoc
from hostile_values import hostile

SHA = "ab" * 32
DEF = CollectionDef(name="papers", model="m", model_sha256=SHA, dim=4, pooling="mean",
                    normalize=True, query_prefix="", passage_prefix="", shards=4, replicas=1)


def vec(rows: int, dim: int = 4, value: float = 0.5) -> dict[str, Any]:
    return encode_vectors(np.full((rows, dim), value, dtype=np.float32))


def doc(doc_id: str = "d1", chunks: int = 2, version: int = 5) -> dict[str, Any]:
    return {"doc_id": doc_id, "content_hash": "h", "version": version, "deleted": False,
            "chunks": [{"text": f"c{i}", "metadata": {"position": i}} for i in range(chunks)],
            "vectors": vec(chunks)}


def hits(*rows: list[tuple[int, float]]) -> dict[str, Any]:
    """One shard's search answer on the wire: rows of (chunk id, score)."""
    return {"counts": np.array([len(r) for r in rows], dtype="<u4").tobytes(),
            "ids": encode_ids([i for r in rows for i, _ in r]),
            "scores": np.array([s for r in rows for _, s in r], dtype="<f4").tobytes()}


FETCH_IDS = np.array([chunk_faiss_id("d1", 0), chunk_faiss_id("d2", 3)], dtype=np.int64)


def fetched(fid: int = int(FETCH_IDS[0]), doc_id: str = "d1", chunk: int = 0) -> list[Any]:
    return [fid, doc_id, chunk, "t", {"title": "x"}]


def parse_fetch(wire: object) -> ShardFetchReply:
    return ShardFetchReply.from_wire(wire, ids=FETCH_IDS, text=True, chunk_id=chunk_faiss_id)


# (parser, a valid wire map) for every schema
SCHEMAS: dict[str, tuple[Callable[[Any], object], dict[str, Any]]] = {
    "ping": (PingParams.from_wire, {}),
    "echo": (EchoParams.from_wire, {"payload": b"x"}),
    "embed": (EmbedParams.from_wire, {"model": "m", "texts": ["a", "b"],
                                      "input_type": "query", "dimensions": 4}),
    "embed_chunks": (EmbedChunksParams.from_wire, {"model": "m", "docs": ["a b c"],
                                                   "chunk_tokens": 64, "chunk_overlap": 8}),
    "generate": (GenerateParams.from_wire, {
        "model": "m", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 8,
        "temperature": 0.2, "top_p": 0.9, "seed": 1, "stop": ["\n"], "stream": True}),
    "shard.write": (ShardWriteParams.from_wire, {
        "collection": "papers", "definition": DEF.to_wire(), "shard": 1,
        "docs": [doc()], "seed": False}),
    "shard.search": (ShardSearchParams.from_wire, {"collection": "papers", "shards": [0, 1],
                                                   "vectors": vec(2), "k": 3,
                                                   "per_doc": True}),
    "shard.fetch": (ShardFetchParams.from_wire, {"collection": "papers", "shard": 2,
                                                 "ids": encode_ids([5, 7]), "text": False}),
    "shard.changes": (ShardChangesParams.from_wire, {
        "collection": "papers", "shard": 0, "since_version": 3, "after_doc_id": "a",
        "limit": 200}),
    "shard.write_many": (ShardWriteManyParams.from_wire, {
        "collection": "papers", "definition": DEF.to_wire(),
        "writes": [{"shard": 1, "docs": [doc("a")], "seed": True},
                   {"shard": 3, "docs": [doc("b"), doc("c")]}]}),
    "shard.changes:keys": (ShardChangesParams.from_wire, {
        "collection": "papers", "shard": 0, "after_doc_id": "a", "limit": 2000,
        "keys_only": True}),
    "shard.changes:ids": (ShardChangesParams.from_wire, {
        "collection": "papers", "shard": 0, "doc_ids": ["a", "b"], "limit": 2}),
    "shard.info": (ShardInfoParams.from_wire, {"collection": "papers"}),
    "reply:embed": (lambda w: EmbedReply.from_wire(w, texts=2), {
        "model": "m", "sha256": SHA, "dim": 4, "vectors": vec(2), "token_counts": [3, 4],
        "truncated": [1]}),
    "reply:embed_chunks": (lambda w: EmbedChunksReply.from_wire(w, docs=1, dim=4), {
        "model": "m", "sha256": SHA, "dim": 4, "vectors": vec(2),
        "chunks": [[{"text": "a", "start": 0, "end": 1}, {"text": "b", "start": 2, "end": 3}]]}),
    "reply:generate": (GenerateReply.from_wire, {
        "model": "m", "sha256": SHA, "text": "hi", "finish_reason": "stop",
        "usage": {"prompt_tokens": 3, "completion_tokens": 1}}),
    "reply:shard.write": (ShardWriteReply.from_wire, {
        "inserted": 1, "replaced": 0, "deleted": 0, "unchanged": 0, "stale": 0,
        "outcomes": {"d1": "inserted"}}),
    "reply:shard.search": (lambda w: ShardSearchReply.from_wire(w, shards=[0, 1], queries=1,
                                                                k=2), {
        "results": {"0": hits([(11, 0.9), (12, 0.1)]), "1": hits([])}}),
    "reply:shard.fetch": (parse_fetch, {"chunks": [fetched(), fetched(int(FETCH_IDS[1]), "d2",
                                                                      3)], "done": 2}),
    "reply:shard.changes": (ShardChangesReply.from_wire, {
        "docs": [doc("a", version=1), doc("b", version=2)], "digest": "ab12"}),
    "reply:shard.write_many": (lambda w: ShardWriteManyReply.from_wire(w, shards=[1, 3]), {
        "shards": [{"shard": 3, "error": "SHARD_UNAVAILABLE", "message": "gone"},
                   {"shard": 1, "result": {"inserted": 1, "replaced": 0, "deleted": 0,
                                           "unchanged": 0, "stale": 0,
                                           "outcomes": {"a": "inserted"}}}]}),
    "reply:shard.changes:keys": (lambda w: ShardKeysReply.from_wire(w, after="a", limit=3), {
        "keys": [["b", "h1", 4, False], ["c", "", 9, True]], "digest": "ab12"}),
    "reply:shard.info": (ShardInfoReply.from_wire, {"shards": [
        {"shard": 0, "docs": 1, "chunks": 2, "problems": [], "ready": True, "digest": "ab"}]}),
}


@pytest.mark.parametrize("name", sorted(SCHEMAS))
def test_valid_maps_parse_and_round_trip(name: str) -> None:
    parse, wire = SCHEMAS[name]
    view = parse(wire)
    to_wire = getattr(view, "to_wire", None)
    if to_wire is not None:
        assert parse(to_wire()) == view or name in ("shard.write", "shard.write_many",
                                                    "shard.search",
                                                    "shard.fetch", "reply:shard.search",
                                                    "reply:embed", "reply:embed_chunks",
                                                    "reply:shard.changes")


def refused(parse: Callable[[Any], object], wire: object) -> CalinodeError:
    with pytest.raises((ProtocolError, JobError)) as caught:
        parse(wire)
    assert caught.value.code is ErrorCode.BAD_REQUEST
    return caught.value


def test_a_changes_reply_without_docs_is_refused_cleanly() -> None:
    assert "docs" in refused(ShardChangesReply.from_wire, {"digest": "ab"}).message


def test_a_write_many_request_names_each_shard_once_within_one_batch() -> None:
    parse, good = SCHEMAS["shard.write_many"]
    view = parse(good)
    assert [(w.shard, len(w.docs), w.seed) for w in view.writes] == [(1, 1, True),
                                                                      (3, 2, False)]
    first, _second = good["writes"]
    refused(parse, {**good, "writes": [first, first]})  # a shard twice
    refused(parse, {**good, "writes": []})
    refused(parse, {**good, "writes": [{**first, "docs": []}]})
    refused(parse, {**good, "writes": [{**first, "shard": -1}]})
    refused(parse, {**good, "writes": [{**first, "extra": 1}]})
    refused(parse, {**good, "writes": [{"shard": s, "docs": [doc(f"d{s}-{i}", chunks=1)
                                                              for i in range(200)]}
                                       for s in range(11)]})  # over MAX_BATCH together


def test_a_write_many_reply_answers_exactly_the_shards_asked() -> None:
    parse, good = SCHEMAS["reply:shard.write_many"]
    view = parse(good)
    assert isinstance(view.results[3], ShardWriteFailure)
    assert view.results[3].code == "SHARD_UNAVAILABLE"
    assert view.results[1].outcomes == {"a": "inserted"}  # type: ignore[union-attr]
    failed, done = good["shards"]
    refused(parse, {"shards": [done]})  # shard 3 unanswered
    refused(parse, {"shards": [done, done]})
    refused(parse, {"shards": [done, {**failed, "shard": 2}]})  # a shard nobody asked for
    refused(parse, {"shards": [done, {**failed, "error": "NO_SUCH_CODE"}]})
    refused(parse, {"shards": [done, {**failed, "message": "m" * 1025}]})
    refused(parse, {"shards": [done, {**failed, "result": done["result"]}]})  # both
    refused(parse, {"shards": [done, {"shard": 3}]})  # neither
    refused(parse, {"shards": [done, failed, failed]})  # more than asked


def test_keys_only_and_by_id_changes_requests_are_bounded_and_not_mixed() -> None:
    parse, good = SCHEMAS["shard.changes:keys"]
    assert parse(good).keys_only and parse(good).limit == 2000
    refused(parse, {**good, "limit": 2001})  # a keys page: at most MAX_KEYS_LIMIT
    refused(parse, {**good, "since_version": 3})  # keys come in doc_id order
    refused(parse, {**good, "keys_only": 1})
    refused(ShardChangesParams.from_wire, {"collection": "papers", "shard": 0,
                                          "limit": 501})  # whole documents: 500 at most
    parse, good = SCHEMAS["shard.changes:ids"]
    assert parse(good).doc_ids == ("a", "b")
    refused(parse, {**good, "doc_ids": ["a", "a"]})
    refused(parse, {**good, "doc_ids": ["a", 3]})
    refused(parse, {**good, "doc_ids": [f"d{i}" for i in range(501)]})
    refused(parse, {**good, "doc_ids": "ab"})
    refused(parse, {**good, "keys_only": True})
    refused(parse, {**good, "after_doc_id": "a"})
    # the new fields travel only when used: a plain page request is what it always was
    plain = ShardChangesParams(collection="papers", shard=0).to_wire()
    assert "keys_only" not in plain and "doc_ids" not in plain


def test_a_keys_reply_goes_strictly_forward_within_its_limit_and_types_every_key() -> None:
    parse, good = SCHEMAS["reply:shard.changes:keys"]
    view = parse(good)
    assert [(k.doc_id, k.version, k.deleted) for k in view.keys] == [("b", 4, False),
                                                                    ("c", 9, True)]
    keys = good["keys"]
    refused(parse, {**good, "keys": [keys[1], keys[0]]})  # backwards
    refused(parse, {**good, "keys": [keys[0], keys[0]]})  # repeated
    refused(parse, {**good, "keys": [["a", "h", 1, False]]})  # not after the cursor
    refused(parse, {**good, "keys": [*keys, ["d", "h", 1, False], ["e", "h", 1, False]]})
    refused(parse, {**good, "keys": [["b", "h1", 4, 0]]})  # deleted must be a bool
    refused(parse, {**good, "keys": [["b", "h1", -1, False]]})
    refused(parse, {**good, "keys": [["b", "h1", 2**63, False]]})
    refused(parse, {**good, "keys": [["b", "h1", 4]]})  # three fields
    refused(parse, {**good, "keys": [["b", "", 4, False]]})  # a live document has a hash
    refused(parse, {**good, "keys": [["c", "h", 9, True]]})  # a tombstone has none
    refused(parse, {**good, "keys": [["b", "h" * 257, 4, False]]})
    refused(parse, {**good, "keys": [["x" * 1025, "h", 4, False]]})
    refused(parse, {"keys": keys})  # no digest
    refused(parse, {**good, "digest": "not hex"})
    refused(parse, {**good, "extra": 1})


@pytest.mark.parametrize("score", [math.nan, math.inf, -math.inf, 1e38])
def test_search_hits_with_non_finite_scores_are_refused(score: float) -> None:
    parse, _ = SCHEMAS["reply:shard.search"]
    refused(parse, {"results": {"0": hits([(1, score)]), "1": hits([])}})


def test_search_reply_must_answer_exactly_the_shards_asked_with_one_row_per_query() -> None:
    parse, _ = SCHEMAS["reply:shard.search"]
    good = parse({"results": {"0": hits([(11, 0.9), (12, 0.9)]), "1": hits([])}})
    assert [r[0].tolist() for r in good.results[0].rows()] == [[11, 12]]
    refused(parse, {"results": {"0": hits([]), "7": hits([])}})  # a shard nobody asked for
    refused(parse, {"results": {"0": hits([])}})  # a shard missing
    refused(parse, {"results": {"0": hits([], []), "1": hits([])}})  # two rows for one query
    refused(parse, {"results": {"0": hits([(1, .3), (2, .2), (3, .1)]), "1": hits([])}})  # > k
    refused(parse, {"results": {"0": hits([(1, 0.1), (2, 0.9)]), "1": hits([])}})  # order
    refused(parse, {"results": {"0": hits([(1, 0.9), (1, 0.1)]), "1": hits([])}})  # twice
    refused(parse, {"results": {"0": hits([(-1, 0.9)]), "1": hits([])}})  # negative id
    short = hits([(1, 0.9), (2, 0.5)])
    refused(parse, {"results": {"0": {**short, "scores": short["scores"][:4]},
                                "1": hits([])}})  # fewer scores than ids
    refused(parse, {"results": {"0": {**short, "counts": b"\x05\x00\x00\x00"},
                                "1": hits([])}})  # counts over the ids
    refused(parse, {"results": {"0": {**short, "extra": 1}, "1": hits([])}})  # unknown key
    refused(parse, {"results": {"0": {"ids": short["ids"]}, "1": hits([])}})  # missing keys


def test_fetch_reply_answers_only_ids_asked_each_once_under_their_own_key() -> None:
    assert parse_fetch({"chunks": [fetched()], "done": 1}).chunks[int(FETCH_IDS[0])].doc_id == "d1"
    assert parse_fetch({"chunks": [], "done": 2}).done == 2  # both deleted since the search
    refused(parse_fetch, {"chunks": [fetched(99)], "done": 2})  # an id nobody asked for
    refused(parse_fetch, {"chunks": [fetched(), fetched()], "done": 2})  # twice
    refused(parse_fetch, {"chunks": [fetched(int(FETCH_IDS[1]))], "done": 1})  # beyond done
    refused(parse_fetch, {"chunks": [fetched(doc_id="other")], "done": 2})  # wrong key
    refused(parse_fetch, {"chunks": [], "done": 0})  # no progress
    refused(parse_fetch, {"chunks": [], "done": 3})  # more than asked
    refused(parse_fetch, {"chunks": [fetched()[:3]], "done": 1})  # keys only, text asked
    refused(parse_fetch, {"chunks": [[*fetched()[:4], {"x": math.nan}]], "done": 1})
    refused(parse_fetch, {"chunks": [fetched()]})  # missing done


def test_embed_reply_must_have_one_vector_per_text() -> None:
    parse, wire = SCHEMAS["reply:embed"]
    refused(parse, {**wire, "vectors": vec(3)})
    refused(parse, {**wire, "vectors": vec(2, value=math.nan)})
    refused(parse, {**wire, "truncated": [5]})


def test_search_params_deduplicate_and_bound_shards() -> None:
    view = ShardSearchParams.from_wire({"collection": "papers", "shards": [3, 0, 3, 0] * 250,
                                        "vectors": vec(1), "k": 1000})
    assert view.shards == (0, 3)
    refused(ShardSearchParams.from_wire, {"collection": "papers", "shards": [0] * 5000,
                                          "vectors": vec(1), "k": 1})
    refused(ShardSearchParams.from_wire, {"collection": "papers", "shards": [True],
                                          "vectors": vec(1), "k": 1})


def test_documents_need_one_vector_per_chunk_of_the_collection_width() -> None:
    refused(WireDoc.from_wire, {**doc(), "vectors": vec(1)})
    wide = WireDoc.from_wire({**doc(), "vectors": vec(2, dim=8)})
    refused(wide.vectors_of, 4)


def test_the_search_budget_refuses_amplification_and_plans_requests_that_fit() -> None:
    budget = SearchBudget()
    with pytest.raises(JobError) as caught:
        check_search(1000, 1000, 2, budget)
    assert caught.value.code is ErrorCode.BAD_REQUEST and "search budget" in caught.value.message
    with pytest.raises(JobError):
        check_search(1, 1, 5000, budget)  # more shards than a reply map may hold
    for queries, k, shards in ((1000, 1000, 16), (1000, 1000, 64), (1, 1000, 64),
                               (500, 10, 3), (225, 100, 16), (1, 1, 4096)):
        per_block, groups = plan_search(queries, k, list(range(shards)), budget)
        assert sorted(s for g in groups for s in g) == list(range(shards))
        for group in groups:
            check_search(per_block, k, len(group), budget)
    per_block, groups = plan_search(1000, 1000, list(range(16)), budget)
    assert per_block == 349 and len(groups) == 16  # 1000 x 1000: 3 blocks x 16 shards
    assert budget.search_bytes(per_block, 1000, 1) <= budget.plan_bytes < budget.max_bytes


def test_a_search_reply_of_the_largest_plan_fits_the_frame_limits() -> None:
    """The planned reply, encoded as a holder encodes it, passes the receiver's frame limits
    (bytes, objects, the largest bin)."""
    from calinode.protocol.codec import pack, scan
    from calinode.protocol.shard_replies import ShardHits
    budget = SearchBudget()
    per_block, groups = plan_search(1000, 1000, list(range(16)), budget)
    rows = [(np.arange(1000, dtype=np.int64) + 10 * q, np.linspace(1, 0, 1000))
            for q in range(per_block)]
    shard_hits = ShardHits.from_rows(rows)
    reply = {"results": {str(s): shard_hits.to_wire() for s in groups[0]}}
    payload = pack(reply, limits=budget.limits)
    scan(payload, budget.limits)
    assert len(payload) <= budget.max_bytes
    assert len(payload) >= per_block * 1000 * SEARCH_HIT_BYTES


def test_a_fetch_page_stops_before_the_budget_and_always_takes_one_entry() -> None:
    budget = SearchBudget()
    page = FetchPage(budget)
    assert page.admit(budget.max_bytes * 2, 1)  # the first always (it came in one frame)
    assert not page.admit(1, 1)
    page = FetchPage(budget)
    taken = 0
    while page.admit(1_000_000, 10):
        taken += 1
    assert taken == budget.max_bytes // 1_000_000


# -- fuzz -------------------------------------------------------------------------------------

FUZZ = settings(suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


def mutations(base: dict[str, Any], depth: int = 0) -> st.SearchStrategy[object]:
    """Wire maps near ``base``: a few fields replaced by hostile values or dropped, an unknown
    field added, one nested map (or list of maps) mutated the same way, or no map at all."""
    keys = [*sorted(base), "extra"]
    replaced = st.lists(st.tuples(st.sampled_from(keys), hostile), min_size=1, max_size=3).map(
        lambda pairs: {**base, **dict(pairs)})
    dropped = st.sets(st.sampled_from(keys), min_size=1, max_size=3).map(
        lambda gone: {k: v for k, v in base.items() if k not in gone})
    options: list[st.SearchStrategy[object]] = [hostile, replaced, dropped]
    for key, value in base.items():
        if depth == 0 and isinstance(value, dict):
            options.append(mutations(value, 1).map(lambda inner, k=key: {**base, k: inner}))
        elif depth == 0 and isinstance(value, list) and value and isinstance(value[0], dict):
            options.append(mutations(value[0], 1).map(
                lambda inner, k=key, rest=value[1:]: {**base, k: [inner, *rest]}))
    return st.one_of(*options)


#: Cases per Hypothesis example: a batch of mutations per example keeps the profile's number of
#: *cases* per schema (10 000 in CI) while paying Hypothesis' ~2 ms per-example overhead only
#: once a batch, so 16 schemas fuzz in about a minute instead of six.
BATCH = 10


@pytest.mark.parametrize("name", sorted(SCHEMAS))
def test_fuzz_only_clean_validation_errors(name: str) -> None:
    parse, base = SCHEMAS[name]
    cases = settings.default.max_examples

    @settings(FUZZ, max_examples=max(1, cases // BATCH))
    @given(wires=st.lists(mutations(base), min_size=BATCH, max_size=BATCH))
    def parse_only_cleanly(wires: list[object]) -> None:
        for wire in wires:
            try:
                parse(wire)
            except (ProtocolError, JobError) as exc:
                assert exc.code is ErrorCode.BAD_REQUEST, exc

    parse_only_cleanly()
