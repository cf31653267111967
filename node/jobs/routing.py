"""Where a job runs: pure decisions over the peer table, unit-tested without a network.

- :func:`rank_candidates`: this node first when it has the model and spare capacity; then
  capable live peers by load (jobs in flight + queue), then by round-trip time; this node
  again (busy) after its peers, so a busy local model is still used when peers are busier.
- :class:`SentJobs`: the jobs this node has sent each peer and not yet heard back from, which
  the ranking counts as load when the peer's record (a heartbeat old) says less.
- :func:`model_offers`: which peers offer a model, keeping only byte-identical copies (one
  sha256) so a job never mixes vectors of two different files.
"""

from __future__ import annotations

import contextlib
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass

from calinode.models.defaults import PREPARABLE
from calinode.protocol.capabilities import Capabilities
from calinode.protocol.errors import ErrorCode, JobError

#: Peers whose last job end :class:`SentJobs` remembers (the peer table's own cap is 1000).
MAX_TRACKED_PEERS = 1024


@dataclass(frozen=True)
class Candidate:
    peer_id: str
    sha256: str
    load: int
    rtt_ms: float
    is_self: bool = False


def model_offers(
    name: str,
    kind: str,
    local_sha256: str | None,
    peers: Iterable[tuple[str, Capabilities, int, float | None]],
    self_id: str,
    self_load: int,
) -> list[Candidate]:
    """Candidates for model ``name`` of ``kind`` ("embed" or "generate").

    ``local_sha256`` is the sha256 of this node's own copy (None: it has none); ``peers``
    yields ``(peer_id, capabilities, load, rtt_ms)`` of live peers. When this node holds the model,
    only peers with the same sha256 qualify; otherwise the sha256 offered by most peers wins.
    """
    offers: list[Candidate] = []
    if local_sha256 is not None:
        offers.append(Candidate(self_id, local_sha256, self_load, 0.0, is_self=True))
    for peer_id, capabilities, load, rtt_ms in peers:
        offer = capabilities.offer(kind, name)
        if offer is not None:
            offers.append(Candidate(peer_id, offer.sha256, load,
                                    rtt_ms if rtt_ms is not None else 1e9))
    if not offers:
        return []
    if local_sha256 is not None:
        wanted = local_sha256
    else:
        counts = Counter(c.sha256 for c in offers)
        wanted = min(counts, key=lambda sha: (-counts[sha], sha))
    return [c for c in offers if c.sha256 == wanted]


def rank_candidates(candidates: Sequence[Candidate], *, local_spare: bool) -> list[Candidate]:
    """Order in which to try candidates (see module docstring)."""
    own = [c for c in candidates if c.is_self]
    others = sorted((c for c in candidates if not c.is_self),
                    key=lambda c: (c.load, c.rtt_ms, c.peer_id))
    if own and local_spare:
        return own + others
    return others + own


class SentJobs:
    """Jobs in flight from this node, per peer (the peer's own record lags by a heartbeat:
    4 generations sent at once all saw the same idle peer and queued there one after
    the other while another peer idled), and when the last of them to each peer ended:
    a record received before that may still count jobs of ours that are over
    (:meth:`record_load`)."""

    def __init__(self, clock: Callable[[], float]) -> None:
        self._clock = clock
        self._count: dict[str, int] = {}
        self._ended: dict[str, float] = {}

    def count(self, peer: str) -> int:
        return self._count.get(peer, 0)

    def record_load(self, peer: str, advertised: int, received_at: float) -> int:
        """A peer's load: what its record advertised, or what this node has sent it and
        not heard back from, whichever is more; the record's figure only if it was received
        after this node's last job there ended (else it may count that job: 4 concurrent
        generations right after 4 others all went to one of two idle peers, the other's
        record still saying it ran the previous ones). Another node's jobs then count from
        that peer's next record on."""
        if received_at < self._ended.get(peer, float("-inf")):
            advertised = 0
        return max(advertised, self.count(peer))

    @contextlib.contextmanager
    def running(self, peer: str) -> Iterator[None]:
        self._count[peer] = self._count.get(peer, 0) + 1
        try:
            yield
        finally:
            self._count[peer] -= 1
            if not self._count[peer]:
                del self._count[peer]
            self._ended.pop(peer, None)  # re-inserted: the dict stays oldest end first
            self._ended[peer] = self._clock()
            if len(self._ended) > MAX_TRACKED_PEERS:  # peers come and go: keep the newest
                del self._ended[next(iter(self._ended))]


def serve_advice(name: str, kind: str) -> str:
    """How to get a model no peer serves served: a node serves only the models it was started
    with, even when others are installed in its home."""
    flag = "--embed-model" if kind == "embed" else "--gen-model"
    install = (f"calinode models prepare {name}" if name in PREPARABLE
               else f"calinode models add PATH --name {name}")
    return f"serve it: {install}, then calinode start {flag} {name} on some node"


def require_candidates(candidates: Sequence[Candidate], name: str, kind: str,
                       known_models: Iterable[str]) -> None:
    if candidates:
        return
    known = sorted(set(known_models))
    if name not in known:
        raise JobError(f"no peer in the swarm has {kind} model {name!r} "
                       f"(available: {', '.join(known) or 'none'}); {serve_advice(name, kind)}",
                       code=ErrorCode.UNKNOWN_MODEL)
    raise JobError(f"no live peer can run {kind} model {name!r} right now",
                   code=ErrorCode.NO_CAPABLE_PEER)
