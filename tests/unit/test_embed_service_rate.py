"""EmbedService measures its texts/s (advertised in the record) and honours the test-only
slowdown, with a fake embedder (no model: it answers zeros after a fixed compute time)."""

from __future__ import annotations

import time
from types import SimpleNamespace
from typing import Any

import numpy as np
import trio

from calinode.models.embedder import EmbedResult
from calinode.node.inference.services import EmbedService, LocalModels


class FakeEmbedder:
    """A fake OnnxEmbedder: each call takes ``seconds`` of wall time in its worker thread."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.manifest = SimpleNamespace(
            name="m", advertised=lambda: {"name": "m", "kind": "embed", "sha256": "a" * 64})

    def embed(self, texts: list[str], **_: Any) -> EmbedResult:
        time.sleep(self.seconds)
        return EmbedResult(vectors=np.zeros((len(texts), 4), dtype=np.float32),
                           token_counts=[1] * len(texts), truncated=[])


def measured(slowdown: float) -> tuple[float | None, float]:
    service = EmbedService(FakeEmbedder(0.05), test_only_slowdown=slowdown)  # type: ignore[arg-type]
    took: list[float] = []

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            await nursery.start(service.run)
            await service.embed(["x"] * 5)  # too few texts to say anything: not measured
            assert service.rate is None
            started = time.perf_counter()
            await service.embed(["x"] * 64)
            took.append(time.perf_counter() - started)
            nursery.cancel_scope.cancel()

    trio.run(main)
    return service.rate, took[0]


def test_rate_is_measured_and_the_slowdown_slows_each_call() -> None:
    plain, _ = measured(1.0)
    slowed, slowed_took = measured(5.0)
    # lower bounds the sleeps guarantee (a call sleeps 0.05 s; slowed, 4 times that more)
    assert plain is not None and plain <= 64 / 0.05
    assert slowed is not None and slowed <= 64 / 0.25 and slowed_took >= 0.25


def test_the_measured_rate_is_advertised() -> None:
    models = LocalModels()
    service = EmbedService(FakeEmbedder(0.0))  # type: ignore[arg-type]
    models.embed["m"] = service
    assert "rate" not in models.advertised()["embed"][0]
    service.rate = 123.456
    assert models.advertised()["embed"][0]["rate"] == 123.5
