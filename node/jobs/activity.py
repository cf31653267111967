"""What the jobs this node served amount to: :class:`JobActivity`, cumulative counters per
job kind (served, failed, generated tokens, and a latency histogram), read by the dashboard's
``GET /v1/activity``.

Why cumulative counters and not rates: a rate needs a window, and every reader wants its own
(the dashboard plots the last minutes from polls a second apart). The reader differences two
snapshots; the node only adds integers, which costs nothing on the job path. Percentiles come
the same way: from the difference of two snapshots of the fixed buckets of
:data:`LATENCY_BUCKETS_MS`, so no list of samples grows. The kinds are the registered job kinds
(the server checks a request's kind before it runs), so the table is bounded by the registry.
"""

from __future__ import annotations

import bisect
import time
from dataclasses import dataclass, field
from typing import Any

__all__ = ["LATENCY_BUCKETS_MS", "JobActivity", "KindActivity"]

#: Upper bounds (milliseconds) of the latency buckets; one more bucket holds everything above.
LATENCY_BUCKETS_MS: tuple[float, ...] = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000,
                                         10000, 30000, 60000)


@dataclass(slots=True)
class KindActivity:
    """Counters of one job kind since the node started."""

    served: int = 0
    failed: int = 0
    tokens: int = 0
    latency: list[int] = field(default_factory=lambda: [0] * (len(LATENCY_BUCKETS_MS) + 1))


class JobActivity:
    """Counters of the jobs this node ran (for peers and for itself), per kind."""

    def __init__(self) -> None:
        self.kinds: dict[str, KindActivity] = {}
        self.started = time.monotonic()

    def record(self, kind: str, seconds: float, result: dict[str, Any] | None) -> None:
        """One job of ``kind`` ended after ``seconds``: ``result`` is its reply, or None when
        it failed. A generate reply's ``usage.completion_tokens`` counts as tokens."""
        counters = self.kinds.get(kind)
        if counters is None:
            counters = self.kinds[kind] = KindActivity()
        if result is None:
            counters.failed += 1
        else:
            counters.served += 1
            counters.tokens += _completion_tokens(result)
        counters.latency[bisect.bisect_left(LATENCY_BUCKETS_MS, seconds * 1000)] += 1

    def snapshot(self) -> dict[str, Any]:
        """The counters as JSON: ``at`` (seconds since start, monotonic) for rates."""
        return {
            "at": round(time.monotonic() - self.started, 3),
            "buckets_ms": list(LATENCY_BUCKETS_MS),
            "kinds": {kind: {"served": c.served, "failed": c.failed, "tokens": c.tokens,
                             "latency": list(c.latency)}
                      for kind, c in sorted(self.kinds.items())},
        }


def _completion_tokens(result: dict[str, Any]) -> int:
    usage = result.get("usage")
    tokens = usage.get("completion_tokens") if isinstance(usage, dict) else None
    return tokens if isinstance(tokens, int) and not isinstance(tokens, bool) and tokens > 0 else 0
