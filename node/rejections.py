"""Peer input this node refused, counted per reason, and log lines a peer cannot flood.

Every place that drops something a peer sent (a bad frame, a forged or oversize record, an
invalid collection definition, a malformed job reply, a request over a budget) calls
:meth:`Rejections.reject` with a stable *reason*: a short snake_case name from
:data:`REASONS`. The counters show in ``calinode status`` (``rejected_input``); the log gets
at most one line per reason every ``interval`` seconds, with the number of lines held back
since the previous one, so a peer that sends a million bad frames costs a few log lines.

:class:`RateLimitedLog` does the same for any other line that peers can trigger (handler
failures, failing background items).
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Callable

__all__ = ["REASONS", "RateLimitedLog", "Rejections"]

#: Every reason a piece of peer input may be refused for (closed set: metrics label values).
REASONS = frozenset({
    "bad_frame",            # a frame or message that breaks the wire protocol
    "bad_record",           # a capability record that fails validation
    "forged_record",        # unsigned, wrong key, or bad signature
    "stale_record",         # a relayed record issued too long ago
    "oversize_record",      # a record over the record byte cap
    "not_allowed",          # a peer outside the allowlist
    "relay_cap",            # a relayed record over the per-sender or total cap
    "bad_capabilities",     # capabilities that fail their typed view
    "bad_definition",       # a collection definition that fails validation
    "bad_reply",            # a job reply that fails its typed view
    "bad_params",           # job parameters that fail their typed view
    "over_budget",          # a request whose work or reply size is over a budget
    "overloaded",           # refused by admission control (streams or bytes in flight)
    "identity_conflict",    # our own peer id from another node (a copied home)
    "bad_handshake",        # an inbound connection that failed its handshake (another swarm key)
    "bad_blob_request",     # a blob request that is malformed, out of range or for an unknown model
    "bad_chunk",            # a model chunk whose bytes fail the sha256 its manifest lists
})


class RateLimitedLog:
    """At most one line per key every ``interval`` seconds; the rest are counted."""

    def __init__(self, logger: logging.Logger, *, interval: float = 10.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.logger = logger
        self.interval = interval
        self.clock = clock
        self._last: dict[str, float] = {}
        self._held: Counter[str] = Counter()

    def log(self, level: int, key: str, message: str, *args: object,
            exc_info: bool = False) -> bool:
        """Log ``message % args`` unless ``key`` logged within ``interval``; True if logged."""
        now = self.clock()
        last = self._last.get(key)
        if last is not None and now - last < self.interval:
            self._held[key] += 1
            return False
        if len(self._last) >= 4096:  # keys are bounded by their callers; this is a backstop
            self._last.clear()
        self._last[key] = now
        held = self._held.pop(key, 0)
        suffix = f" ({held} similar lines held back)" if held else ""
        self.logger.log(level, message + suffix, *args, exc_info=exc_info)
        return True

    def warning(self, key: str, message: str, *args: object) -> bool:
        return self.log(logging.WARNING, key, message, *args)

    def exception(self, key: str, message: str, *args: object) -> bool:
        """An error with its traceback (rate limited like every other line)."""
        return self.log(logging.ERROR, key, message, *args, exc_info=True)


class Rejections:
    """Counters of refused peer input per reason, with a rate-limited log line each."""

    def __init__(self, logger: logging.Logger | None = None, *, interval: float = 10.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.counts: Counter[str] = Counter()
        self.log = RateLimitedLog(logger or logging.getLogger("calinode.rejected"),
                                  interval=interval, clock=clock)

    def reject(self, reason: str, peer: str, detail: str) -> None:
        """Count one refused input from ``peer`` and log it (rate limited per reason)."""
        if reason not in REASONS:
            raise ValueError(f"unknown rejection reason {reason!r}")
        self.counts[reason] += 1
        self.log.warning(reason, "refused input from %s (%s): %s", peer[:20], reason,
                         detail[:300])

    def snapshot(self) -> dict[str, int]:
        return dict(sorted(self.counts.items()))
