"""Structured output, ``n`` and logprobs with the official ``openai`` client, through a relay.

Two daemons: A serves the models, C has none and knows only A, so every request to C's API
travels as a ``generate`` job to A and A's reply is checked on C against what was asked.
A real hostile libp2p peer then sends A the generate jobs that would have crashed it had a
peer been allowed to send grammar text (issue 15): each is refused with ``BAD_REQUEST`` and
A still answers.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest

from daemon_harness import Daemon, Swarm, refuses_then_serves, relayed_pair

pytestmark = [pytest.mark.integration, pytest.mark.slow]

MODEL = "smollm2-135m"
ANSWER = {"type": "object", "additionalProperties": False, "required": ["ok"],
          "properties": {"ok": {"type": "boolean"}}}
QUESTIONS = [f"Question {i}: is {i} an even number?" for i in range(20)]


@pytest.fixture
def pair(swarm: Swarm, prepared_models: Path) -> tuple[Daemon, Daemon]:
    """A: has the default models; C: no models, knows only A."""
    return relayed_pair(swarm, prepared_models, MODEL, threads=2)


def valid_answer(value: Any) -> bool:
    """ANSWER, checked by hand (jsonschema is not installed)."""
    return isinstance(value, dict) and set(value) == {"ok"} and isinstance(value["ok"], bool)


def test_structured_output_n_and_logprobs_through_a_relaying_node(
    pair: tuple[Daemon, Daemon],
) -> None:
    import openai

    a, c = pair
    oc = openai.OpenAI(base_url=f"http://{c.info['api']}/v1", api_key=c.token, timeout=120)
    fmt: Any = {"type": "json_schema",
                "json_schema": {"name": "answer", "schema": ANSWER, "strict": True}}
    for i, question in enumerate(QUESTIONS):
        done = oc.chat.completions.create(
            model=MODEL, max_tokens=16, seed=i, response_format=fmt,
            messages=[{"role": "user", "content": question}])
        assert done.served_by == a.peer_id  # type: ignore[attr-defined]
        assert valid_answer(json.loads(done.choices[0].message.content or "")), i

    three = oc.chat.completions.create(
        model=MODEL, max_tokens=8, n=3, temperature=1.0, seed=5,
        messages=[{"role": "user", "content": "Tell me a story."}])
    assert [ch.index for ch in three.choices] == [0, 1, 2]
    assert len({ch.message.content for ch in three.choices}) >= 2  # own seeds, own samples
    assert three.usage is not None and three.usage.completion_tokens <= 24

    probed = oc.chat.completions.create(
        model=MODEL, max_tokens=8, seed=2, logprobs=True, top_logprobs=3,
        messages=[{"role": "user", "content": "Name a fruit."}])
    logprobs = probed.choices[0].logprobs
    assert logprobs is not None and logprobs.content
    assert probed.usage is not None and len(logprobs.content) == probed.usage.completion_tokens
    for token in logprobs.content:
        assert token.logprob <= 0.0 and len(token.top_logprobs) == 3
        assert sum(math.exp(t.logprob) for t in token.top_logprobs) <= 1.0 + 1e-6
        assert all(t.logprob <= 0.0 for t in token.top_logprobs)
        assert token.bytes is not None and bytes(token.bytes).decode("utf-8", "replace")

    with pytest.raises(openai.BadRequestError, match="minimum"):
        oc.chat.completions.create(
            model=MODEL, max_tokens=8, messages=[{"role": "user", "content": "Hi"}],
            response_format={"type": "json_schema", "json_schema": {
                "name": "n", "schema": {"type": "integer", "minimum": 1}}})
    with pytest.raises(openai.BadRequestError, match="not streamed"):
        oc.chat.completions.create(model=MODEL, max_tokens=8, n=2, stream=True,
                                   messages=[{"role": "user", "content": "Hi"}])


def test_hostile_generate_jobs_cannot_crash_the_serving_node(
    pair: tuple[Daemon, Daemon],
) -> None:
    a, _ = pair
    base = {"model": MODEL, "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 4}
    attacks = [
        dict(base, grammar="root ::= [\\x00]"),  # grammar text is not a field at all
        dict(base, json_schema='{"type":"string","pattern":"^[\\\\x00]$"}'),
        dict(base, json_schema='{"const":"\\u0000"}'),
        dict(base, json_schema='{"enum":["\\ud83d\\ude00"]}'),
        dict(base, json_schema="[" * 8000 + "]" * 8000),
        dict(base, logprobs=True, top_logprobs=10_000),
        dict(base, n=1000),
    ]
    result = refuses_then_serves(a, "generate", attacks, base)
    assert result["usage"]["completion_tokens"]
