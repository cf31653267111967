"""A generation outlives the peer that serves it (issue 14), with real daemons.

A router without models (C) and two peers with ``smollm2-135m`` (A, B). A streamed greedy
generation submitted on C; once some text has arrived, the peer serving it is killed with
SIGKILL. The stream goes on through the other peer, which replays the tokens received so far:
the text equals an uninterrupted run's, the usage counts every token once, the final line
reports the switch, and C counts it. Both peers pause after each streamed piece
(``test_token_delay``, a test-only setting) so that the kill lands mid-stream.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest

from calinode.node.client import CalinodeClient
from daemon_harness import Daemon, Swarm, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.slow]

MESSAGES = [{"role": "user", "content": "Tell me a long story about a dragon and a knight."}]
MAX_TOKENS = 120
SETTINGS: dict[str, Any] = {"model": "smollm2-135m", "max_tokens": MAX_TOKENS,
                            "temperature": 0.0}


def has_model(daemon: Daemon, peer_id: str) -> bool:
    row = daemon.peers().get(peer_id)
    return bool(row and row["alive"] and any(
        m["name"] == "smollm2-135m" for m in row["capabilities"]["generate"]))


def slow_peer(swarm: Swarm, name: str, prepared_models: Path, *extra: str) -> Daemon:
    daemon = swarm.daemon(name, models=prepared_models)
    daemon.home.mkdir(parents=True, exist_ok=True)
    (daemon.home / "calinode.toml").write_text("test_token_delay = 0.04\n")
    return daemon.start("--threads", "1", *extra)


def generating(*daemons: Daemon) -> list[Daemon]:
    return [d for d in daemons if d.status()["load"]["in_flight"] > 0]


def resumed_counter(daemon: Daemon) -> float:
    text = httpx.get(f"http://{daemon.info['api']}/metrics", headers=daemon.auth,
                     timeout=30).text
    lines = [line for line in text.splitlines()
             if line.startswith("calinode_generations_resumed_total ")]
    assert len(lines) == 1, "the resumed-generations counter is exported"
    return float(lines[0].split()[1])


def test_killing_the_serving_peer_mid_stream_resumes_on_the_other(
        swarm: Swarm, prepared_models: Path) -> None:
    a = slow_peer(swarm, "a", prepared_models)
    b = slow_peer(swarm, "b", prepared_models, "--bootstrap", a.addr)
    c = swarm.daemon("c").start("--bootstrap", a.addr)
    wait_for(lambda: has_model(c, a.peer_id) and has_model(c, b.peer_id), 60,
             "both generators seen by C")
    with CalinodeClient.from_home(c.home) as api:
        reference = api.generate(messages=MESSAGES, timeout=120, **SETTINGS)
    assert reference["usage"]["completion_tokens"] > 40, "a long enough answer to cut"
    assert "resumed" not in reference
    assert resumed_counter(c) == 0

    pieces: list[str] = []
    done: dict[str, Any] = {}
    killed: Daemon | None = None
    streamed_before_kill = ""
    with CalinodeClient.from_home(c.home) as api:
        for item in api.generate_stream(messages=MESSAGES, timeout=120, **SETTINGS):
            if "text" in item:
                pieces.append(item["text"])
                if killed is None and len("".join(pieces)) >= 40:
                    serving = generating(a, b)
                    assert len(serving) == 1, "one peer serves the generation"
                    killed = serving[0]
                    killed.kill()  # SIGKILL, mid-stream
                    streamed_before_kill = "".join(pieces)
            else:
                done = item["done"]
    assert killed is not None, "the stream was cut mid-way"
    survivor = b if killed is a else a
    text = "".join(pieces)
    assert len(text) > len(streamed_before_kill), "text kept coming after the kill"
    assert text == reference["text"] == done["text"]
    assert done["finish_reason"] == reference["finish_reason"]
    assert done["usage"] == reference["usage"]  # every token counted once
    assert done["served_by"] == survivor.peer_id
    [switch] = done["resumed"]
    assert (switch["from"], switch["to"]) == (killed.peer_id, survivor.peer_id)
    assert 0 < switch["at_token"] < done["usage"]["completion_tokens"]
    assert resumed_counter(c) == 1
    # the router and the survivor still answer (the survivor just served the stream's end)
    assert c.status()["peer_id"] == c.peer_id
    assert survivor.status()["load"]["in_flight"] == 0
