"""The OpenAI surface agents lean on, with the official ``openai`` client against a node that
holds no model (C): every generation runs on its peer A, through the job protocol.

Streamed usage (``stream_options.include_usage``), content-part arrays (text joined, an image a
400), ``models.retrieve`` (an unknown id a ``NotFoundError``), ``completions.create`` plain and
streamed, ``system_fingerprint`` and real ``created`` times, the unknown-model status with and
without ``stream``, and JSON 404/405 bodies. Completions run on ``smollm2-135m``: the session's
``prepared_models`` are the two defaults (``calinode models prepare`` with no names), which do
not include the base model ``gemma3-270m``.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest

from calinode.node import __version__
from daemon_harness import Daemon, Swarm, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.slow]

MODEL = "smollm2-135m"


def serves(daemon: Daemon, peer_id: str, name: str) -> bool:
    row = daemon.peers().get(peer_id)
    return bool(row and row["alive"] and any(
        m["name"] == name for m in row["capabilities"]["generate"]))


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory,
         prepared_models: Path) -> Iterator[tuple[Daemon, Daemon]]:
    """A: the default models; C: none, knows only A (one pair for the whole file)."""
    swarm = Swarm(tmp_path_factory.mktemp("openai-surface"))
    try:
        a = swarm.daemon("a", models=prepared_models).start("--threads", "1")
        c = swarm.daemon("c").start("--bootstrap", a.addr)
        wait_for(lambda: serves(c, a.peer_id, MODEL), 60, "A's generator seen by C")
        yield a, c
    finally:
        swarm.close()


@pytest.fixture(scope="module")
def oc(pair: tuple[Daemon, Daemon]) -> openai.OpenAI:
    _a, c = pair
    return openai.OpenAI(base_url=f"http://{c.info['api']}/v1", api_key=c.token,
                         max_retries=0, timeout=120)


def fingerprint(oc: openai.OpenAI) -> str:
    sha = (oc.models.retrieve(MODEL).model_extra or {})["sha256"]
    return f"fp_{sha[:12]}_calinode-{__version__}"


def test_models_retrieve_and_an_unknown_id(oc: openai.OpenAI,
                                           pair: tuple[Daemon, Daemon]) -> None:
    a, _c = pair
    model = oc.models.retrieve(MODEL)
    assert model.id == MODEL and model.object == "model" and model.owned_by == "calinode"
    extra = model.model_extra or {}
    assert extra["kind"] == "generate" and extra["peers"] == [a.peer_id]
    assert len(extra["sha256"]) == 64
    with pytest.raises(openai.NotFoundError) as caught:
        oc.models.retrieve("no-such-model")
    assert "no-such-model" in caught.value.message


def test_streamed_chat_ends_with_usage_and_stamps_every_chunk(oc: openai.OpenAI,
                                                               pair: tuple[Daemon, Daemon]
                                                               ) -> None:
    a, _c = pair
    wanted = fingerprint(oc)
    before = int(time.time())
    chunks = list(oc.chat.completions.create(
        model=MODEL, max_tokens=12, seed=3, stream=True,
        stream_options={"include_usage": True},
        messages=[{"role": "user", "content": "Write a short paragraph about the ocean."}]))
    after = time.time()
    *pieces, last = chunks
    assert last.choices == [] and last.usage is not None
    assert 1 <= last.usage.completion_tokens <= 12 and last.usage.prompt_tokens > 0
    assert last.usage.total_tokens == last.usage.prompt_tokens + last.usage.completion_tokens
    assert all(ch.usage is None for ch in pieces)
    assert pieces[-1].choices[0].finish_reason in ("stop", "length")
    assert (pieces[-1].model_extra or {})["served_by"] == a.peer_id
    assert "".join(ch.choices[0].delta.content or "" for ch in pieces)
    assert {ch.system_fingerprint for ch in chunks} == {wanted}
    assert {ch.id for ch in chunks} == {chunks[0].id}
    assert all(before <= ch.created <= after for ch in chunks)
    whole = oc.chat.completions.create(model=MODEL, max_tokens=6, seed=3,
                                       messages=[{"role": "user", "content": "Say hi."}])
    assert whole.system_fingerprint == wanted and before <= whole.created <= time.time()


def test_content_parts_text_is_joined_and_an_image_is_refused(oc: openai.OpenAI) -> None:
    chat = oc.chat.completions.create(model=MODEL, max_tokens=8, seed=1, messages=[
        {"role": "user", "content": [{"type": "text", "text": "Name a colour."},
                                     {"type": "text", "text": "One word."}]}])
    assert chat.choices[0].message.content
    assert chat.usage is not None and chat.usage.prompt_tokens > 0
    with pytest.raises(openai.BadRequestError) as caught:
        oc.chat.completions.create(model=MODEL, max_tokens=8, messages=[
            {"role": "user", "content": [
                {"type": "text", "text": "What is in this picture?"},
                {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0K"}}]}])
    assert "has no vision" in caught.value.message and MODEL in caught.value.message


def test_completions_plain_and_streamed(oc: openai.OpenAI, pair: tuple[Daemon, Daemon]) -> None:
    a, _c = pair
    wanted = fingerprint(oc)
    before = int(time.time())
    plain = oc.completions.create(model=MODEL, prompt="The three primary colours are",
                                  max_tokens=8, seed=5, temperature=0.0)
    assert plain.object == "text_completion" and plain.model == MODEL
    assert plain.choices[0].text and plain.choices[0].finish_reason in ("stop", "length")
    assert plain.usage is not None and 1 <= plain.usage.completion_tokens <= 8
    assert plain.system_fingerprint == wanted and before <= plain.created <= time.time()
    assert (plain.model_extra or {})["served_by"] == a.peer_id
    chunks = list(oc.completions.create(model=MODEL, prompt="The three primary colours are",
                                        max_tokens=8, seed=5, temperature=0.0, stream=True,
                                        stream_options={"include_usage": True}))
    *pieces, last = chunks
    assert last.choices == [] and last.usage is not None
    assert last.usage.completion_tokens == plain.usage.completion_tokens
    assert "".join(ch.choices[0].text for ch in pieces) == plain.choices[0].text  # greedy
    assert pieces[-1].choices[0].finish_reason == plain.choices[0].finish_reason
    assert {ch.system_fingerprint for ch in chunks} == {wanted}
    with pytest.raises(openai.BadRequestError) as caught:
        oc.completions.create(model=MODEL, prompt="Hello", max_tokens=4, echo=True)
    assert "echo" in caught.value.message


@pytest.mark.parametrize("stream", [False, True])
def test_an_unknown_model_is_a_404_with_or_without_stream(oc: openai.OpenAI,
                                                          stream: bool) -> None:
    with pytest.raises(openai.NotFoundError):
        oc.chat.completions.create(model="no-such-model", stream=stream, max_tokens=4,
                                   messages=[{"role": "user", "content": "hi"}])
    with pytest.raises(openai.NotFoundError):
        oc.completions.create(model="no-such-model", prompt="hi", max_tokens=4, stream=stream)


def test_unknown_routes_and_wrong_methods_are_json_errors(pair: tuple[Daemon, Daemon]) -> None:
    a, c = pair
    with httpx.Client(base_url=f"http://{c.info['api']}", headers=c.auth,
                      timeout=60) as http:
        missing = http.get("/v1/no-such-route")
        wrong = http.get("/v1/completions")
        alive = http.post("/v1/ping", json={"peer_id": a.peer_id})
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "NOT_FOUND"
    assert wrong.status_code == 405
    assert wrong.json()["error"]["code"] == "METHOD_NOT_ALLOWED"
    assert alive.status_code == 200
