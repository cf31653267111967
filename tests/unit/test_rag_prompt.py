"""node/rag/prompt.py: what the model is asked when it answers from a collection, and what the
user gets when the search found nothing (``ask`` and chat with a collection share both)."""

from __future__ import annotations

from typing import Any

from calinode.node.rag.prompt import (
    CONTEXT_CHARS,
    MIN_PASSAGE_CHARS,
    SYSTEM_PROMPT,
    no_sources_reply,
    rag_prompt,
)


def hit(doc_id: str, text: str, title: str | None = None, score: float = 0.5
        ) -> dict[str, Any]:
    metadata = {} if title is None else {"title": title}
    return {"doc_id": doc_id, "chunk": 0, "score": score, "text": text, "metadata": metadata}


def test_passages_are_numbered_and_the_sources_cite_them_in_order() -> None:
    messages, sources = rag_prompt("why?", [hit("a", "alpha", "A", 0.9), hit("b", "beta")])
    assert messages[0] == {"role": "system", "content": SYSTEM_PROMPT}
    assert messages[1] == {"role": "user",
                           "content": "Context:\n[1] alpha\n\n[2] beta\n\nQuestion: why?"}
    assert sources == [{"n": 1, "doc_id": "a", "score": 0.9, "title": "A"},
                       {"n": 2, "doc_id": "b", "score": 0.5, "title": None}]


def test_the_context_budget_is_shared_but_every_passage_keeps_a_minimum() -> None:
    long = "y" * (2 * CONTEXT_CHARS)  # a letter the prompt has nowhere else
    (_, user), _ = rag_prompt("q", [hit("a", long), hit("b", long)])
    assert user["content"].count("y") == 2 * (CONTEXT_CHARS // 2)
    many = [hit(str(n), long) for n in range(100)]
    (_, user), sources = rag_prompt("q", many)
    assert user["content"].count("y") == 100 * MIN_PASSAGE_CHARS and len(sources) == 100


def test_no_sources_reply_says_so_and_names_missing_shards() -> None:
    whole = no_sources_reply("papers", {"partial": False, "missing_shards": []}, "me")
    assert "'papers' has nothing relevant" in whole["text"] and "did not answer" not in whole[
        "text"]
    assert whole["served_by"] == "me" and whole["finish_reason"] == "stop"
    assert whole["usage"] == {"prompt_tokens": 0, "completion_tokens": 0}
    partial = no_sources_reply("papers", {"partial": True, "missing_shards": [3]}, "me")
    assert "The shards [3] did not answer" in partial["text"]
