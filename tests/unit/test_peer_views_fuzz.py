"""The typed views of what peers advertise: capabilities and collection definitions.

Whatever map a peer signs into its record, :meth:`Capabilities.from_wire` and
:meth:`CollectionDef.from_wire` either return a view whose every field has its declared type
and bound, or raise :class:`RemoteProtocolError`; nothing else. The Hypothesis profile runs
10 000 examples per property in CI (``CI=true``), 500 locally (``tests/conftest.py``).
"""

from __future__ import annotations

import math
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from calinode.protocol.capabilities import (
    MAX_COLLECTIONS,
    MAX_HELD_SHARDS,
    MAX_LINKS,
    Capabilities,
    ModelOffer,
)
from calinode.protocol.collections import CollectionDef
from calinode.protocol.errors import ErrorCode, RemoteProtocolError
from hostile_values import hostile

FUZZ = settings(suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
SHA = "ab" * 32

GOOD_DEF: dict[str, Any] = CollectionDef(
    name="papers", model="minilm-l6-int8", model_sha256=SHA, dim=384, pooling="mean",
    normalize=True).to_wire()
GOOD_CAPS: dict[str, Any] = Capabilities(
    jobs=("embed", "ping", "shard.search"),
    embed=(ModelOffer(name="minilm-l6-int8", kind="embed", sha256=SHA, dim=384,
                      pooling="mean"),),
    generate=(ModelOffer(name="smollm2-135m", kind="generate", sha256=SHA,
                         context_length=8192),),
    index=True, collections=(CollectionDef.from_wire(GOOD_DEF),),
    shards={"papers": {0: "cd" * 32, 15: "ef" * 32}}).to_wire()

#: Cases per Hypothesis example (see tests/unit/test_job_views.py): the profile's number of
#: cases (10 000 in CI) at a tenth of Hypothesis' per-example cost.
BATCH = 10


def batched(strategy: st.SearchStrategy[Any]) -> st.SearchStrategy[list[Any]]:
    return st.lists(strategy, min_size=BATCH, max_size=BATCH)


def fuzz(test: Any) -> Any:
    return settings(FUZZ, max_examples=max(1, settings.default.max_examples // BATCH))(test)


def _assert_typed(caps: Capabilities) -> None:
    assert all(isinstance(j, str) for j in caps.jobs)
    for offer in (*caps.embed, *caps.generate):
        assert isinstance(offer, ModelOffer) and len(offer.sha256) == 64
    assert isinstance(caps.index, bool)
    assert len(caps.collections) <= MAX_COLLECTIONS
    assert sum(len(s) for s in caps.shards.values()) <= MAX_HELD_SHARDS
    for per in caps.shards.values():
        assert all(type(s) is int and 0 <= s < 4096 for s in per)
    for definition in caps.collections:
        assert type(definition.shards) is int and type(definition.replicas) is int


def _parse_caps(data: Any) -> None:
    try:
        caps = Capabilities.from_wire(data)
    except RemoteProtocolError as exc:
        assert exc.code is ErrorCode.BAD_REQUEST
    else:
        _assert_typed(caps)


@fuzz
@given(cases=batched(st.tuples(st.sampled_from(sorted(GOOD_CAPS)), hostile)))
def test_capabilities_with_any_value_at_a_known_key(cases: list[tuple[str, Any]]) -> None:
    for key, value in cases:
        _parse_caps({**GOOD_CAPS, key: value})


@fuzz
@given(cases=batched(hostile))
def test_capabilities_from_any_value(cases: list[Any]) -> None:
    for data in cases:
        _parse_caps(data)


@fuzz
@given(cases=batched(st.tuples(st.sampled_from(sorted(GOOD_DEF)), hostile)))
def test_definition_with_any_value_at_a_field(cases: list[tuple[str, Any]]) -> None:
    for key, value in cases:
        try:
            definition = CollectionDef.from_wire({**GOOD_DEF, key: value})
        except RemoteProtocolError as exc:
            assert exc.code is ErrorCode.BAD_REQUEST
        else:
            assert type(definition.shards) is int and 1 <= definition.shards <= 4096
            assert type(definition.dim) is int and type(definition.version) is int
            assert isinstance(definition.normalize, bool)
            assert isinstance(definition.dropped, bool)
            assert all(not isinstance(v, float) or math.isfinite(v)
                       for v in definition.to_wire().values())


@fuzz
@given(cases=batched(st.tuples(
    st.sampled_from(["embed", "generate"]),
    st.sampled_from(["name", "kind", "sha256", "dim", "pooling", "normalize", "max_tokens",
                     "context_length", "chat", "query_prefix", "extra"]), hostile)))
def test_model_offer_with_any_value(cases: list[tuple[str, str, Any]]) -> None:
    for model, key, value in cases:
        entry = dict(GOOD_CAPS[model][0])
        entry[key] = value
        _parse_caps({**GOOD_CAPS, model: [entry]})


@pytest.mark.parametrize("poison", [
    {"collections": 1},                                  # killed three nodes (issue 8)
    {"collections": [{**GOOD_DEF, "shards": 2.5}]},      # crashed every start of a node
    {"collections": [{**GOOD_DEF, "shards": True}]},
    {"collections": [GOOD_DEF, GOOD_DEF]},
    {"collections": [GOOD_DEF] * (MAX_COLLECTIONS + 1)},
    {"shards": {"papers": {"x": SHA}}},
    {"shards": {"papers": {"4096": SHA}}},
    {"shards": {"papers": [1, 2]}},
    {"shards": {"papers": {str(i): SHA for i in range(MAX_HELD_SHARDS + 1)}}},
    {"embed": [{"name": "m", "sha256": SHA}]},             # an embed model without dim
    {"embed": "minilm"},
    {"index": 1},
    {"jobs": [1]},
    {"links": "12D3KooW"},
    {"links": [1]},
    {"links": ["0OIl"]},                                 # not base58
    {"links": ["z" * 129]},
    {"links": ["z"] * (MAX_LINKS + 1)},
])
def test_poisoned_capabilities_are_refused(poison: dict[str, Any]) -> None:
    with pytest.raises(RemoteProtocolError):
        Capabilities.from_wire({**GOOD_CAPS, **poison})


def test_good_capabilities_round_trip_and_unknown_keys_are_ignored() -> None:
    caps = Capabilities.from_wire({**GOOD_CAPS, "future_feature": {"x": 1}})
    assert caps.to_wire() == GOOD_CAPS
    assert caps.offer("embed", "minilm-l6-int8") is not None
    assert caps.offer("generate", "minilm-l6-int8") is None
    assert dict(caps.shards["papers"]) == {0: "cd" * 32, 15: "ef" * 32}


@pytest.mark.parametrize("field,value", [
    ("shards", 2.5), ("shards", 0), ("shards", 4097), ("replicas", True), ("dim", "384"),
    ("version", 2**63), ("chunk_overlap", 100), ("normalize", 1), ("pooling", "max"),
    ("name", "../etc"), ("name", "x" * 65)])
def test_bad_definition_fields_are_refused(field: str, value: Any) -> None:
    with pytest.raises(RemoteProtocolError):
        CollectionDef.from_wire({**GOOD_DEF, field: value})


def test_definition_needs_its_required_fields_and_no_others() -> None:
    with pytest.raises(RemoteProtocolError, match="lacks"):
        CollectionDef.from_wire({k: v for k, v in GOOD_DEF.items() if k != "dim"})
    with pytest.raises(RemoteProtocolError, match="unknown"):
        CollectionDef.from_wire({**GOOD_DEF, "colour": "red"})
    with pytest.raises(RemoteProtocolError, match="unknown"):
        CollectionDef.from_wire({**GOOD_DEF, 1: "x"})
