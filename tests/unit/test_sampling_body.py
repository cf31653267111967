"""OpenAI's ``response_format``, ``n``, ``logprobs`` and ``top_logprobs`` read from a chat
body (``node/api/sampling_body.py``), and the JSON schemas structured output refuses, by
name, because llama.cpp's converter would not enforce them or would build a grammar that
crashes llama.cpp (``models/json_grammar.py``)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from calinode.models.json_grammar import JSON_OBJECT_SCHEMA, schema_grammar
from calinode.node.api.chat_choices import chat_choices
from calinode.node.api.sampling_body import sampling_params
from calinode.protocol.errors import BadRequest, ErrorCode, JobError

PERSON = {"type": "object", "properties": {"name": {"type": "string", "maxLength": 20},
                                           "age": {"type": "integer"}},
          "required": ["name", "age"], "additionalProperties": False}


def schema_format(schema: object) -> dict[str, Any]:
    return {"response_format": {"type": "json_schema",
                                "json_schema": {"name": "x", "schema": schema}}}


def test_plain_body_adds_nothing() -> None:
    assert sampling_params({"messages": []}) == {}
    assert sampling_params({"response_format": {"type": "text"}, "logprobs": False}) == {}


def test_fields_become_generate_params() -> None:
    params = sampling_params({**schema_format(PERSON), "n": 3, "logprobs": True,
                              "top_logprobs": 3})
    assert json.loads(params["json_schema"]) == PERSON
    assert (params["n"], params["logprobs"], params["top_logprobs"]) == (3, True, 3)
    assert sampling_params({"response_format": {"type": "json_object"}}) == {
        "json_schema": JSON_OBJECT_SCHEMA}
    assert sampling_params({"logprobs": True}) == {"logprobs": True, "top_logprobs": 0}


@pytest.mark.parametrize(("body", "says"), [
    ({"n": 0}, "n must"), ({"n": 9}, "n must"), ({"n": "2"}, "n must"), ({"n": True}, "n must"),
    ({"logprobs": "true"}, "logprobs"), ({"top_logprobs": 2}, "needs logprobs"),
    ({"logprobs": True, "top_logprobs": 21}, "top_logprobs"),
    ({"logprobs": True, "top_logprobs": 1.5}, "top_logprobs"),
    ({"response_format": "json"}, "response_format"),
    ({"response_format": {"type": "grammar"}}, "not supported"),
    ({"response_format": {"type": "json_schema"}}, "json_schema"),
    ({"response_format": {"type": "json_schema", "json_schema": {"schema": "x"}}}, "schema"),
    (schema_format({"type": "integer", "minimum": 0}), "'minimum'"),
    (schema_format({"type": "string", "pattern": "^[a-z]+$"}), "'pattern'"),
    (schema_format({"type": "array", "items": {"type": "string"}, "uniqueItems": True}),
     "'uniqueItems' at #"),
    (schema_format({"properties": {"a": {"not": {"type": "string"}}}}),
     "'not' at #/properties/a"),
    (schema_format({"type": "string", "format": "email"}), "format 'email'"),
    (schema_format({"type": "decimal"}), "type 'decimal'"),
    (schema_format({"$ref": "https://example.com/s.json"}), "only local"),
    (schema_format({"type": "array", "maxItems": 100_000}), "maxItems"),
    (schema_format({"const": "a\u0000b"}), "U+0000"),
    (schema_format({"enum": ["ok", "\U0001F600"]}), "U+1F600"),
    (schema_format({"enum": ['say "hi"']}), "U+0022"),
    (schema_format({"enum": ["\ud83d"]}), "U+D83D"),
    (schema_format({"properties": {"a\\b": {"type": "string"}}}), "U+005C"),
    (schema_format({"type": "object", "properties": {
        f"p{i}": {"type": "string"} for i in range(65)}}), "more than 64"),
    (schema_format({"type": "object", "properties": {"a": {"type": "string"}},
                    "description": "x" * 20_000}), "characters of JSON"),
    (schema_format({"$ref": "#/$defs/missing"}), "cannot be turned into a grammar"),
])
def test_bad_fields_are_a_400_that_names_them(body: dict[str, Any], says: str) -> None:
    with pytest.raises(BadRequest) as exc:
        sampling_params(body)
    assert says in exc.value.message


def test_deep_schema_is_refused() -> None:
    schema: dict[str, Any] = {"type": "string"}
    for _ in range(20):
        schema = {"type": "array", "items": schema}
    with pytest.raises(BadRequest, match="nested deeper"):
        sampling_params(schema_format(schema))


def test_supported_schema_gives_a_grammar_naming_its_properties() -> None:
    grammar = schema_grammar(json.dumps(PERSON))
    assert grammar.startswith("age-kv ::=") and "root ::=" in grammar
    refs = {"$defs": {"tag": {"enum": ["a", "b"]}}, "type": "object",
            "properties": {"tags": {"type": "array", "items": {"$ref": "#/$defs/tag"},
                                    "maxItems": 3}, "when": {"type": "string",
                                                             "format": "date"}}}
    assert "root ::=" in schema_grammar(json.dumps(refs))


def test_the_serving_side_refuses_with_a_job_error() -> None:
    """A peer's json_schema goes through the same checks: a BAD_REQUEST job error."""
    with pytest.raises(JobError) as exc:
        schema_grammar('{"type": "string", "pattern": "^[\\\\x00]$"}')
    assert exc.value.code == ErrorCode.BAD_REQUEST and "'pattern'" in exc.value.message
    with pytest.raises(JobError, match="JSON object"):
        schema_grammar("[]")


def test_chat_choices_lists_every_sample_with_its_logprobs() -> None:
    result = {"text": "a", "finish_reason": "stop", "logprobs": [[-0.5, b"a", [[-0.5, b"a"]]]],
              "more_choices": [{"text": "b", "finish_reason": "length",
                                "logprobs": [[-1.0, b"b", [[-0.2, b"c"]]]]}]}
    choices = chat_choices(result)
    assert [c["index"] for c in choices] == [0, 1]
    assert [c["message"]["content"] for c in choices] == ["a", "b"]
    assert choices[1]["logprobs"]["content"][0] == {
        "token": "b", "logprob": -1.0, "bytes": [98],
        "top_logprobs": [{"token": "c", "logprob": -0.2, "bytes": [99]}]}
    assert chat_choices({"text": "x", "finish_reason": "stop"})[0]["logprobs"] is None
