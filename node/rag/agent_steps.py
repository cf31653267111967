"""The agent's pure step logic: its bounds, what it has seen, what the model is shown, what a
tool call becomes as an observation, and which sources an answer may keep. No I/O: the loop
(``agent.py``) calls these around the model and the tools.

The model sees one conversation: a system message naming the tools and the JSON it must
reply with, the question, then for every step its own reply (the action) and the observation
as the next user message. An observation is short: a search shows the top hits (id, title,
a snippet), a fetch the start of one document (:data:`FETCH_CHARS`); a bad argument or a
failed tool is ``error: ...``; a call made before is not run again (its observation says so).
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from calinode.protocol.agent_actions import (
    MAX_SOURCES,
    FetchCall,
    FinalAnswer,
    SearchCall,
)
from calinode.protocol.errors import BadRequest

#: Steps (tool calls the model asks for) by default, and the most a request may ask.
DEFAULT_MAX_STEPS: Final = 4
MAX_STEPS: Final = 8
#: Generated tokens of the whole loop (every step and the answer), by default and at most.
DEFAULT_MAX_TOKENS: Final = 1024
MAX_TOKENS: Final = 4096
MIN_TOKENS: Final = 64
#: Tokens one generation may take (an action, or the answer).
STEP_TOKENS: Final = 256
#: Seconds the whole loop may take by default (the request's ``timeout`` overrides it).
DEFAULT_TIMEOUT: Final = 180.0
#: Part of the time kept for the answer: tool steps stop when less than this is left.
ANSWER_TIME_SHARE: Final = 0.3
#: Hits one search shows the model, and characters of each hit's snippet.
SEARCH_HITS: Final = 3
SNIPPET_CHARS: Final = 200
#: Characters of a fetched document the model sees.
FETCH_CHARS: Final = 1500
#: Characters of observations one prompt shows (~1500 tokens: a 2048-token context keeps
#: room for the rules, the replies and the answer), and what an old one keeps at least.
CONTEXT_CHARS: Final = 6000
MIN_OBSERVATION_CHARS: Final = 120
#: Document ids the agent remembers (the enum of the next step's schema).
MAX_SEEN: Final = 32

SYSTEM_PROMPT: Final = (
    "You answer a question from the document collection {collection!r} using two tools. "
    "Each turn, reply with one JSON object:\n"
    '- {{"tool": "search", "query": <words to look for>}} searches the collection and lists '
    "the best documents with their ids;\n"
    '- {{"tool": "fetch", "doc_id": <an id from a search>}} shows the text of that document;\n'
    '- {{"answer": <your answer, a full sentence>, "sources": [<ids of the documents you '
    "used>]}} ends the task.\n"
    "Search with different words if a search did not help. Answer only from what the tools "
    "showed.")
FINAL_PROMPT: Final = ("Now write your final answer as a full sentence, from the "
                       "observations above, with the ids of the documents you used as "
                       "sources.")
#: The answer when the last generation gave none (a peer that ignored the grammar).
NO_ANSWER: Final = "(no answer: the model did not give one within the agent's bounds)"
#: Repeated calls after which the loop stops asking for tools (the model is going round).
MAX_REPEATS: Final = 2


@dataclass(frozen=True, slots=True)
class AgentBounds:
    """How far one agent run may go (checked, so a request cannot raise them past the caps)."""

    max_steps: int = DEFAULT_MAX_STEPS
    max_tokens: int = DEFAULT_MAX_TOKENS
    step_tokens: int = STEP_TOKENS

    def __post_init__(self) -> None:
        if not 1 <= self.max_steps <= MAX_STEPS:
            raise BadRequest(f"max_steps must be 1..{MAX_STEPS}")
        if not MIN_TOKENS <= self.max_tokens <= MAX_TOKENS:
            raise BadRequest(f"max_tokens must be {MIN_TOKENS}..{MAX_TOKENS} for the agent")
        if not 16 <= self.step_tokens <= min(STEP_TOKENS, self.max_tokens // 2):
            raise BadRequest(f"step_tokens must be 16..{STEP_TOKENS}, at most half of "
                             "max_tokens")

    @classmethod
    def of(cls, max_steps: int | None = None, max_tokens: int | None = None) -> AgentBounds:
        """Bounds from a request (None: the default); one generation gets at most a quarter
        of ``max_tokens`` (``STEP_TOKENS`` at most), so a tool step always leaves the answer
        its share."""
        steps = DEFAULT_MAX_STEPS if max_steps is None else max_steps
        tokens = DEFAULT_MAX_TOKENS if max_tokens is None else max_tokens
        return cls(max_steps=steps, max_tokens=tokens,
                   step_tokens=min(STEP_TOKENS, max(16, tokens // 4)))


@dataclass(frozen=True, slots=True)
class Hit:
    """One search hit as the agent shows it."""

    doc_id: str
    title: str
    text: str


@dataclass(frozen=True, slots=True)
class Document:
    """A fetched document: its title and the start of its text."""

    doc_id: str
    title: str
    text: str


@dataclass(slots=True)
class Step:
    """One step: the action the model asked for and what came of it."""

    n: int
    tool: str  # "search", "fetch", or "invalid" (the reply was no action)
    args: dict[str, str]
    observation: str
    hits: int | None = None  # a search: hits shown
    chars: int | None = None  # a fetch: characters shown
    error: str | None = None
    repeated: bool = False

    def to_wire(self) -> dict[str, Any]:
        out: dict[str, Any] = {"step": self.n, "tool": self.tool, "args": self.args}
        for key in ("hits", "chars", "error"):
            if getattr(self, key) is not None:
                out[key] = getattr(self, key)
        if self.repeated:
            out["repeated"] = True
        return out


@dataclass
class AgentState:
    """What the loop knows so far: the conversation, the ids it showed, the calls it made."""

    collection: str
    question: str
    steps: list[Step] = field(default_factory=list)
    replies: list[str] = field(default_factory=list)  # the model's reply of each step
    seen: dict[str, str] = field(default_factory=dict)  # doc id -> title, first seen first
    fetched: list[str] = field(default_factory=list)
    calls: dict[tuple[str, str], int] = field(default_factory=dict)  # call -> its step
    tokens: int = 0
    prompt_tokens: int = 0

    def messages(self, *, final: bool = False) -> list[dict[str, str]]:
        """The conversation the model sees: the rules, the question, each step's reply and
        observation, and with ``final`` the request for the answer, after the steps that
        found something only (a small model copies the last observation it saw, and an
        error teaches nothing about the question)."""
        out = [{"role": "system", "content": SYSTEM_PROMPT.format(collection=self.collection)},
               {"role": "user", "content": f"Question: {self.question}"}]
        kept = [(step, reply) for step, reply in zip(self.steps, self.replies, strict=True)
                if not (final and step.error is not None)]
        shown = fit_observations([step.observation for step, _ in kept])
        for (_, reply), observation in zip(kept, shown, strict=True):
            out.append({"role": "assistant", "content": reply})
            out.append({"role": "user", "content": f"Observation: {observation}"})
        if final:
            out.append({"role": "user", "content": FINAL_PROMPT})
        return out

    def remember(self, doc_id: str, title: str) -> None:
        if doc_id not in self.seen and len(self.seen) < MAX_SEEN:
            self.seen[doc_id] = title

    def repeat_of(self, action: SearchCall | FetchCall) -> int | None:
        """The step that made this call before, if any (it is not run again)."""
        return self.calls.get(action.key)

    def add(self, step: Step, reply: str, action: SearchCall | FetchCall | None) -> None:
        self.steps.append(step)
        self.replies.append(reply)
        if action is not None and not step.repeated and step.error is None:
            self.calls[action.key] = step.n


def fit_observations(observations: list[str], budget: int = CONTEXT_CHARS) -> list[str]:
    """The observations within ``budget`` characters in all, so the conversation fits the
    model's context however many steps there were: the newest in full, older ones cut
    (each keeps at least :data:`MIN_OBSERVATION_CHARS`)."""
    out: list[str] = []
    left = budget
    for text in reversed(observations):
        keep = min(len(text), max(MIN_OBSERVATION_CHARS, left))
        out.append(text if keep >= len(text) else text[:keep - 3].rstrip() + "...")
        left = max(0, left - keep)
    return out[::-1]


def call_args(action: SearchCall | FetchCall) -> dict[str, str]:
    return ({"query": action.query} if isinstance(action, SearchCall)
            else {"doc_id": action.doc_id})


def search_step(n: int, action: SearchCall, hits: Sequence[Hit], state: AgentState) -> Step:
    """The observation of a search: its top hits, each ``[doc_id] title: snippet``."""
    shown = list(hits[:SEARCH_HITS])
    for hit in shown:
        state.remember(hit.doc_id, hit.title)
    if not shown:
        text = "no documents matched."
    else:
        text = " ".join(f"[{h.doc_id}] {h.title + ': ' if h.title else ''}"
                        f"{_snippet(h.text, SNIPPET_CHARS)}" for h in shown)
    return Step(n, "search", call_args(action), text, hits=len(shown))


def fetch_step(n: int, action: FetchCall, document: Document | None,
               state: AgentState) -> Step:
    """The observation of a fetch: the start of the document, or an error when the
    collection has no such document."""
    if document is None:
        return error_step(n, "fetch", call_args(action),
                          f"no document {action.doc_id!r} in the collection")
    state.remember(document.doc_id, document.title)
    if document.doc_id not in state.fetched:
        state.fetched.append(document.doc_id)
    text = _snippet(document.text, FETCH_CHARS)
    title = f"{document.title}: " if document.title else ""
    return Step(n, "fetch", call_args(action), f"[{document.doc_id}] {title}{text}",
                chars=len(text))


def repeated_step(n: int, action: SearchCall | FetchCall, before: int) -> Step:
    return Step(n, action.key[0], call_args(action),
                f"error: this call was made at step {before}; see its observation",
                error="repeated call", repeated=True)


def error_step(n: int, tool: str, args: dict[str, str], message: str) -> Step:
    return Step(n, tool, args, f"error: {message}", error=message)


def used_sources(answer: FinalAnswer | None, state: AgentState) -> list[dict[str, Any]]:
    """The sources of the answer: the ids it cites that an observation showed (invented ones
    dropped); when it cites none of those, the documents the agent fetched (it read them)."""
    cited = [d for d in (answer.sources if answer is not None else ()) if d in state.seen]
    chosen = cited or list(state.fetched)
    return [{"n": n, "doc_id": d, "title": state.seen.get(d) or None}
            for n, d in enumerate(chosen, start=1)]


def salvage_answer(text: str) -> str:
    """The answer of a reply cut off by its token bound (``{"sources": [...], "answer":
    "...`` without its end): the string as far as it got. A JSON reply without an answer (a
    model that ignored its grammar) has none (""); other text is kept as it is."""
    start = text.find('"answer"')
    if start >= 0:
        colon = text.find('"', text.find(":", start) + 1)
        if colon >= 0:
            piece = text[colon + 1:]
            end = piece.find('"')
            while end > 0 and piece[end - 1] == "\\":
                end = piece.find('"', end + 1)
            piece = piece if end < 0 else piece[:end]
            try:
                return str(json.loads(f'"{piece.rstrip(chr(92))}"')).strip()
            except ValueError:
                return piece.strip()
    if text.lstrip().startswith(("{", "[")):
        return ""
    return text.strip()


def salvage_sources(text: str) -> tuple[str, ...]:
    """The complete ``"sources": [...]`` list of a reply cut off after it (ids not shown
    are dropped later, like any)."""
    found = re.search(r'"sources"\s*:\s*(\[[^\]]*\])', text)
    if found is None:
        return ()
    try:
        ids = json.loads(found.group(1))
    except ValueError:
        return ()
    return tuple(i for i in ids if isinstance(i, str))[:MAX_SOURCES]


def _snippet(text: str, limit: int) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[:limit - 3].rstrip() + "..."
