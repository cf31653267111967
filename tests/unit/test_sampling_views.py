"""The generate job's sampling fields (issue 15) as a peer sends them: ``GenerateParams``
(json_schema, n, logprobs, top_logprobs) and the reply view (logprobs per token, more
choices), each refused with ``BAD_REQUEST`` naming the field when hostile."""

from __future__ import annotations

import math
from typing import Any

import pytest

from calinode.protocol.errors import ErrorCode, RemoteProtocolError
from calinode.protocol.job_params import (
    MAX_CHOICES,
    MAX_LOGPROB_TOKENS,
    MAX_SCHEMA_CHARS,
    MAX_TOP_LOGPROBS,
    GenerateParams,
)
from calinode.protocol.job_replies import GenerateReply, TokenLogprob, token_text

SHA = "a" * 64
BASE: dict[str, Any] = {"model": "m", "prompt": "Hi", "max_tokens": 8}


def refused(parse: Any, data: object) -> str:
    with pytest.raises(RemoteProtocolError) as exc:
        parse(data)
    assert exc.value.code == ErrorCode.BAD_REQUEST
    return exc.value.message


def test_sampling_params_round_trip_and_stay_off_the_wire_when_unset() -> None:
    plain = GenerateParams.from_wire(BASE)
    assert not {"json_schema", "n", "logprobs", "top_logprobs"} & plain.to_wire().keys()
    asked = GenerateParams.from_wire(dict(BASE, json_schema='{"type":"object"}', n=3,
                                          logprobs=True, top_logprobs=MAX_TOP_LOGPROBS))
    again = GenerateParams.from_wire(asked.to_wire())
    assert again == asked
    assert (again.n, again.top_logprobs, again.json_schema) == (3, 20, '{"type":"object"}')


@pytest.mark.parametrize(("extra", "field"), [
    ({"n": 0}, "n"), ({"n": MAX_CHOICES + 1}, "n"), ({"n": True}, "n"), ({"n": 2.0}, "n"),
    ({"logprobs": 1}, "logprobs"), ({"logprobs": "yes"}, "logprobs"),
    ({"logprobs": True, "top_logprobs": MAX_TOP_LOGPROBS + 1}, "top_logprobs"),
    ({"logprobs": True, "top_logprobs": -1}, "top_logprobs"),
    ({"top_logprobs": 3}, "top_logprobs needs logprobs"),
    ({"json_schema": {"type": "object"}}, "json_schema"),
    ({"json_schema": "[1, 2]"}, "JSON object"), ({"json_schema": "{nope"}, "not JSON"),
    ({"json_schema": "[" * 5000 + "]" * 5000}, "json_schema"),
    ({"json_schema": '{"a":"' + "x" * MAX_SCHEMA_CHARS + '"}'}, "json_schema"),
    ({"json_schema": ""}, "json_schema"),
    ({"n": 2, "stream": True}, "not streamed"),
    ({"logprobs": True, "stream": True}, "not streamed"),
    ({"logprobs": True, "n": 8, "max_tokens": MAX_LOGPROB_TOKENS // 8 + 1}, "n * max_tokens"),
    ({"grammar": 'root ::= [\\x00]'}, "unknown fields"),
])
def test_hostile_sampling_params_are_refused_by_name(extra: dict[str, Any], field: str) -> None:
    assert field in refused(GenerateParams.from_wire, dict(BASE, **extra))


ASKED = GenerateParams(model="m", prompt="Hi", max_tokens=4, n=2, logprobs=True,
                       top_logprobs=2)


def entry(logprob: float = -0.5, piece: bytes = b"hi", top: int = 2) -> list[Any]:
    return [logprob, piece, [[-0.1 * (i + 1), b"t%d" % i] for i in range(top)]]


def reply(**changes: Any) -> dict[str, Any]:
    wire: dict[str, Any] = {
        "model": "m", "sha256": SHA, "text": "hi", "finish_reason": "stop",
        "usage": {"prompt_tokens": 3, "completion_tokens": 2}, "logprobs": [entry()],
        "more_choices": [{"text": "yo", "finish_reason": "length", "logprobs": [entry()]}]}
    wire.update(changes)
    return wire


def parse(data: object) -> GenerateReply:
    return GenerateReply.from_wire(data, asked=ASKED)


def test_a_reply_answering_what_was_asked_is_read_into_choices() -> None:
    view = parse(reply())
    assert [c.text for c in view.choices] == ["hi", "yo"]
    first = view.choices[0].logprobs
    assert first is not None and first[0].logprob == -0.5
    openai = first[0].to_openai()
    assert openai["token"] == "hi" and openai["bytes"] == [104, 105]
    assert [t["token"] for t in openai["top_logprobs"]] == ["t0", "t1"]
    assert GenerateReply.from_wire(view.to_wire(), asked=ASKED).to_wire() == view.to_wire()
    # a request without the extras: the old reply shape, and nothing more accepted
    plain = GenerateReply.from_wire({k: v for k, v in reply().items()
                                     if k not in ("logprobs", "more_choices")},
                                    asked=GenerateParams(model="m", prompt="Hi"))
    assert plain.to_wire().keys() == {"model", "sha256", "text", "finish_reason", "usage"}


@pytest.mark.parametrize(("changes", "field"), [
    ({"logprobs": None}, "asked for"),
    ({"more_choices": []}, "more_choices"),
    ({"more_choices": [{"text": "a", "finish_reason": "stop", "logprobs": [entry()]}] * 2},
     "more_choices"),
    ({"logprobs": [entry(logprob=0.5)]}, "logprob"),
    ({"logprobs": [entry(logprob=math.nan)]}, "logprob"),
    ({"logprobs": [entry(logprob=-math.inf)]}, "logprob"),
    ({"logprobs": [entry(logprob=True)]}, "logprob"),
    ({"logprobs": [entry(top=3)]}, "top_logprobs"),
    ({"logprobs": [entry(top=1)]}, "top_logprobs"),
    ({"logprobs": [entry(piece="hi")]}, "bytes"),  # type: ignore[arg-type]
    ({"logprobs": [entry(piece=b"x" * 257)]}, "bytes"),
    ({"logprobs": [entry()] * 5}, "logprobs"),  # more tokens than max_tokens
    ({"logprobs": [entry()[:2]]}, "token logprob"),
    ({"logprobs": [[-0.1, b"a", [[0.1, b"b"], [-0.2, b"c"]]]]}, "logprob"),
    ({"more_choices": [{"text": "a", "finish_reason": "stop"}]}, "asked for"),
    ({"more_choices": [{"text": "a", "finish_reason": "maybe", "logprobs": [entry()]}]},
     "finish_reason"),
    ({"more_choices": [{"text": 1, "finish_reason": "stop", "logprobs": [entry()]}]}, "text"),
    ({"extra": 1}, "unknown fields"),
])
def test_hostile_generate_replies_are_refused(changes: dict[str, Any], field: str) -> None:
    assert field in refused(parse, reply(**changes))


def test_logprobs_that_were_not_asked_for_are_refused() -> None:
    plain = GenerateParams(model="m", prompt="Hi")
    wire = {k: v for k, v in reply().items() if k != "more_choices"}
    assert "not asked" in refused(lambda d: GenerateReply.from_wire(d, asked=plain), wire)


def test_parser_for_reads_the_request_it_is_made_for() -> None:
    parser = GenerateReply.parser_for(ASKED.to_wire())
    assert len(parser(reply()).choices) == 2
    assert "more_choices" in refused(parser, reply(more_choices=[]))


def test_token_text_shows_bytes_of_a_split_character_escaped() -> None:
    assert token_text("é".encode()) == "é"
    assert token_text("é".encode()[:1]) == "\\xc3"
    with pytest.raises(Exception, match="logprob"):
        TokenLogprob(piece=b"a", logprob=1.0)
