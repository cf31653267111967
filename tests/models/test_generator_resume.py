"""Resuming a generation with the real SmolLM2 GGUF (issue 14): a generation cut after some
tokens and resumed from them (``resume=``) continues exactly as the uninterrupted run, token
id for token id, under greedy and under seeded sampling; the already-streamed text is not
streamed again; usage counts every token once.
"""

from __future__ import annotations

import pytest

from calinode.models.generator import GenerationChunk, GenerationParams, GgufGenerator
from calinode.protocol.errors import ErrorCode, JobError
from gguf_fixtures import (  # noqa: F401  (fixtures, asked for as gguf_registry, smollm2)
    gguf_registry_fixture,
    smollm2_fixture,
)

QUESTION = [{"role": "user", "content": "Tell me a short story about a dragon."}]
N = 48


def ids_of(chunks: list[GenerationChunk]) -> list[int]:
    return [t for c in chunks for t in c.tokens]


def text_of(chunks: list[GenerationChunk]) -> str:
    return "".join(c.text for c in chunks)


def cut_points(chunks: list[GenerationChunk]) -> list[int]:
    """Chunk counts at which a relay may have been cut off: after an early, a middle and a
    late text chunk (a relay resumes from the chunks it received, never mid-chunk)."""
    texts = [i for i, c in enumerate(chunks) if c.text and c.finish_reason is None]
    return sorted({texts[1], texts[len(texts) // 2], texts[-2]})


@pytest.mark.parametrize("params", [GenerationParams(max_tokens=N, temperature=0),
                                    GenerationParams(max_tokens=N, temperature=0.9, seed=5)],
                         ids=["greedy", "seeded"])
def test_a_resumed_generation_continues_the_uninterrupted_run(
        smollm2: GgufGenerator, params: GenerationParams) -> None:
    full = list(smollm2.stream_chat(QUESTION, params))
    last = full[-1]
    assert last.finish_reason == "length"
    assert len(ids_of(full)) == last.completion_tokens == N  # every token's id travels
    for cut in cut_points(full):
        received = full[:cut + 1]
        done = ids_of(received)
        assert 0 < len(done) < N
        rest = list(smollm2.stream_chat(QUESTION, params, resume=done))
        assert done + ids_of(rest) == ids_of(full)
        assert text_of(received) + text_of(rest) == text_of(full)
        assert rest[-1].finish_reason == last.finish_reason
        assert (rest[-1].prompt_tokens, rest[-1].completion_tokens) == (last.prompt_tokens, N)


def test_resume_respects_a_stop_sequence_held_back_before_the_cut(
        smollm2: GgufGenerator) -> None:
    greedy = GenerationParams(max_tokens=N, temperature=0)
    words = text_of(list(smollm2.stream_chat(QUESTION, greedy))).split()
    stop = f"{words[8]} {words[9]}"  # said mid-answer: its first word is held back
    params = GenerationParams(max_tokens=N, temperature=0, stop=(stop,))
    full = list(smollm2.stream_chat(QUESTION, params))
    assert full[-1].finish_reason == "stop"
    texts = [i for i, c in enumerate(full) if c.text and c.finish_reason is None]
    received = full[:texts[-1] + 1]  # cut right before the stop sequence
    rest = list(smollm2.stream_chat(QUESTION, params, resume=ids_of(received)))
    assert text_of(received) + text_of(rest) == text_of(full)
    assert ids_of(received) + ids_of(rest) == ids_of(full)
    assert rest[-1].finish_reason == "stop"


def test_replayed_tokens_the_model_would_not_pick_still_win(smollm2: GgufGenerator) -> None:
    """Another node's tokens that this one would not have generated (another CPU rounding
    differently): the text already streamed stays, the generation goes on after them."""
    greedy = GenerationParams(max_tokens=24, temperature=0)
    foreign = list(smollm2.stream_completion("Once upon a time", greedy))
    forced = ids_of(foreign)[:6]
    rest = list(smollm2.stream_chat(QUESTION, greedy, resume=forced))
    assert rest[-1].completion_tokens == len(forced) + len(ids_of(rest))
    assert rest[-1].finish_reason in ("length", "stop")
    assert len(ids_of(rest)) >= 1


@pytest.mark.parametrize("resume", [list(range(8)), [1 << 30], [-1]],
                         ids=["not-fewer-than-max-tokens", "outside-vocabulary", "negative"])
def test_an_impossible_resume_is_a_bad_request(smollm2: GgufGenerator,
                                               resume: list[int]) -> None:
    with pytest.raises(JobError) as exc:
        smollm2.stream_chat(QUESTION, GenerationParams(max_tokens=8, temperature=0),
                            resume=resume)
    assert exc.value.code == ErrorCode.BAD_REQUEST
    assert "resume" in exc.value.message
