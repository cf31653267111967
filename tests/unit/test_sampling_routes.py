"""``/v1/chat/completions`` with ``response_format``, ``n`` and ``logprobs``: what goes out as
the generate job (checked before anything is sent) and the OpenAI choices that come back."""

from __future__ import annotations

import json
from typing import Any

from asgi_client import FakeClient
from calinode.node.api.inference_routes import _generate_endpoint, chat_endpoint
from fake_generate_node import fake_node

CHAT = {"messages": [{"role": "user", "content": "hi"}]}
SCHEMA = {"type": "object", "properties": {"ok": {"type": "boolean"}}, "required": ["ok"]}
ENTRY = [-0.25, b"{", [[-0.25, b"{"], [-2.0, b"["]]]
REPLY: dict[str, Any] = {
    "text": '{"ok": true}', "finish_reason": "stop", "served_by": "me", "logprobs": [ENTRY],
    "more_choices": [{"text": '{"ok": false}', "finish_reason": "stop", "logprobs": [ENTRY]}],
    "usage": {"prompt_tokens": 1, "completion_tokens": 12}}


async def test_chat_sends_the_schema_n_and_logprobs_and_answers_every_choice() -> None:
    node = fake_node(REPLY)
    client = FakeClient({**CHAT, "n": 2, "logprobs": True, "top_logprobs": 2,
                         "response_format": {"type": "json_schema",
                                             "json_schema": {"name": "s", "schema": SCHEMA}}})
    await client.run(chat_endpoint(node))
    assert client.status() == 200, client.text()
    (sent,) = node.dispatcher.sent
    assert json.loads(sent["json_schema"]) == SCHEMA
    assert (sent["n"], sent["logprobs"], sent["top_logprobs"]) == (2, True, 2)
    body = json.loads(client.text())
    assert [c["message"]["content"] for c in body["choices"]] == ['{"ok": true}',
                                                                  '{"ok": false}']
    token = body["choices"][1]["logprobs"]["content"][0]
    assert token["token"] == "{" and token["bytes"] == [123]
    assert [t["token"] for t in token["top_logprobs"]] == ["{", "["]


async def test_unsupported_schema_is_a_400_and_nothing_is_sent() -> None:
    node = fake_node(REPLY)
    client = FakeClient({**CHAT, "response_format": {
        "type": "json_schema", "json_schema": {"schema": {"type": "number", "minimum": 0}}}})
    await client.run(chat_endpoint(node))
    error = json.loads(client.text())["error"]
    assert client.status() == 400 and "'minimum'" in error["message"]
    assert node.dispatcher.sent == []


async def test_streamed_n_and_native_logprobs_are_refused() -> None:
    node = fake_node(REPLY)
    client = FakeClient({**CHAT, "n": 2, "stream": True})
    await client.run(chat_endpoint(node))
    assert client.status() == 400 and "not streamed" in client.text()
    native = FakeClient({**CHAT, "logprobs": True})
    await native.run(_generate_endpoint(node))
    assert native.status() == 400 and "chat/completions" in native.text()
    assert node.dispatcher.sent == []
