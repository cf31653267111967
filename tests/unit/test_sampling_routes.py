"""``/v1/chat/completions`` with ``response_format``, ``n`` and ``logprobs``: what goes out as
the generate job (checked before anything is sent) and the OpenAI choices that come back."""

from __future__ import annotations

import json
from types import SimpleNamespace
from typing import Any

from asgi_client import FakeClient
from calinode.node.api.inference_routes import _generate_endpoint, chat_endpoint

CHAT = {"messages": [{"role": "user", "content": "hi"}]}
SCHEMA = {"type": "object", "properties": {"ok": {"type": "boolean"}}, "required": ["ok"]}


class FakeDispatcher:
    def __init__(self) -> None:
        self.sent: list[dict[str, Any]] = []

    def candidates(self, kind: str, name: str) -> list[Any]:  # the chat route asks first
        return [SimpleNamespace(peer_id="me", sha256="ab" * 32)]

    async def generate(self, params: dict[str, Any], **_: Any) -> dict[str, Any]:
        self.sent.append(params)
        entry = [-0.25, b"{", [[-0.25, b"{"], [-2.0, b"["]]]
        return {"text": '{"ok": true}', "finish_reason": "stop", "served_by": "me",
                "logprobs": [entry],
                "more_choices": [{"text": '{"ok": false}', "finish_reason": "stop",
                                  "logprobs": [entry]}],
                "usage": {"prompt_tokens": 1, "completion_tokens": 12}}


def fake_node() -> Any:
    return SimpleNamespace(models=SimpleNamespace(embed={}, generate={"gen": None}),
                           dispatcher=FakeDispatcher())


async def test_chat_sends_the_schema_n_and_logprobs_and_answers_every_choice() -> None:
    node = fake_node()
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
    node = fake_node()
    client = FakeClient({**CHAT, "response_format": {
        "type": "json_schema", "json_schema": {"schema": {"type": "number", "minimum": 0}}}})
    await client.run(chat_endpoint(node))
    error = json.loads(client.text())["error"]
    assert client.status() == 400 and "'minimum'" in error["message"]
    assert node.dispatcher.sent == []


async def test_streamed_n_and_native_logprobs_are_refused() -> None:
    node = fake_node()
    client = FakeClient({**CHAT, "n": 2, "stream": True})
    await client.run(chat_endpoint(node))
    assert client.status() == 400 and "not streamed" in client.text()
    native = FakeClient({**CHAT, "logprobs": True})
    await native.run(_generate_endpoint(node))
    assert native.status() == 400 and "chat/completions" in native.text()
    assert node.dispatcher.sent == []
