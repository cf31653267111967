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

from calinode.protocol.collections import CollectionDef
from calinode.protocol.errors import CalinodeError, ErrorCode, JobError, ProtocolError
from calinode.protocol.job_params import (
    EchoParams,
    EmbedChunksParams,
    EmbedParams,
    GenerateParams,
    PingParams,
    ShardChangesParams,
    ShardInfoParams,
    ShardSearchParams,
    ShardWriteParams,
    WireDoc,
)
from calinode.protocol.job_replies import (
    EmbedChunksReply,
    EmbedReply,
    GenerateReply,
    ShardChangesReply,
    ShardInfoReply,
    ShardSearchReply,
    ShardWriteReply,
)
from calinode.protocol.search_budget import SearchBudget, check_search, plan_search
from calinode.protocol.vectors import encode_vectors
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


def hit(score: float = 0.5, doc_id: str = "d1") -> dict[str, Any]:
    return {"doc_id": doc_id, "chunk": 0, "score": score, "text": "t",
            "metadata": {"title": "x"}}


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
                                                   "vectors": vec(2), "k": 3}),
    "shard.changes": (ShardChangesParams.from_wire, {
        "collection": "papers", "shard": 0, "since_version": 3, "after_doc_id": "a",
        "limit": 200}),
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
        "results": {"0": [[hit(0.9), hit(0.1, "d2")]], "1": [[]]}}),
    "reply:shard.changes": (ShardChangesReply.from_wire, {
        "docs": [doc("a", version=1), doc("b", version=2)], "digest": "ab12"}),
    "reply:shard.info": (ShardInfoReply.from_wire, {"shards": [
        {"shard": 0, "docs": 1, "chunks": 2, "problems": [], "ready": True, "digest": "ab"}]}),
}


@pytest.mark.parametrize("name", sorted(SCHEMAS))
def test_valid_maps_parse_and_round_trip(name: str) -> None:
    parse, wire = SCHEMAS[name]
    view = parse(wire)
    to_wire = getattr(view, "to_wire", None)
    if to_wire is not None:
        assert parse(to_wire()) == view or name in ("shard.write", "shard.search",
                                                    "reply:embed", "reply:embed_chunks",
                                                    "reply:shard.changes")


def refused(parse: Callable[[Any], object], wire: object) -> CalinodeError:
    with pytest.raises((ProtocolError, JobError)) as caught:
        parse(wire)
    assert caught.value.code is ErrorCode.BAD_REQUEST
    return caught.value


def test_a_changes_reply_without_docs_is_refused_cleanly() -> None:
    assert "docs" in refused(ShardChangesReply.from_wire, {"digest": "ab"}).message


@pytest.mark.parametrize("score", [math.nan, math.inf, -math.inf, 1e300])
def test_search_hits_with_non_finite_scores_are_refused(score: float) -> None:
    parse, _ = SCHEMAS["reply:shard.search"]
    refused(parse, {"results": {"0": [[hit(score)]], "1": [[]]}})


def test_search_reply_must_answer_exactly_the_shards_asked_with_one_row_per_query() -> None:
    parse, _ = SCHEMAS["reply:shard.search"]
    refused(parse, {"results": {"0": [[]], "7": [[]]}})  # a shard nobody asked for
    refused(parse, {"results": {"0": [[], []], "1": [[]]}})  # two rows for one query
    refused(parse, {"results": {"0": [[hit(), hit(), hit()]], "1": [[]]}})  # over k
    refused(parse, {"results": {"0": [[hit(0.1), hit(0.9)]], "1": [[]]}})  # not best first


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
        check_search(1, 1000, 1000, budget)
    assert caught.value.code is ErrorCode.BAD_REQUEST and "search budget" in caught.value.message
    per_block, groups = plan_search(1, 1000, list(range(64)), budget)
    assert per_block == 1 and sorted(s for g in groups for s in g) == list(range(64))
    for group in groups:
        check_search(per_block, 1000, len(group), budget)
    per_block, groups = plan_search(500, 10, [0, 1, 2], budget)
    assert per_block * 10 <= budget.max_hits
    for group in groups:
        check_search(per_block, 10, len(group), budget)


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
