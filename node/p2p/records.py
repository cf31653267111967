"""Signing and verifying capability records with the node's libp2p key.

A record is accepted only when its public key hashes to its peer id and the signature over
``signing_payload()`` verifies. Freshness (sequence numbers) is the peer table's business;
issuing them so that they only ever grow, across restarts and clock steps, is
:class:`RecordSigner`'s.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable
from pathlib import Path

import trio
from libp2p.crypto.keys import KeyPair
from libp2p.crypto.serialization import deserialize_public_key
from libp2p.peer.id import ID

from calinode.node.private_files import write_private_file
from calinode.node.rejections import RateLimitedLog
from calinode.protocol.errors import RecordError
from calinode.protocol.messages import CapabilityRecord, Load
from calinode.protocol.validation import MAX_INT64

log = logging.getLogger(__name__)
_limited = RateLimitedLog(log)


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


SEQ_FILE = "record.seq"
#: How far (in seq units, which are milliseconds while the clock runs forward) the stored
#: reservation reaches past the highest seq issued. A new reservation is written when less than
#: half of it is left: about every half hour on a steady clock, never every heartbeat.
SEQ_RESERVE = 60 * 60 * 1000


def wall_clock_ms() -> int:
    return int(time.time() * 1000)


def load_seq_reservation(path: Path) -> int:
    """The reservation stored at ``path``; 0 when there is none (a new home).

    An unreadable file is set aside (renamed ``*.bad``) and logged, never fatal: the node then
    continues from its clock, as a node without a reservation always did."""
    try:
        text = path.read_text(encoding="ascii").strip()
    except FileNotFoundError:
        return 0
    except (OSError, UnicodeDecodeError) as exc:
        log.warning("cannot read the record sequence reservation %s: %s", path, exc)
        return 0
    if text.isdigit() and len(text) <= 19 and int(text) <= MAX_INT64:
        return int(text)
    log.warning("record sequence reservation %s is damaged (%r); set aside as %s.bad",
                path, text[:40], path.name)
    with contextlib.suppress(OSError):
        path.replace(path.with_name(path.name + ".bad"))
    return 0


def store_seq_reservation(path: Path, value: int) -> None:
    """Durably store ``value`` (0600, fsynced, atomic rename, folder fsynced)."""
    write_private_file(path, f"{value}\n".encode("ascii"))


class RecordSigner:
    """Issues this node's records with strictly increasing sequence numbers, across restarts.

    Peers keep the record with the highest ``seq`` (directly received records are judged by
    ``seq`` alone), so a node must never issue a seq lower than one it issued before, whatever
    its clock did meanwhile. The seq follows the wall clock in milliseconds while that moves
    forward, and is always above every seq issued before (``last + 1``). Across restarts, a
    *reservation* stored in the home (``record.seq``) carries that guarantee: every seq issued is
    at most the stored reservation, so a restarted node resumes above it, even when its clock
    was stepped back. The reservation is extended ahead of need (:meth:`keep_reserved`, its file
    I/O in a thread), so issuing never waits for the disk; a clock that jumps past the
    reservation makes the seq stop at it (still increasing by one) until the new one is stored.

    Without :meth:`resume` (tools, tests) there is no reservation and the seq is
    ``max(last + 1, clock())``, as before.
    """

    def __init__(self, key_pair: KeyPair, *, version: str, protocol_version: str,
                 clock: Callable[[], int] = wall_clock_ms) -> None:
        self.key_pair = key_pair
        self.peer_id = ID.from_pubkey(key_pair.public_key).to_base58()
        self.public_key = key_pair.public_key.serialize()
        self.version = version
        self.protocol_version = protocol_version
        self.clock = clock
        self._last_seq = 0
        #: the highest seq durably reserved; None: no reservation kept
        self.reserved: int | None = None
        #: seqs issued past the reservation because its extension had not been stored yet
        self.unreserved = 0
        self._due = trio.Event()
        #: the addresses of the last record issued (what "our own record" looks like)
        self.last_addrs: tuple[str, ...] = ()
        #: the first seq this run issued (records below it are from before this run)
        self.first_seq: int | None = None

    @property
    def last_seq(self) -> int:
        return self._last_seq

    # -- the reservation (pure; the file I/O is the caller's, off the event loop) -----------

    def resume(self, stored: int) -> int:
        """Continue above ``stored`` (a reservation read at start); returns the reservation
        to store before the first record goes out."""
        self._last_seq = max(self._last_seq, stored)
        target = self.next_reservation()
        self.reserved = max(stored, 0)
        return target

    async def resume_from(self, path: Path) -> None:
        """Read the reservation at ``path`` and store the next one (in threads) before any
        record goes out; then :meth:`keep_reserved` keeps it ahead."""
        stored = await trio.to_thread.run_sync(load_seq_reservation, path)
        target = self.resume(stored)
        await trio.to_thread.run_sync(store_seq_reservation, path, target)
        self.stored(target)

    def next_reservation(self) -> int:
        return min(MAX_INT64, max(self._last_seq, self.clock()) + SEQ_RESERVE)

    def stored(self, value: int) -> None:
        """``value`` is durably stored: seqs up to it may be issued."""
        self.reserved = max(self.reserved or 0, value)
        if not self.reservation_due:
            self._due = trio.Event()

    @property
    def reservation_due(self) -> bool:
        """Less than half the reservation is left (or none was stored yet)."""
        return self.reserved is not None and self.reserved - self._last_seq < SEQ_RESERVE // 2

    async def keep_reserved(self, path: Path) -> None:
        """Extend the stored reservation whenever :meth:`issue` asks (runs forever)."""
        while True:
            if not self.reservation_due:
                await self._due.wait()
            target = self.next_reservation()
            try:
                await trio.to_thread.run_sync(store_seq_reservation, path, target)
            except OSError as exc:
                _limited.warning("seq", "cannot store the record sequence reservation %s: %s "
                                 "(retrying in 10 s)", path, exc)
                await trio.sleep(10)
                continue
            self.stored(target)

    # -- issuing -----------------------------------------------------------------------------

    def _next_seq(self, now_ms: int) -> int:
        seq = max(self._last_seq + 1, now_ms)
        if self.reserved is not None and seq > self.reserved:
            # the clock jumped ahead of what is stored: stop at the reservation, and past it
            # (only if the store lags that far behind) go on by one, never repeating a seq
            seq = max(self._last_seq + 1, self.reserved)
            if seq > self.reserved:
                self.unreserved += 1
        return seq

    def issue(
        self, *, addrs: tuple[str, ...], capabilities: dict[str, object], load: Load
    ) -> CapabilityRecord:
        now_ms = self.clock()
        self._last_seq = self._next_seq(now_ms)
        if self.first_seq is None:
            self.first_seq = self._last_seq
        if self.reservation_due:
            self._due.set()
        self.last_addrs = tuple(addrs)
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
