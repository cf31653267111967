"""Structured output and logprobs with the real SmolLM2-135M-Instruct GGUF.

A JSON schema constrains decoding through the grammar llama.cpp's converter builds from it,
so even this 135M model answers JSON that parses and validates; logprobs are the model's own
log-probabilities, one entry per generated token. Generations stay short (a few dozen
tokens), so the module runs in seconds on two cores.
"""

from __future__ import annotations

import json
import math
from typing import Any

import pytest

from calinode.models.generator import GenerationChunk, GenerationParams, GgufGenerator, derive_seed
from calinode.models.json_grammar import JSON_OBJECT_SCHEMA
from calinode.protocol.errors import ErrorCode, JobError
from gguf_fixtures import smollm2_fixture  # noqa: F401  (fixture, asked for as smollm2)

PERSON = {"type": "object", "additionalProperties": False, "required": ["name", "age", "pet"],
          "properties": {"name": {"type": "string", "maxLength": 16},
                         "age": {"type": "integer"},
                         "pet": {"enum": ["cat", "dog", "none"]}}}
STORY = [{"role": "user", "content": "Tell me a short story about a dragon."}]
PROMPTS = ["Describe a person.", "Tell me about a farmer.", "Describe your neighbour."]


def text_of(chunks: list[GenerationChunk]) -> str:
    return "".join(c.text for c in chunks)


def valid_person(value: Any) -> bool:
    """PERSON, checked by hand (jsonschema is not installed)."""
    return (isinstance(value, dict) and set(value) == {"name", "age", "pet"}
            and isinstance(value["name"], str) and len(value["name"]) <= 16
            and isinstance(value["age"], int) and not isinstance(value["age"], bool)
            and value["pet"] in ("cat", "dog", "none"))


@pytest.mark.slow  # grammar-constrained sampling checks every token of the vocabulary
@pytest.mark.parametrize("prompt", PROMPTS)
def test_schema_constrained_output_parses_and_validates(
    smollm2: GgufGenerator, prompt: str,
) -> None:
    params = GenerationParams(max_tokens=48, temperature=0.8, seed=3,
                              json_schema=json.dumps(PERSON))
    chunks = list(smollm2.stream_chat([{"role": "user", "content": prompt}], params))
    assert chunks[-1].finish_reason == "stop"  # the grammar ended it, not max_tokens
    assert valid_person(json.loads(text_of(chunks)))


def test_json_object_gives_an_object_where_free_text_is_prose(smollm2: GgufGenerator) -> None:
    messages = [{"role": "user", "content": "Say hello."}]
    free = text_of(list(smollm2.stream_chat(messages, GenerationParams(max_tokens=12, seed=1))))
    with pytest.raises(ValueError):
        json.loads(free)
    params = GenerationParams(max_tokens=64, seed=1, json_schema=JSON_OBJECT_SCHEMA)
    chunks = list(smollm2.stream_chat(messages, params))
    if chunks[-1].finish_reason == "stop":  # an object of any size may run past 64 tokens
        assert isinstance(json.loads(text_of(chunks)), dict)
    assert text_of(chunks).startswith("{")


@pytest.mark.parametrize(("schema", "says"), [
    ({"type": "string", "pattern": "^[\\x00]$"}, "'pattern'"),
    ({"const": "\u0000"}, "U+0000"),
    ({"type": "integer", "maximum": 3}, "'maximum'"),
])
def test_a_schema_that_cannot_be_enforced_is_refused_before_the_stream(
    smollm2: GgufGenerator, schema: dict[str, Any], says: str,
) -> None:
    """What a peer may send: refused as BAD_REQUEST, and the model still generates after."""
    params = GenerationParams(max_tokens=4, seed=1, json_schema=json.dumps(schema))
    with pytest.raises(JobError) as exc:
        smollm2.stream_chat([{"role": "user", "content": "Hi"}], params)
    assert exc.value.code == ErrorCode.BAD_REQUEST and says in exc.value.message
    again = list(smollm2.stream_chat([{"role": "user", "content": "Hi"}],
                                     GenerationParams(max_tokens=4, seed=1)))
    assert again[-1].completion_tokens == 4


def test_logprobs_cover_every_token_and_are_log_probabilities(smollm2: GgufGenerator) -> None:
    params = GenerationParams(max_tokens=16, seed=5, logprobs=True, top_logprobs=3)
    chunks = list(smollm2.stream_chat(STORY, params))
    entries = [e for c in chunks for e in c.logprobs]
    assert chunks[-1].finish_reason == "length"
    assert len(entries) == chunks[-1].completion_tokens == 16
    assert b"".join(e.piece for e in entries).decode() == text_of(chunks)
    for e in entries:
        assert e.logprob <= 0.0 and len(e.top) == 3
        tops = [lp for _, lp in e.top]
        assert tops == sorted(tops, reverse=True)
        assert sum(math.exp(lp) for lp in tops) <= 1.0 + 1e-6
        assert e.logprob <= tops[0] + 1e-9  # nothing is likelier than the likeliest
        if e.piece in {piece for piece, _ in e.top}:
            assert math.isclose(e.logprob, dict(e.top)[e.piece], abs_tol=1e-9)
    # same seed, same settings: the same tokens and the same log-probabilities
    again = [e for c in smollm2.stream_chat(STORY,
                                            params) for e in c.logprobs]
    assert again == entries
    # logprobs only when asked for
    plain = list(smollm2.stream_chat(STORY,
                                     GenerationParams(max_tokens=4, seed=5)))
    assert all(c.logprobs == () for c in plain)


def test_derived_seeds_give_different_samples(smollm2: GgufGenerator) -> None:
    seeds = [derive_seed(11, i) for i in range(3)]
    assert seeds[0] == 11 and len(set(seeds)) == 3
    assert derive_seed(None, 2) is None
    texts = {text_of(list(smollm2.stream_chat(
        [{"role": "user", "content": "Tell me a story."}],
        GenerationParams(max_tokens=12, temperature=1.0, seed=s)))) for s in seeds}
    assert len(texts) == 3
