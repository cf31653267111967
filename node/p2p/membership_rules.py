"""The pure decisions of a membership round (:mod:`calinode.node.p2p.membership`): which peers a
heartbeat exchanges with, whether a relayed record of a member brings anything new, which
addresses that claim our own peer id are due a probe, the reason a refused record is counted
under, and how addresses are read. No I/O, no clock: times are handed in, so each decision is
unit-tested alone (tests/unit/test_membership_rules.py).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

from libp2p.peer.peerinfo import PeerInfo, info_from_p2p_addr
from multiaddr import Multiaddr

from calinode.node.p2p.peer_table import (
    BadCapabilities,
    PeerEntry,
    PeerTable,
    StaleRecord,
    TableFull,
)
from calinode.protocol.errors import ConfigError, RecordError
from calinode.protocol.messages import CapabilityRecord

__all__ = ["heartbeat_targets", "member_record_is_news", "parse_bootstrap", "peer_addrs",
           "refusal_reason", "twin_probes_due"]

log = logging.getLogger(__name__)


def refusal_reason(exc: RecordError) -> str:
    """The rejection reason (``Rejections.REASONS``) a record the table refused counts under."""
    if isinstance(exc, StaleRecord):
        return "stale_record"
    if isinstance(exc, BadCapabilities):
        return "bad_capabilities"
    if isinstance(exc, TableFull):
        return "overloaded"
    return "bad_record"


def parse_bootstrap(addr: str) -> PeerInfo:
    """``/ip4/HOST/tcp/PORT/p2p/PEER_ID`` -> PeerInfo, with an error that says what is wrong."""
    try:
        return info_from_p2p_addr(Multiaddr(addr))
    except Exception as exc:
        raise ConfigError(
            f"bad bootstrap address {addr!r}: expected /ip4/HOST/tcp/PORT/p2p/PEER_ID "
            f"(copy the --bootstrap line another node printed) ({exc})"
        ) from exc



def peer_addrs(record: CapabilityRecord) -> list[Multiaddr]:
    """The addresses of a record, with or without their /p2p/ part; unparsable ones skipped."""
    addrs: list[Multiaddr] = []
    for text in record.addrs:
        try:
            addrs.extend(info_from_p2p_addr(Multiaddr(text)).addrs)
        except Exception:
            try:
                addrs.append(Multiaddr(text))
            except Exception:
                log.debug("ignoring unparsable address %r of %s", text, record.peer_id)
    return addrs




def member_record_is_news(entry: PeerEntry, record: CapabilityRecord, now: float,
                          heartbeat_interval: float) -> bool:
    """A member's record relayed by a third peer is worth a signature check only when it is
    newer than the one held and the member did not answer us directly this heartbeat (its
    own record, then, is fresh)."""
    if record.seq <= entry.record.seq:
        return False  # nothing new: no signature to check
    return not (entry.last_seen is not None and now - entry.last_seen < heartbeat_interval)


def heartbeat_targets(table: PeerTable, addresses: Iterable[PeerInfo]
                      ) -> dict[str, PeerInfo | None]:
    """Every member (dialled at the addresses the peer store holds: ``None``) and every
    bootstrap or discovered address of a peer that is not a live member. Addresses of our
    own peer id are left out (see :func:`twin_probes_due`)."""
    targets: dict[str, PeerInfo | None] = {e.peer_id: None for e in table.entries()}
    for info in addresses:
        peer_id = info.peer_id.to_base58()
        if peer_id == table.self_id:
            continue  # a copy of us, perhaps: see twin_probes_due
        entry = table.get(peer_id)
        if (entry is None or not entry.alive) and peer_id != table.self_id:
            targets[peer_id] = info
    return targets


def twin_probes_due(addresses: Iterable[PeerInfo], self_id: str, own_addrs: Iterable[str],
                    probed: dict[str, float], now: float, interval: float) -> list[PeerInfo]:
    """Bootstrap or discovered addresses that name our own peer id but are not ours (a copied
    home started elsewhere, or our own invite pasted back), each due at most every
    ``interval`` seconds: ``probed`` (addresses -> time of their last probe) is updated for
    the ones returned."""
    own = {a.split("/p2p/")[0] for a in own_addrs}
    due = []
    for info in addresses:
        if info.peer_id.to_base58() != self_id:
            continue
        addrs = [a for a in info.addrs if str(a) not in own]
        key = ",".join(sorted(str(a) for a in addrs))
        if not addrs or now - probed.get(key, -interval) < interval:
            continue
        probed[key] = now
        due.append(PeerInfo(info.peer_id, addrs))
    return due
