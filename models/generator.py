"""GGUF text generation with llama.cpp: token streaming, stop sequences, cancellation.

:class:`GgufGenerator` wraps one ``llama_cpp.Llama`` (one model, one context) and streams
:class:`GenerationChunk` objects as tokens are produced::

    gen = GgufGenerator(manifest, registry.path_of(manifest), threads=2)
    for chunk in gen.stream_chat([{"role": "user", "content": "Hi"}], GenerationParams(seed=1)):
        print(chunk.text, end="")        # the last chunk has finish_reason and token usage

The loop is ours rather than ``create_completion(stream=True)``: it counts tokens exactly,
checks ``cancel`` between tokens, holds back text that may begin a stop sequence, and ends every
stream with one chunk whose ``finish_reason`` is ``"stop"`` (end-of-generation token or stop
sequence), ``"length"`` (``max_tokens`` or the context is full) or ``"cancelled"``.
Sampling matches llama-cpp-python's (same sampler chain, seed set per call), so a seeded stream
equals ``Llama.create_chat_completion`` with the same settings (see :data:`SAMPLER_DEFAULTS`).

Structured output: ``params.json_schema`` constrains decoding with the grammar
:mod:`calinode.models.json_grammar` builds from the schema (checked before the stream starts).
``params.logprobs``: every chunk carries the :class:`TokenLogprob` of the tokens it covers
(their log-probability under the raw logits, and the ``top_logprobs`` likeliest tokens).

Resume: ``stream_chat``/``stream_completion`` with ``resume`` (token ids another node
generated for the same request) replay those tokens and stream only what follows, as the
uninterrupted run would have (see :meth:`GgufGenerator._sample`); every chunk carries the ids
of the tokens whose text it releases, which is what a relay sends back to resume.

Chat prompts are rendered with the GGUF's own chat template (``manifest.chat_format`` None) or
one of llama-cpp-python's named formats (:data:`CHAT_FORMATTERS`). A base model
(``manifest.chat`` False and no ``chat_format``) only takes completion prompts. A stream stops
at the first of: the chat format's stop strings, ``manifest.stop`` and ``params.stop``.
Prompts are tokenized with special tokens parsed (as llama-cpp-python does).

A llama.cpp context is not thread-safe: a generator runs one stream at a time (a lock held
from the first token to the last chunk; consume a stream to the end or ``close()`` it).
Everything here blocks: the daemon calls it from a worker thread.
"""

from __future__ import annotations

import codecs
import ctypes
import logging
import threading
from collections.abc import Callable, Generator, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, cast

import llama_cpp
import numpy as np
from llama_cpp import llama_chat_format
from llama_cpp.llama_grammar import LlamaGrammar

from calinode.models.json_grammar import schema_grammar
from calinode.models.manifest import ModelManifest
from calinode.protocol.errors import ConfigError, ErrorCode, JobError
from calinode.protocol.job_params import MAX_TOP_LOGPROBS
from calinode.protocol.job_replies import MAX_TOKEN_BYTES, TokenLogprob

FinishReason = Literal["stop", "length", "cancelled"]
#: a sampled token, and its logprobs when they were asked for
Sample = tuple[int, "TokenLogprob | None"]
ROLES = frozenset({"system", "user", "assistant"})
MAX_STOP_SEQUENCES = 8
MAX_SEED = 0xFFFF_FFFE  # 0xFFFFFFFF is llama.cpp's "random seed"
DEFAULT_MAX_CONTEXT = 4096
#: Sampler settings that are not per-request parameters (llama-cpp-python's chat defaults).
SAMPLER_DEFAULTS: dict[str, Any] = {"top_k": 40, "min_p": 0.05, "repeat_penalty": 1.1}

log = logging.getLogger(__name__)
ChatFormatter = Callable[..., llama_chat_format.ChatFormatterResponse]
#: llama-cpp-python's named chat formats that a manifest may name in ``chat_format``.
CHAT_FORMATTERS: dict[str, ChatFormatter] = {
    "chatml": llama_chat_format.format_chatml,
    "gemma": llama_chat_format.format_gemma,
    "llama-2": llama_chat_format.format_llama2,
    "llama-3": llama_chat_format.format_llama3,
    "mistral-instruct": llama_chat_format.format_mistral_instruct,
    "zephyr": llama_chat_format.format_zephyr,
}


def _bad_request(message: str) -> JobError:
    return JobError(message, code=ErrorCode.BAD_REQUEST)


@dataclass(frozen=True)
class GenerationParams:
    """Per-request sampling parameters. ``seed`` fixes the output for a given model, prompt
    and parameters; ``temperature=0`` is greedy decoding. Invalid values raise a
    ``BAD_REQUEST`` :class:`JobError` (``max_tokens`` is also checked against the context)."""

    max_tokens: int = 256
    temperature: float = 0.7
    top_p: float = 0.95
    seed: int | None = None
    stop: tuple[str, ...] = ()
    #: JSON schema (JSON text) the output must validate against: decoding is constrained by
    #: the grammar :func:`~calinode.models.json_grammar.schema_grammar` builds from it
    json_schema: str | None = None
    #: record each token's log-probability, and its ``top_logprobs`` likeliest alternatives
    logprobs: bool = False
    top_logprobs: int = 0
    #: GBNF that constrains decoding, built on this node (never taken from a peer): the
    #: forced tool call of :func:`~calinode.models.tool_grammar.tool_call_grammar`
    grammar: str | None = None

    def __post_init__(self) -> None:
        if not _is_int(self.max_tokens) or self.max_tokens < 1:
            raise _bad_request(f"max_tokens must be a positive integer, not {self.max_tokens!r}")
        if not _is_number(self.temperature) or not 0.0 <= self.temperature <= 2.0:
            raise _bad_request(f"temperature must be in [0, 2], not {self.temperature!r}")
        if not _is_number(self.top_p) or not 0.0 < self.top_p <= 1.0:
            raise _bad_request(f"top_p must be in (0, 1], not {self.top_p!r}")
        if self.seed is not None and (not _is_int(self.seed) or not 0 <= self.seed <= MAX_SEED):
            raise _bad_request(f"seed must be an integer in [0, {MAX_SEED}], not {self.seed!r}")
        stop = tuple(self.stop) if isinstance(self.stop, list | tuple) else None
        if stop is None or len(stop) > MAX_STOP_SEQUENCES:
            raise _bad_request(f"stop must be a list of at most {MAX_STOP_SEQUENCES} strings")
        if not all(isinstance(s, str) and s for s in stop):
            raise _bad_request("stop sequences must be non-empty strings")
        object.__setattr__(self, "stop", stop)
        if self.json_schema is not None and not isinstance(self.json_schema, str):
            raise _bad_request("json_schema must be JSON text")
        if not isinstance(self.logprobs, bool):
            raise _bad_request("logprobs must be true or false")
        if (not _is_int(self.top_logprobs)
                or not 0 <= self.top_logprobs <= (MAX_TOP_LOGPROBS if self.logprobs else 0)):
            raise _bad_request(f"top_logprobs must be in [0, {MAX_TOP_LOGPROBS}] (with "
                               f"logprobs), not {self.top_logprobs!r}")
        if self.grammar is not None and self.json_schema is not None:
            raise _bad_request("a grammar and a json_schema do not combine")


def derive_seed(seed: int | None, index: int) -> int | None:
    """The seed of sample ``index`` of a request with ``seed`` (OpenAI's ``n``): sample 0 uses
    the request's own seed (so ``n=1`` is unchanged); the others are spread over the seed
    space by a Weyl step, so that two samples of one request never share a seed and sample 1
    of seed ``s`` is not sample 0 of seed ``s + 1``. No seed: every sample is random."""
    if seed is None or index == 0:
        return seed
    return (seed + index * 0x9E37_79B9) % (MAX_SEED + 1)


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


@dataclass
class GenerationChunk:
    """A piece of generated text. Every chunk carries the token counts so far; the last chunk
    of a stream has ``finish_reason`` set (its ``text`` may be empty)."""

    text: str
    finish_reason: str | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    #: with ``params.logprobs``: one entry per token sampled since the previous chunk
    logprobs: tuple[TokenLogprob, ...] = ()
    #: the ids of the tokens sampled since the previous chunk (whose text this chunk
    #: releases): what a relay sends back to resume the generation on another node
    tokens: tuple[int, ...] = ()


def validate_messages(messages: object) -> list[dict[str, str]]:
    """Check chat messages (a non-empty list of ``{"role", "content"}`` with roles system,
    user or assistant and non-blank content); return them reduced to role and content."""
    if not isinstance(messages, list) or not messages:
        raise _bad_request("messages must be a non-empty list")
    checked = []
    for i, message in enumerate(messages):
        if not isinstance(message, dict):
            raise _bad_request(f"messages[{i}] must be an object with role and content")
        role, content = message.get("role"), message.get("content")
        if role not in ROLES:
            raise _bad_request(f"messages[{i}].role must be one of {sorted(ROLES)}, "
                               f"not {role!r}")
        if not isinstance(content, str) or not content.strip():
            raise _bad_request(f"messages[{i}].content must be a non-empty string")
        checked.append({"role": role, "content": content})
    return checked


def split_at_stop(text: str, stops: Sequence[str]) -> tuple[str, str, bool]:
    """Split pending text into ``(safe to emit, held back, stopped)``.

    When a stop sequence occurs, everything before the first one is safe and the stream
    stops. Otherwise the longest tail that could begin a stop sequence is held back."""
    found = [i for i in (text.find(s) for s in stops) if i >= 0]
    if found:
        return text[: min(found)], "", True
    hold = 0
    for stop in stops:
        for size in range(min(len(stop) - 1, len(text)), hold, -1):
            if text.endswith(stop[:size]):
                hold = size
                break
    return text[: len(text) - hold], text[len(text) - hold:], False


@contextmanager
def _gguf_header(path: Path) -> Iterator[llama_cpp.llama_model_p]:
    """A GGUF file opened for its metadata and vocabulary only, not its weights."""
    params = llama_cpp.llama_model_default_params()
    params.vocab_only = True
    log = logging.getLogger("llama-cpp-python")  # llama.cpp's log, printed to stderr
    level = log.level
    log.setLevel(logging.ERROR)
    try:
        model = llama_cpp.llama_model_load_from_file(str(path).encode(), params)
    finally:
        log.setLevel(level)
    if not model:
        raise ConfigError(f"cannot read GGUF file {path}")
    try:
        yield model
    finally:
        llama_cpp.llama_model_free(model)


def _meta_value(model: llama_cpp.llama_model_p, key: str) -> str | None:
    size = 256
    while True:
        buf = ctypes.create_string_buffer(size)
        n = llama_cpp.llama_model_meta_val_str(model, key.encode(), buf, size)
        if n < 0:
            return None
        if n < size:
            return buf.value.decode("utf-8", errors="replace")
        size = n + 1


def read_gguf_metadata(path: Path, key: str) -> str | None:
    """One metadata value of a GGUF file as a string (None if absent)."""
    with _gguf_header(path) as model:
        return _meta_value(model, key)


def gguf_context_length(path: Path) -> int | None:
    """The training context length recorded in a GGUF file (``<arch>.context_length``)."""
    with _gguf_header(path) as model:
        arch = _meta_value(model, "general.architecture")
        value = _meta_value(model, f"{arch}.context_length") if arch else None
    return int(value) if value and value.isdigit() else None


class GgufGenerator:
    """One GGUF model loaded with llama.cpp, streaming one generation at a time."""

    def __init__(
        self,
        manifest: ModelManifest,
        model_path: Path,
        *,
        threads: int | None = None,
        n_ctx: int | None = None,
    ) -> None:
        if manifest.kind != "generate" or not manifest.context_length:
            raise ConfigError(f"model {manifest.name} is not a generation model")
        self.manifest = manifest
        self.n_ctx = n_ctx or min(manifest.context_length, DEFAULT_MAX_CONTEXT)
        if not 16 <= self.n_ctx <= manifest.context_length:
            raise ConfigError(f"n_ctx must be in [16, {manifest.context_length}] for "
                              f"{manifest.name}, not {self.n_ctx}")
        if not model_path.is_file():
            raise ConfigError(f"model file of {manifest.name} not found: {model_path}")
        try:
            self._llm = llama_cpp.Llama(
                model_path=str(model_path), n_ctx=self.n_ctx, n_threads=threads,
                n_threads_batch=threads, verbose=False,
            )
        except ValueError as exc:
            raise ConfigError(f"cannot load {manifest.name} from {model_path}: {exc}") from exc
        self._vocab = llama_cpp.llama_model_get_vocab(self._llm.model)
        self._formatter = self._chat_formatter()
        self._lock = threading.Lock()

    @property
    def can_chat(self) -> bool:
        return self._formatter is not None

    @property
    def busy(self) -> bool:
        """True while a stream holds the model."""
        return self._lock.locked()

    def close(self) -> None:
        """Free the model and its context (waits for a running stream to be closed)."""
        with self._lock:
            self._llm.close()

    def count_tokens(self, text: str) -> int:
        return len(self._tokenize(text, add_bos=True))

    def stream_chat(
        self,
        messages: list[dict[str, str]],
        params: GenerationParams,
        cancel: threading.Event | None = None,
        *,
        resume: Sequence[int] = (),
    ) -> Iterator[GenerationChunk]:
        """Stream the assistant's reply to ``messages``. Bad messages, a base model or a
        too-long prompt raise ``BAD_REQUEST`` here, before the stream starts. ``resume``:
        see :meth:`_sample`."""
        if self._formatter is None:
            raise _bad_request(f"model {self.manifest.name} is a base model without a chat "
                               "format: give it a prompt to complete instead (calinode "
                               f"generate --completion --model {self.manifest.name} PROMPT, "
                               'or "prompt" instead of "messages" in POST /v1/generate)')
        checked = validate_messages(messages)
        rendered = self._formatter(messages=cast(Any, checked))
        tokens = self._tokenize(rendered.prompt, add_bos=not rendered.added_special)
        stops = _as_list(rendered.stop) + list(self.manifest.stop) + list(params.stop)
        return self._start(tokens, stops, params, cancel, resume)

    def stream_completion(
        self,
        prompt: str,
        params: GenerationParams,
        cancel: threading.Event | None = None,
        *,
        resume: Sequence[int] = (),
    ) -> Iterator[GenerationChunk]:
        """Stream the continuation of ``prompt`` (raw text; special tokens are parsed).
        ``resume``: see :meth:`_sample`."""
        if not isinstance(prompt, str) or not prompt.strip():
            raise _bad_request("prompt must be a non-empty string")
        tokens = self._tokenize(prompt, add_bos=True)
        return self._start(tokens, list(self.manifest.stop) + list(params.stop), params, cancel,
                           resume)

    def _chat_formatter(self) -> ChatFormatter | None:
        name = self.manifest.chat_format
        if name is not None:
            if name not in CHAT_FORMATTERS:
                raise ConfigError(f"model {self.manifest.name}: unknown chat_format {name!r} "
                                  f"(known: {', '.join(sorted(CHAT_FORMATTERS))})")
            return CHAT_FORMATTERS[name]
        if not self.manifest.chat:
            return None
        template = self._llm.metadata.get("tokenizer.chat_template")
        if not template:
            raise ConfigError(f"chat model {self.manifest.name} has no chat template in its "
                              "GGUF file: set chat_format in its manifest")
        eos, bos = self._llm.token_eos(), self._llm.token_bos()
        return llama_chat_format.Jinja2ChatFormatter(
            template=template, eos_token=self._token_text(eos), bos_token=self._token_text(bos),
            stop_token_ids=[eos],
        )

    def _token_text(self, token: int) -> str:
        if token < 0:
            return ""
        text: bytes = llama_cpp.llama_vocab_get_text(self._vocab, token)
        return text.decode("utf-8", "replace")

    def _tokenize(self, text: str, *, add_bos: bool) -> list[int]:
        # add_bos is llama.cpp's add_special: BOS only if the model wants one
        return self._llm.tokenize(text.encode("utf-8"), add_bos=add_bos, special=True)

    def _start(
        self,
        tokens: list[int],
        stops: list[str],
        params: GenerationParams,
        cancel: threading.Event | None,
        resume: Sequence[int] = (),
    ) -> Iterator[GenerationChunk]:
        if len(tokens) >= self.n_ctx:
            raise _bad_request(f"prompt is {len(tokens)} tokens but the context of "
                               f"{self.manifest.name} holds {self.n_ctx} (prompt plus answer)")
        if params.max_tokens > self.n_ctx:
            raise _bad_request(f"max_tokens {params.max_tokens} exceeds the context of "
                               f"{self.manifest.name} ({self.n_ctx} tokens)")
        resume = tuple(resume)
        if len(resume) >= params.max_tokens or len(tokens) + len(resume) >= self.n_ctx:
            raise _bad_request(f"cannot resume after {len(resume)} tokens: max_tokens is "
                               f"{params.max_tokens}, the context holds {self.n_ctx}")
        if any(not _is_int(t) or not 0 <= t < self._llm.n_vocab() for t in resume):
            raise _bad_request(f"resume tokens must be ids of {self.manifest.name}'s "
                               f"vocabulary (0 to {self._llm.n_vocab() - 1})")
        grammar = None
        if params.json_schema is not None:
            grammar = schema_grammar(params.json_schema)
            self._check_grammar(grammar)
        if params.grammar is not None:  # a forced tool call
            grammar = params.grammar
            self._check_grammar(grammar)
        return self._stream(tokens, [s for s in stops if s], params, grammar,
                            cancel or threading.Event(), resume)

    def _check_grammar(self, grammar: str) -> None:
        """Parse ``grammar`` with llama.cpp once before use: llama-cpp-python adds the
        grammar sampler to its chain without checking that llama.cpp built one, and a NULL
        sampler in the chain would crash the process."""
        sampler = llama_cpp.llama_sampler_init_grammar(
            self._vocab, grammar.encode("utf-8"), b"root")
        if not sampler:
            raise _bad_request("grammar does not parse as GBNF with a root rule "
                               "(llama.cpp refused it)")
        llama_cpp.llama_sampler_free(sampler)

    def _stream(
        self,
        tokens: list[int],
        stops: list[str],
        params: GenerationParams,
        grammar: str | None,
        cancel: threading.Event,
        resume: tuple[int, ...] = (),
    ) -> Iterator[GenerationChunk]:
        with self._lock:
            budget = min(params.max_tokens, self.n_ctx - len(tokens))
            samples = self._sample(tokens, params, grammar, budget, cancel, resume)
            try:
                yield from self._decode(samples, stops, len(tokens), skip=len(resume))
            finally:
                samples.close()

    def _decode(
        self, samples: Iterator[Sample | None], stops: list[str], n_prompt: int, *,
        skip: int = 0,
    ) -> Iterator[GenerationChunk]:
        """Turn sampled tokens into text chunks, ending with the finishing chunk. The text
        of the first ``skip`` tokens (a resume's replayed ones, already delivered) is decoded
        but not yielded: what they held back (a possible stop sequence, half a character)
        goes out with the next token's, exactly as in the uninterrupted run."""
        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        pending, count = "", 0
        logprobs: list[TokenLogprob] = []  # of tokens whose text is not yet in a chunk
        ids: list[int] = []  # of tokens whose text is not yet in a chunk
        finish: FinishReason = "length"
        for sample in samples:
            if sample is None:
                finish = "cancelled"
                break
            token, entry = sample
            if llama_cpp.llama_vocab_is_eog(self._vocab, token):
                finish = "stop"
                break
            count += 1
            if entry is not None:
                logprobs.append(entry)
            ids.append(token)
            pending += decoder.decode(self._llm.detokenize([token]))
            safe, pending, stopped = split_at_stop(pending, stops)
            if count <= skip:  # replayed: its released text was delivered before
                if stopped:  # only if the replay diverged (see _sample)
                    yield GenerationChunk("", "stop", n_prompt, count, (), tuple(ids))
                    return
                if safe:
                    ids.clear()
                continue
            if stopped:
                yield GenerationChunk(safe, "stop", n_prompt, count, tuple(logprobs), tuple(ids))
                return
            if safe:
                yield GenerationChunk(safe, None, n_prompt, count, tuple(logprobs), tuple(ids))
                logprobs.clear()
                ids.clear()
        tail = pending + decoder.decode(b"", final=True)
        yield GenerationChunk(tail, finish, n_prompt, count, tuple(logprobs), tuple(ids))

    def _sample(
        self,
        tokens: list[int],
        params: GenerationParams,
        grammar_text: str | None,
        budget: int,
        cancel: threading.Event,
        resume: tuple[int, ...] = (),
    ) -> Generator[Sample | None, None, None]:
        """Yield up to ``budget`` sampled tokens (with their logprobs when asked for), or
        None once ``cancel`` is set. A token is evaluated only when the next one is asked
        for, so stopping early leaves no work.

        ``resume`` (the token ids another node generated for this request before it died)
        is replayed, not evaluated as one batch after the prompt: the generation runs again
        from the prompt with the same seed and sampler chain, one token at a time, and
        yields the replayed tokens like any other (``_decode`` does not stream their text
        again). Every computation is then the one the first node made (the prompt as one
        batch, then one token per step; a batch's matrix products may round differently and
        flip a greedy choice), and the sampler chain's state (its random generator, its
        repeat-penalty history, a JSON grammar's position) is the uninterrupted run's, so
        greedy and seeded output continue exactly. Cost: one decode step per replayed
        token. Should the model pick another token than a replayed one (another build or
        CPU rounding differently), the replayed ids win: the generation restarts from the
        prompt plus all of them as one batch and samples on (the text already streamed
        stays right; the sampler's history then lacks the replayed tokens)."""
        generation = self._generation(tokens, params, grammar_text)
        produced = 0
        try:
            while produced < budget:
                if cancel.is_set():
                    yield None
                    return
                token = next(generation)
                if produced < len(resume) and token != resume[produced]:
                    log.warning("%s: the resumed generation diverged from the replayed tokens "
                                "at token %d of %d; going on after the replayed ones",
                                self.manifest.name, produced, len(resume))
                    generation.close()
                    generation = self._generation(tokens + list(resume), params, grammar_text)
                    for forced in resume[produced:]:
                        yield forced, None
                    produced = len(resume)
                    continue
                # the logits that chose `token` are still the context's last ones: the
                # token itself is evaluated when the next one is asked for
                entry = self._logprob(token, params.top_logprobs) if params.logprobs else None
                produced += 1
                yield token, entry
        finally:
            generation.close()

    def _generation(self, tokens: list[int], params: GenerationParams,
                    grammar_text: str | None) -> Generator[int, Any, None]:
        """llama-cpp-python's token generator over ``tokens``, from a fresh context and a
        freshly seeded sampler chain."""
        reset: Callable[[], None] = self._llm.reset  # untyped upstream
        reset()  # evaluate the whole prompt each time: the same logits, the same tokens
        self._llm.set_seed(llama_cpp.LLAMA_DEFAULT_SEED if params.seed is None else params.seed)
        grammar = (None if grammar_text is None
                   else LlamaGrammar.from_string(grammar_text, verbose=False))
        generation: Generator[int, Any, None] = self._llm.generate(
            tokens, temp=params.temperature, top_p=params.top_p, grammar=grammar,
            **SAMPLER_DEFAULTS,
        )
        return generation

    def _logprob(self, token: int, top: int) -> TokenLogprob:
        """``token``'s log-probability under the model's own distribution (the raw logits'
        log-softmax, before sampling settings or a grammar reshape them, as llama-cpp-python
        and OpenAI report it) and the ``top`` likeliest tokens, likeliest first."""
        pointer = llama_cpp.llama_get_logits_ith(self._llm.ctx, -1)
        logits = np.ctypeslib.as_array(pointer, shape=(self._llm.n_vocab(),))
        shifted = logits.astype(np.float64) - float(logits.max())
        logprobs = shifted - np.log(np.exp(shifted).sum())
        best = np.argpartition(-logprobs, top)[:top] if top else np.empty(0, dtype=np.intp)
        best = best[np.argsort(-logprobs[best], kind="stable")]
        return TokenLogprob(
            piece=self._piece(token), logprob=min(0.0, float(logprobs[token])),
            top=tuple((self._piece(int(i)), min(0.0, float(logprobs[i]))) for i in best))

    def _piece(self, token: int) -> bytes:
        """A token's text as UTF-8 bytes (a special token's is empty), at most
        ``MAX_TOKEN_BYTES`` (what a reply may carry)."""
        piece: bytes = self._llm.detokenize([token])
        return piece[:MAX_TOKEN_BYTES]


def _as_list(stop: str | list[str] | None) -> list[str]:
    if stop is None:
        return []
    return [stop] if isinstance(stop, str) else list(stop)
