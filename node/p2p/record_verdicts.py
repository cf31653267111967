"""Remembered signature verdicts of records: a record resent every round costs a dict lookup.

Peers relay the same records over and over (every heartbeat, and a hostile peer every time it
likes). Checking a record's signature costs far more than everything else membership does
with it (the canonical payload, the key, the peer id, the ed25519 check), so the outcome is
remembered in a bounded LRU table (``capacity`` entries, a few thousand).

The key is ``(peer_id, seq, sha256 of the record's whole msgpack encoding)``: the digest covers
every field, signature included, so a hit means *these very bytes* were judged before. A record
that differs in anything (an address, the signature) is a miss and is checked afresh: a
verdict can never be borrowed by another record, and a forgery cannot poison the verdict of
the genuine record it copies. The encoding is the one the byte cap is checked on
(:func:`~calinode.protocol.records.record_size`), so the caller encodes once for both.

Pure logic, no I/O.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from dataclasses import dataclass

from calinode.protocol.records import CapabilityRecord

__all__ = ["RecordVerdicts", "Verdict", "VerdictKey"]

VerdictKey = tuple[str, int, bytes]
#: Default number of verdicts kept (about 150 bytes each).
CAPACITY = 4096


@dataclass(frozen=True, slots=True)
class Verdict:
    """A record's signature check: valid (``reason`` None) or refused for ``reason``."""

    reason: str | None = None
    detail: str = ""

    @property
    def valid(self) -> bool:
        return self.reason is None


VALID = Verdict()


class RecordVerdicts:
    """Bounded LRU of verdicts by :func:`key` (see module docstring)."""

    def __init__(self, capacity: int = CAPACITY) -> None:
        self.capacity = capacity
        self._verdicts: OrderedDict[VerdictKey, Verdict] = OrderedDict()
        #: lookups answered from the table, and lookups that were not (for benchmarks, tests)
        self.hits = 0
        self.misses = 0

    def __len__(self) -> int:
        return len(self._verdicts)

    @staticmethod
    def key(record: CapabilityRecord, encoded: bytes) -> VerdictKey:
        """The key of ``record`` whose msgpack encoding is ``encoded``."""
        return (record.peer_id, record.seq, hashlib.sha256(encoded).digest())

    def get(self, key: VerdictKey) -> Verdict | None:
        verdict = self._verdicts.get(key)
        if verdict is None:
            self.misses += 1
            return None
        self.hits += 1
        self._verdicts.move_to_end(key)
        return verdict

    def put(self, key: VerdictKey, verdict: Verdict) -> None:
        self._verdicts[key] = verdict
        self._verdicts.move_to_end(key)
        while len(self._verdicts) > self.capacity:
            self._verdicts.popitem(last=False)
