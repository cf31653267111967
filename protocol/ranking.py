"""The one order of search hits, used by the shard stores and by the merge of their lists.

A hit is ranked by its score, highest first, and hits of bitwise-equal scores by
``(doc_id, chunk)`` ascending (Python's ``str`` order: by code point). A shard store cuts its
top-k with this key and the coordinator merges the shards' lists with it, so a sharded search
returns exactly what one index over all the chunks returns when its hits are sorted this way,
duplicate and tied texts included (tests/shards/test_tie_order.py checks it against one FAISS
flat index). Scores are similarities (inner product or cosine); never NaN (refused earlier).
"""

from __future__ import annotations

__all__ = ["rank_key"]


def rank_key(score: float, doc_id: str, chunk: int) -> tuple[float, str, int]:
    """The sort key of the search order: best score first, then ``(doc_id, chunk)``."""
    return (-score, doc_id, chunk)
