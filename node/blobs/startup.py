"""``calinode start --embed-model X`` / ``--gen-model Y`` for a model the node does not have:
pull it from the swarm first, then serve it.

Only a node that has a swarm to ask (bootstrap peers or an invite) pulls; it waits until a live
peer advertises the model or membership has settled (``SETTLED_ROUNDS`` heartbeat rounds, at
most ``WAIT_FOR_HOLDER`` seconds). A model no peer offers, or whose pull fails, is left to the
usual start-up path: an embedded default is prepared locally (said in the log), any other
model is the usual one-line ``UNKNOWN_MODEL`` error.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence

import trio

from calinode.models.registry import ModelRegistry
from calinode.node.blobs.service import ModelTransfers
from calinode.node.blobs.swarm_models import holders
from calinode.node.readiness import SETTLED_ROUNDS
from calinode.protocol.errors import CalinodeError

log = logging.getLogger(__name__)

WAIT_FOR_HOLDER = 30.0
POLL = 0.25


def models_to_pull(registry: ModelRegistry, names: Sequence[str], *, has_swarm: bool,
                   ) -> list[str]:
    """The configured models not installed here, when there is a swarm to pull them from
    (blocking: reads the registry)."""
    if not has_swarm:
        return []
    return [name for name in dict.fromkeys(names) if name not in registry]


async def _holder_known(transfers: ModelTransfers, name: str,
                        rounds: Callable[[], int]) -> bool:
    with trio.move_on_after(WAIT_FOR_HOLDER):
        while True:
            try:
                holders(transfers.table.entries(), name)
                return True
            except CalinodeError:
                if rounds() >= SETTLED_ROUNDS + 1:
                    return False
            await trio.sleep(POLL)
    return False


async def pull_missing_models(transfers: ModelTransfers, names: Sequence[str], *,
                              self_id: str, rounds: Callable[[], int],
                              say: Callable[[str], None]) -> list[str]:
    """Pull each of ``names`` from the swarm; returns the names pulled."""
    pulled = []
    for name in names:
        if not await _holder_known(transfers, name, rounds):
            say(f"no peer of the swarm offers model {name}; not pulling it")
            continue
        say(f"model {name} is not installed here: pulling it from the swarm")
        try:
            result = await transfers.pull(name, exclude=(self_id,))
        except CalinodeError as exc:
            say(f"pulling model {name} failed ({exc}); carrying on without it")
            continue
        say(f"pulled model {name} ({result.sha256[:16]}): {result.fetched_bytes} bytes "
            f"fetched, {result.resumed_bytes} resumed, from {len(result.peers)} peer(s)"
            + (f"; faulty peers: {', '.join(result.faulty_peers)}"
               if result.faulty_peers else ""))
        pulled.append(name)
    return pulled
