"""Dispatcher.embed over the work queue and generate spread by load, with fake peers.

``FakeSwarmNode`` is a fake of what the Dispatcher reads of a node (``DispatchNode``): a peer
table of fake embedding/generation peers and a fake ``JobClient`` whose peers answer after
``texts / speed`` seconds of a trio MockClock (autojump: no real waiting). Each fake peer's
vectors are a function of the text, so a reply in the wrong place is caught.
"""

from __future__ import annotations

import zlib
from collections import Counter
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
import trio
import trio.testing

from calinode.node.jobs.client import JobResult
from calinode.node.jobs.dispatch import Dispatcher
from calinode.protocol.capabilities import Capabilities, ModelOffer
from calinode.protocol.errors import ErrorCode, JobError
from calinode.protocol.vectors import encode_vectors

SHA, GEN_SHA = "a" * 64, "b" * 64
DIM = 8


def fake_vector(text: str) -> np.ndarray:
    return np.random.default_rng(zlib.crc32(text.encode())).random(DIM, dtype=np.float32)


@dataclass
class FakeClient:
    """A fake JobClient: fake peer ``p`` embeds at ``speeds[p]`` texts/s (one batch at a
    time), generates for ``gen_seconds``; a peer in ``dead`` fails with PEER_UNREACHABLE."""

    speeds: dict[str, float]
    dead: set[str] = field(default_factory=set)
    gen_seconds: float = 5.0
    calls: list[tuple[str, str]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.locks = {peer: trio.Lock() for peer in self.speeds}

    async def call_parsed(self, peer: str, kind: str, params: dict[str, Any], parse: Any,
                          *, timeout: float, on_chunk: Any = None) -> tuple[Any, JobResult]:
        self.calls.append((peer, kind))
        if kind == "generate":
            await trio.sleep(self.gen_seconds)
            wire = {"model": "gen", "sha256": GEN_SHA, "text": "ok", "finish_reason": "stop",
                    "usage": {"prompt_tokens": 1, "completion_tokens": 1}}
            return parse(wire), JobResult(wire, peer, 1.0)
        texts = params["texts"]
        async with self.locks[peer]:
            await trio.sleep(len(texts) / self.speeds[peer] / 2)
            if peer in self.dead:
                raise JobError(f"{peer} went away", code=ErrorCode.PEER_UNREACHABLE)
            await trio.sleep(len(texts) / self.speeds[peer] / 2)
        vectors = np.stack([fake_vector(t) for t in texts])
        wire = {"model": "m", "sha256": SHA, "dim": DIM, "vectors": encode_vectors(vectors),
                "token_counts": [1] * len(texts), "truncated": []}
        return parse(wire), JobResult(wire, peer, 1.0)


def fake_entry(peer: str, kind: str, rate: float | None = None) -> Any:
    offer = (ModelOffer(name="m", kind="embed", sha256=SHA, dim=DIM, pooling="mean", rate=rate)
             if kind == "embed" else
             ModelOffer(name="gen", kind="generate", sha256=GEN_SHA, context_length=2048))
    caps = Capabilities(embed=(offer,)) if kind == "embed" else Capabilities(generate=(offer,))
    return SimpleNamespace(peer_id=peer, caps=caps, rtt_ms=1.0, record_at=0.0,
                           record=SimpleNamespace(load=SimpleNamespace(in_flight=0,
                                                                       queue_depth=0)))


class FakeTable:
    def __init__(self, entries: list[Any]) -> None:
        self.entries = {e.peer_id: e for e in entries}

    def alive(self) -> list[Any]:
        return list(self.entries.values())

    def get(self, peer: str) -> Any:
        return self.entries.get(peer)


def fake_swarm_node(client: FakeClient, kind: str = "embed",
                    rates: dict[str, float] | None = None) -> Any:
    """A coordinator without models of its own, whose peers are ``client``'s fake peers."""
    rates = rates or {}
    return SimpleNamespace(
        peer_id="coordinator", client=client, config=SimpleNamespace(generate_stall_timeout=15.0),
        models=SimpleNamespace(embed={}, generate={}),
        table=FakeTable([fake_entry(p, kind, rates.get(p)) for p in client.speeds]),
        access=SimpleNamespace(may_send_data=lambda peer, collection: True),
        server=SimpleNamespace(in_flight=0),
        metrics=SimpleNamespace(job_retried=lambda kind: None))


def run(async_fn: Any) -> Any:
    out: list[Any] = []

    async def main() -> None:
        out.append(await async_fn())

    trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))
    return out[0]


TEXTS = [f"text number {i}" for i in range(4096)]


def check_in_order(vectors: np.ndarray) -> None:
    assert vectors.shape == (len(TEXTS), DIM)
    assert np.array_equal(vectors, np.stack([fake_vector(t) for t in TEXTS]))


def test_a_5x_slower_fake_peer_serves_a_small_share_in_order() -> None:
    client = FakeClient({"fast1": 250.0, "fast2": 250.0, "slow": 50.0})
    dispatcher = Dispatcher(fake_swarm_node(client))
    outcome = run(lambda: dispatcher.embed("m", TEXTS, timeout=600))
    check_in_order(outcome.vectors)
    shares = Counter(outcome.served_by)
    assert shares["slow"] <= 0.15 * len(outcome.served_by)
    assert shares["fast1"] >= 0.35 * len(outcome.served_by)
    assert shares["fast2"] >= 0.35 * len(outcome.served_by)


def test_a_fake_peer_dying_mid_request_leaves_the_rest_to_the_others() -> None:
    client = FakeClient({"a": 200.0, "b": 200.0}, dead={"b"})
    dispatcher = Dispatcher(fake_swarm_node(client))
    outcome = run(lambda: dispatcher.embed("m", TEXTS, timeout=600))
    check_in_order(outcome.vectors)
    assert set(outcome.served_by) == {"a"}
    assert ("b", "embed") in client.calls


def test_every_fake_peer_dead_fails_the_embed() -> None:
    client = FakeClient({"a": 200.0, "b": 200.0}, dead={"a", "b"})
    dispatcher = Dispatcher(fake_swarm_node(client))
    with pytest.raises(JobError) as caught:
        run(lambda: dispatcher.embed("m", TEXTS, timeout=600))
    assert caught.value.code == ErrorCode.PEER_UNREACHABLE


def test_the_deadline_bounds_a_slow_embed() -> None:
    client = FakeClient({"a": 10.0, "b": 10.0})  # 205 s of work, 30 s of budget
    dispatcher = Dispatcher(fake_swarm_node(client))
    with pytest.raises(JobError) as caught:
        run(lambda: dispatcher.embed("m", TEXTS, timeout=30))
    assert caught.value.code == ErrorCode.DEADLINE_EXCEEDED


def test_four_concurrent_generations_on_two_fake_peers_go_two_and_two() -> None:
    client = FakeClient({"g1": 1.0, "g2": 1.0})
    dispatcher = Dispatcher(fake_swarm_node(client, kind="generate"))

    async def four() -> list[str]:
        served: list[str] = []

        async def one() -> None:
            reply = await dispatcher.generate({"model": "gen", "prompt": "hi"}, timeout=60)
            served.append(reply["served_by"])

        async with trio.open_nursery() as nursery:
            for _ in range(4):
                nursery.start_soon(one)
        return served

    served = run(four)
    assert Counter(served) == {"g1": 2, "g2": 2}
