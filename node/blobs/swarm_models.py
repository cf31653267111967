"""Which peers hold which models, and the pulls a node has in progress.

:func:`swarm_models` reads the peer table's typed capability views (``ModelOffer``): a model is
named by its sha256, so two peers advertising the same name with different bytes are listed
as two models. :func:`holders` resolves ``NAME|SHA256`` to one sha256 and the live peers that
advertise it. :class:`ModelPulls` runs at most one pull per model at a time and keeps their
progress for ``/readyz`` ("pulling model X") and ``calinode status``. Pure, but for the pull
itself.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import trio

from calinode.node.p2p.peer_table import PeerEntry
from calinode.protocol.capabilities import ModelOffer
from calinode.protocol.errors import ErrorCode, JobError
from calinode.protocol.validation import SHA256


@dataclass
class SwarmModel:
    name: str
    kind: str
    sha256: str
    peers: list[str] = field(default_factory=list)

    def to_wire(self) -> dict[str, Any]:
        return {"name": self.name, "kind": self.kind, "sha256": self.sha256,
                "peers": sorted(self.peers)}


def swarm_models(entries: Iterable[PeerEntry]) -> list[SwarmModel]:
    """Every model the live peers advertise, with the peers that hold it (by sha256)."""
    found: dict[str, SwarmModel] = {}
    for entry in entries:
        if not entry.alive:
            continue
        offers: list[ModelOffer] = [*entry.caps.embed, *entry.caps.generate]
        for offer in offers:
            model = found.setdefault(offer.sha256, SwarmModel(offer.name, offer.kind,
                                                              offer.sha256))
            if entry.peer_id not in model.peers:
                model.peers.append(entry.peer_id)
    return sorted(found.values(), key=lambda m: (m.name, m.sha256))


def holders(entries: Iterable[PeerEntry], ref: str) -> tuple[SwarmModel, list[str]]:
    """The model ``ref`` (a name or a sha256) and the live peers advertising it.

    ``UNKNOWN_MODEL`` when no live peer advertises it; ``BAD_REQUEST`` when a name means two
    different models in the swarm (then pull by sha256)."""
    models = swarm_models(entries)
    by_sha = [m for m in models if m.sha256 == ref] if SHA256.fullmatch(ref) else []
    matches = by_sha or [m for m in models if m.name == ref]
    if not matches:
        raise JobError(f"no live peer advertises a model {ref!r} (see: calinode models list "
                       "--swarm)", code=ErrorCode.UNKNOWN_MODEL)
    if len(matches) > 1:
        shas = ", ".join(m.sha256[:16] for m in matches)
        raise JobError(f"{ref!r} names {len(matches)} different models in the swarm ({shas}); "
                       "pull one by its sha256", code=ErrorCode.BAD_REQUEST)
    return matches[0], list(matches[0].peers)


@dataclass
class PullProgress:
    name: str
    done: int = 0
    total: int = 0

    def to_wire(self) -> dict[str, Any]:
        return {"name": self.name, "done": self.done, "total": self.total}


class ModelPulls:
    """Pulls in progress on a node, one per model sha256 at a time."""

    def __init__(self) -> None:
        self.active: dict[str, PullProgress] = {}
        self._locks: dict[str, trio.Lock] = {}

    def describe(self) -> list[str]:
        """One phrase per pull in progress, e.g. ``pulling model minilm-l6-int8 (41%)``."""
        return [f"pulling model {p.name}"
                + (f" ({100 * p.done // p.total}%)" if p.total else "")
                for p in self.active.values()]

    async def run(self, sha256: str, name: str,
                  pull: Callable[[PullProgress], Awaitable[Any]]) -> Any:
        """Run ``pull(progress)`` for ``sha256``; a second pull of it waits for the first."""
        lock = self._locks.setdefault(sha256, trio.Lock())
        async with lock:
            progress = self.active[sha256] = PullProgress(name)
            try:
                return await pull(progress)
            finally:
                del self.active[sha256]
                if not lock.statistics().tasks_waiting:
                    self._locks.pop(sha256, None)
