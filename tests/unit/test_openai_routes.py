"""The OpenAI routes through the whole app (guard, routing, error handlers) with a fake
dispatcher: JSON 404/405 bodies, ``GET /v1/models/{id}``, ``/v1/completions``, the usage
chunk, content parts, and the unknown-model status with and without ``stream`` (checked before
the stream starts, so nothing is sent to a peer)."""

from __future__ import annotations

import json
from types import SimpleNamespace
from typing import Any

import httpx
import pytest

from calinode.node import __version__
from calinode.node.api.app import build_app
from calinode.node.api.guard import ApiGuard
from calinode.protocol.capabilities import Capabilities, ModelOffer
from calinode.protocol.errors import ErrorCode, JobError

TOKEN = "t" * 43
SHA = "0123456789abcdef" * 4
FINGERPRINT = f"fp_0123456789ab_calinode-{__version__}"


class FakeDispatcher:
    """Serves model ``gen`` (two pieces, then the reply); any other name is unknown."""

    def __init__(self) -> None:
        self.sent: list[dict[str, Any]] = []

    def candidates(self, kind: str, name: str) -> list[Any]:
        if name != "gen":
            raise JobError(f"no peer in the swarm has {kind} model {name!r}",
                           code=ErrorCode.UNKNOWN_MODEL)
        return [SimpleNamespace(peer_id="peer-a", sha256=SHA)]

    async def generate(self, params: dict[str, Any], *, deadline: float | None = None,
                       on_text: Any = None) -> dict[str, Any]:
        self.sent.append(params)
        if on_text is not None:
            for piece in ("blue", " sky"):
                await on_text(piece)
        return {"model": "gen", "sha256": SHA, "text": "blue sky", "finish_reason": "length",
                "served_by": "peer-a", "usage": {"prompt_tokens": 5, "completion_tokens": 2}}


def fake_node() -> Any:
    offer = ModelOffer(name="gen", kind="generate", sha256=SHA, context_length=2048)
    return SimpleNamespace(
        peer_id="me", capabilities=lambda: Capabilities(generate=(offer,)),
        table=SimpleNamespace(alive=lambda: []),
        models=SimpleNamespace(embed={}, generate={}),
        config=SimpleNamespace(embed_models=[], gen_models=["gen"]),
        dispatcher=FakeDispatcher())


def client_for(node: Any) -> httpx.AsyncClient:
    app = ApiGuard(build_app(node), token=TOKEN)
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                             base_url="http://127.0.0.1:7412",
                             headers={"Authorization": f"Bearer {TOKEN}"})


def events(response: httpx.Response) -> list[Any]:
    """The server-sent events of a streamed answer; ``[DONE]`` must be the last."""
    assert response.headers["content-type"].startswith("text/event-stream")
    lines = [line.removeprefix("data: ") for line in response.text.split("\n\n") if line]
    assert lines[-1] == "[DONE]"
    return [json.loads(line) for line in lines[:-1]]


CHAT = {"model": "gen", "messages": [{"role": "user", "content": "Colour of the sky?"}]}


@pytest.mark.parametrize(("method", "path", "status", "code"), [
    ("GET", "/v1/no-such-route", 404, "NOT_FOUND"),
    ("POST", "/no/such/route", 404, "NOT_FOUND"),
    ("GET", "/v1/chat/completions", 405, "METHOD_NOT_ALLOWED"),
    ("GET", "/v1/completions", 405, "METHOD_NOT_ALLOWED"),
    ("POST", "/v1/models/gen", 405, "METHOD_NOT_ALLOWED"),
    ("DELETE", "/v1/models", 405, "METHOD_NOT_ALLOWED"),
])
async def test_unknown_routes_and_wrong_methods_answer_json_errors(
        method: str, path: str, status: int, code: str) -> None:
    async with client_for(fake_node()) as client:
        got = await client.request(method, path)
    assert got.status_code == status
    assert got.headers["content-type"] == "application/json"
    error = got.json()["error"]
    assert error["code"] == code and error["type"] == "invalid_request_error"
    assert path in error["message"]


async def test_a_model_is_retrieved_by_id_and_an_unknown_one_is_a_json_404() -> None:
    async with client_for(fake_node()) as client:
        got = await client.get("/v1/models/gen")
        missing = await client.get("/v1/models/no-such-model")
    assert got.status_code == 200
    assert got.json() == {"id": "gen", "object": "model", "created": 0, "owned_by": "calinode",
                          "kind": "generate", "sha256": SHA, "chat": True,
                          "context_length": 2048, "peers": ["me"]}
    assert missing.status_code == 404
    error = missing.json()["error"]
    assert error["code"] == "UNKNOWN_MODEL" and "'no-such-model'" in error["message"]
    assert "gen" in error["message"]  # what is available


async def test_a_completion_runs_the_prompt_and_is_a_text_completion() -> None:
    node = fake_node()
    async with client_for(node) as client:
        got = await client.post("/v1/completions", json={"prompt": "The sky is", "seed": 2})
    assert got.status_code == 200, got.text
    body = got.json()
    assert body["object"] == "text_completion" and body["id"].startswith("cmpl-")
    assert body["model"] == "gen" and body["system_fingerprint"] == FINGERPRINT
    assert isinstance(body["created"], int) and body["created"] > 1_600_000_000
    assert body["choices"] == [{"index": 0, "text": "blue sky", "logprobs": None,
                                "finish_reason": "length"}]
    assert body["usage"] == {"prompt_tokens": 5, "completion_tokens": 2, "total_tokens": 7}
    (sent,) = node.dispatcher.sent
    assert sent["prompt"] == "The sky is" and sent["max_tokens"] == 16 and sent["seed"] == 2
    assert "messages" not in sent


@pytest.mark.parametrize("path", ["/v1/completions", "/v1/chat/completions"])
async def test_a_stream_that_asks_for_usage_ends_with_a_usage_chunk(path: str) -> None:
    body: dict[str, Any] = ({"prompt": "The sky is"} if path == "/v1/completions" else CHAT)
    async with client_for(fake_node()) as client:
        with_usage = await client.post(path, json={
            **body, "stream": True, "stream_options": {"include_usage": True}})
        without = await client.post(path, json={**body, "stream": True})
    chunks = events(with_usage)
    *pieces, last = chunks
    assert last["choices"] == []
    assert last["usage"] == {"prompt_tokens": 5, "completion_tokens": 2, "total_tokens": 7}
    assert pieces[-1]["choices"][0]["finish_reason"] == "length"
    assert pieces[-1]["served_by"] == "peer-a"
    assert len({c["id"] for c in chunks}) == 1 and len({c["created"] for c in chunks}) == 1
    assert all(c["system_fingerprint"] == FINGERPRINT and c["created"] > 1_600_000_000
               for c in chunks)
    assert all("usage" not in c for c in events(without))
    assert len(events(without)) == len(pieces)


async def test_content_parts_are_joined_and_an_image_is_a_400_that_sends_nothing() -> None:
    node = fake_node()
    parts = [{"type": "text", "text": "Colour of"}, {"type": "text", "text": "the sky?"}]
    image = [{"type": "text", "text": "What is it?"},
             {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}]
    async with client_for(node) as client:
        ok = await client.post("/v1/chat/completions", json={
            "model": "gen", "messages": [{"role": "user", "content": parts}]})
        refused = await client.post("/v1/chat/completions", json={
            "model": "gen", "stream": True, "messages": [{"role": "user", "content": image}]})
    assert ok.status_code == 200, ok.text
    body = ok.json()
    assert body["object"] == "chat.completion" and body["system_fingerprint"] == FINGERPRINT
    assert body["created"] > 1_600_000_000
    (sent,) = node.dispatcher.sent
    assert sent["messages"] == [{"role": "user", "content": "Colour of\nthe sky?"}]
    assert refused.status_code == 400
    assert "'gen' has no vision" in refused.json()["error"]["message"]


@pytest.mark.parametrize("path", ["/v1/completions", "/v1/chat/completions"])
@pytest.mark.parametrize("stream", [False, True])
async def test_an_unknown_model_is_the_same_404_with_or_without_stream(
        path: str, stream: bool) -> None:
    node = fake_node()
    body: dict[str, Any] = ({"prompt": "The sky is"} if path == "/v1/completions"
                            else dict(CHAT))
    async with client_for(node) as client:
        got = await client.post(path, json={**body, "model": "no-such-model", "stream": stream})
    assert got.status_code == 404 and got.headers["content-type"] == "application/json"
    assert got.json()["error"]["code"] == "UNKNOWN_MODEL"
    assert node.dispatcher.sent == []


@pytest.mark.parametrize(("extra", "named"), [
    ({"echo": True}, "echo"), ({"n": 2}, "n is not supported"),
    ({"stream_options": {"include_usage": True}}, "stream_options"),
])
async def test_a_completion_field_that_cannot_be_honoured_is_a_400_naming_it(
        extra: dict[str, Any], named: str) -> None:
    node = fake_node()
    async with client_for(node) as client:
        got = await client.post("/v1/completions", json={"prompt": "The sky is", **extra})
    assert got.status_code == 400 and named in got.json()["error"]["message"]
    assert node.dispatcher.sent == []
