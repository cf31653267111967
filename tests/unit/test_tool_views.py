"""Tool calling fields of the generate job as a peer sends them (issue 15): ``GenerateParams``
(tools, tool_choice, tool_name, messages with tool calls and results) and the reply view's
``tool_calls``, each hostile value refused with ``BAD_REQUEST`` naming what is wrong."""

from __future__ import annotations

import json
from typing import Any

import pytest

from calinode.protocol.errors import ErrorCode, RemoteProtocolError
from calinode.protocol.job_params import GenerateParams
from calinode.protocol.job_replies import GenerateReply
from calinode.protocol.tools import (
    MAX_ARGUMENTS_CHARS,
    MAX_TOOL_CALLS,
    MAX_TOOL_SCHEMA_CHARS,
    MAX_TOOLS,
)

SHA = "a" * 64
WEATHER = {"name": "get_weather", "description": "Weather of a city",
           "parameters": '{"type":"object","properties":{"city":{"type":"string"}}}'}
TIME = {"name": "get_time", "description": "", "parameters": "{}"}
CHAT: dict[str, Any] = {"model": "m", "messages": [{"role": "user", "content": "Hi"}],
                        "max_tokens": 8}
TOOLS: dict[str, Any] = dict(CHAT, tools=[WEATHER, TIME], tool_choice="auto")
CALL = {"id": "call_1", "name": "get_weather", "arguments": '{"city": "Paris"}'}
REPLY: dict[str, Any] = {"model": "m", "sha256": SHA, "text": "", "finish_reason": "tool_calls",
                         "tool_calls": [CALL],
                         "usage": {"prompt_tokens": 3, "completion_tokens": 5}}


def refused(parse: Any, data: object) -> str:
    with pytest.raises(RemoteProtocolError) as exc:
        parse(data)
    assert exc.value.code == ErrorCode.BAD_REQUEST
    return exc.value.message


def test_tool_fields_round_trip_and_stay_off_the_wire_without_tools() -> None:
    plain = GenerateParams.from_wire(CHAT)
    assert not {"tools", "tool_choice", "tool_name"} & plain.to_wire().keys()
    history = [{"role": "user", "content": "Weather?"},
               {"role": "assistant", "content": "", "tool_calls": [CALL]},
               {"role": "tool", "content": "sunny", "tool_call_id": "call_1"}]
    asked = GenerateParams.from_wire(dict(TOOLS, messages=history, tool_choice="required",
                                          tool_name="get_time"))
    again = GenerateParams.from_wire(asked.to_wire())
    assert again == asked
    assert [t.name for t in again.tools] == ["get_weather", "get_time"]
    assert again.messages is not None and again.messages[1].tool_calls[0].name == "get_weather"
    assert again.messages[2].tool_call_id == "call_1"


def _tool(**over: Any) -> dict[str, Any]:
    return dict(WEATHER, **over)


@pytest.mark.parametrize(("extra", "field"), [
    ({"tools": [_tool(name="bad name")]}, "does not match"),
    ({"tools": [_tool(name="x" * 65)]}, "tool name"),
    ({"tools": [_tool(name=7)]}, "tool name"),
    ({"tools": [_tool(description="d" * 1025)]}, "tool description"),
    ({"tools": [_tool(parameters={"type": "object"})]}, "parameters"),
    ({"tools": [_tool(parameters="[1]")]}, "JSON text of an object"),
    ({"tools": [_tool(parameters="{nope")]}, "not JSON"),
    ({"tools": [_tool(parameters='{"a":"' + "x" * MAX_TOOL_SCHEMA_CHARS + '"}')]},
     "parameters"),
    ({"tools": [_tool(grammar="root ::= [\\x00]")]}, "fields name, description"),
    ({"tools": [WEATHER, WEATHER]}, "distinct"),
    ({"tools": [_tool(name=f"t{i}") for i in range(MAX_TOOLS + 1)]}, "tools"),
    ({"tools": [_tool(name=f"t{i}", description="d" * 1000,
                      parameters='{"a":"' + "x" * 8000 + '"}') for i in range(5)]},
     "characters in all"),
    ({"tools": "get_weather"}, "tools must be a list"),
    ({"tool_choice": "none"}, "tool_choice must be one of"),
    ({"tool_choice": {"name": "get_weather"}}, "tool_choice must be one of"),
    ({"tool_name": "get_weather"}, "tool_name needs tool_choice required"),
    ({"tool_choice": "required", "tool_name": "nope"}, "tool_name must name one of"),
    ({"json_schema": '{"type":"object"}'}, "do not combine"),
    ({"stop": list("abcdefgh")}, "at most 7 stop sequences"),
])
def test_hostile_tool_params_are_refused_by_name(extra: dict[str, Any], field: str) -> None:
    assert field in refused(GenerateParams.from_wire, dict(TOOLS, **extra))


@pytest.mark.parametrize(("params", "field"), [
    (dict(CHAT, tool_choice="required"), "tool_choice needs tools"),
    ({"model": "m", "prompt": "Hi", "tools": [WEATHER]}, "chat messages"),
])
def test_tool_choice_without_tools_and_tools_without_chat_are_refused(
    params: dict[str, Any], field: str,
) -> None:
    assert field in refused(GenerateParams.from_wire, params)


def _history(*messages: dict[str, Any]) -> dict[str, Any]:
    return dict(CHAT, messages=[{"role": "user", "content": "Hi"}, *messages])


@pytest.mark.parametrize(("message", "field"), [
    ({"role": "user", "content": "x", "tool_calls": [CALL]}, "only an assistant"),
    ({"role": "tool", "content": "x"}, "tool_call_id"),
    ({"role": "user", "content": "x", "tool_call_id": "call_1"}, "tool_call_id"),
    ({"role": "tool", "content": "x", "tool_call_id": "c" * 65}, "tool_call_id"),
    ({"role": "assistant", "content": "", "tool_calls": []}, "tool_calls must have 1"),
    ({"role": "assistant", "content": "", "tool_calls": [CALL] * (MAX_TOOL_CALLS + 1)},
     "tool_calls must have 1"),
    ({"role": "assistant", "content": "", "tool_calls": [dict(CALL, id="call 1")]},
     "tool call id"),
    ({"role": "assistant", "content": "", "tool_calls": [dict(CALL, arguments="[]")]},
     "arguments of tool call"),
    ({"role": "assistant", "content": "", "tool_calls": [dict(CALL, extra=1)]},
     "exactly id, name, arguments"),
    ({"role": "assistant", "content": "", "tool_calls": [
        dict(CALL, arguments=json.dumps({"a": "x" * MAX_ARGUMENTS_CHARS}))]},
     "arguments of tool call"),
    ({"role": "user", "content": "x", "name": "bob"}, "unknown fields"),
])
def test_hostile_history_messages_are_refused(message: dict[str, Any], field: str) -> None:
    assert field in refused(GenerateParams.from_wire, _history(message))


def test_a_tool_call_reply_round_trips_through_the_view_of_what_was_asked() -> None:
    parse = GenerateReply.parser_for(TOOLS)
    reply = parse(REPLY)
    assert reply.tool_calls[0].name == "get_weather"
    assert reply.choices[0].tool_calls == reply.tool_calls
    assert parse(reply.to_wire()) == reply
    text = parse(dict(REPLY, text="Sunny.", finish_reason="stop", tool_calls=None))
    assert text.tool_calls == () and "tool_calls" not in text.to_wire()
    more = GenerateReply.parser_for(dict(TOOLS, n=2))(
        dict(REPLY, more_choices=[{"text": "", "finish_reason": "tool_calls",
                                   "tool_calls": [dict(CALL, name="get_time")]}]))
    assert [c.tool_calls[0].name for c in more.choices] == ["get_weather", "get_time"]


@pytest.mark.parametrize(("asked", "reply", "field"), [
    (CHAT, REPLY, "no tools were offered"),
    (TOOLS, dict(REPLY, tool_calls=[dict(CALL, name="rm_rf")]), "not offered"),
    (dict(TOOLS, tool_choice="required", tool_name="get_time"), REPLY, "was required"),
    (dict(TOOLS, tool_choice="required"),
     dict(REPLY, finish_reason="stop", text="no", tool_calls=None), "required but"),
    (TOOLS, dict(REPLY, finish_reason="stop"), "exactly with finish_reason"),
    (TOOLS, dict(REPLY, tool_calls=None), "exactly with finish_reason"),
    (TOOLS, dict(REPLY, tool_calls=[]), "tool_calls must have 1"),
    (TOOLS, dict(REPLY, tool_calls=[CALL] * (MAX_TOOL_CALLS + 1)), "tool_calls must have 1"),
    (TOOLS, dict(REPLY, tool_calls=[dict(CALL, arguments='"x"')]), "arguments"),
    (TOOLS, dict(REPLY, tool_calls=[dict(CALL, id="")]), "tool call id"),
    (TOOLS, dict(REPLY, tool_calls="get_weather"), "tool_calls must be a list"),
    (dict(TOOLS, n=2), dict(REPLY, more_choices=[
        {"text": "", "finish_reason": "tool_calls", "tool_calls": [dict(CALL, name="x")]}]),
     "not offered"),
])
def test_hostile_tool_call_replies_are_refused(asked: dict[str, Any], reply: dict[str, Any],
                                               field: str) -> None:
    assert field in refused(GenerateReply.parser_for(asked), reply)
