"""Tool calling with the official ``openai`` client and LangChain, through a relaying node.

Two daemons: A serves the models, C has none and knows only A, so every request to C's API
travels as a ``generate`` job (tools, tool_choice, tool history) to A, and A's reply (its
``tool_calls``) is checked on C against the tools that were offered. A real hostile libp2p
peer then sends A generate jobs with hostile tool fields (a grammar injection in a name, a
schema keyword that would build a grammar no token can follow, oversized or inconsistent
tools): each is refused with ``BAD_REQUEST`` and A still answers.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from daemon_harness import Daemon, Swarm, refuses_then_serves, relayed_pair

pytestmark = [pytest.mark.integration, pytest.mark.slow]

MODEL = "smollm2-135m"
WEATHER_PARAMS = {"type": "object", "additionalProperties": False, "required": ["city", "unit"],
                  "properties": {"city": {"type": "string", "maxLength": 24},
                                 "unit": {"enum": ["celsius", "fahrenheit"]}}}
CLOCK_PARAMS = {"type": "object", "additionalProperties": False, "required": ["tz"],
                "properties": {"tz": {"type": "string", "maxLength": 16}}}
WEATHER: Any = {"type": "function", "function": {
    "name": "get_weather", "description": "Current weather of a city",
    "parameters": WEATHER_PARAMS}}
CLOCK: Any = {"type": "function", "function": {
    "name": "get_time", "description": "Current time in a timezone",
    "parameters": CLOCK_PARAMS}}
QUESTION: Any = [{"role": "user", "content": "What is the weather like in Paris?"}]


@pytest.fixture
def pair(swarm: Swarm, prepared_models: Path) -> tuple[Daemon, Daemon]:
    """A: has the default models; C: no models, knows only A."""
    return relayed_pair(swarm, prepared_models, MODEL, threads=2)


def valid_arguments(name: str, text: str) -> bool:
    """The parameters schema of tool ``name``, checked by hand (no jsonschema here)."""
    value = json.loads(text)
    if name == "get_time":
        return (isinstance(value, dict) and set(value) == {"tz"}
                and isinstance(value["tz"], str) and len(value["tz"]) <= 16)
    return (name == "get_weather" and isinstance(value, dict)
            and set(value) == {"city", "unit"} and isinstance(value["city"], str)
            and len(value["city"]) <= 24 and value["unit"] in ("celsius", "fahrenheit"))


def test_tool_calls_with_the_openai_client_through_a_relaying_node(
    pair: tuple[Daemon, Daemon],
) -> None:
    import openai

    a, c = pair
    oc = openai.OpenAI(base_url=f"http://{c.info['api']}/v1", api_key=c.token, timeout=120)

    required = oc.chat.completions.create(
        model=MODEL, max_tokens=64, seed=1, messages=QUESTION, tools=[WEATHER, CLOCK],
        tool_choice="required", parallel_tool_calls=False)
    assert required.served_by == a.peer_id  # type: ignore[attr-defined]
    choice = required.choices[0]
    assert choice.finish_reason == "tool_calls" and choice.message.content is None
    (call,) = choice.message.tool_calls or []
    assert call.type == "function" and call.id.startswith("call_")
    assert valid_arguments(call.function.name, call.function.arguments)

    # the round trip: the call, its result, then the final answer is a normal message
    history = [*QUESTION, choice.message,
               {"role": "tool", "tool_call_id": call.id, "content": "Sunny, 21 degrees."}]
    final = oc.chat.completions.create(model=MODEL, max_tokens=24, seed=3, messages=history,
                                       tools=[WEATHER, CLOCK], tool_choice="none")
    answer = final.choices[0]
    assert answer.finish_reason in ("stop", "length") and not answer.message.tool_calls
    assert isinstance(answer.message.content, str) and answer.message.content.strip()

    # named and streamed: the client's own stream helper assembles the tool-call deltas
    with oc.chat.completions.stream(
            model=MODEL, max_tokens=64, seed=2, messages=QUESTION, tools=[WEATHER, CLOCK],
            tool_choice={"type": "function", "function": {"name": "get_time"}}) as stream:
        done = stream.get_final_completion()
    assert done.choices[0].finish_reason == "tool_calls"
    assert done.choices[0].message.content is None
    (clock,) = done.choices[0].message.tool_calls or []
    assert clock.function.name == "get_time" and clock.id.startswith("call_")
    assert valid_arguments("get_time", clock.function.arguments)

    bad_schema = dict(CLOCK, function=dict(CLOCK["function"], parameters={
        "type": "object", "properties": {"n": {"type": "integer", "minimum": 1}}}))
    with pytest.raises(openai.BadRequestError, match="minimum"):
        oc.chat.completions.create(model=MODEL, max_tokens=8, messages=QUESTION,
                                   tools=[bad_schema], tool_choice="required")


def test_one_langchain_tool_calling_step(pair: tuple[Daemon, Daemon]) -> None:
    from langchain_openai import ChatOpenAI

    _, c = pair
    chat = ChatOpenAI(model=MODEL, base_url=f"http://{c.info['api']}/v1", api_key=c.token,
                      max_tokens=64, seed=5, timeout=120, max_retries=0)
    reply = chat.bind_tools([WEATHER], tool_choice="required").invoke(
        "What is the weather like in Paris?")
    (call,) = reply.tool_calls  # type: ignore[attr-defined]
    assert call["name"] == "get_weather" and call["id"].startswith("call_")
    assert valid_arguments("get_weather", json.dumps(call["args"]))


def test_hostile_tool_fields_cannot_crash_the_serving_node(pair: tuple[Daemon, Daemon]) -> None:
    a, _ = pair
    base: dict[str, Any] = {"model": MODEL, "messages": [{"role": "user", "content": "Hi"}],
                            "max_tokens": 4}
    tool = {"name": "t", "description": "", "parameters": '{"type":"object"}'}

    def with_tool(**over: Any) -> dict[str, Any]:
        return dict(base, tools=[dict(tool, **over)], tool_choice="required")

    attacks = [
        with_tool(name='t", "arguments": {}} root ::= [\\x00] #'),  # grammar injection
        with_tool(parameters='{"type":"object","properties":{"s":{"type":"string",'
                             '"pattern":"^[\\\\x00]$"}}}'),
        with_tool(parameters='{"type":"object","properties":{"s":{"const":"\\u0000"}}}'),
        with_tool(parameters='{"type":"string"}'),
        with_tool(parameters="[" * 4000 + "]" * 4000),
        dict(base, tools=[dict(tool, name=f"t{i}") for i in range(1000)]),
        dict(base, tools=[tool], tool_choice="required", tool_name="rm"),
        dict(base, tools=[tool], tool_choice="grammar"),
        dict(base, messages=[{"role": "tool", "content": "x"}]),
        dict(base, messages=[{"role": "assistant", "content": "", "tool_calls": [
            {"id": "c1", "name": "t", "arguments": "[]"}]}]),
    ]
    result = refuses_then_serves(a, "generate", attacks, base)
    assert result["usage"]["completion_tokens"]
