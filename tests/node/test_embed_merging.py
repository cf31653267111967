"""EmbedService merges requests that arrive together (with a fake embedder: no model)."""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import trio

from calinode.models.embedder import EmbedResult
from calinode.models.manifest import ModelFile, ModelManifest
from calinode.node.inference.services import EmbedService
from calinode.protocol.errors import ErrorCode, JobError

MANIFEST = ModelManifest(name="fake", kind="embed", dim=4, pooling="mean",
                         files=(ModelFile(path="model.onnx", sha256="0" * 64, size=0),))


@dataclass
class FakeEmbedder:
    """Embeds a text as [len(text), input_type flag, 0, 0]; records every call's batch."""

    manifest: ModelManifest = MANIFEST
    calls: list[list[str]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def embed(self, texts: Sequence[str], *, input_type: str = "passage",
              dimensions: int | None = None) -> EmbedResult:
        if "boom" in texts:
            raise JobError("texts[0] is bad", code=ErrorCode.BAD_REQUEST)
        with self.lock:
            self.calls.append(list(texts))
        time.sleep(0.05)  # the model is busy: later requests queue up meanwhile
        flag = 1.0 if input_type == "query" else 0.0
        vectors = np.array([[len(t), flag, 0, 0] for t in texts], dtype=np.float32)
        return EmbedResult(vectors=vectors, token_counts=[len(t) for t in texts],
                           truncated=[i for i, t in enumerate(texts) if len(t) > 10])


async def test_concurrent_requests_are_merged_and_split_back() -> None:
    fake = FakeEmbedder()
    service = EmbedService(fake, max_merge=100)  # type: ignore[arg-type]
    results: dict[int, EmbedResult] = {}
    async with trio.open_nursery() as nursery:
        await nursery.start(service.run)

        async def ask(i: int) -> None:
            results[i] = await service.embed(["x" * (i + 1), "y" * 20], input_type="passage")

        for i in range(10):
            nursery.start_soon(ask, i)
        await trio.sleep(0.5)
        nursery.cancel_scope.cancel()
    assert len(results) == 10 and service.requests == 10
    assert service.calls < 10  # merged: fewer model calls than requests
    for i, result in results.items():
        assert result.vectors[:, 0].tolist() == [i + 1, 20]  # each caller gets its own rows
        assert result.truncated == [1]


async def test_different_settings_are_not_merged_and_errors_stay_with_their_caller() -> None:
    fake = FakeEmbedder()
    service = EmbedService(fake, max_merge=100)  # type: ignore[arg-type]
    outcome: dict[str, object] = {}
    async with trio.open_nursery() as nursery:
        await nursery.start(service.run)

        async def ask(name: str, texts: list[str], input_type: str) -> None:
            try:
                outcome[name] = await service.embed(texts, input_type=input_type)
            except JobError as exc:
                outcome[name] = exc

        nursery.start_soon(ask, "first", ["a"], "passage")
        await trio.sleep(0.01)  # the first call is running; the rest queue up together
        nursery.start_soon(ask, "query", ["b"], "query")
        nursery.start_soon(ask, "passage", ["c"], "passage")
        await trio.sleep(0.5)
        nursery.cancel_scope.cancel()
    assert not any(set(call) == {"b", "c"} for call in fake.calls)
    query = outcome["query"]
    assert isinstance(query, EmbedResult) and query.vectors[0, 1] == 1.0
    fake_bad = FakeEmbedder()
    bad_service = EmbedService(fake_bad)  # type: ignore[arg-type]
    async with trio.open_nursery() as nursery:
        await nursery.start(bad_service.run)
        try:
            await bad_service.embed(["boom"])
        except JobError as exc:
            assert exc.code == ErrorCode.BAD_REQUEST
        else:
            raise AssertionError("expected BAD_REQUEST")
        assert (await bad_service.embed(["fine"])).vectors.shape == (1, 4)
        nursery.cancel_scope.cancel()
