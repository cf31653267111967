"""Signing and verifying capability records with the node's libp2p key.

A record is accepted only when its public key hashes to its peer id and the signature over
``signing_payload()`` verifies. Freshness (sequence numbers) is the peer table's business.
"""

from __future__ import annotations

import time

from libp2p.crypto.keys import KeyPair
from libp2p.crypto.serialization import deserialize_public_key
from libp2p.peer.id import ID

from calinode.protocol.errors import RecordError
from calinode.protocol.messages import CapabilityRecord, Load


def sign_record(record: CapabilityRecord, key_pair: KeyPair) -> CapabilityRecord:
    return record.with_signature(key_pair.private_key.sign(record.signing_payload()))


def verify_record(record: CapabilityRecord) -> None:
    """Raise :class:`RecordError` unless the record is signed by the peer it names."""
    if not record.signature:
        raise RecordError(f"record of {record.peer_id} is unsigned")
    try:
        public_key = deserialize_public_key(record.public_key)
        owner = ID.from_pubkey(public_key).to_base58()
    except Exception as exc:
        raise RecordError(f"record of {record.peer_id} has an unreadable public key") from exc
    if owner != record.peer_id:
        raise RecordError(f"record claims peer {record.peer_id} but its key belongs to {owner}")
    try:
        valid = public_key.verify(record.signing_payload(), record.signature)
    except Exception:
        valid = False
    if not valid:
        raise RecordError(f"record of {record.peer_id} has a forged signature")


class RecordSigner:
    """Issues this node's records with strictly increasing sequence numbers.

    The sequence number is wall-clock milliseconds (bumped when the clock stalls), so a node
    restarted with the same identity outranks the records it published before it died.
    """

    def __init__(self, key_pair: KeyPair, *, version: str, protocol_version: str) -> None:
        self.key_pair = key_pair
        self.peer_id = ID.from_pubkey(key_pair.public_key).to_base58()
        self.public_key = key_pair.public_key.serialize()
        self.version = version
        self.protocol_version = protocol_version
        self._last_seq = 0

    def issue(
        self, *, addrs: tuple[str, ...], capabilities: dict[str, object], load: Load
    ) -> CapabilityRecord:
        now_ms = int(time.time() * 1000)
        self._last_seq = max(self._last_seq + 1, now_ms)
        record = CapabilityRecord(
            peer_id=self.peer_id,
            public_key=self.public_key,
            addrs=addrs,
            version=self.version,
            protocol_version=self.protocol_version,
            capabilities=dict(capabilities),
            load=load,
            seq=self._last_seq,
            issued_at_ms=now_ms,
        )
        return sign_record(record, self.key_pair)
