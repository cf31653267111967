"""Who is a member: who may read and write a collection's documents, and whom this node sends
documents and prompts to. Pure decisions; the job handlers and the dispatcher ask them.

- In a **private** swarm (the default beyond loopback) the swarm key decides: only key holders
  can connect at all, so every connected peer is a member. The same holds for a keyless node
  that listens on loopback only: only processes of this machine can reach it.
- In an **open** swarm (``--open``) anyone who reaches the port may connect. Then a
  collection's documents are written only by its owner, admins and ``writers``, and read only
  by those and its ``readers`` (``UNAUTHORIZED`` otherwise); and this node sends jobs that carry
  documents or prompts (embed, embed_chunks, generate, shard writes) only to peers it trusts
  (``--trust PEER_ID``) or, for a collection's work, to that collection's members.

This node itself is always a member of what it serves.
"""

from __future__ import annotations

from dataclasses import dataclass

from calinode.protocol.collections import CollectionDef
from calinode.protocol.errors import ErrorCode, JobError

__all__ = ["AccessPolicy"]


@dataclass(frozen=True)
class AccessPolicy:
    self_id: str
    private: bool
    trusted: frozenset[str] = frozenset()

    def may_own(self, peer: str) -> bool:
        """Whether this node hosts collections owned by ``peer``."""
        return self.private or peer == self.self_id or peer in self.trusted

    def may_write(self, peer: str, definition: CollectionDef) -> bool:
        return self.private or peer == self.self_id or definition.may_write(peer)

    def may_read(self, peer: str, definition: CollectionDef) -> bool:
        return self.private or peer == self.self_id or definition.may_read(peer)

    def may_send_data(self, peer: str, definition: CollectionDef | None = None) -> bool:
        """Whether documents or prompts may go to ``peer`` (for ``definition``'s work)."""
        if self.private or peer == self.self_id or peer in self.trusted:
            return True
        return definition is not None and definition.may_read(peer)

    def require_write(self, peer: str, definition: CollectionDef) -> None:
        if not self.may_write(peer, definition):
            raise JobError(f"peer {peer} may not write collection {definition.name} (not its "
                           "owner, an admin or a writer)", code=ErrorCode.UNAUTHORIZED)

    def require_read(self, peer: str, definition: CollectionDef) -> None:
        if not self.may_read(peer, definition):
            raise JobError(f"peer {peer} may not read collection {definition.name} (not its "
                           "owner, an admin, a writer or a reader)", code=ErrorCode.UNAUTHORIZED)
