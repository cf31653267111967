"""Routed embed and generate jobs between real daemons with the real default models."""

from __future__ import annotations

import base64
import json
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from calinode.node.client import CalinodeClient
from calinode.protocol.errors import ApiError
from daemon_harness import (
    CALINODE,
    Daemon,
    Swarm,
    _clean_env,
    offers_model,
    relayed_pair,
    run_cli,
    wait_for,
)

pytestmark = [pytest.mark.integration, pytest.mark.slow]

SENTENCES = [f"Sentence number {i} about wing flutter, boundary layers and heat transfer."
             for i in range(300)]


@pytest.fixture
def pair(swarm: Swarm, prepared_models: Path) -> tuple[Daemon, Daemon]:
    """A: has the default models; C: no models, knows only A."""
    return relayed_pair(swarm, prepared_models, "minilm-l6-int8", threads=1)


def client(daemon: Daemon) -> CalinodeClient:
    return CalinodeClient.from_home(daemon.home)


def test_embed_through_a_peer_equals_local_vectors(pair: tuple[Daemon, Daemon]) -> None:
    a, c = pair
    texts = ["What is the lift of a thin airfoil?", "Heat transfer in hypersonic flow."]
    remote = c.cli("embed", *texts, "--query")
    local = a.cli("embed", *texts, "--query")
    assert remote["served_by"] == [a.peer_id] and remote["dim"] == 384
    assert np.allclose(np.array(remote["vectors"]), np.array(local["vectors"]), atol=1e-6)
    norms = np.linalg.norm(np.array(remote["vectors"]), axis=1)
    assert np.allclose(norms, 1.0, atol=1e-5)


def test_bad_embed_input_gets_codes_and_node_keeps_serving(pair: tuple[Daemon, Daemon]) -> None:
    _a, c = pair
    with client(c) as api:
        cases: list[tuple[dict[str, Any], str]] = [
            ({"texts": []}, "BAD_REQUEST"),
            ({"texts": [""]}, "BAD_REQUEST"),
            ({"texts": ["ok", 5]}, "BAD_REQUEST"),
            ({"texts": ["x"] * 10_000}, "BAD_REQUEST"),
            ({"texts": ["ok"], "model": "no-such-model"}, "UNKNOWN_MODEL"),
            ({"texts": ["ok"], "dimensions": 100_000}, "BAD_REQUEST"),
        ]
        for body, code in cases:
            with pytest.raises(ApiError) as caught:
                api._request("POST", "/v1/embed", body)
            assert caught.value.code.value == code, body
        long_text = "turbulent boundary layer " * 400
        result = api.embed(["short", long_text])
        assert result["truncated"] == [1]
        assert len(api.embed(["still serving"])["vectors"]) == 1


@pytest.fixture
def per_token_pair(swarm: Swarm, prepared_models: Path) -> tuple[Daemon, Daemon]:
    """As ``pair``, but A sends every token on its own (``--stream-interval 0``)."""
    a = swarm.daemon("a", models=prepared_models).start("--threads", "1",
                                                        "--stream-interval", "0")
    c = swarm.daemon("c").start("--bootstrap", a.addr)
    wait_for(lambda: offers_model(c, a.peer_id, "smollm2-135m"), 30, "A's models seen by C")
    return a, c


def test_generation_streams_token_by_token_from_a_remote_peer(
    per_token_pair: tuple[Daemon, Daemon]
) -> None:
    a, c = per_token_pair
    proc = subprocess.Popen(
        [CALINODE, "generate", "Name three colours.", "--stream", "--json", "--max-tokens", "24",
         "--seed", "1", "--home", str(c.home)],
        stdout=subprocess.PIPE, text=True, env=_clean_env())
    assert proc.stdout is not None
    arrivals: list[tuple[float, dict[str, Any]]] = []
    for line in proc.stdout:
        arrivals.append((time.monotonic(), json.loads(line)))
    assert proc.wait(120) == 0
    pieces = [item["text"] for _, item in arrivals if "text" in item]
    done = arrivals[-1][1]["done"]
    assert "".join(pieces) == done["text"]
    tokens = done["usage"]["completion_tokens"]
    assert done["served_by"] == a.peer_id and 3 <= tokens <= 24
    # one message per token, but for the odd pair that met a busy event loop together (a
    # default node groups 100 ms of tokens: 24 tokens would come in 2 to 4 pieces)
    assert len(pieces) >= max(3, tokens * 2 // 3)
    # pieces arrived over time, not in one burst at the end
    assert arrivals[len(pieces) - 1][0] > arrivals[0][0]

    # the same over server-sent events, with the openai client
    import openai

    oc = openai.OpenAI(base_url=f"http://{c.info['api']}/v1", api_key=c.token)
    chunks = list(oc.chat.completions.create(  # a prompt that fills all 24 tokens
        model="smollm2-135m", max_tokens=24, seed=3, stream=True,
        messages=[{"role": "user", "content": "Write a short paragraph about the ocean."}]))
    texts = [ch.choices[0].delta.content for ch in chunks if ch.choices[0].delta.content]
    assert chunks[-1].choices[0].finish_reason == "length" and len(texts) >= 16

    # a's record now advertises the tokens/s it measured, which c's routing weighs it by
    wait_for(lambda: any((m.get("rate") or 0) > 0 for m in
                         c.peers()[a.peer_id]["capabilities"]["generate"]),
             60, "the generation rate a measured, in its record as c sees it")


def test_openai_client_against_a_node_without_models(pair: tuple[Daemon, Daemon]) -> None:
    import openai

    _a, c = pair
    api = c.info["api"]
    oc = openai.OpenAI(base_url=f"http://{api}/v1", api_key=c.token)
    emb = oc.embeddings.create(model="minilm-l6-int8", input=["hello", "world"])
    assert len(emb.data) == 2 and len(emb.data[0].embedding) == 384
    b64 = oc.embeddings.create(model="minilm-l6-int8", input="hello", encoding_format="base64")
    packed = np.frombuffer(base64.b64decode(b64.data[0].embedding), dtype="<f4")
    assert np.allclose(packed, emb.data[0].embedding, atol=1e-6)
    chat = oc.chat.completions.create(
        model="smollm2-135m", messages=[{"role": "user", "content": "Say hi."}], max_tokens=12,
        seed=3)
    assert chat.choices[0].message.content and chat.choices[0].finish_reason in ("stop", "length")
    chunks = list(oc.chat.completions.create(  # 48 tokens: several 100 ms groups
        model="smollm2-135m", max_tokens=48, seed=3, stream=True,
        messages=[{"role": "user", "content": "Write a short paragraph about the ocean."}]))
    texts = [ch.choices[0].delta.content for ch in chunks if ch.choices[0].delta.content]
    assert len(texts) >= 3 and chunks[-1].choices[0].finish_reason in ("stop", "length")
    listed = {m.id for m in oc.models.list().data}
    assert {"minilm-l6-int8", "smollm2-135m"} <= listed
    with pytest.raises(openai.NotFoundError):
        oc.embeddings.create(model="no-such-model", input="x")


def test_killing_the_serving_peer_mid_batch_finishes_elsewhere_or_fails_clearly(
    swarm: Swarm, prepared_models: Path
) -> None:
    a = swarm.daemon("a", models=prepared_models).start("--threads", "1")
    b = swarm.daemon("b", models=prepared_models).start("--threads", "1",
                                                         "--bootstrap", a.addr)
    c = swarm.daemon("c").start("--bootstrap", a.addr)
    wait_for(lambda: offers_model(c, a.peer_id, "minilm-l6-int8")
             and offers_model(c, b.peer_id, "minilm-l6-int8"), 30, "both embedders seen by C")
    outcome: dict[str, Any] = {}

    def run() -> None:
        started = time.monotonic()
        try:
            with client(c) as api:
                outcome["result"] = api.embed(SENTENCES * 4, timeout=60)
        except ApiError as exc:
            outcome["error"] = exc
        outcome["seconds"] = time.monotonic() - started

    worker = threading.Thread(target=run)
    worker.start()
    time.sleep(0.5)
    a.kill()
    worker.join(90)
    assert not worker.is_alive(), "the embed call hung"
    assert outcome["seconds"] < 65  # within its deadline (plus process start-up slack)
    if "result" in outcome:
        result = outcome["result"]
        assert len(result["vectors"]) == len(SENTENCES) * 4
        assert b.peer_id in result["served_by"]
    else:
        assert outcome["error"].code.value in ("PEER_UNREACHABLE", "DEADLINE_EXCEEDED")
    run_cli("status", "--home", str(c.home))


def test_client_going_away_cancels_the_remote_generation(pair: tuple[Daemon, Daemon]) -> None:
    a, c = pair
    before = a.status()["jobs"]
    body = {"model": "smollm2-135m", "prompt": "1, 2, 3, 4, 5, 6, 7, 8,", "max_tokens": 3000,
            "stream": True, "temperature": 0.0}
    with httpx.stream("POST", f"http://{c.info['api']}/v1/generate", json=body,
                      headers=c.auth, timeout=60) as response:
        lines = response.iter_lines()
        assert "text" in json.loads(next(lines))
    # the connection is closed after the first piece: A must stop generating, not finish
    wait_for(lambda: a.status()["load"]["in_flight"] == 0, 30, "A idle again")
    after = a.status()["jobs"]
    assert after["failed"] == before["failed"] + 1 and after["served"] == before["served"]
