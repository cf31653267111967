"""The collection definitions this node knows, on disk and in memory, and how they converge.

:class:`~calinode.protocol.collections.CollectionDef` (protocol/collections.py) is the typed,
bounded view of one definition; this module keeps them. Definitions spread through the swarm
inside capability records: every node advertises the definitions it knows, and a node keeps,
per name, the one with the highest ``version`` (ties: the lexically larger canonical JSON, so
every node picks the same). Dropping a collection is a definition with ``dropped=True`` and a
higher version.

:class:`CollectionBook` persists them in ``$CALINODE_HOME/collections/<name>.json`` (small
files: plain blocking writes, called from a worker thread by the daemon). A file that does not
parse into a valid definition at start-up is *set aside*: renamed to
``<name>.json.rejected`` with the reason in ``<name>.json.rejected.why``, logged, and never
fatal, so nothing a peer once sent can stop the node at its next start. The book holds at most
:data:`~calinode.protocol.capabilities.MAX_COLLECTIONS` names (dropped ones included): a new
name past that is refused, so peers cannot grow it without bound.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

from libp2p.crypto.keys import KeyPair
from libp2p.crypto.serialization import deserialize_public_key
from libp2p.peer.id import ID

from calinode.node.private_files import fsync_dir
from calinode.protocol.capabilities import MAX_COLLECTIONS
from calinode.protocol.collections import CollectionDef
from calinode.protocol.errors import CalinodeError, ErrorCode, JobError

__all__ = ["CollectionBook", "CollectionDef", "set_aside", "sign_definition",
           "verify_definition"]

log = logging.getLogger(__name__)

class CollectionBook:
    """The definitions this node knows, on disk and in memory."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self._defs: dict[str, CollectionDef] = {}
        self._lock = threading.Lock()  # merges come from worker threads
        self.set_aside: list[str] = []  # files found invalid at start-up
        if folder.is_dir():
            for path in sorted(folder.glob("*.json")):
                self._load(path)

    def _load(self, path: Path) -> None:
        try:
            definition = CollectionDef.from_wire(json.loads(path.read_text(encoding="utf-8")))
            if definition.name != path.stem:
                raise JobError(f"the file names {definition.name!r}", code=ErrorCode.BAD_REQUEST)
            if len(self._defs) >= MAX_COLLECTIONS:
                raise JobError(f"over the cap of {MAX_COLLECTIONS} collections",
                               code=ErrorCode.BAD_REQUEST)
        except (OSError, ValueError, CalinodeError) as exc:
            reason = exc.message if isinstance(exc, CalinodeError) else repr(exc)
            set_aside(path, reason)
            self.set_aside.append(path.name)
            return
        self._defs[definition.name] = definition

    def get(self, name: str, *, include_dropped: bool = False) -> CollectionDef:
        found = self._defs.get(name)
        if found is None or (found.dropped and not include_dropped):
            known = ", ".join(sorted(self.names())) or "none"
            raise JobError(f"no collection {name!r} (known: {known}); "
                           f"create it: calinode collections create {name}",
                           code=ErrorCode.UNKNOWN_COLLECTION)
        return found

    def names(self) -> list[str]:
        return sorted(n for n, d in self._defs.items() if not d.dropped)

    def all(self) -> list[CollectionDef]:
        return [self._defs[n] for n in sorted(self._defs)]

    def merge(self, definition: CollectionDef) -> bool:
        """Keep ``definition`` if it is newer than ours; True when something changed.

        A newer version of a collection we know must keep its owner and be signed by the
        known owner or one of the known admins (``UNAUTHORIZED`` otherwise), so a member that
        is not the owner can neither drop nor redefine it. Once dropped, the name is free.
        Signatures themselves are checked by :func:`verify_definition` before peer input gets
        here."""
        with self._lock:
            current = self._defs.get(definition.name)
            if current is not None and not definition.newer_than(current):
                return False
            if current is not None and current.owner and not current.dropped and (
                    definition.owner != current.owner
                    or not current.may_change(definition.signer)):
                raise JobError(f"collection {definition.name} belongs to {current.owner}: only "
                               "its owner or an admin may change or drop it",
                               code=ErrorCode.UNAUTHORIZED)
            if current is None and len(self._defs) >= MAX_COLLECTIONS:
                raise JobError(f"this node already knows {MAX_COLLECTIONS} collections; "
                               f"{definition.name!r} was not added", code=ErrorCode.OVERLOADED)
            self._write(definition)
            self._defs[definition.name] = definition
            return True

    def admit(self, definition: CollectionDef, *, may_own: Callable[[str], bool]) -> bool:
        """Take in a definition a peer sent (blocking): nothing to do when we hold this very
        one; else its signature must verify, a collection new to us (or dropped) must be owned
        by a peer ``may_own`` accepts, and :meth:`merge`'s owner rule applies. Raises
        ``UNAUTHORIZED``; True when something changed."""
        with self._lock:
            current = self._defs.get(definition.name)
        if current == definition:
            return False
        verify_definition(definition)
        if (current is None or current.dropped) and not may_own(definition.owner):
            raise JobError(f"collection {definition.name} is owned by {definition.owner}, a "
                           "peer this node does not host collections for (an open swarm hosts "
                           "only its own and its --trust peers' collections)",
                           code=ErrorCode.UNAUTHORIZED)
        return self.merge(definition)

    def _write(self, definition: CollectionDef) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        path = self.folder / f"{definition.name}.json"
        tmp = path.with_suffix(".tmp")
        with tmp.open("w", encoding="utf-8") as fh:
            fh.write(definition.canonical() + "\n")
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
        fsync_dir(self.folder)  # the rename itself must survive a crash


def set_aside(path: Path, reason: str) -> None:
    """Rename an invalid file to ``<name>.rejected`` with its reason beside it (blocking)."""
    target = path.with_name(path.name + ".rejected")
    log.error("set aside %s (%s): %s; the node starts without it", path, target.name, reason)
    try:
        os.replace(path, target)
        target.with_name(target.name + ".why").write_text(reason[:2000] + "\n", encoding="utf-8")
    except OSError as exc:
        log.error("could not set aside %s: %s", path, exc)


def sign_definition(definition: CollectionDef, key_pair: KeyPair) -> CollectionDef:
    """``definition`` signed by ``key_pair``'s peer (which becomes its ``signer``)."""
    signer = ID.from_pubkey(key_pair.public_key).to_base58()
    unsigned = replace(definition, signer=signer,
                       signer_key=key_pair.public_key.serialize().hex(), signature="")
    signature = key_pair.private_key.sign(unsigned.signing_payload())
    return replace(unsigned, signature=signature.hex())


def verify_definition(definition: CollectionDef) -> None:
    """Raise ``UNAUTHORIZED`` unless the definition is signed by its owner or an admin."""
    def refuse(why: str) -> JobError:
        return JobError(f"collection definition {definition.name}: {why}",
                        code=ErrorCode.UNAUTHORIZED)

    if not definition.owner or not definition.signature:
        raise refuse("unsigned (it names no owner)")
    if not definition.may_change(definition.signer):
        raise refuse(f"signed by {definition.signer}, neither its owner nor an admin")
    try:
        key = deserialize_public_key(bytes.fromhex(definition.signer_key))
        if ID.from_pubkey(key).to_base58() != definition.signer:
            raise refuse("the signer's key does not match its peer id")
        valid = key.verify(definition.signing_payload(), bytes.fromhex(definition.signature))
    except JobError:
        raise
    except Exception:
        valid = False
    if not valid:
        raise refuse("forged signature")
