"""``/v1/chat/completions`` with tools (issue 15): the body read into the generate job (checked
before anything is sent), the OpenAI message with ``tool_calls``, and the streamed tool-call
deltas, assembled by the official ``openai`` client's own stream state."""

from __future__ import annotations

import json
from typing import Any

import pytest
from openai.lib.streaming.chat import ChatCompletionStreamState
from openai.types.chat import ChatCompletionChunk

from asgi_client import FakeClient
from calinode.node.api.inference_routes import chat_endpoint
from calinode.node.api.tool_deltas import ARGUMENT_FRAGMENT, tool_call_deltas
from calinode.node.api.tools_body import tool_params, wire_messages
from calinode.protocol.errors import BadRequest
from fake_generate_node import fake_node

PARAMS = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}
WEATHER = {"type": "function", "function": {"name": "get_weather", "description": "Weather",
                                            "parameters": PARAMS, "strict": True}}
TIME = {"type": "function", "function": {"name": "get_time"}}
CHAT = {"messages": [{"role": "user", "content": "Weather in Paris?"}]}
ARGUMENTS = json.dumps({"city": "Paris, the capital of France, by the river"})
CALL = {"id": "call_abc", "name": "get_weather", "arguments": ARGUMENTS}
REPLY: dict[str, Any] = {"text": "", "finish_reason": "tool_calls", "served_by": "me",
                         "tool_calls": [CALL],
                         "usage": {"prompt_tokens": 9, "completion_tokens": 20}}


def test_tools_and_choices_are_read_into_wire_fields() -> None:
    sent = tool_params({"tools": [WEATHER, TIME], "parallel_tool_calls": False})
    assert sent["tool_choice"] == "auto" and "tool_name" not in sent
    assert [t["name"] for t in sent["tools"]] == ["get_weather", "get_time"]
    assert json.loads(sent["tools"][0]["parameters"]) == PARAMS
    assert json.loads(sent["tools"][1]["parameters"]) == {"type": "object", "properties": {}}
    named = tool_params({"tools": [WEATHER, TIME], "tool_choice": {
        "type": "function", "function": {"name": "get_time"}}})
    assert (named["tool_choice"], named["tool_name"]) == ("required", "get_time")
    assert tool_params({"tools": [WEATHER], "tool_choice": "none"}) == {}
    assert tool_params({"tool_choice": "auto"}) == {} == tool_params({})


@pytest.mark.parametrize(("body", "words"), [
    ({"tools": [{"type": "retrieval"}]}, "only function tools"),
    ({"tools": [dict(WEATHER, function=dict(WEATHER["function"], name="a b"))]},
     "tools[0].function: tool name"),
    ({"tools": [dict(WEATHER, function=dict(WEATHER["function"], strict="yes"))]}, "strict"),
    ({"tools": [dict(WEATHER, function=dict(WEATHER["function"], extra=1))]}, "unknown"),
    ({"tools": [dict(WEATHER, function=dict(WEATHER["function"], parameters=[]))]},
     "parameters must be"),
    ({"tools": [WEATHER] * 33}, "at most 32"),
    ({"tools": [WEATHER, WEATHER]}, "distinct"),
    ({"tool_choice": "required"}, "needs tools"),
    ({"tools": [WEATHER], "tool_choice": {"type": "function", "function": {"name": "x"}}},
     "'x', which is not one of the tools (get_weather)"),
    ({"tools": [WEATHER], "tool_choice": "always"}, "tool_choice must be"),
    ({"functions": [WEATHER["function"]]}, "deprecated"),
    ({"tools": [WEATHER], "parallel_tool_calls": 1}, "parallel_tool_calls"),
])
def test_bad_tool_fields_are_a_400_naming_them(body: dict[str, Any], words: str) -> None:
    with pytest.raises(BadRequest) as exc:
        tool_params(body)
    assert words in exc.value.message


def test_tool_calls_and_results_in_the_history_take_the_job_form() -> None:
    history = [
        {"role": "user", "content": "Weather?"},
        {"role": "assistant", "content": None, "refusal": None, "annotations": [],
         "tool_calls": [{"id": "call_abc", "type": "function",
                         "function": {"name": "get_weather", "arguments": ARGUMENTS}}]},
        {"role": "tool", "tool_call_id": "call_abc", "content": "sunny"}]
    assert wire_messages(history) == [
        {"role": "user", "content": "Weather?"},
        {"role": "assistant", "content": "", "tool_calls": [CALL]},
        {"role": "tool", "tool_call_id": "call_abc", "content": "sunny"}]
    with pytest.raises(BadRequest, match=r"messages\[0\].tool_calls\[0\]"):
        wire_messages([{"role": "assistant", "tool_calls": ["get_weather"]}])


async def test_chat_sends_the_tools_and_answers_a_tool_call_message() -> None:
    node = fake_node(REPLY)
    client = FakeClient({**CHAT, "tools": [WEATHER], "tool_choice": "required"})
    await client.run(chat_endpoint(node))
    assert client.status() == 200, client.text()
    (sent,) = node.dispatcher.sent
    assert (sent["tool_choice"], [t["name"] for t in sent["tools"]]) == (
        "required", ["get_weather"])
    (choice,) = json.loads(client.text())["choices"]
    assert choice["finish_reason"] == "tool_calls"
    assert choice["message"] == {"role": "assistant", "content": None, "tool_calls": [{
        "id": "call_abc", "type": "function",
        "function": {"name": "get_weather", "arguments": ARGUMENTS}}]}


@pytest.mark.parametrize(("body", "words"), [
    ({"tools": [dict(WEATHER, function=dict(WEATHER["function"], parameters={
        "type": "object", "properties": {"n": {"type": "integer", "maximum": 3}}}))]},
     "'maximum'"),
    ({"tools": [WEATHER], "response_format": {"type": "json_object"}}, "do not combine"),
    ({"messages": [{"role": "tool", "content": "sunny"}]}, "tool_call_id"),
])
async def test_tool_requests_the_swarm_cannot_honour_are_a_400_and_nothing_is_sent(
    body: dict[str, Any], words: str,
) -> None:
    node = fake_node(REPLY)
    client = FakeClient({**CHAT, **body})
    await client.run(chat_endpoint(node))
    assert client.status() == 400 and words in json.loads(client.text())["error"]["message"]
    assert node.dispatcher.sent == []


def sse_chunks(text: str) -> list[dict[str, Any]]:
    events = [line[len("data: "):] for line in text.split("\n\n") if line.startswith("data: ")]
    assert events[-1] == "[DONE]"
    return [json.loads(e) for e in events[:-1]]


async def test_streamed_tool_calls_are_deltas_the_openai_client_assembles() -> None:
    node = fake_node(REPLY)
    client = FakeClient({**CHAT, "tools": [WEATHER], "stream": True})
    await client.run(chat_endpoint(node))
    assert client.status() == 200, client.text()
    chunks = sse_chunks(client.text())
    deltas = [c["choices"][0]["delta"] for c in chunks]
    assert deltas[0]["role"] == "assistant" and deltas[0]["tool_calls"][0] == {
        "index": 0, "id": "call_abc", "type": "function",
        "function": {"name": "get_weather", "arguments": ""}}
    fragments = [d["tool_calls"][0]["function"]["arguments"] for d in deltas[1:-1]]
    assert len(fragments) > 1 and "".join(fragments) == ARGUMENTS
    assert all(set(d["tool_calls"][0]) == {"index", "function"} for d in deltas[1:-1])
    assert chunks[-1]["choices"][0]["finish_reason"] == "tool_calls"
    state = ChatCompletionStreamState(input_tools=[WEATHER])  # type: ignore[list-item]
    for chunk in chunks:
        state.handle_chunk(ChatCompletionChunk.model_validate(chunk))
    final = state.get_final_completion()
    (call,) = final.choices[0].message.tool_calls or []
    assert (call.id, call.function.name, call.function.arguments) == (
        "call_abc", "get_weather", ARGUMENTS)
    assert final.choices[0].finish_reason == "tool_calls"


def test_deltas_after_streamed_text_carry_no_role_and_split_long_arguments() -> None:
    calls = [CALL, dict(CALL, id="call_2", name="get_time", arguments="{}")]
    deltas = list(tool_call_deltas(calls, with_role=False))
    assert "role" not in deltas[0]
    per_call = -(-len(ARGUMENTS) // ARGUMENT_FRAGMENT)
    assert len(deltas) == 1 + per_call + 2
    assert deltas[1 + per_call]["tool_calls"][0]["index"] == 1
