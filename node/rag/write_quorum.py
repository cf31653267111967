"""What a quorum write did to each document: pure logic over the replicas' answers.

A write goes to a shard's R owners; each owner that answers says, per document, what it did
(``inserted``, ``replaced``, ``deleted``, ``unchanged`` or ``stale``: it holds a newer
version, so the write changed nothing there). A document is acknowledged only when at least
``quorum`` owners took it (any outcome but ``stale``): a ``stale`` answer is never counted as
an acknowledgement. The summary a user sees then says exactly what changed.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

__all__ = ["DocSettlement", "ReplicaAnswer", "settle"]

# when replicas disagree (one had the document already), the most telling outcome is reported
_RANK = {"replaced": 0, "inserted": 1, "deleted": 2, "unchanged": 3}


@dataclass(frozen=True)
class ReplicaAnswer:
    peer: str
    outcomes: Mapping[str, str] | None  # None: the replica failed (see error)
    error: str = ""


@dataclass(frozen=True)
class DocSettlement:
    doc_id: str
    acknowledged: bool
    outcome: str  # inserted | replaced | deleted | unchanged, or the failure's error code
    message: str = ""


def settle(doc_ids: Sequence[str], answers: Sequence[ReplicaAnswer], quorum: int,
           unavailable: str = "") -> list[DocSettlement]:
    """Each document's settlement, in ``doc_ids`` order."""
    failures = "; ".join(f"{a.peer[:16]}: {a.error}" for a in answers if a.outcomes is None)
    settled = []
    for doc_id in doc_ids:
        taken = [a.outcomes[doc_id] for a in answers
                 if a.outcomes is not None and a.outcomes.get(doc_id, "stale") != "stale"]
        stale = sum(1 for a in answers
                    if a.outcomes is not None and a.outcomes.get(doc_id) == "stale")
        if len(taken) >= quorum:
            settled.append(DocSettlement(doc_id, True, min(taken, key=_RANK.__getitem__)))
        elif stale:
            settled.append(DocSettlement(
                doc_id, False, "CONFLICT",
                f"{stale} replica(s) hold a newer version of {doc_id}; nothing was changed "
                "there (is the writer's clock behind?)"))
        else:
            why = unavailable or failures or "no replica answered"
            settled.append(DocSettlement(
                doc_id, False, "SHARD_UNAVAILABLE",
                f"{len(taken)} of the {quorum} replicas needed took it ({why})"))
    return settled
