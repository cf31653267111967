"""One deadline through search, ask and chat with a collection, in virtual time (issue 10).

The coordinator, the dispatcher and the chat endpoint are the real ones; the node around them
is a fake (:class:`FakeNode`) whose job client (:class:`FakeJobClient`) stands for the swarm:
each job kind is answered at once, answered after a delay, or stalls like a peer that accepted
the job and never answers (the real ``JobClient`` then gives up at the timeout the job was
sent with, raising ``DEADLINE_EXCEEDED``; the fake does the same). Every test runs under
``MockClock(autojump_threshold=0)``: a 2 s budget passes in no wall time, and "within budget"
is asserted on trio's virtual clock, never on wall time.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pytest
import trio
import trio.testing

from asgi_client import FakeClient
from calinode.models.store.digest import chunk_faiss_id
from calinode.node.api.inference_routes import chat_endpoint
from calinode.node.index.placement import shard_of
from calinode.node.jobs.client import JobResult
from calinode.node.jobs.dispatch import Dispatcher
from calinode.node.metrics import NodeMetrics
from calinode.node.rag.coordinator import Coordinator
from calinode.protocol.capabilities import Capabilities, ModelOffer
from calinode.protocol.collections import CollectionDef
from calinode.protocol.errors import ErrorCode, JobError
from calinode.protocol.shard_params import ShardFetchParams
from calinode.protocol.shard_replies import ShardHits, ShardSearchReply
from calinode.protocol.vectors import decode_vectors, encode_vectors

BUDGET = 2.0
MARGIN = 0.05  # virtual seconds: bookkeeping after the deadline, never a real wait
DIM = 4
SHARDS = 4
EMBED_SHA = "0" * 64
GEN_SHA = "1" * 64
EMBEDDER = "peer-embedder"
INDEXER = "peer-indexer"

Behaviour = Callable[[dict[str, Any], Callable[[dict[str, Any]], Awaitable[None]]],
                     Awaitable[dict[str, Any]]]


def definition() -> CollectionDef:
    return CollectionDef(name="papers", model="fake", model_sha256=EMBED_SHA, dim=DIM,
                         pooling="mean", normalize=True, query_prefix="", passage_prefix="",
                         shards=SHARDS, replicas=1)


# -- peers' behaviours ---------------------------------------------------------------------


async def stall(params: dict[str, Any], emit: Callable[[dict[str, Any]], Awaitable[None]]
                ) -> dict[str, Any]:
    await trio.sleep_forever()
    raise AssertionError("unreachable")


async def embed_reply(params: dict[str, Any], emit: Callable[[dict[str, Any]], Awaitable[None]]
                      ) -> dict[str, Any]:
    texts = params["texts"]
    vectors = np.ones((len(texts), DIM), dtype=np.float32)
    return {"model": "fake", "sha256": EMBED_SHA, "dim": DIM, "vectors": encode_vectors(vectors),
            "token_counts": [1] * len(texts), "truncated": []}


def doc_ids_of(shard: int, count: int) -> list[str]:
    """``count`` document ids that live in ``shard`` (a fetched chunk must be of its shard)."""
    found, n = [], 0
    while len(found) < count:
        if shard_of(f"doc-{n}", SHARDS) == shard:
            found.append(f"doc-{n}")
        n += 1
    return found


def search_reply(hits_per_shard: int, *, delay: float = 0.0) -> Behaviour:
    async def answer(params: dict[str, Any], emit: Callable[[dict[str, Any]], Awaitable[None]]
                     ) -> dict[str, Any]:
        await trio.sleep(delay)
        queries = len(decode_vectors(params["vectors"]))
        results = {}
        for shard in params["shards"]:
            ids = [chunk_faiss_id(doc, 0) for doc in doc_ids_of(shard, hits_per_shard)]
            scores = [1.0 - n / 10 for n in range(hits_per_shard)]
            results[shard] = ShardHits.from_rows([(ids, scores)] * queries)
        return ShardSearchReply(results=results).to_wire()
    return answer


async def fetch_reply(params: dict[str, Any], emit: Callable[[dict[str, Any]], Awaitable[None]]
                      ) -> dict[str, Any]:
    ask = ShardFetchParams.from_wire(params)
    docs = {chunk_faiss_id(doc, 0): doc for doc in doc_ids_of(ask.shard, 10)}
    chunks = [[fid, docs[fid], 0, *([f"text of {docs[fid]}", {"title": docs[fid]}]
                                    if ask.text else [])]
              for fid in ask.ids.tolist()]
    return {"chunks": chunks, "done": len(ask.ids)}


def generate_reply(tokens: int, *, every: float = 0.0) -> Behaviour:
    async def answer(params: dict[str, Any], emit: Callable[[dict[str, Any]], Awaitable[None]]
                     ) -> dict[str, Any]:
        for _ in range(tokens):
            await trio.sleep(every)
            if params.get("stream"):
                await emit({"text": "tok "})
        return {"model": "gen", "sha256": GEN_SHA, "text": "tok " * tokens,
                "finish_reason": "stop",
                "usage": {"prompt_tokens": 3, "completion_tokens": tokens}}
    return answer


# -- the fake node ---------------------------------------------------------------------------


@dataclass
class SentJob:
    kind: str
    peer: str
    sent_at: float
    timeout: float  # what the job's deadline_ms would carry


@dataclass
class FakeJobClient:
    """``JobClient`` to fake peers: ``behaviours[kind]`` answers a job of that kind."""

    behaviours: dict[str, Behaviour]
    sent: list[SentJob] = field(default_factory=list)

    async def call_parsed(self, peer_id: str, kind: str, params: dict[str, Any],
                          parse: Callable[[dict[str, Any]], Any], *, timeout: float,
                          on_chunk: Callable[[dict[str, Any]], Awaitable[None]] | None = None
                          ) -> tuple[Any, JobResult]:
        self.sent.append(SentJob(kind, peer_id, trio.current_time(), timeout))

        async def ignore(_: dict[str, Any]) -> None:
            return None

        with trio.move_on_after(timeout):  # as JobClient.call: fail_at(now + timeout)
            wire = await self.behaviours[kind](params, on_chunk or ignore)
            return parse(wire), JobResult(wire, peer_id, 0.0)
        raise JobError(f"{kind} on {peer_id} did not answer within {timeout:.1f} s",
                       code=ErrorCode.DEADLINE_EXCEEDED)


@dataclass
class FakeLoad:
    in_flight: int = 0
    queue_depth: int = 0


@dataclass
class FakeRecord:
    load: FakeLoad = field(default_factory=FakeLoad)


@dataclass
class FakePeerEntry:
    peer_id: str
    caps: Capabilities
    record: FakeRecord = field(default_factory=FakeRecord)
    rtt_ms: float | None = 1.0
    record_at: float = 0.0


@dataclass
class FakePeerTable:
    entries: list[FakePeerEntry]

    def alive(self) -> list[FakePeerEntry]:
        return list(self.entries)

    def get(self, peer_id: str) -> FakePeerEntry | None:
        return next((e for e in self.entries if e.peer_id == peer_id), None)


class FakeAccess:
    def may_send_data(self, peer_id: str, collection: object = None) -> bool:
        return True


@dataclass
class FakeBook:
    definitions: dict[str, CollectionDef]

    def get(self, name: str) -> CollectionDef:
        return self.definitions[name]


@dataclass
class FakeModels:
    embed: dict[str, Any] = field(default_factory=dict)
    generate: dict[str, Any] = field(default_factory=dict)


@dataclass
class FakeConfig:
    index: bool = False
    gen_models: tuple[str, ...] = ()
    embed_models: tuple[str, ...] = ()
    generate_stall_timeout: float = 15.0  # the dispatcher's resume watch (issue 14)


@dataclass
class FakeServer:
    in_flight: int = 0


class FakeNode:
    """What the coordinator and the dispatcher read of a node: two peers, one embedding and
    generating, one holding every shard of ``papers``."""

    def __init__(self, behaviours: dict[str, Behaviour]) -> None:
        self.peer_id = "self"
        self.client = FakeJobClient(behaviours)
        self.book = FakeBook({"papers": definition()})
        self.models = FakeModels()
        self.config = FakeConfig()
        self.server = FakeServer()
        self.access = FakeAccess()
        self.index = None
        self.metrics = NodeMetrics()
        models = Capabilities(
            embed=(ModelOffer(name="fake", kind="embed", sha256=EMBED_SHA, dim=DIM,
                              pooling="mean"),),
            generate=(ModelOffer(name="gen", kind="generate", sha256=GEN_SHA,
                                 context_length=2048),))
        shards = Capabilities(index=True,
                              shards={"papers": {s: "d" * 64 for s in range(SHARDS)}})
        self.table = FakePeerTable([FakePeerEntry(EMBEDDER, models),
                                    FakePeerEntry(INDEXER, shards)])
        self.coordinator = Coordinator(self)  # type: ignore[arg-type]

    @property
    def dispatcher(self) -> Dispatcher:
        return Dispatcher(self)  # type: ignore[arg-type]


def fake_node(**behaviours: Behaviour) -> FakeNode:
    table: dict[str, Behaviour] = {"embed": embed_reply, "shard.search": search_reply(2),
                                   "shard.fetch": fetch_reply,
                                   "generate": generate_reply(5)}
    table.update({kind.replace("_", "."): b for kind, b in behaviours.items()})
    return FakeNode(table)


def assert_jobs_kept_to(node: FakeNode, deadline: float) -> None:
    """Every job went out with no more than what was left of the one budget."""
    assert node.client.sent
    for job in node.client.sent:
        assert job.sent_at + job.timeout <= deadline + 1e-9, job


# -- search ----------------------------------------------------------------------------------


async def test_search_against_a_stalled_index_peer_answers_partial_by_its_deadline(
        autojump_clock: trio.testing.MockClock) -> None:
    node = fake_node(shard_search=stall)
    start = trio.current_time()
    deadline = start + BUDGET
    (found,) = await node.coordinator.search("papers", ["q"], k=3, deadline=deadline)
    assert trio.current_time() <= deadline + MARGIN
    assert found["partial"] and found["missing_shards"] == list(range(SHARDS))
    assert found["hits"] == []
    assert_jobs_kept_to(node, deadline)


async def test_search_against_a_stalled_embedder_is_deadline_exceeded_by_its_deadline(
        autojump_clock: trio.testing.MockClock) -> None:
    node = fake_node(embed=stall)
    deadline = trio.current_time() + BUDGET
    with pytest.raises(JobError) as caught:
        await node.coordinator.search("papers", ["q"], k=3, deadline=deadline)
    assert caught.value.code is ErrorCode.DEADLINE_EXCEEDED
    assert trio.current_time() <= deadline + MARGIN
    assert [job.kind for job in node.client.sent] == ["embed"]
    assert_jobs_kept_to(node, deadline)


async def test_the_shard_search_gets_what_the_embedding_left(
        autojump_clock: trio.testing.MockClock) -> None:
    async def slow_embed(params: dict[str, Any], emit: Any) -> dict[str, Any]:
        await trio.sleep(1.5)
        return await embed_reply(params, emit)

    node = fake_node(embed=slow_embed, shard_search=stall)
    deadline = trio.current_time() + BUDGET
    (found,) = await node.coordinator.search("papers", ["q"], k=3, deadline=deadline)
    assert found["partial"]
    assert trio.current_time() <= deadline + MARGIN  # not 1.5 s + a fresh 2 s
    searches = [job for job in node.client.sent if job.kind == "shard.search"]
    assert searches and all(job.timeout <= 0.5 + 1e-9 for job in searches)


# -- ask -------------------------------------------------------------------------------------


async def test_ask_against_a_stalled_index_peer_is_deadline_exceeded_without_generating(
        autojump_clock: trio.testing.MockClock) -> None:
    node = fake_node(shard_search=stall)
    deadline = trio.current_time() + BUDGET
    with pytest.raises(JobError) as caught:
        await node.coordinator.ask("papers", "why?", deadline=deadline)
    assert caught.value.code is ErrorCode.DEADLINE_EXCEEDED
    assert trio.current_time() <= deadline + MARGIN
    assert "generate" not in [job.kind for job in node.client.sent]


async def test_ask_whose_generation_stalls_ends_by_the_one_deadline(
        autojump_clock: trio.testing.MockClock) -> None:
    node = fake_node(shard_search=search_reply(2, delay=0.5), generate=stall)
    start = trio.current_time()
    deadline = start + BUDGET
    with pytest.raises(JobError) as caught:
        await node.coordinator.ask("papers", "why?", deadline=deadline)
    assert caught.value.code is ErrorCode.DEADLINE_EXCEEDED
    assert trio.current_time() <= deadline + MARGIN
    generations = [job for job in node.client.sent if job.kind == "generate"]
    # generation got what retrieval left (about 1.5 s), not ask's own timeout or 30 s
    assert generations and generations[0].sent_at >= start + 0.5
    assert_jobs_kept_to(node, deadline)


async def test_ask_answers_within_its_budget_when_peers_answer(
        autojump_clock: trio.testing.MockClock) -> None:
    node = fake_node(shard_search=search_reply(2, delay=0.3), generate=generate_reply(5))
    deadline = trio.current_time() + BUDGET
    result = await node.coordinator.ask("papers", "why?", k=3, deadline=deadline)
    assert result["answer"] == "tok " * 5 and not result["no_sources"]
    assert len(result["sources"]) == 3 and not result["partial"]
    assert trio.current_time() <= deadline
    assert_jobs_kept_to(node, deadline)


async def test_ask_with_no_hits_says_so_and_does_not_generate(
        autojump_clock: trio.testing.MockClock) -> None:
    node = fake_node(shard_search=search_reply(0))
    pieces: list[str] = []

    async def on_text(text: str) -> None:
        pieces.append(text)

    result = await node.coordinator.ask("papers", "why?", on_text=on_text,
                                        deadline=trio.current_time() + BUDGET)
    assert result["no_sources"] is True and result["sources"] == []
    assert "nothing relevant" in result["answer"] and "'papers'" in result["answer"]
    assert pieces == [result["answer"]]  # a streamed ask shows the same sentence
    assert "generate" not in [job.kind for job in node.client.sent]


# -- chat with a collection (the HTTP endpoint, over a fake ASGI connection) ------------------


def chat_body(**extra: Any) -> dict[str, Any]:
    return {"collection": "papers", "messages": [{"role": "user", "content": "why?"}],
            "timeout": BUDGET, **extra}


async def test_chat_with_a_collection_and_a_stalled_index_is_a_504_by_its_deadline(
        autojump_clock: trio.testing.MockClock) -> None:
    node = fake_node(shard_search=stall)
    client = FakeClient(chat_body())
    start = trio.current_time()
    await client.run(chat_endpoint(node), "/v1/chat/completions")  # type: ignore[arg-type]
    assert trio.current_time() <= start + BUDGET + MARGIN
    assert client.status() == 504
    assert json.loads(client.text())["error"]["code"] == "DEADLINE_EXCEEDED"
    assert "generate" not in [job.kind for job in node.client.sent]


async def test_streamed_chat_whose_generation_stalls_ends_with_deadline_exceeded(
        autojump_clock: trio.testing.MockClock) -> None:
    node = fake_node(shard_search=search_reply(2, delay=0.5), generate=stall)
    client = FakeClient(chat_body(stream=True))
    start = trio.current_time()
    await client.run(chat_endpoint(node), "/v1/chat/completions")  # type: ignore[arg-type]
    assert trio.current_time() <= start + BUDGET + MARGIN
    events = [line.removeprefix("data: ") for line in client.text().split("\n\n") if line]
    assert events[-1] == "[DONE]"
    assert json.loads(events[-2])["error"]["code"] == "DEADLINE_EXCEEDED"
    generations = [job for job in node.client.sent if job.kind == "generate"]
    assert generations and generations[0].sent_at + generations[0].timeout <= start + BUDGET


async def test_chat_with_a_collection_answers_within_budget_through_rag_messages(
        autojump_clock: trio.testing.MockClock) -> None:
    node = fake_node(shard_search=search_reply(1, delay=0.2))
    client = FakeClient(chat_body(k=2))
    start = trio.current_time()
    await client.run(chat_endpoint(node), "/v1/chat/completions")  # type: ignore[arg-type]
    assert client.status() == 200 and trio.current_time() <= start + BUDGET
    reply = json.loads(client.text())
    assert reply["choices"][0]["message"]["content"] == "tok " * 5
    # one hit a shard, all scored 1.0: the two best are the smallest document ids
    firsts = sorted(doc_ids_of(shard, 1)[0] for shard in range(SHARDS))
    assert [s["doc_id"] for s in reply["sources"]] == firsts[:2]
    assert reply["no_sources"] is False


async def test_chat_with_a_collection_that_has_nothing_relevant_says_so(
        autojump_clock: trio.testing.MockClock) -> None:
    node = fake_node(shard_search=search_reply(0))
    client = FakeClient(chat_body())
    await client.run(chat_endpoint(node), "/v1/chat/completions")  # type: ignore[arg-type]
    reply = json.loads(client.text())
    assert reply["no_sources"] is True and reply["sources"] == []
    assert "nothing relevant" in reply["choices"][0]["message"]["content"]
    assert "generate" not in [job.kind for job in node.client.sent]


async def test_a_streamed_chat_stops_generating_when_its_client_disconnects(
        autojump_clock: trio.testing.MockClock) -> None:
    produced: list[int] = []
    generating = trio.Event()

    async def slow_tokens(params: dict[str, Any], emit: Callable[[dict[str, Any]],
                                                                 Awaitable[None]]
                          ) -> dict[str, Any]:
        for n in range(100):
            await trio.sleep(0.1)
            produced.append(n)
            generating.set()
            await emit({"text": f"t{n} "})
        raise AssertionError("the generation should have been cancelled")

    node = fake_node(generate=slow_tokens)
    client = FakeClient(chat_body(stream=True, timeout=60))
    async with trio.open_nursery() as nursery:
        nursery.start_soon(client.run, chat_endpoint(node),  # type: ignore[arg-type]
                           "/v1/chat/completions")
        await generating.wait()  # retrieval done, the first token out
        await trio.sleep(1.0)
        client.disconnect.set()
    assert 5 <= len(produced) <= 15  # stopped at the disconnect, far short of 100 tokens
