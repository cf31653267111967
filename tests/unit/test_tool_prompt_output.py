"""Tool calling on the serving node, pure parts (issue 15): tools and tool history rendered
into plain chat messages, the grammar that forces a call, the answer parsed back into a call,
and the hold-back that keeps a call's text out of a stream."""

from __future__ import annotations

import json

import pytest
from llama_cpp.llama_grammar import LlamaGrammar

from calinode.models.json_grammar import BadSchema
from calinode.models.tool_grammar import check_tool_schemas, tool_call_grammar
from calinode.models.tool_output import CallHoldBack, parse_tool_output, tool_reply_fields
from calinode.models.tool_prompt import render_messages, tools_block
from calinode.protocol.job_params import ChatMessage
from calinode.protocol.tools import ToolCall, ToolSpec

WEATHER = ToolSpec(name="get_weather", description="Weather of a city", parameters=json.dumps(
    {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}))
TIME = ToolSpec(name="get_time", parameters="{}")
CALL = ToolCall(id="call_1", name="get_weather", arguments='{"city":"Paris"}')
OFFERED = {"get_weather", "get_time"}


def test_tools_become_a_system_block_appended_to_the_system_message() -> None:
    user = ChatMessage(role="user", content="Weather in Paris?")
    alone = render_messages([user], [WEATHER, TIME], "auto")
    assert [m["role"] for m in alone] == ["system", "user"]
    block = alone[0]["content"]
    assert block == tools_block([WEATHER, TIME], "auto", None)
    lines = block.splitlines()
    listed = [json.loads(line) for line in lines[lines.index("<tools>") + 1:
                                                 lines.index("</tools>")]]
    assert [t["name"] for t in listed] == ["get_weather", "get_time"]
    assert listed[0]["parameters"]["required"] == ["city"]
    assert "answer the user directly" in block
    system = ChatMessage(role="system", content="Be brief.")
    joined = render_messages([system, user], [WEATHER], "required")
    assert [m["role"] for m in joined] == ["system", "user"]
    assert joined[0]["content"].startswith("Be brief.\n\nYou can call tools.")
    assert "call one of the tools" in joined[0]["content"]
    assert "call the tool get_time" in tools_block([WEATHER, TIME], "required", "get_time")
    assert render_messages([user]) == [{"role": "user", "content": "Weather in Paris?"}]


def test_tool_history_is_rendered_as_call_blocks_and_merged_tool_responses() -> None:
    history = [
        ChatMessage(role="user", content="Weather and time in Paris?"),
        ChatMessage(role="assistant", content="", tool_calls=(
            CALL, ToolCall(id="call_2", name="get_time", arguments="{}"))),
        ChatMessage(role="tool", content="sunny, 21 C", tool_call_id="call_1"),
        ChatMessage(role="tool", content="14:00", tool_call_id="call_2"),
        ChatMessage(role="user", content="Thanks; so?"),
    ]
    rendered = render_messages(history)  # tool_choice none: no block, history still there
    assert [m["role"] for m in rendered] == ["user", "assistant", "user"]
    assert rendered[1]["content"] == (
        '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>\n'
        '<tool_call>\n{"name": "get_time", "arguments": {}}\n</tool_call>')
    assert rendered[2]["content"] == ("<tool_response>\nsunny, 21 C\n</tool_response>\n"
                                      "<tool_response>\n14:00\n</tool_response>\nThanks; so?")


def test_the_forced_call_grammar_names_only_the_allowed_tools_and_parses() -> None:
    both = tool_call_grammar([WEATHER, TIME])
    assert 't0-call ::= "\\"get_weather\\","' in both and '"\\"get_time\\","' in both
    assert "t0-root ::=" in both and "t1-root ::=" in both and "\nroot ::=" not in both[1:]
    one = tool_call_grammar([WEATHER, TIME], "get_time")
    assert "get_weather" not in one
    for grammar in (both, one):
        LlamaGrammar.from_string(grammar, verbose=False)  # llama.cpp's own parser takes it


@pytest.mark.parametrize(("parameters", "word"), [
    ('{"type":"object","properties":{"n":{"type":"integer","minimum":1}}}', "'minimum'"),
    ('{"type":"string"}', "type object"),
    ('{"type":"object","properties":{"s":{"type":"string","pattern":"^a$"}}}', "'pattern'"),
])
def test_parameters_a_forced_call_cannot_enforce_are_refused_by_name(parameters: str,
                                                                   word: str) -> None:
    with pytest.raises(BadSchema) as exc:
        check_tool_schemas([WEATHER, ToolSpec(name="bad", parameters=parameters)])
    assert word in exc.value.message and "tool bad" in exc.value.message


def test_an_answer_is_parsed_into_one_call_of_an_offered_tool() -> None:
    text = '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n'
    content, (call,) = parse_tool_output(text, OFFERED)
    assert content == "" and call.name == "get_weather"
    assert json.loads(call.arguments) == {"city": "Paris"}
    assert call.id.startswith("call_") and len(call.id) == 29
    before, (again,) = parse_tool_output("Let me check.\n" + text + "</tool_call>", OFFERED)
    assert before == "Let me check." and again.id != call.id
    raw = '<tool_call>{"name": "get_time", "arguments": {"tz": "a\nb"}}'  # a raw newline
    assert json.loads(parse_tool_output(raw, OFFERED)[1][0].arguments) == {"tz": "a\nb"}
    stringly = '<tool_call>{"name": "get_time", "arguments": "{\\"tz\\": \\"UTC\\"}"}'
    assert json.loads(parse_tool_output(stringly, OFFERED)[1][0].arguments) == {"tz": "UTC"}


@pytest.mark.parametrize("text", [
    "It is sunny.",
    '<tool_call>{"name": "rm_rf", "arguments": {}}',
    '<tool_call>{"name": "get_time", "arguments": [1]}',
    '<tool_call>{"name": "get_time"}',
    '<tool_call>{"name": "get_time", "arguments": {}, "x": 1}',
    "<tool_call>{not json",
    '<tool_call>{"name": "get_time", "arguments": "nope"}',
])
def test_anything_but_a_valid_call_stays_text(text: str) -> None:
    assert parse_tool_output(text, OFFERED) == (text, ())
    assert tool_reply_fields(text, "stop", OFFERED) == {"text": text, "finish_reason": "stop"}


def test_reply_fields_of_a_call() -> None:
    fields = tool_reply_fields('<tool_call>{"name": "get_time", "arguments": {}}', "stop",
                               OFFERED)
    assert fields["finish_reason"] == "tool_calls" and fields["text"] == ""
    assert [c["name"] for c in fields["tool_calls"]] == ["get_time"]


def feed_all(hold: CallHoldBack, pieces: list[str]) -> str:
    return "".join(hold.feed(p) for p in pieces)


def test_hold_back_shows_text_but_never_a_call_split_over_pieces() -> None:
    hold = CallHoldBack()
    shown = feed_all(hold, ["\n", " Let me", " check.", " <tool", "_ca", "ll>\n{", '"name"'])
    assert shown == "\n Let me check. "
    assert hold.feed("more") == ""
    plain = CallHoldBack()
    assert feed_all(plain, ["Cats <to", "ys> are fun"]) == "Cats <toys> are fun"
    tail = CallHoldBack()
    assert feed_all(tail, ["Maybe <tool"]) == "Maybe "
    assert tail.rest() == "<tool"  # the answer held no call after all


def test_hold_back_of_a_forced_call_shows_nothing_until_it_proves_no_call() -> None:
    hold = CallHoldBack(silent=True)
    assert feed_all(hold, ["<tool_call>\n", '{"name": "get_time", "arg']) == ""
    assert hold.rest() == '<tool_call>\n{"name": "get_time", "arg'
    blank = CallHoldBack()
    assert feed_all(blank, ["\n", "  "]) == ""
    assert blank.rest() == "\n  "
