"""The one reader of HTTP request bodies (node/api/bodies.py): each field's type and range,
and one timeout cap for every route."""

from __future__ import annotations

import math
from typing import Any

import pytest
import trio

from calinode.node.api.bodies import (
    DEFAULT_TIMEOUT,
    MAX_TIMEOUT,
    field,
    integer,
    peer_ids,
    request_deadline,
    string,
    timeout_of,
)
from calinode.protocol.errors import BadRequest, ErrorCode


def test_the_one_cap_is_the_largest_the_routes_had() -> None:
    # ping/jobs allowed 300 s, inference and RAG 600 s; calinode search asks for 600 s
    assert MAX_TIMEOUT == 600.0


@pytest.mark.parametrize("value", [0.5, 1, 5.0, 600, 600.0])
def test_a_timeout_in_range_is_taken_out_of_the_body(value: float) -> None:
    body: dict[str, Any] = {"timeout": value, "model": "m"}
    assert timeout_of(body) == float(value)
    assert body == {"model": "m"}  # the rest may travel as job params


def test_a_missing_timeout_is_the_routes_default() -> None:
    assert timeout_of({}) == DEFAULT_TIMEOUT
    assert timeout_of({}, 5.0) == 5.0


@pytest.mark.parametrize("value", [0, -1, 600.001, 601, math.inf, math.nan, True, "10", None,
                                   [10]])
def test_a_bad_timeout_is_one_bad_request(value: object) -> None:
    with pytest.raises(BadRequest) as caught:
        timeout_of({"timeout": value})
    assert caught.value.code is ErrorCode.BAD_REQUEST
    assert caught.value.message == "timeout must be a number of seconds in (0, 600]"


async def test_the_deadline_is_now_plus_the_timeout() -> None:
    before = trio.current_time()
    deadline = request_deadline({"timeout": 42})
    assert before + 42 <= deadline <= trio.current_time() + 42


def test_field_checks_the_type_and_counts_an_int_as_a_float() -> None:
    assert field({"count": 3}, "count", int) == 3
    assert field({"t": 3}, "t", float) == 3.0 and isinstance(field({"t": 3}, "t", float), float)
    assert field({}, "params", dict, {}) == {}
    with pytest.raises(BadRequest, match="missing field 'peer_id'"):
        field({}, "peer_id", str)
    with pytest.raises(BadRequest, match="field 'count' must be int"):
        field({"count": True}, "count", int)
    with pytest.raises(BadRequest, match="field 'kind' must be str"):
        field({"kind": 1}, "kind", str)


def test_integer_refuses_bools_floats_and_strings() -> None:
    assert integer({"k": 7}, "k", 10) == 7
    assert integer({}, "k", 10) == 10
    for bad in (True, 1.5, "3", None):
        with pytest.raises(BadRequest, match="k must be an integer"):
            integer({"k": bad}, "k", 10)


def test_string_refuses_empty_and_missing_without_default() -> None:
    assert string({"name": "docs"}, "name") == "docs"
    assert string({}, "index_kind", "flat") == "flat"
    for body in ({}, {"name": ""}, {"name": 3}):
        with pytest.raises(BadRequest, match="name must be a non-empty string"):
            string(body, "name")


def test_peer_ids_is_a_list_of_strings() -> None:
    assert peer_ids({"admins": ["a", "b"]}, "admins") == ("a", "b")
    assert peer_ids({}, "admins") == ()
    for bad in ("a", ["a", 1], {"a": 1}):
        with pytest.raises(BadRequest, match="admins must be a list of peer ids"):
            peer_ids({"admins": bad}, "admins")
