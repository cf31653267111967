"""The agent's tool loop (node/rag/agent.py) with a scripted fake model and fake tools: search
then answer, repeated calls not re-run, the step, token and deadline bounds, invented sources
dropped, bad arguments as observations; and the action view and schema
(protocol/agent_actions.py) it relies on."""

from __future__ import annotations

import json
from typing import Any

import pytest
import trio
import trio.testing

from calinode.models.json_grammar import schema_grammar
from calinode.node.rag.agent import Generation, run_agent
from calinode.node.rag.agent_steps import (
    NO_ANSWER,
    AgentBounds,
    Document,
    Hit,
    fit_observations,
    salvage_answer,
    salvage_sources,
)
from calinode.node.rag.agent_swarm import join_chunks
from calinode.protocol.agent_actions import (
    MAX_QUERY_CHARS,
    ActionError,
    FetchCall,
    FinalAnswer,
    SearchCall,
    action_schema,
    parse_action,
)
from calinode.protocol.errors import BadRequest, ErrorCode, JobError

CORPUS = {
    "d1": Document("d1", "Slipstream", "A propeller slipstream raises the lift of a wing."),
    "d2": Document("d2", "Boundary layers", "Laminar boundary layers at high speed."),
    "d3": Document("d3", "Heat", "Heat transfer in hypersonic flow."),
}


def search_reply(query: str) -> str:
    return json.dumps({"tool": "search", "query": query})


def answer_reply(text: str, *sources: str) -> str:
    return json.dumps({"answer": text, "sources": list(sources)})


class FakeModel:
    """A fake generate model: replies from a script, one per call; records what it was
    asked (messages, schema, max_tokens); ``slow_at``: calls that sleep ``delay`` first."""

    def __init__(self, *replies: str, tokens: int = 20, slow_at: frozenset[int] = frozenset(),
                 delay: float = 0.0) -> None:
        self.replies = list(replies)
        self.tokens, self.slow_at, self.delay = tokens, slow_at, delay
        self.calls: list[dict[str, Any]] = []

    async def generate(self, messages: list[dict[str, str]], *, schema: str, max_tokens: int,
                       deadline: float) -> Generation:
        self.calls.append({"messages": messages, "schema": schema, "max_tokens": max_tokens})
        text = self.replies.pop(0) if self.replies else answer_reply("out of script")
        if len(self.calls) - 1 in self.slow_at:
            await trio.sleep(self.delay)
        return Generation(text=text, completion_tokens=self.tokens, prompt_tokens=50,
                          served_by="peer-a")


class FakeTools:
    """Fake swarm tools over ``CORPUS``: a search returns the documents whose text shares a
    word with the query; every call is recorded."""

    def __init__(self, *, fail_search: bool = False) -> None:
        self.searches: list[str] = []
        self.fetches: list[str] = []
        self.fail_search = fail_search

    async def search(self, query: str, *, deadline: float) -> list[Hit]:
        self.searches.append(query)
        if self.fail_search:
            raise JobError("no replica", code=ErrorCode.SHARD_UNAVAILABLE)
        words = set(query.lower().split())
        return [Hit(d.doc_id, d.title, d.text) for d in CORPUS.values()
                if words & set(d.text.lower().rstrip(".").split())]

    async def fetch(self, doc_id: str, *, deadline: float) -> Document | None:
        self.fetches.append(doc_id)
        return CORPUS.get(doc_id)


async def run(model: FakeModel, tools: FakeTools, bounds: AgentBounds | None = None,
              timeout: float = 100.0, **kwargs: Any) -> dict[str, Any]:
    return await run_agent("papers", "What raises the lift of a wing?", model, tools,
                           bounds or AgentBounds(), deadline=trio.current_time() + timeout,
                           **kwargs)


async def test_search_then_answer_cites_what_it_saw() -> None:
    model = FakeModel(search_reply("lift wing"), answer_reply("The slipstream does.", "d1"))
    tools = FakeTools()
    streamed: list[dict[str, Any]] = []

    async def on_step(step: dict[str, Any]) -> None:
        streamed.append(step)

    result = await run(model, tools, on_step=on_step)
    assert tools.searches == ["lift wing"]
    assert result["answer"] == "The slipstream does."
    assert result["sources"] == [{"n": 1, "doc_id": "d1", "title": "Slipstream"}]
    assert result["steps"] == streamed == [
        {"step": 1, "tool": "search", "args": {"query": "lift wing"}, "hits": 1}]
    assert result["bound"] is None
    assert result["usage"] == {"completion_tokens": 40, "prompt_tokens": 100}
    # the first step may only search (nothing seen, nothing to answer from); the second may
    # fetch or cite only the id the search showed
    first, second = (json.loads(c["schema"]) for c in model.calls)
    assert first["properties"]["tool"] == {"const": "search"}
    kinds = [alt["properties"].get("tool", {}).get("const", "answer")
             for alt in second["anyOf"]]
    assert kinds == ["search", "fetch", "answer"]
    assert second["anyOf"][1]["properties"]["doc_id"] == {"enum": ["d1"]}
    # the model saw the observation of its search, with the id and the snippet
    seen = model.calls[1]["messages"]
    assert seen[-2] == {"role": "assistant", "content": search_reply("lift wing")}
    assert seen[-1]["content"].startswith("Observation: [d1] Slipstream: A propeller")


async def test_fetch_shows_the_document_and_counts_as_a_source() -> None:
    model = FakeModel(search_reply("laminar"), json.dumps({"tool": "fetch", "doc_id": "d2"}),
                      answer_reply("Laminar layers.", "d2"))
    tools = FakeTools()
    result = await run(model, tools)
    assert tools.fetches == ["d2"]
    assert result["steps"][1] == {"step": 2, "tool": "fetch", "args": {"doc_id": "d2"},
                                  "chars": len(CORPUS["d2"].text)}
    assert [s["doc_id"] for s in result["sources"]] == ["d2"]


async def test_a_repeated_call_is_not_run_again() -> None:
    model = FakeModel(search_reply("lift wing"), search_reply("  Lift   WING "),
                      json.dumps({"tool": "fetch", "doc_id": "d1"}),
                      json.dumps({"tool": "fetch", "doc_id": "d1"}),
                      answer_reply("The slipstream.", "d1"))
    tools = FakeTools()
    result = await run(model, tools, AgentBounds(max_steps=5))
    assert tools.searches == ["lift wing"] and tools.fetches == ["d1"]
    assert [(s["step"], s["tool"], s.get("repeated", False)) for s in result["steps"]] == [
        (1, "search", False), (2, "search", True), (3, "fetch", False), (4, "fetch", True)]
    assert "made at step 1" in model.calls[2]["messages"][-1]["content"]
    # the second repeat ends the tool steps: the model is going round; it answers from
    # what it has, asked for an answer only
    assert result["answer"] == "The slipstream." and result["bound"] == "repeats"
    assert set(json.loads(model.calls[-1]["schema"])["properties"]) == {"answer", "sources"}
    # asked for the answer, the model sees the steps that found something, not the errors
    last = [m["content"] for m in model.calls[-1]["messages"]]
    assert sum(c.startswith("Observation: [d1]") for c in last) == 2
    assert not any("error" in c for c in last)


async def test_the_step_bound_ends_with_a_constrained_answer() -> None:
    model = FakeModel(search_reply("lift"), search_reply("wing"),
                      answer_reply("From what I have: the slipstream.", "d1", "d3"))
    tools = FakeTools()
    result = await run(model, tools, AgentBounds(max_steps=2))
    assert tools.searches == ["lift", "wing"] and len(model.calls) == 3
    assert result["bound"] == "steps" and len(result["steps"]) == 2
    assert result["answer"] == "From what I have: the slipstream."
    last = model.calls[-1]
    schema = json.loads(last["schema"])  # only an answer, citing only what was seen
    assert set(schema["properties"]) == {"answer", "sources"}
    assert schema["properties"]["sources"]["items"] == {"enum": ["d1"]}
    assert "final answer" in last["messages"][-1]["content"]
    assert [s["doc_id"] for s in result["sources"]] == ["d1"]  # d3 was never shown


async def test_the_token_bound_keeps_the_answer_its_share() -> None:
    bounds = AgentBounds.of(max_steps=8, max_tokens=400)  # 100 tokens a generation
    model = FakeModel(*(search_reply(q) for q in ("lift", "wing", "heat")),
                      answer_reply("Slipstream.", "d1"), tokens=100)
    result = await run(model, FakeTools(), bounds)
    assert result["bound"] == "tokens"
    assert len(result["steps"]) == 3  # 300 used: 100 left is less than two generations
    assert all(c["max_tokens"] == 100 for c in model.calls)
    assert result["usage"]["completion_tokens"] == 400 <= bounds.max_tokens
    assert result["answer"] == "Slipstream."


async def test_a_last_reply_that_is_no_answer_says_so() -> None:
    model = FakeModel(search_reply("lift"), search_reply("wing"))  # ignores its grammar
    result = await run(model, FakeTools(), AgentBounds(max_steps=1))
    assert result["bound"] == "steps" and result["sources"] == []
    assert result["answer"] == NO_ANSWER


async def test_an_answer_cut_off_by_its_tokens_keeps_its_sources() -> None:
    model = FakeModel(search_reply("lift wing"),
                      '{"sources": ["d1", "d7"], "answer": "The slipstream raises')
    result = await run(model, FakeTools(), AgentBounds(max_steps=1))
    assert result["answer"] == "The slipstream raises"
    assert [s["doc_id"] for s in result["sources"]] == ["d1"]


async def test_invented_sources_are_dropped() -> None:
    model = FakeModel(search_reply("lift wing"),
                      answer_reply("Slipstream.", "d1", "d999", "d3"))
    result = await run(model, FakeTools())
    assert [s["doc_id"] for s in result["sources"]] == ["d1"]


async def test_no_cited_source_falls_back_to_the_fetched_documents() -> None:
    model = FakeModel(search_reply("lift"), json.dumps({"tool": "fetch", "doc_id": "d1"}),
                      answer_reply("Slipstream.", "made-up"))
    result = await run(model, FakeTools())
    assert [s["doc_id"] for s in result["sources"]] == ["d1"]


async def test_bad_arguments_and_failed_tools_become_error_observations() -> None:
    model = FakeModel(
        json.dumps({"tool": "search", "query": "x" * (MAX_QUERY_CHARS + 1)}),
        json.dumps({"tool": "fetch", "doc_id": "a\x00b"}),
        json.dumps({"tool": "search", "query": "lift", "collection": "secrets"}),
        json.dumps({"tool": "delete", "doc_id": "d1"}),
        "not json at all",
        json.dumps({"tool": "fetch", "doc_id": "nowhere"}),
        answer_reply("I could not find it."))
    tools = FakeTools()
    result = await run(model, tools, AgentBounds(max_steps=8))
    steps = result["steps"]
    assert [s["tool"] for s in steps] == ["search", "fetch", "search", "invalid", "invalid",
                                          "fetch"]
    assert all("error" in s for s in steps)
    assert "longer than" in steps[0]["error"] and "control" in steps[1]["error"]
    assert "collection" in steps[2]["error"]  # the collection is the request's, not the model's
    assert "no document 'nowhere'" in steps[5]["error"]
    assert tools.searches == [] and tools.fetches == ["nowhere"]
    assert model.calls[1]["messages"][-1]["content"].startswith("Observation: error: ")
    assert result["answer"] == "I could not find it." and result["sources"] == []

    failing = FakeTools(fail_search=True)
    result = await run(FakeModel(search_reply("lift"), answer_reply("Nothing.")), failing)
    assert result["steps"][0]["error"].startswith("search failed (SHARD_UNAVAILABLE)")


async def test_the_deadline_stops_the_tools_and_still_answers(
        autojump_clock: trio.testing.MockClock) -> None:
    # the second step's generation is slower than the tools' share of the time: it is
    # cancelled, and the answer is generated in the time kept for it
    model = FakeModel(search_reply("lift"), search_reply("never"),
                      answer_reply("Slipstream, from the first search.", "d1"),
                      slow_at=frozenset({1}), delay=1000.0)
    tools = FakeTools()
    started = trio.current_time()
    result = await run(model, tools, timeout=100.0)
    assert result["bound"] == "deadline"
    assert tools.searches == ["lift"] and len(result["steps"]) == 1
    assert result["answer"] == "Slipstream, from the first search."
    assert trio.current_time() - started < 100.0


def test_bounds_are_capped() -> None:
    assert AgentBounds.of() == AgentBounds(max_steps=4, max_tokens=1024, step_tokens=256)
    for steps, tokens in ((0, None), (9, None), (None, 10), (None, 5000)):
        with pytest.raises(BadRequest):
            AgentBounds.of(steps, tokens)


def test_parse_action_views() -> None:
    assert parse_action(search_reply(" wing   lift ")) == SearchCall("wing lift")
    assert parse_action('{"tool": "fetch", "doc_id": "12"}') == FetchCall("12")
    assert parse_action(answer_reply(" ok ", "1", "1", "2")) == FinalAnswer("ok", ("1", "2"))
    for bad in ('{"tool": "search"}', '{"tool": "fetch", "doc_id": 7}', "[]", '{"answer": ""}',
                '{"answer": "x", "sources": "1"}', "{" * 5000):
        with pytest.raises(ActionError):
            parse_action(bad)
    with pytest.raises(ActionError):
        parse_action(search_reply("lift"), final=True)


def test_every_schema_the_loop_builds_becomes_a_grammar() -> None:
    for seen in ([], ["1", "2", "30"], ['with "quote"']):
        for may_search, may_answer in ((True, False), (True, True), (False, True)):
            schema = action_schema(seen, may_search=may_search, may_answer=may_answer)
            assert schema_grammar(schema)
    unsafe = json.loads(action_schema(['with "quote"'], may_search=False))
    assert unsafe["properties"]["sources"]["items"]["type"] == "string"  # no enum then


def test_observations_fit_the_context_newest_first() -> None:
    old, new = "a" * 5000, "b" * 4000
    fitted = fit_observations([old, "c" * 50, new], budget=6000)
    assert fitted[2] == new and fitted[1] == "c" * 50
    assert len(fitted[0]) == 1950 and fitted[0].endswith("...")
    squeezed = fit_observations(["x" * 1000] * 3 + ["y" * 7000], budget=6000)
    assert [len(t) for t in squeezed] == [120, 120, 120, 6000]
    assert sum(map(len, fit_observations(["z" * 1500] * 8))) <= 6000 + 120 * 8


def test_salvage_and_join_chunks() -> None:
    assert salvage_answer('{"answer": "The lift rises because') == "The lift rises because"
    assert salvage_answer('{"answer": "a \\"b\\" c", "sour') == 'a "b" c'
    assert salvage_answer("plain words") == "plain words"
    assert salvage_answer(search_reply("lift")) == ""  # JSON, but no answer in it
    assert salvage_sources('{"sources": ["1", 2, "30"], "answer": "The li') == ("1", "30")
    assert salvage_sources('{"sources": ["1", "3') == ()
    a = "one two three four five six seven eight nine ten"
    b = "six seven eight nine ten eleven twelve"
    assert join_chunks([a, b]) == a + " eleven twelve"
    assert join_chunks(["x" * 50, "y" * 50], limit=60) == "x" * 50 + " " + "y" * 9
