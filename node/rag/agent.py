"""The agent over the swarm (``calinode ask --agent``, ``POST /v1/ask`` with ``"agent":
true``): a small, bounded tool loop in which the model decides what to retrieve.

At each step the model sees the question, the tools and the observations so far, and replies
with JSON its grammar allows (``protocol/agent_actions.py``): a ``search`` of the collection,
a ``fetch`` of one document it was shown, or the ``answer`` with its sources. The loop runs
the tool and shows the result as the next observation (``agent_steps.py``, pure), until the
model answers or a bound is hit:

- ``steps``: at most ``max_steps`` tool steps (default 4, at most 8);
- ``tokens``: generated tokens of the whole run (default 1024, at most 4096); a tool step runs
  only while twice one generation's share is left, so the answer always has its share;
- ``deadline``: tool steps stop when :data:`ANSWER_TIME_SHARE` of the request's time is left;
- ``repeats``: the model asked for a call it made before :data:`MAX_REPEATS` times (it is
  going round; a repeated call is never run again).

Then one last generation, constrained to an answer, speaks from what the loop has, and the
reply names the bound that was hit (``bound``). A repeated call is not run again; a bad
argument, a failed tool or a reply that is no action is an ``error: ...`` observation. The
answer keeps only sources an observation showed. The model and the tools are ports
(:class:`AgentModel`, :class:`AgentTools`): the coordinator gives the swarm's (generate on the
best peer, the collection's search and ``shard.fetch``), a test gives fakes.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol

import trio

from calinode.node.rag.agent_steps import (
    ANSWER_TIME_SHARE,
    MAX_REPEATS,
    NO_ANSWER,
    AgentBounds,
    AgentState,
    Document,
    Hit,
    Step,
    call_args,
    error_step,
    fetch_step,
    repeated_step,
    salvage_answer,
    salvage_sources,
    search_step,
    used_sources,
)
from calinode.protocol.agent_actions import (
    ActionError,
    FetchCall,
    FinalAnswer,
    SearchCall,
    action_schema,
    parse_action,
)
from calinode.protocol.errors import JobError

__all__ = ["AgentModel", "AgentTools", "Generation", "OnStep", "run_agent"]

#: Receives each step (its wire form) as it is done: the API streams them.
OnStep = Callable[[dict[str, Any]], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class Generation:
    """One constrained generation: the text and what it cost."""

    text: str
    completion_tokens: int
    prompt_tokens: int = 0
    served_by: str = ""


class AgentModel(Protocol):
    """The generate model: a reply to ``messages`` that ``schema`` (JSON schema text)
    constrains, of at most ``max_tokens`` tokens, by ``deadline`` (trio time)."""

    async def generate(self, messages: list[dict[str, str]], *, schema: str, max_tokens: int,
                       deadline: float) -> Generation: ...


class AgentTools(Protocol):
    """The swarm's tools, on the request's collection."""

    async def search(self, query: str, *, deadline: float) -> list[Hit]: ...

    async def fetch(self, doc_id: str, *, deadline: float) -> Document | None: ...


async def run_agent(collection: str, question: str, model: AgentModel, tools: AgentTools,
                    bounds: AgentBounds, *, deadline: float,
                    on_step: OnStep | None = None) -> dict[str, Any]:
    """Run the loop by ``deadline``; the answer, its sources, every step and the bound hit
    (None when the model answered by itself)."""
    state = AgentState(collection, question)
    started = trio.current_time()
    tools_until = deadline - max(0.0, deadline - started) * ANSWER_TIME_SHARE
    served: list[str] = []
    answer: FinalAnswer | None = None
    bound: str | None = None
    with trio.move_on_at(tools_until) as scope:
        while True:
            if len(state.steps) >= bounds.max_steps:
                bound = "steps"
                break
            if bounds.max_tokens - state.tokens < 2 * bounds.step_tokens:
                bound = "tokens"
                break
            if sum(s.repeated for s in state.steps) >= MAX_REPEATS:
                bound = "repeats"
                break
            schema = action_schema(list(state.seen), may_answer=bool(state.steps))
            reply = await _generate(model, state, served, state.messages(), schema,
                                    bounds.step_tokens, tools_until)
            step, answer = await _act(state, tools, reply, tools_until)
            if answer is not None:
                break
            assert step is not None
            if on_step is not None:
                await on_step(step.to_wire())
    if scope.cancelled_caught:
        bound = "deadline"
    if answer is None:
        answer = await _last_word(model, state, served, bounds, deadline)
    return {"collection": collection, "question": question, "answer": answer.answer,
            "sources": used_sources(answer, state), "steps": [s.to_wire() for s in state.steps],
            "bound": bound, "max_steps": bounds.max_steps, "max_tokens": bounds.max_tokens,
            "usage": {"completion_tokens": state.tokens, "prompt_tokens": state.prompt_tokens},
            "served_by": served[-1] if served else ""}


async def _generate(model: AgentModel, state: AgentState, served: list[str],
                    messages: list[dict[str, str]], schema: str, max_tokens: int,
                    deadline: float) -> str:
    generation = await model.generate(messages, schema=schema, max_tokens=max_tokens,
                                      deadline=deadline)
    state.tokens += max(0, generation.completion_tokens)
    state.prompt_tokens += max(0, generation.prompt_tokens)
    if generation.served_by:
        served.append(generation.served_by)
    return generation.text


async def _act(state: AgentState, tools: AgentTools, reply: str, deadline: float
               ) -> tuple[Step | None, FinalAnswer | None]:
    """The model's reply done: an answer ends the loop; a tool call runs (unless it was made
    before) and its observation is the step; anything else is an error observation."""
    n = len(state.steps) + 1
    try:
        action = parse_action(reply)
    except ActionError as exc:
        step = error_step(n, _tool_named(reply), {}, str(exc))
        state.add(step, reply, None)
        return step, None
    if isinstance(action, FinalAnswer):
        return None, action
    before = state.repeat_of(action)
    if before is not None:
        step = repeated_step(n, action, before)
    else:
        step = await _run_tool(n, action, state, tools, deadline)
    state.add(step, reply, action)
    return step, None


async def _run_tool(n: int, action: SearchCall | FetchCall, state: AgentState,
                    tools: AgentTools, deadline: float) -> Step:
    try:
        if isinstance(action, SearchCall):
            hits = await tools.search(action.query, deadline=deadline)
            return search_step(n, action, hits, state)
        document = await tools.fetch(action.doc_id, deadline=deadline)
        return fetch_step(n, action, document, state)
    except JobError as exc:
        return error_step(n, action.key[0], call_args(action),
                          f"{action.key[0]} failed ({exc.code.value}): {exc.message[:200]}")


async def _last_word(model: AgentModel, state: AgentState, served: list[str],
                     bounds: AgentBounds, deadline: float) -> FinalAnswer:
    """The answer from what the loop has, when a bound stopped it: one generation constrained
    to an answer (a reply cut short by its tokens keeps the answer as far as it got)."""
    schema = action_schema(list(state.seen), may_search=False)
    tokens = max(1, min(bounds.step_tokens, bounds.max_tokens - state.tokens))
    reply = await _generate(model, state, served, state.messages(final=True), schema, tokens,
                            deadline)
    try:
        action = parse_action(reply, final=True)
    except ActionError:
        return FinalAnswer(answer=salvage_answer(reply) or NO_ANSWER,
                           sources=salvage_sources(reply))
    assert isinstance(action, FinalAnswer)
    return action


def _tool_named(reply: str) -> str:
    """The tool a reply that is no valid action meant, for its step ("invalid" if none)."""
    try:
        data = json.loads(reply)
    except (ValueError, RecursionError):
        return "invalid"
    tool = data.get("tool") if isinstance(data, dict) else None
    return tool if tool in ("search", "fetch") else "invalid"
