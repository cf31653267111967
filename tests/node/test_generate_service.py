"""GenerateService's stream interval, with a fake generator (no model needed)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import trio

from calinode.models.generator import GenerationChunk, GenerationParams
from calinode.node.inference.services import GenerateService

WORDS = ["Red", ",", " green", " and", " blue", "."]


class FakeGenerator:
    """Yields one chunk per word in its worker thread, like GgufGenerator.stream_chat. The
    first ``lockstep`` words after the first are each produced only once the word before has
    been handed out; the others follow as fast as the thread runs."""

    manifest: Any = SimpleNamespace(name="fake")  # the service counts tokens per model name

    def __init__(self, *, lockstep: int) -> None:
        self.lockstep = lockstep
        self.handed_out = threading.Semaphore(0)

    def stream_chat(self, messages: list[dict[str, str]], params: GenerationParams,
                    cancel: threading.Event) -> Iterator[GenerationChunk]:
        for count, word in enumerate(WORDS, start=1):
            if 1 < count <= 1 + self.lockstep:
                assert self.handed_out.acquire(timeout=10)
            yield GenerationChunk(word, None, 3, count)
        yield GenerationChunk("", "stop", 3, len(WORDS))


async def run(service: GenerateService, fake: FakeGenerator) -> tuple[list[str], str | None]:
    pieces: list[str] = []

    async def on_text(text: str) -> None:
        pieces.append(text)
        fake.handed_out.release()

    with trio.fail_after(20):
        final = await service.generate(params=GenerationParams(), prompt=None, on_text=on_text,
                                       messages=[{"role": "user", "content": "Colours?"}])
    return pieces, final.finish_reason


async def test_interval_zero_hands_out_every_token_on_its_own() -> None:
    fake = FakeGenerator(lockstep=len(WORDS))
    service = GenerateService(fake, stream_interval=0)  # type: ignore[arg-type]
    pieces, finish = await run(service, fake)
    assert pieces == WORDS and finish == "stop"


async def test_an_interval_groups_the_tokens_after_the_first() -> None:
    fake = FakeGenerator(lockstep=1)  # after the first word, far faster than the interval
    service = GenerateService(fake, stream_interval=30.0)  # type: ignore[arg-type]
    pieces, finish = await run(service, fake)
    # the first word at once; the rest in one group, sent when the stream ended (not 30 s on)
    assert pieces == [WORDS[0], "".join(WORDS[1:])] and finish == "stop"

