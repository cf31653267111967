"""Is this node ready to take work? Pure decision behind ``GET /readyz`` (and the
``calinode_ready`` gauge); ``/healthz`` stays liveness (the process answers at all).

Ready means:

- every model the node was started with is loaded (the API answers while they load, and
  while a model it does not have is pulled from the swarm: "pulling model X (41%)");
- for an index node (``--index``), its replicas are synced: it has learned the live swarm
  (two heartbeat rounds, the same wait a recovering replica has), a replica sync round has
  completed since, and no replica on its disk is unserved (pulling, recovering, given up:
  ``replicas_not_ready`` of ``calinode status``).

Each unmet condition is one reason, in words a person can act on.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

__all__ = ["Readiness", "readiness"]

#: Heartbeat rounds after which membership knows the live swarm (``ReplicaSync``'s wait).
SETTLED_ROUNDS = 2
MAX_LISTED = 8  # replicas named in a reason (the rest are counted)


@dataclass(frozen=True)
class Readiness:
    ready: bool
    reasons: tuple[str, ...] = ()

    def to_wire(self) -> dict[str, Any]:
        return {"ready": self.ready, "reasons": list(self.reasons)}


def readiness(*, wanted_models: Sequence[str], loaded_models: Iterable[str], index: bool,
              membership_rounds: int, settled_sync_rounds: int,
              not_ready: Mapping[str, Sequence[int]],
              pulling: Sequence[str] = ()) -> Readiness:
    """The node's readiness (see the module docstring). ``settled_sync_rounds``: replica sync
    rounds completed that started after membership had settled; ``pulling``: one phrase per
    model being pulled from peers."""
    reasons: list[str] = list(pulling)
    loaded = set(loaded_models)
    missing = [name for name in wanted_models if name not in loaded]
    if missing:
        reasons.append(f"models not loaded yet: {', '.join(missing)}")
    if index:
        if membership_rounds < SETTLED_ROUNDS:
            reasons.append(f"learning the swarm ({membership_rounds} of {SETTLED_ROUNDS} "
                           "heartbeat rounds done)")
        elif settled_sync_rounds < 1:
            reasons.append("replica sync has not completed a round since the swarm was "
                           "learned")
        waiting = [f"{collection}/{shard}" for collection, shards in sorted(not_ready.items())
                   for shard in shards]
        if waiting:
            more = f" and {len(waiting) - MAX_LISTED} more" if len(waiting) > MAX_LISTED else ""
            reasons.append(f"replicas not synced yet: {', '.join(waiting[:MAX_LISTED])}{more}")
    return Readiness(not reasons, tuple(reasons))
