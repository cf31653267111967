"""Typed views of the replies to the built-in jobs (``node/jobs/builtin.py``).

- ``ping`` answers ``{"pong": True, "time_ms": <its wall clock>}``: :class:`PingReply`. The
  clock is what ``calinode doctor`` compares with its own to estimate skew, so it is a value
  from a peer like any other: an int of milliseconds in a sane range (year 2000 to 2200).
- ``echo`` answers ``{"payload": <what it was sent>}``: :class:`EchoReply`, which
  ``calinode bench`` checks is the payload it sent (same type and length).

A reply that does not fit is refused (``BAD_REQUEST``; the caller counts it as ``bad_reply``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from .job_params import check_echo_payload, check_keys
from .validation import check_int, from_peer, invalid

__all__ = ["MAX_TIME_MS", "MIN_TIME_MS", "EchoReply", "PingReply"]

#: 2000-01-01 and 2200-01-01 in Unix milliseconds: a clock outside is not a clock
MIN_TIME_MS = 946_684_800_000
MAX_TIME_MS = 7_258_118_400_000


@dataclass(frozen=True, kw_only=True, slots=True)
class PingReply:
    """A peer's answer to ``ping``: its wall clock when it answered."""

    time_ms: int

    _KEYS: ClassVar[frozenset[str]] = frozenset({"pong", "time_ms"})

    def __post_init__(self) -> None:
        check_int("time_ms", self.time_ms, lo=MIN_TIME_MS, hi=MAX_TIME_MS)

    @classmethod
    def from_wire(cls, data: object) -> PingReply:
        with from_peer():
            wire = check_keys("ping reply", data, cls._KEYS, cls._KEYS)
            if wire["pong"] is not True:
                invalid("ping reply: pong must be true")
            return cls(time_ms=wire["time_ms"])

    def to_wire(self) -> dict[str, Any]:
        return {"pong": True, "time_ms": self.time_ms}


@dataclass(frozen=True, kw_only=True, slots=True)
class EchoReply:
    """A peer's answer to ``echo``: the payload, of the type and length that was sent."""

    payload: bytes | str

    _KEYS: ClassVar[frozenset[str]] = frozenset({"payload"})

    def __post_init__(self) -> None:
        check_echo_payload(self.payload)

    @classmethod
    def from_wire(cls, data: object, *, sent: bytes | str | None = None) -> EchoReply:
        """The reply to an echo of ``sent`` (when given: the same type and length)."""
        with from_peer():
            wire = check_keys("echo reply", data, cls._KEYS, cls._KEYS)
            payload = wire["payload"]
            if not isinstance(payload, bytes | str):
                invalid(f"echo payload must be bytes or str, not {type(payload).__name__}")
            if sent is not None and (type(payload) is not type(sent)
                                     or len(payload) != len(sent)):
                invalid("echo payload differs from what was sent")
            return cls(payload=payload)

    def to_wire(self) -> dict[str, Any]:
        return {"payload": self.payload}
