"""Admission of job streams: slots and request bytes, per peer and in total (pure bookkeeping).

A job stream takes a *slot* as soon as it is opened, before a byte of its request is read, and
the request frame's length prefix is *charged* to the byte budget before its body is buffered.
So a peer that opens 40 streams of 16 MiB requests holds at most ``max_per_peer`` slots and
``max_bytes_per_peer`` bytes of requests; every other stream is refused unread. The ticket is
released when the job ends (its reply sent or failed).

Why not py-libp2p's resource manager (``libp2p.rcmgr``): its stream limit is one node-wide
counter over every protocol (a job flood would also refuse identify, ping and membership
streams), inbound streams queue on a semaphore before any handler runs, and its memory
accounting is never charged by the muxer or stream reads, so request bytes are not counted.
Neither per-peer stream caps nor bytes in flight before a body is read can be expressed with it.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

__all__ = ["AdmissionTicket", "JobAdmission"]


@dataclass
class AdmissionTicket:
    """One admitted job: who asked, and how many request bytes it holds."""

    caller: str
    bytes: int = 0


class JobAdmission:
    """Non-blocking caps: a request over any of them is refused at once (``OVERLOADED``)."""

    def __init__(self, *, max_total: int, max_per_peer: int, max_bytes_total: int,
                 max_bytes_per_peer: int) -> None:
        self.max_total = max_total
        self.max_per_peer = max_per_peer
        self.max_bytes_total = max_bytes_total
        self.max_bytes_per_peer = max_bytes_per_peer
        self._slots: Counter[str] = Counter()
        self._bytes: Counter[str] = Counter()
        self.in_flight = 0
        self.bytes_in_flight = 0

    def admit(self, caller: str) -> AdmissionTicket | None:
        """A slot for one job of ``caller``; None when the peer or the node is full."""
        if self.in_flight >= self.max_total or self._slots[caller] >= self.max_per_peer:
            if not self._slots[caller]:
                del self._slots[caller]
            return None
        self.in_flight += 1
        self._slots[caller] += 1
        return AdmissionTicket(caller)

    def charge(self, ticket: AdmissionTicket, size: int) -> bool:
        """Reserve ``size`` request bytes for ``ticket``; False (nothing reserved) if over."""
        caller = ticket.caller
        if (self.bytes_in_flight + size > self.max_bytes_total
                or self._bytes[caller] + size > self.max_bytes_per_peer):
            if not self._bytes[caller]:
                del self._bytes[caller]
            return False
        ticket.bytes += size
        self._bytes[caller] += size
        self.bytes_in_flight += size
        return True

    def release(self, ticket: AdmissionTicket) -> None:
        """Give back the ticket's slot and bytes (call exactly once)."""
        caller = ticket.caller
        self.in_flight -= 1
        self._slots[caller] -= 1
        if self._slots[caller] <= 0:
            del self._slots[caller]
        if ticket.bytes:
            self.bytes_in_flight -= ticket.bytes
            self._bytes[caller] -= ticket.bytes
            ticket.bytes = 0
        if self._bytes[caller] <= 0:
            del self._bytes[caller]

    def slots_of(self, caller: str) -> int:
        return self._slots.get(caller, 0)
