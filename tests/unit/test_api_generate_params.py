"""Generate parameters on the HTTP API are checked once, into the ``GenerateParams`` view
(protocol/job_params.py), before anything is sent: a request the view refuses is one
``BAD_REQUEST`` naming the field, on ``/v1/generate`` and ``/v1/chat/completions`` alike, and
no generate job leaves the node. A valid one sends exactly the view's wire form."""

from __future__ import annotations

import json
from typing import Any

import pytest

from asgi_client import FakeClient
from calinode.node.api.inference_routes import _generate_endpoint, chat_endpoint
from calinode.protocol.job_params import MAX_STOP
from fake_generate_node import fake_node

ENDPOINTS = {"generate": _generate_endpoint, "chat": chat_endpoint}
CHAT = {"messages": [{"role": "user", "content": "hi"}]}


@pytest.mark.parametrize("route", ENDPOINTS)
@pytest.mark.parametrize(("extra", "field"), [
    ({"stop": [str(i) for i in range(MAX_STOP + 1)]}, "stop"),  # refused, never truncated
    ({"stop": [1]}, "stop"),
    ({"temperature": -1}, "temperature"),
    ({"top_p": 2}, "top_p"),
    ({"max_tokens": 0}, "max_tokens"),
    ({"seed": "x"}, "seed"),
])
async def test_a_bad_generate_param_is_one_bad_request_and_nothing_is_sent(
        route: str, extra: dict[str, Any], field: str) -> None:
    node = fake_node()
    client = FakeClient({**CHAT, **extra})
    await client.run(ENDPOINTS[route](node))
    error = json.loads(client.text())["error"]
    assert client.status() == 400 and error["code"] == "BAD_REQUEST", error
    assert field in error["message"]
    assert node.dispatcher.sent == []


@pytest.mark.parametrize("route", ENDPOINTS)
async def test_a_valid_request_sends_the_views_wire_form(route: str) -> None:
    node = fake_node()
    client = FakeClient({**CHAT, "stop": "END", "max_tokens": 5})
    await client.run(ENDPOINTS[route](node))
    assert client.status() == 200, client.text()
    (sent,) = node.dispatcher.sent
    assert sent["model"] == "gen" and sent["stop"] == ["END"] and sent["max_tokens"] == 5
    assert sent["messages"] == CHAT["messages"]
