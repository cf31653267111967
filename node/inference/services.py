"""The models this node runs itself, served off the trio event loop.

- :class:`EmbedService` wraps one ``OnnxEmbedder``. Requests that arrive while the model is
  busy wait in a queue; the worker takes the oldest and merges every waiting request with the
  same ``input_type``/``dimensions`` into one model call (up to ``max_merge`` texts), then
  hands each caller its own rows. ONNX Runtime runs in a worker thread.
- :class:`GenerateService` wraps one ``GgufGenerator``: one generation at a time (a llama.cpp
  context is single-threaded), tokens streamed back through :func:`run_streaming`.
- :class:`LocalModels` loads them from the registry and says what to advertise.

Each service runs its blocking calls under its own ``trio.CapacityLimiter`` (``limiter``), not
trio's shared default one, so a flood of one model's jobs cannot starve another resource of
worker threads (shard stores have theirs in ``node/index/replicas.py``).
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import os
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import trio

from calinode.node.config import STREAM_INTERVAL
from calinode.node.inference.thread_stream import run_streaming
from calinode.node.metrics import NodeMetrics
from calinode.protocol.errors import ErrorCode, JobError

if TYPE_CHECKING:
    from trio_typing import TaskStatus

    from calinode.models.embedder import EmbedResult, OnnxEmbedder
    from calinode.models.generator import GenerationChunk, GenerationParams, GgufGenerator
    from calinode.models.manifest import ModelManifest
    from calinode.models.registry import ModelRegistry
    from calinode.protocol.job_replies import TokenLogprob

log = logging.getLogger(__name__)


@dataclass
class _Pending:
    texts: list[str]
    input_type: str
    dimensions: int | None
    done: trio.Event = field(default_factory=trio.Event)
    result: EmbedResult | None = None
    error: BaseException | None = None


#: Weight of the newest model call in an embed service's measured rate (texts/s).
RATE_WEIGHT = 0.3
#: Model calls of fewer texts say more about fixed costs than about speed: not measured.
RATE_MIN_TEXTS = 16
#: A generation of fewer new tokens says little about the model's speed (prompt-bound).
RATE_MIN_TOKENS = 16


def blended_rate(old: float | None, measured: float) -> float:
    """A service's measured rate after one more call: an exponential average (the newest
    call weighs ``RATE_WEIGHT``), or ``measured`` for the first."""
    return measured if old is None else RATE_WEIGHT * measured + (1 - RATE_WEIGHT) * old


class EmbedService:
    def __init__(self, embedder: OnnxEmbedder, *, max_merge: int = 256,
                 metrics: NodeMetrics | None = None,
                 test_only_slowdown: float = 1.0) -> None:
        self.embedder = embedder
        self.metrics = metrics if metrics is not None else NodeMetrics()
        self.manifest: ModelManifest = embedder.manifest
        self.max_merge = max_merge
        self._queue: list[_Pending] = []
        self._wake = trio.Event()
        self._running = 0
        self.calls = 0  # model calls made (merging makes this smaller than requests)
        self.requests = 0
        #: This model's own worker thread (ONNX Runtime already uses every core): a flood of
        #: work for another resource never delays it, and it never delays theirs.
        self.limiter = trio.CapacityLimiter(1)
        #: texts/s of this model on this node (an average over recent calls of at least
        #: RATE_MIN_TEXTS texts; None until one ran): advertised in the record so that a
        #: coordinator sizes this node's share of a large embed (``node/jobs/work_queue.py``)
        self.rate: float | None = None
        #: TEST ONLY (``--test-only-embed-slowdown``): every model call takes this many times
        #: as long (the worker thread sleeps the difference), to test a slow peer
        self.test_only_slowdown = max(1.0, test_only_slowdown)

    @property
    def busy(self) -> bool:
        return self._running > 0 or bool(self._queue)

    @property
    def queue_depth(self) -> int:
        """Requests waiting for the model (merged into the next call or a later one)."""
        return len(self._queue)

    @property
    def in_flight(self) -> int:
        """Model calls running now (0 or 1)."""
        return self._running

    async def embed(self, texts: list[str], *, input_type: str = "passage",
                    dimensions: int | None = None) -> EmbedResult:
        pending = _Pending(list(texts), input_type, dimensions)
        self._queue.append(pending)
        self.requests += 1
        self._wake.set()
        try:
            await pending.done.wait()
        except BaseException:
            if pending in self._queue:
                self._queue.remove(pending)
            raise
        if pending.error is not None:
            raise pending.error
        assert pending.result is not None
        return pending.result

    def _take_group(self) -> list[_Pending]:
        first = self._queue.pop(0)
        group, size = [first], len(first.texts)
        for other in list(self._queue):
            same = (other.input_type, other.dimensions) == (first.input_type, first.dimensions)
            if same and size + len(other.texts) <= self.max_merge:
                self._queue.remove(other)
                group.append(other)
                size += len(other.texts)
        return group

    async def run(self, *, task_status: TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        while True:
            if not self._queue:
                self._wake = trio.Event()
                await self._wake.wait()
                continue
            group = self._take_group()
            texts = [t for p in group for t in p.texts]
            self._running += 1
            self.calls += 1
            try:
                call = functools.partial(self.embedder.embed, texts,
                                         input_type=group[0].input_type,  # type: ignore[arg-type]
                                         dimensions=group[0].dimensions)
                merged, seconds = await trio.to_thread.run_sync(
                    self._timed, call, limiter=self.limiter)
            except Exception as exc:
                for p in group:
                    p.error = exc if len(group) == 1 else JobError(
                        str(getattr(exc, "message", exc)),
                        code=getattr(exc, "code", ErrorCode.INTERNAL))
                    p.done.set()
                continue
            finally:
                self._running -= 1
            self._split(group, merged)
            self._measured(len(texts), seconds)
            self.metrics.texts_embedded(self.manifest.name, len(texts))

    def _timed(self, call: Callable[[], EmbedResult]) -> tuple[EmbedResult, float]:
        """Run one model call (in the worker thread) and time it; under the test-only
        slowdown, sleep until it took that many times as long."""
        started = time.perf_counter()
        result = call()
        seconds = time.perf_counter() - started
        if self.test_only_slowdown > 1.0:
            time.sleep(seconds * (self.test_only_slowdown - 1.0))
            seconds *= self.test_only_slowdown
        return result, seconds

    def _measured(self, texts: int, seconds: float) -> None:
        if texts < RATE_MIN_TEXTS or seconds <= 0:
            return
        self.rate = blended_rate(self.rate, texts / seconds)

    @staticmethod
    def _split(group: list[_Pending], merged: EmbedResult) -> None:
        from calinode.models.embedder import EmbedResult

        start = 0
        for p in group:
            stop = start + len(p.texts)
            p.result = EmbedResult(
                vectors=np.ascontiguousarray(merged.vectors[start:stop]),
                token_counts=merged.token_counts[start:stop],
                truncated=[i - start for i in merged.truncated if start <= i < stop])
            p.done.set()
            start = stop


class GenerateService:
    """One generation model: streams run one at a time, their text handed out in groups of at
    most ``stream_interval`` seconds (0: each piece as soon as the consumer is free)."""

    def __init__(self, generator: GgufGenerator, *,
                 stream_interval: float = STREAM_INTERVAL,
                 metrics: NodeMetrics | None = None,
                 test_token_delay: float = 0.0) -> None:
        self.generator = generator
        #: TEST ONLY (``--test-token-delay``): seconds the worker thread sleeps after each
        #: streamed chunk, so a test can kill this node in the middle of a generation
        self.test_token_delay = test_token_delay
        self.metrics = metrics if metrics is not None else NodeMetrics()
        self.stream_interval = stream_interval
        self.manifest: ModelManifest = generator.manifest
        self._lock = trio.Lock()
        self._waiting = 0
        #: This model's own worker thread (one generation at a time anyway, see ``_lock``).
        self.limiter = trio.CapacityLimiter(1)
        #: measured tokens/s of whole generations (prompt included, waiting for the lock not),
        #: an exponential average over those of at least ``RATE_MIN_TOKENS`` new tokens; None
        #: until one ran: advertised so that a relay sends a slow peer fewer generations
        self.rate: float | None = None

    @property
    def busy(self) -> bool:
        return self._lock.locked()

    @property
    def queue_depth(self) -> int:
        return self._waiting

    @property
    def in_flight(self) -> int:
        """Generations running now (0 or 1)."""
        return int(self._lock.locked())

    async def generate(
        self,
        *,
        params: GenerationParams,
        messages: list[dict[str, str]] | None,
        prompt: str | None,
        on_text: Callable[[str], Awaitable[None]],
        resume: tuple[int, ...] = (),
        on_tokens: Callable[[str, tuple[int, ...]], Awaitable[None]] | None = None,
    ) -> GenerationChunk:
        """Stream text pieces to ``on_text``; return the final chunk (finish reason, usage,
        and with ``params.logprobs`` the logprobs of every token of the stream).

        Resume (issue 14): ``resume`` are token ids another node generated for this request;
        they are replayed and only what follows is streamed. ``on_tokens``, when given,
        replaces ``on_text`` and also gets the ids of the tokens each piece covers (what a
        relay needs to resume elsewhere). The final chunk's ``completion_tokens`` count the
        replayed tokens too (the whole generation's); this node's metrics count only the
        ones it added."""
        final: list[GenerationChunk] = []
        logprobs: list[TokenLogprob] = []

        async def on_chunks(chunks: list[GenerationChunk]) -> None:
            text = "".join(chunk.text for chunk in chunks)  # several when the CPU is busy
            for chunk in chunks:
                logprobs.extend(chunk.logprobs)
            if text:
                if on_tokens is not None:
                    await on_tokens(text, tuple(t for chunk in chunks for t in chunk.tokens))
                else:
                    await on_text(text)
            final.extend(chunk for chunk in chunks if chunk.finish_reason is not None)

        def make_iter(cancel: Any) -> Any:
            extra = {"resume": resume} if resume else {}  # a plain request: as before
            if messages is not None:
                chunks = self.generator.stream_chat(messages, params, cancel, **extra)
            else:
                assert prompt is not None
                chunks = self.generator.stream_completion(prompt, params, cancel, **extra)
            return _slowed(chunks, self.test_token_delay) if self.test_token_delay else chunks

        self._waiting += 1
        waiting = True
        try:
            async with self._lock:
                self._waiting -= 1
                waiting = False
                started = time.perf_counter()
                await run_streaming(make_iter, on_chunks, min_interval=self.stream_interval,
                                    limiter=self.limiter)
                seconds = time.perf_counter() - started
        finally:
            if waiting:
                self._waiting -= 1
        if not final:
            raise JobError("generation ended without a finish reason", code=ErrorCode.INTERNAL)
        added = final[-1].completion_tokens - len(resume)
        self.metrics.tokens_generated(self.manifest.name, prompt=final[-1].prompt_tokens,
                                      completion=added)
        if added >= RATE_MIN_TOKENS and seconds > 0:
            self.rate = blended_rate(self.rate, added / seconds)
        return dataclasses.replace(final[-1], logprobs=tuple(logprobs))


def _slowed(chunks: Iterator[GenerationChunk], delay: float) -> Iterator[GenerationChunk]:
    """TEST ONLY: ``chunks`` with a pause after each (runs in the worker thread). Closing it
    closes ``chunks`` (which releases the model)."""
    try:
        for chunk in chunks:
            yield chunk
            time.sleep(delay)
    finally:
        close = getattr(chunks, "close", None)
        if close is not None:
            close()


class LocalModels:
    """Loaded models by name, and what the capability record says about them."""

    def __init__(self, metrics: NodeMetrics | None = None) -> None:
        #: the node's metrics: texts embedded and tokens generated per model
        self.metrics = metrics if metrics is not None else NodeMetrics()
        self.embed: dict[str, EmbedService] = {}
        self.generate: dict[str, GenerateService] = {}

    def advertised(self) -> dict[str, list[dict[str, Any]]]:
        return {
            "embed": [_with_rate(s.manifest.advertised(), s.rate) for s in self.embed.values()],
            "generate": [_with_rate(s.manifest.advertised(), s.rate)
                         for s in self.generate.values()],
        }

    def embedder(self, name: str) -> EmbedService:
        try:
            return self.embed[name]
        except KeyError:
            raise JobError(f"embedding model {name!r} is not loaded on this node",
                           code=ErrorCode.UNKNOWN_MODEL) from None

    def generator(self, name: str) -> GenerateService:
        try:
            return self.generate[name]
        except KeyError:
            raise JobError(f"generation model {name!r} is not loaded on this node",
                           code=ErrorCode.UNKNOWN_MODEL) from None

    async def load(self, registry: ModelRegistry, names: list[str], *,
                   nursery: trio.Nursery, threads: int | None = None,
                   stream_interval: float = STREAM_INTERVAL,
                   test_token_delay: float = 0.0,
                   test_only_embed_slowdown: float = 1.0) -> None:
        """Load each named model (blocking loads run in a worker thread)."""
        from calinode.models.embedder import OnnxEmbedder
        from calinode.models.generator import GgufGenerator

        threads = threads or max(1, (os.cpu_count() or 2))
        for name in names:
            manifest = await trio.to_thread.run_sync(registry.get, name)
            if manifest.kind == "embed":
                embedder = await trio.to_thread.run_sync(functools.partial(
                    OnnxEmbedder, manifest, registry.folder(name), threads=threads))
                service = EmbedService(embedder, metrics=self.metrics,
                                       test_only_slowdown=test_only_embed_slowdown)
                await nursery.start(service.run)
                self.embed[name] = service
            else:
                generator = await trio.to_thread.run_sync(functools.partial(
                    GgufGenerator, manifest, registry.path_of(manifest), threads=threads))
                self.generate[name] = GenerateService(generator, stream_interval=stream_interval,
                                                      metrics=self.metrics,
                                                      test_token_delay=test_token_delay)
            log.info("loaded %s model %s (sha256 %s)", manifest.kind, name, manifest.sha256[:12])


def _with_rate(advertised: dict[str, Any], rate: float | None) -> dict[str, Any]:
    """A model's advertised map plus its measured rate (rounded: records are signed and
    re-sent every heartbeat, and a rate's noise is far above 0.1 texts/s)."""
    if rate is None or rate <= 0:
        return advertised
    return {**advertised, "rate": round(min(rate, 1e6), 1) or 0.1}
