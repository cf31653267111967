"""What the model is asked when it answers from a collection, and what the user gets when the
search found nothing. Pure: a search's hits in, chat messages and sources out.

``ask`` and chat with a collection both build on these (``Coordinator.rag_messages``), so the
two paths prompt the model alike and say alike that nothing was found.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

#: Characters of context passages in one prompt (~1500 tokens), shared among the hits.
CONTEXT_CHARS = 6000
#: Characters every passage keeps however many hits share the context.
MIN_PASSAGE_CHARS = 200
SYSTEM_PROMPT = ("Answer the question using only the numbered context passages. Cite passages "
                 "like [1]. If they do not contain the answer, say so.")


def rag_prompt(question: str, hits: Sequence[dict[str, Any]]
               ) -> tuple[list[dict[str, str]], list[dict[str, Any]]]:
    """Chat messages with the hits as numbered context passages, and the sources they cite
    (``n``, ``doc_id``, ``score``, ``title``), in the hits' order."""
    sources, blocks = [], []
    for n, hit in enumerate(hits, start=1):
        text = hit["text"][:max(MIN_PASSAGE_CHARS, CONTEXT_CHARS // max(1, len(hits)))]
        blocks.append(f"[{n}] {text}")
        sources.append({"n": n, "doc_id": hit["doc_id"], "score": hit["score"],
                        "title": hit["metadata"].get("title")})
    context = "\n\n".join(blocks)
    messages = [
        {"role": "system", "content": SYSTEM_PROMPT},
        {"role": "user", "content": f"Context:\n{context}\n\nQuestion: {question}"}]
    return messages, sources


def no_sources_reply(name: str, found: dict[str, Any], served_by: str) -> dict[str, Any]:
    """What ``ask`` and chat with a collection answer when retrieval found nothing: they
    say so, and no model answers from its own weights (a generate reply's shape)."""
    text = (f"The collection {name!r} has nothing relevant to this question: the search "
            "found no passages, so there is no answer from its documents.")
    if found["partial"]:
        text += (f" (The shards {found['missing_shards']} did not answer: the search was "
                 "incomplete.)")
    return {"text": text, "finish_reason": "stop", "served_by": served_by,
            "usage": {"prompt_tokens": 0, "completion_tokens": 0}}
