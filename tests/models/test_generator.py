"""GgufGenerator with the real models: SmolLM2-135M-Instruct (chat) and Gemma 3 270M (base).

Generations are short (a few dozen tokens at most) so that the module runs in seconds on two
cores; the models and generators are prepared once per session (``gguf_fixtures``).
"""

from __future__ import annotations

import threading
import time
from dataclasses import replace
from pathlib import Path
from typing import Any, cast

import llama_cpp
import pytest

from calinode.models.generator import (
    SAMPLER_DEFAULTS,
    GenerationChunk,
    GenerationParams,
    GgufGenerator,
    split_at_stop,
    validate_messages,
)
from calinode.models.registry import ModelRegistry
from calinode.protocol.errors import ConfigError, ErrorCode, JobError
from gguf_fixtures import (  # noqa: F401  (fixtures, asked for as gemma3, gguf_registry, smollm2)
    THREADS,
    gemma3_fixture,
    gguf_registry_fixture,
    smollm2_fixture,
)

QUESTION = [{"role": "user", "content": "Tell me a short story about a dragon."}]
EIFFEL = ("Context:\n[1] The Eiffel Tower is 330 metres tall and located in Paris.\n\n"
          "Question: How tall is the Eiffel Tower?\nAnswer:")


def text_of(chunks: list[GenerationChunk]) -> str:
    return "".join(c.text for c in chunks)


def bad_request(exc: pytest.ExceptionInfo[JobError]) -> str:
    assert exc.value.code == ErrorCode.BAD_REQUEST
    return exc.value.message


# --- streaming, seeds, usage ---------------------------------------------------------------


def test_chat_streams_the_same_text_as_a_plain_llama_cpp_run(
    smollm2: GgufGenerator, gguf_registry: ModelRegistry,
) -> None:
    params = GenerationParams(max_tokens=24, temperature=0.8, seed=7)
    chunks = list(smollm2.stream_chat(QUESTION, params))
    assert len([c for c in chunks if c.text]) >= 5  # token by token, not one block
    assert all(c.finish_reason is None for c in chunks[:-1])
    last = chunks[-1]
    assert last.finish_reason == "length"
    assert last.completion_tokens == 24
    assert [c.completion_tokens for c in chunks] == sorted(c.completion_tokens for c in chunks)

    manifest = gguf_registry.get("smollm2-135m")
    plain = llama_cpp.Llama(model_path=str(gguf_registry.path_of(manifest)), n_ctx=smollm2.n_ctx,
                            n_threads=THREADS, verbose=False)
    try:
        reply: Any = plain.create_chat_completion(
            cast(Any, QUESTION), max_tokens=24, temperature=0.8, top_p=params.top_p, seed=7,
            **SAMPLER_DEFAULTS,
        )
    finally:
        plain.close()
    assert text_of(chunks) == reply["choices"][0]["message"]["content"]
    assert last.prompt_tokens == reply["usage"]["prompt_tokens"]
    assert last.completion_tokens == reply["usage"]["completion_tokens"]


def test_a_seed_makes_the_output_reproducible(smollm2: GgufGenerator) -> None:
    def run(seed: int) -> list[str]:
        params = GenerationParams(max_tokens=16, temperature=1.0, seed=seed)
        return [c.text for c in smollm2.stream_chat(QUESTION, params)]

    first = run(11)
    assert run(11) == first
    assert run(12) != first


def test_completion_with_the_base_model(gemma3: GgufGenerator) -> None:
    prompt = "The capital of France is"
    chunks = list(gemma3.stream_completion(prompt, GenerationParams(max_tokens=8, seed=3)))
    last = chunks[-1]
    assert text_of(chunks).strip()
    assert last.finish_reason in ("stop", "length")
    assert 1 <= last.completion_tokens <= 8
    assert last.prompt_tokens == gemma3.count_tokens(prompt)


def test_max_tokens_ends_with_length(smollm2: GgufGenerator) -> None:
    params = GenerationParams(max_tokens=5, temperature=0)
    last = list(smollm2.stream_chat(QUESTION, params))[-1]
    assert (last.finish_reason, last.completion_tokens) == ("length", 5)


# --- stop sequences ------------------------------------------------------------------------


def test_a_stop_sequence_ends_generation_before_it(smollm2: GgufGenerator) -> None:
    greedy = GenerationParams(max_tokens=24, temperature=0)
    full = text_of(list(smollm2.stream_chat(QUESTION, greedy)))
    words = full.split()
    stop = f"{words[4]} {words[5]}"  # something the model is known to say, mid-answer
    chunks = list(smollm2.stream_chat(QUESTION, replace(greedy, stop=(stop,))))
    assert chunks[-1].finish_reason == "stop"
    assert text_of(chunks) == full[: full.index(stop)]
    assert chunks[-1].completion_tokens < 24


def test_the_manifest_stop_sequence_ends_a_base_model_paragraph(gemma3: GgufGenerator) -> None:
    assert gemma3.manifest.stop == ("\n\n",)
    chunks = list(gemma3.stream_completion(EIFFEL, GenerationParams(max_tokens=32, temperature=0)))
    assert chunks[-1].finish_reason == "stop"
    assert "330" in text_of(chunks)
    assert "\n\n" not in text_of(chunks)


@pytest.mark.parametrize(
    ("text", "stops", "expected"),
    [
        ("hello wor", ["world"], ("hello ", "wor", False)),
        ("hello world!", ["world"], ("hello ", "", True)),
        ("a STOP b END", ["END", "STOP"], ("a ", "", True)),
        ("abc", [], ("abc", "", False)),
        ("ab\n", ["\n\n"], ("ab", "\n", False)),
    ],
)
def test_split_at_stop(text: str, stops: list[str], expected: tuple[str, str, bool]) -> None:
    assert split_at_stop(text, stops) == expected


# --- cancellation and concurrency ----------------------------------------------------------


def test_cancel_from_another_thread_ends_the_stream(smollm2: GgufGenerator) -> None:
    params = GenerationParams(max_tokens=12, temperature=0.7, seed=5)
    before = list(smollm2.stream_chat(QUESTION, params))

    cancel, first = threading.Event(), threading.Event()
    chunks: list[GenerationChunk] = []

    def consume() -> None:
        for chunk in smollm2.stream_chat(QUESTION, replace(params, max_tokens=400), cancel):
            chunks.append(chunk)
            first.set()
            time.sleep(0.01)  # a slow consumer: the canceller wins the race

    worker = threading.Thread(target=consume)
    worker.start()
    assert first.wait(30)
    cancel.set()
    worker.join(30)
    assert not worker.is_alive()
    assert chunks[-1].finish_reason == "cancelled"
    assert chunks[-1].completion_tokens < 50
    assert not smollm2.busy
    assert list(smollm2.stream_chat(QUESTION, params)) == before  # still usable, same output


def test_a_cancel_set_before_the_start_generates_nothing(gemma3: GgufGenerator) -> None:
    cancel = threading.Event()
    cancel.set()
    chunks = list(gemma3.stream_completion("Once upon a time", GenerationParams(), cancel))
    assert [(c.text, c.finish_reason, c.completion_tokens) for c in chunks] == [
        ("", "cancelled", 0)]


def test_concurrent_streams_take_turns(smollm2: GgufGenerator) -> None:
    params = [GenerationParams(max_tokens=8, temperature=0.9, seed=s) for s in (1, 2)]
    expected = [text_of(list(smollm2.stream_chat(QUESTION, p))) for p in params]
    results: dict[int, str] = {}

    def run(i: int) -> None:
        results[i] = text_of(list(smollm2.stream_chat(QUESTION, params[i])))

    threads = [threading.Thread(target=run, args=(i,)) for i in (0, 1)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert [results[0], results[1]] == expected


# --- bad requests --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs",
    [
        {"max_tokens": 0}, {"max_tokens": -3}, {"max_tokens": 2.5}, {"max_tokens": True},
        {"temperature": -0.1}, {"temperature": 2.01}, {"temperature": "hot"},
        {"top_p": 0}, {"top_p": 1.2}, {"seed": -1}, {"seed": 2**32}, {"seed": "7"},
        {"stop": ("",)}, {"stop": "END"}, {"stop": tuple("abcdefghi")}, {"stop": (3,)},
    ],
)
def test_bad_params_are_bad_requests(kwargs: dict[str, Any]) -> None:
    with pytest.raises(JobError) as exc:
        GenerationParams(**kwargs)
    bad_request(exc)


def test_params_accept_a_list_of_stops() -> None:
    assert GenerationParams(stop=["a", "b"]).stop == ("a", "b")  # type: ignore[arg-type]


def test_max_tokens_beyond_the_context_is_a_bad_request(smollm2: GgufGenerator) -> None:
    with pytest.raises(JobError) as exc:
        smollm2.stream_chat(QUESTION, GenerationParams(max_tokens=smollm2.n_ctx + 1))
    assert str(smollm2.n_ctx) in bad_request(exc)


@pytest.mark.parametrize(
    "messages",
    [
        [],
        "hello",
        ["hello"],
        [{"role": "robot", "content": "beep"}],
        [{"role": "user", "content": ""}],
        [{"role": "user", "content": "  \n"}],
        [{"role": "user"}],
        [{"content": "no role"}],
        [{"role": "user", "content": 42}],
    ],
)
def test_bad_messages_are_bad_requests(smollm2: GgufGenerator, messages: Any) -> None:
    with pytest.raises(JobError) as exc:
        smollm2.stream_chat(messages, GenerationParams())
    bad_request(exc)


def test_messages_are_reduced_to_role_and_content() -> None:
    assert validate_messages([{"role": "user", "content": "hi", "name": "ann"}]) == [
        {"role": "user", "content": "hi"}]


@pytest.mark.parametrize("prompt", ["", "   ", None])
def test_an_empty_prompt_is_a_bad_request(gemma3: GgufGenerator, prompt: Any) -> None:
    with pytest.raises(JobError) as exc:
        gemma3.stream_completion(prompt, GenerationParams())
    bad_request(exc)


def test_an_over_long_prompt_is_a_bad_request_with_the_counts(gemma3: GgufGenerator) -> None:
    prompt = "word " * (gemma3.n_ctx + 100)
    n_tokens = gemma3.count_tokens(prompt)
    with pytest.raises(JobError) as exc:
        gemma3.stream_completion(prompt, GenerationParams(max_tokens=4))
    message = bad_request(exc)
    assert str(n_tokens) in message
    assert str(gemma3.n_ctx) in message
    assert not gemma3.busy


def test_a_base_model_refuses_chat(gemma3: GgufGenerator) -> None:
    assert not gemma3.can_chat
    with pytest.raises(JobError) as exc:
        gemma3.stream_chat(QUESTION, GenerationParams())
    assert "completion" in bad_request(exc)


def test_a_named_chat_format_opts_a_model_into_chat(gguf_registry: ModelRegistry) -> None:
    manifest = replace(gguf_registry.get("gemma3-270m"), chat_format="gemma")
    gen = GgufGenerator(manifest, gguf_registry.path_of(manifest), threads=THREADS, n_ctx=512)
    try:
        assert gen.can_chat
        chunks = list(gen.stream_chat(QUESTION, GenerationParams(max_tokens=4, seed=1)))
        assert chunks[-1].finish_reason in ("stop", "length")
        assert chunks[-1].prompt_tokens > 10  # the turn markers were added
    finally:
        gen.close()


# --- configuration errors ------------------------------------------------------------------


def test_default_context_is_capped(smollm2: GgufGenerator, gemma3: GgufGenerator) -> None:
    assert smollm2.manifest.context_length == 8192
    assert smollm2.n_ctx == gemma3.n_ctx == 4096


@pytest.mark.parametrize(
    "change",
    [{"chat_format": "no-such-format"}, {"kind": "embed", "dim": 3, "pooling": "mean"}],
)
def test_a_bad_manifest_is_a_config_error(
    gguf_registry: ModelRegistry, change: dict[str, Any],
) -> None:
    manifest = replace(gguf_registry.get("smollm2-135m"), **change)
    with pytest.raises(ConfigError):
        GgufGenerator(manifest, gguf_registry.path_of(manifest), n_ctx=256)


def test_a_missing_model_file_is_a_config_error(
    gguf_registry: ModelRegistry, tmp_path: Path,
) -> None:
    with pytest.raises(ConfigError, match="not found"):
        GgufGenerator(gguf_registry.get("smollm2-135m"), tmp_path / "missing.gguf")


def test_n_ctx_beyond_the_model_is_a_config_error(gguf_registry: ModelRegistry) -> None:
    manifest = gguf_registry.get("smollm2-135m")
    with pytest.raises(ConfigError, match="n_ctx"):
        GgufGenerator(manifest, gguf_registry.path_of(manifest), n_ctx=8193)
