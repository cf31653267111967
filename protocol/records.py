"""Capability records and peer exchange: what the meta protocol carries.

Every node advertises itself with a signed :class:`CapabilityRecord` (``t="rec"``): its peer id
and public key, its addresses, its software and protocol versions, what it can do
(``capabilities``: models with sha256/dim/pooling, shards held, measured throughput...), its
current :class:`Load`, a sequence number that grows with every new record, and when it was
issued.  Heartbeats carry a :class:`PeerExchange` (``t="px"``): the sender's own record plus the
records it knows, so that one bootstrap address reveals the swarm.

Signing happens outside this package (it needs the node's key); here are only the bytes to sign:
:meth:`CapabilityRecord.signing_payload` is the *canonical* msgpack encoding of every wire field
except ``signature`` (``"t"`` included, so a record signature cannot be replayed as anything
else):

- every map, at any depth, is written with its keys in sorted order (Python ``str`` order, which
  is also the byte order of their UTF-8 encodings), whatever the insertion order of the dicts;
- tuples are written as arrays, ints in their shortest msgpack form, floats as float64, ``str``
  as str and ``bytes`` as bin.

So one record always gives the same bytes, and so does the same record decoded by a peer.
``capabilities`` may hold only ``None``, ``bool``, 64-bit ``int``, ``float``, ``str``, ``bytes``,
lists/tuples and str-keyed dicts, nested at most :data:`MAX_CAPABILITY_DEPTH` deep; anything else
is refused when the record is built.  Nested tuples come back from the wire as lists.

Sizes.  A record is at most :data:`MAX_RECORD_BYTES` of msgpack (:func:`record_size`); that is
enough for the largest capabilities the typed view (``capabilities.py``) allows, and a node
checks it before spending a signature verification on the record.  A peer exchange carries at
most :data:`MAX_EXCHANGE_BYTES` of records: :meth:`PeerExchange.within_budget` puts the sender's
own record first and adds known records only while they fit, so a heartbeat always carries the
sender's own record however large the records it knows are.  The meta protocol reads frames
with :data:`META_LIMITS`, sized for that budget (far below the 16 MiB job frame).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, ClassVar, Final

from .codec import pack
from .limits import DEFAULT_LIMITS, Limits
from .validation import (
    BASE58,
    MAX_INT64,
    check_bytes,
    check_instance,
    check_int,
    check_str,
    check_str_map,
    from_peer,
    invalid,
    wire_fields,
)

__all__ = [
    "MAX_ADDRS",
    "MAX_CAPABILITY_DEPTH",
    "MAX_EXCHANGE_BYTES",
    "MAX_KNOWN_RECORDS",
    "MAX_RECORD_BYTES",
    "META_LIMITS",
    "CapabilityRecord",
    "Load",
    "PeerExchange",
    "record_size",
]

#: Most addresses in one record, and the longest address (characters).
MAX_ADDRS: Final = 32
MAX_ADDR_LEN: Final = 256
#: Longest public key and signature (bytes), peer id and version strings (characters).
MAX_PUBLIC_KEY: Final = 128
MAX_SIGNATURE: Final = 256
MAX_PEER_ID_LEN: Final = 128
MAX_VERSION_LEN: Final = 64
#: Deepest nesting of lists and maps inside ``capabilities``.
MAX_CAPABILITY_DEPTH: Final = 16
#: Most records a :class:`PeerExchange` may carry besides the sender's own.
MAX_KNOWN_RECORDS: Final = 256

#: Largest msgpack encoding of one record (the largest the capabilities view allows is ~215 KiB).
MAX_RECORD_BYTES: Final = 256 * 1024
#: Most record bytes one peer exchange carries (own record first, then known ones that fit).
MAX_EXCHANGE_BYTES: Final = 1024 * 1024
#: What the meta protocol accepts in one frame: the record budget plus the exchange's envelope.
#: ``max_map`` holds the largest map the capabilities view allows (1024 held shards of one
#: collection); everything else keeps the default.
META_LIMITS: Final = Limits(max_frame=MAX_EXCHANGE_BYTES + 4096, max_map=2048)

_MIN_WIRE_INT: Final = -(2**63)
_MAX_WIRE_INT: Final = 2**64 - 1


def _canonical(value: object, depth: int, where: str) -> object:
    """``value`` with every dict rebuilt in sorted key order and tuples turned into lists."""
    if value is None or isinstance(value, (bool, str, bytes, float)):
        return value
    if isinstance(value, int):
        if not _MIN_WIRE_INT <= value <= _MAX_WIRE_INT:
            invalid(f"{where}: int {value} does not fit 64 bits")
        return value
    if depth >= MAX_CAPABILITY_DEPTH:
        invalid(f"{where}: nested deeper than {MAX_CAPABILITY_DEPTH}")
    if isinstance(value, (list, tuple)):
        return [_canonical(item, depth + 1, where) for item in value]
    if isinstance(value, dict):
        if not all(isinstance(key, str) for key in value):
            invalid(f"{where}: map keys must be str")
        return {key: _canonical(value[key], depth + 1, where) for key in sorted(value)}
    invalid(f"{where}: values of type {type(value).__name__} cannot be signed")


def record_size(record: CapabilityRecord) -> int:
    """Bytes of ``record``'s msgpack encoding (what it costs in a peer exchange)."""
    return len(pack(record.to_wire()))


@dataclass(frozen=True, kw_only=True, slots=True)
class Load:
    """How busy a node is: jobs running now, and jobs waiting for a slot."""

    in_flight: int
    queue_depth: int

    def __post_init__(self) -> None:
        check_int("load.in_flight", self.in_flight, lo=0, hi=MAX_INT64)
        check_int("load.queue_depth", self.queue_depth, lo=0, hi=MAX_INT64)

    def to_wire(self) -> dict[str, Any]:
        return {"in_flight": self.in_flight, "queue_depth": self.queue_depth}

    @classmethod
    def from_wire(cls, obj: object) -> Load:
        fields = wire_fields(obj, cls, None)
        with from_peer():
            return cls(**fields)


@dataclass(frozen=True, kw_only=True, slots=True)
class CapabilityRecord:
    """A node's signed self-description (``t="rec"``); newer ``seq`` replaces older."""

    TAG: ClassVar[str] = "rec"

    #: libp2p peer id, base58 (``12D3KooW...``).
    peer_id: str
    #: The serialized public key the peer id derives from (at most 128 bytes).
    public_key: bytes
    #: Multiaddrs the node listens on (at most 32, each at most 256 characters).
    addrs: tuple[str, ...]
    #: calinode version, e.g. ``"0.1.0"``.
    version: str
    #: Wire protocol version, :data:`calinode.protocol.ids.PROTOCOL_VERSION`.
    protocol_version: str
    #: Free-form description of what the node can do (models, shards, throughput...).
    capabilities: dict[str, Any]
    load: Load
    #: Grows with every record the node issues; the highest one wins.
    seq: int
    #: Wall-clock time of issue, milliseconds since the Unix epoch.
    issued_at_ms: int
    #: Signature of :meth:`signing_payload` (empty until signed; at most 256 bytes).
    signature: bytes = b""

    def __post_init__(self) -> None:
        check_str("peer_id", self.peer_id, max_len=MAX_PEER_ID_LEN, pattern=BASE58)
        check_bytes("public_key", self.public_key, min_len=1, max_len=MAX_PUBLIC_KEY)
        check_instance("addrs", self.addrs, tuple)
        if len(self.addrs) > MAX_ADDRS:
            invalid(f"at most {MAX_ADDRS} addrs, got {len(self.addrs)}")
        for addr in self.addrs:
            check_str("addrs item", addr, max_len=MAX_ADDR_LEN)
        check_str("version", self.version, max_len=MAX_VERSION_LEN)
        check_str("protocol_version", self.protocol_version, max_len=MAX_VERSION_LEN)
        check_str_map("capabilities", self.capabilities)
        _canonical(self.capabilities, 0, "capabilities")
        check_instance("load", self.load, Load)
        check_int("seq", self.seq, lo=0, hi=MAX_INT64)
        check_int("issued_at_ms", self.issued_at_ms, lo=0, hi=MAX_INT64)
        check_bytes("signature", self.signature, max_len=MAX_SIGNATURE)

    def to_wire(self) -> dict[str, Any]:
        return {
            "t": self.TAG,
            "peer_id": self.peer_id,
            "public_key": self.public_key,
            "addrs": list(self.addrs),
            "version": self.version,
            "protocol_version": self.protocol_version,
            "capabilities": self.capabilities,
            "load": self.load.to_wire(),
            "seq": self.seq,
            "issued_at_ms": self.issued_at_ms,
            "signature": self.signature,
        }

    @classmethod
    def from_wire(cls, obj: object, limits: Limits = DEFAULT_LIMITS) -> CapabilityRecord:
        fields = wire_fields(obj, cls, cls.TAG)
        with from_peer():
            check_instance("addrs", fields["addrs"], list)
            fields["addrs"] = tuple(fields["addrs"])
            fields["load"] = Load.from_wire(fields["load"])
            return cls(**fields)

    def signing_payload(self) -> bytes:
        """Canonical msgpack bytes of every wire field but ``signature`` (see module doc)."""
        wire = self.to_wire()
        del wire["signature"]
        return pack(_canonical(wire, -1, "record"))

    def with_signature(self, signature: bytes) -> CapabilityRecord:
        """The same record carrying ``signature``."""
        return dataclasses.replace(self, signature=signature)


@dataclass(frozen=True, kw_only=True, slots=True)
class PeerExchange:
    """Heartbeat of the meta protocol (``t="px"``): our record and the records we know."""

    TAG: ClassVar[str] = "px"

    #: The sender's own record.
    record: CapabilityRecord
    #: Other records the sender holds (at most 256).
    known: tuple[CapabilityRecord, ...]

    def __post_init__(self) -> None:
        check_instance("record", self.record, CapabilityRecord)
        check_instance("known", self.known, tuple)
        if len(self.known) > MAX_KNOWN_RECORDS:
            invalid(f"at most {MAX_KNOWN_RECORDS} known records, got {len(self.known)}")
        for record in self.known:
            check_instance("known item", record, CapabilityRecord)

    @classmethod
    def within_budget(cls, record: CapabilityRecord, known: Iterable[CapabilityRecord], *,
                      budget: int = MAX_EXCHANGE_BYTES,
                      size_of: Callable[[CapabilityRecord], int] = record_size) -> PeerExchange:
        """``record`` first, then as many of ``known`` (in order) as fit in ``budget`` bytes.

        The sender's own record always goes in (it is its heartbeat); a known record that does
        not fit is skipped and a smaller one after it may still fit. ``size_of`` lets a caller
        that already knows the sizes skip re-encoding every record.
        """
        used = record_size(record)
        chosen: list[CapabilityRecord] = []
        for other in known:
            if len(chosen) >= MAX_KNOWN_RECORDS:
                break
            size = size_of(other)
            if used + size <= budget:
                chosen.append(other)
                used += size
        return cls(record=record, known=tuple(chosen))

    def to_wire(self) -> dict[str, Any]:
        return {
            "t": self.TAG,
            "record": self.record.to_wire(),
            "known": [record.to_wire() for record in self.known],
        }

    @classmethod
    def from_wire(cls, obj: object, limits: Limits = DEFAULT_LIMITS) -> PeerExchange:
        fields = wire_fields(obj, cls, cls.TAG)
        with from_peer():
            check_instance("known", fields["known"], list)
            if len(fields["known"]) > MAX_KNOWN_RECORDS:
                invalid(f"at most {MAX_KNOWN_RECORDS} known records, got {len(fields['known'])}")
            return cls(
                record=CapabilityRecord.from_wire(fields["record"], limits),
                known=tuple(CapabilityRecord.from_wire(r, limits) for r in fields["known"]),
            )
