"""Tool calling with the real SmolLM2-135M-Instruct GGUF (issue 15).

The tools are rendered into the prompt (``models/tool_prompt.py``) and a required or named
call decodes under the grammar that forces one (``models/tool_grammar.py``): even this 135M
model then answers a call of an allowed tool whose arguments parse and validate against the
tool's parameters schema. Generations stay short (a few dozen tokens).
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from calinode.models.generator import GenerationParams, GgufGenerator
from calinode.models.tool_grammar import CALL_CLOSE, tool_call_grammar
from calinode.models.tool_output import parse_tool_output
from calinode.models.tool_prompt import render_messages
from calinode.protocol.job_params import ChatMessage
from calinode.protocol.tools import ToolSpec
from gguf_fixtures import smollm2_fixture  # noqa: F401  (fixture, asked for as smollm2)

WEATHER = ToolSpec(name="get_weather", description="Current weather of a city",
                   parameters=json.dumps({
                       "type": "object", "additionalProperties": False,
                       "required": ["city", "unit"],
                       "properties": {"city": {"type": "string", "maxLength": 24},
                                      "unit": {"enum": ["celsius", "fahrenheit"]}}}))
CLOCK = ToolSpec(name="get_time", description="Current time in a timezone",
                 parameters=json.dumps({"type": "object", "required": ["tz"],
                                        "additionalProperties": False,
                                        "properties": {"tz": {"type": "string",
                                                              "maxLength": 16}}}))
QUESTION = [ChatMessage(role="user", content="What is the weather like in Paris?")]


def valid_weather(value: Any) -> bool:
    """WEATHER's parameters, checked by hand (jsonschema is not installed)."""
    return (isinstance(value, dict) and set(value) == {"city", "unit"}
            and isinstance(value["city"], str) and len(value["city"]) <= 24
            and value["unit"] in ("celsius", "fahrenheit"))


def valid_clock(value: Any) -> bool:
    return (isinstance(value, dict) and set(value) == {"tz"} and isinstance(value["tz"], str)
            and len(value["tz"]) <= 16)


def call(generator: GgufGenerator, name: str | None, seed: int) -> tuple[str, Any]:
    messages = render_messages(QUESTION, [WEATHER, CLOCK], "required", name)
    params = GenerationParams(max_tokens=64, temperature=0.8, seed=seed, stop=(CALL_CLOSE,),
                              grammar=tool_call_grammar([WEATHER, CLOCK], name))
    chunks = list(generator.stream_chat(messages, params))
    assert chunks[-1].finish_reason == "stop"  # the call ended, not max_tokens
    text = "".join(c.text for c in chunks)
    content, calls = parse_tool_output(text, {"get_weather", "get_time"})
    assert content == "" and len(calls) == 1, text
    return calls[0].name, json.loads(calls[0].arguments)


@pytest.mark.slow  # grammar-constrained sampling checks every token of the vocabulary
def test_a_required_call_names_a_tool_and_its_arguments_validate(
    smollm2: GgufGenerator,
) -> None:
    name, arguments = call(smollm2, None, seed=1)
    assert (valid_weather if name == "get_weather" else valid_clock)(arguments), arguments


@pytest.mark.slow
def test_a_named_call_calls_that_tool_with_valid_arguments(smollm2: GgufGenerator) -> None:
    name, arguments = call(smollm2, "get_time", seed=2)
    assert name == "get_time" and valid_clock(arguments), arguments
