"""What the agent's model may say at one step, as a typed, bounded view; and the JSON schema
that constrains it to say exactly that.

The agent (``calinode ask --agent``, node/rag/agent.py) asks a generate model, possibly on
another peer, for its next action as JSON: ``{"tool": "search", "query": ...}``, ``{"tool":
"fetch", "doc_id": ...}`` or ``{"answer": ..., "sources": [...]}``. The model's text comes from
a peer, so it is parsed here into :class:`SearchCall`, :class:`FetchCall` or
:class:`FinalAnswer`, every field bounded, before the loop acts on it; text that is not one of
these is an :class:`ActionError` whose message the model sees as an observation (``error:
...``), never a crash.

The schema (:func:`action_schema`) is built for each step from what the agent has seen: the
grammar the serving peer builds from it (models/json_grammar.py: ``anyOf``, ``const``,
``enum``, ``maxLength``, ``minItems``/``maxItems`` are enforced) lets a ``fetch`` or a source
name only a document id an observation showed, so even a 135M model cannot invent one. A peer
may ignore the grammar, so the parse checks the same things again and the loop drops ids it
never showed (``node/rag/agent_steps.py``).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

__all__ = ["MAX_ANSWER_CHARS", "MAX_QUERY_CHARS", "MAX_SOURCES", "Action", "ActionError",
           "FetchCall", "FinalAnswer", "SearchCall", "action_schema", "check_doc_id",
           "parse_action"]

#: Longest search query the model may ask (characters); the grammar stops it there too.
MAX_QUERY_CHARS: Final = 200
#: Shortest answer the grammar allows (a small model otherwise answers "...").
MIN_ANSWER_CHARS: Final = 12
#: Longest answer kept (characters); generation is bounded by tokens before that.
MAX_ANSWER_CHARS: Final = 8_000
#: Most sources one answer may cite.
MAX_SOURCES: Final = 8
#: Longest document id the agent fetches or cites (``MAX_DOC_ID_CHARS`` on the wire is 1024;
#: the grammar's string repetition is bounded at 256).
MAX_AGENT_DOC_ID_CHARS: Final = 256
#: Longest model reply parsed (characters): a reply is bounded by its tokens already.
MAX_ACTION_CHARS: Final = 32_000


class ActionError(ValueError):
    """The model's reply is not a valid action; the message is what the model is told."""


@dataclass(frozen=True, slots=True)
class SearchCall:
    """``{"tool": "search", "query": ...}``: search the request's collection."""

    query: str

    @property
    def key(self) -> tuple[str, str]:
        """Two calls with one key are the same call (case and spacing aside)."""
        return ("search", " ".join(self.query.lower().split()))


@dataclass(frozen=True, slots=True)
class FetchCall:
    """``{"tool": "fetch", "doc_id": ...}``: the text of one document of the collection."""

    doc_id: str

    @property
    def key(self) -> tuple[str, str]:
        return ("fetch", self.doc_id)


@dataclass(frozen=True, slots=True)
class FinalAnswer:
    """``{"answer": ..., "sources": [doc ids]}``: the model is done."""

    answer: str
    sources: tuple[str, ...]


Action = SearchCall | FetchCall | FinalAnswer


def check_doc_id(value: object) -> str:
    """A well-formed document id: a non-empty string of at most
    :data:`MAX_AGENT_DOC_ID_CHARS` characters without control characters."""
    if not isinstance(value, str) or not value:
        raise ActionError("doc_id must be a non-empty string")
    if len(value) > MAX_AGENT_DOC_ID_CHARS:
        raise ActionError(f"doc_id is longer than {MAX_AGENT_DOC_ID_CHARS} characters")
    if any(ord(c) < 0x20 or 0x7F <= ord(c) < 0xA0 for c in value):
        raise ActionError("doc_id holds control characters")
    return value


def _query(value: object) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ActionError("query must be a non-empty string")
    if len(value) > MAX_QUERY_CHARS:
        raise ActionError(f"query is longer than {MAX_QUERY_CHARS} characters")
    return " ".join(value.split())


def parse_action(text: str, *, final: bool = False) -> Action:
    """The model's reply as an action (:class:`ActionError` naming what is wrong otherwise).
    With ``final`` only an answer is accepted (the loop asked for the last word)."""
    if len(text) > MAX_ACTION_CHARS:
        raise ActionError(f"the reply is longer than {MAX_ACTION_CHARS} characters")
    try:
        data = json.loads(text)
    except (ValueError, RecursionError):
        raise ActionError("the reply is not one JSON object") from None
    if not isinstance(data, dict):
        raise ActionError("the reply must be a JSON object")
    if "answer" in data:
        return _answer(data)
    if final:
        raise ActionError('the reply must be {"answer": ..., "sources": [...]}')
    tool = data.get("tool")
    if tool == "search":
        _only(data, {"tool", "query"})
        return SearchCall(_query(data.get("query")))
    if tool == "fetch":
        _only(data, {"tool", "doc_id"})
        return FetchCall(check_doc_id(data.get("doc_id")))
    raise ActionError('the reply must name a tool ("search" or "fetch") or give an answer')


def _only(data: dict[str, object], keys: set[str]) -> None:
    extra = sorted(str(k)[:40] for k in data if k not in keys)
    if extra:
        raise ActionError(f"unexpected fields: {', '.join(extra)}")


def _answer(data: dict[str, object]) -> FinalAnswer:
    _only(data, {"answer", "sources"})
    answer = data["answer"]
    if not isinstance(answer, str) or not answer.strip():
        raise ActionError("answer must be a non-empty string")
    sources = data.get("sources", [])
    if not isinstance(sources, list):
        raise ActionError("sources must be a list of document ids")
    ids: list[str] = []
    for item in sources[:MAX_SOURCES]:
        try:
            doc_id = check_doc_id(item)
        except ActionError:
            continue  # a malformed source is dropped like an invented one
        if doc_id not in ids:
            ids.append(doc_id)
    return FinalAnswer(answer=answer.strip()[:MAX_ANSWER_CHARS], sources=tuple(ids))


def _grammar_safe(doc_id: str) -> bool:
    """Whether ``doc_id`` may be an ``enum`` value of a schema (models/json_grammar.py refuses
    quotes, backslashes, control characters and characters beyond U+FFFF there)."""
    return all(0x20 <= ord(c) < 0x7F or 0xA0 <= ord(c) <= 0xFFFF for c in doc_id) and not any(
        c in doc_id for c in '"\\') and not any(0xD800 <= ord(c) < 0xE000 for c in doc_id)


def _id_schema(seen: Sequence[str]) -> dict[str, object]:
    if seen and all(_grammar_safe(d) for d in seen):
        return {"enum": list(seen)}
    return {"type": "string", "minLength": 1, "maxLength": MAX_AGENT_DOC_ID_CHARS}


def action_schema(seen: Sequence[str], *, may_search: bool = True,
                  may_answer: bool = True) -> str:
    """The JSON schema (compact JSON text) of the next action: a search while ``may_search``,
    a fetch of one of the ``seen`` ids when there are some, an answer citing them while
    ``may_answer`` (at least one source when some were seen)."""
    alternatives: list[dict[str, object]] = []
    if may_search:
        alternatives.append({
            "type": "object", "additionalProperties": False, "required": ["tool", "query"],
            "properties": {"tool": {"const": "search"},
                           "query": {"type": "string", "minLength": 1,
                                     "maxLength": MAX_QUERY_CHARS}}})
    if may_search and seen:
        alternatives.append({
            "type": "object", "additionalProperties": False, "required": ["tool", "doc_id"],
            "properties": {"tool": {"const": "fetch"}, "doc_id": _id_schema(seen)}})
    if may_answer or not alternatives:
        sources: dict[str, object] = {"type": "array", "items": _id_schema(seen),
                                      "maxItems": min(MAX_SOURCES, max(1, len(seen)))}
        if seen:
            sources["minItems"] = 1
        else:
            sources["maxItems"] = 0
        alternatives.append({
            # sources first: an answer cut off by its token bound has them already
            "type": "object", "additionalProperties": False, "required": ["sources", "answer"],
            "properties": {"sources": sources,
                           "answer": {"type": "string", "minLength": MIN_ANSWER_CHARS}}})
    schema = alternatives[0] if len(alternatives) == 1 else {"anyOf": alternatives}
    return json.dumps(schema, separators=(",", ":"))
