"""Owner-signed collection definitions: who may create, change and drop a collection."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
from libp2p.crypto.ed25519 import create_new_key_pair
from libp2p.crypto.keys import KeyPair
from libp2p.peer.id import ID

from calinode.node.index.collections import CollectionBook, sign_definition, verify_definition
from calinode.protocol.collections import CollectionDef
from calinode.protocol.errors import ErrorCode, JobError


def peer(key: KeyPair) -> str:
    return ID.from_pubkey(key.public_key).to_base58()


OWNER, ADMIN, MEMBER = create_new_key_pair(), create_new_key_pair(), create_new_key_pair()


def owned(**overrides: object) -> CollectionDef:
    settings: dict[str, object] = {
        "name": "papers", "model": "m", "model_sha256": "a" * 64, "dim": 4, "pooling": "mean",
        "normalize": True, "owner": peer(OWNER), "admins": (peer(ADMIN),)}
    settings.update(overrides)
    return CollectionDef(**settings)  # type: ignore[arg-type]


def refused(definition: CollectionDef, book: CollectionBook | None = None) -> ErrorCode:
    with pytest.raises(JobError) as err:
        verify_definition(definition)
        if book is not None:
            book.merge(definition)
    return err.value.code


def test_signed_by_owner_or_admin_verifies_and_survives_the_wire() -> None:
    for key in (OWNER, ADMIN):
        signed = sign_definition(owned(), key)
        verify_definition(signed)
        verify_definition(CollectionDef.from_wire(signed.to_wire()))


def test_unsigned_forged_and_foreign_signatures_are_refused() -> None:
    assert refused(owned()) is ErrorCode.UNAUTHORIZED  # unsigned
    assert refused(sign_definition(owned(), MEMBER)) is ErrorCode.UNAUTHORIZED  # not admin
    signed = sign_definition(owned(), OWNER)
    assert refused(replace(signed, shards=2)) is ErrorCode.UNAUTHORIZED  # changed after signing
    assert refused(replace(signed, signer_key=sign_definition(
        owned(), ADMIN).signer_key)) is ErrorCode.UNAUTHORIZED  # someone else's key
    assert refused(sign_definition(owned(owner=""), OWNER)) is ErrorCode.UNAUTHORIZED


def test_only_the_known_owner_or_admins_may_change_or_drop(tmp_path: Path) -> None:
    book = CollectionBook(tmp_path)
    original = sign_definition(owned(), OWNER)
    verify_definition(original)
    assert book.merge(original)
    # a member makes itself the owner of a newer version: verifies alone, refused by the book
    takeover = sign_definition(owned(owner=peer(MEMBER), admins=(), version=2), MEMBER)
    assert refused(takeover, book) is ErrorCode.UNAUTHORIZED
    drop_by_member = sign_definition(replace(original.dropped_copy(), admins=(peer(MEMBER),)),
                                     MEMBER)
    assert refused(drop_by_member, book) is ErrorCode.UNAUTHORIZED
    assert not book.get("papers").dropped
    # the admin may drop it; then the name is free for a new owner
    dropped = sign_definition(original.dropped_copy(), ADMIN)
    verify_definition(dropped)
    assert book.merge(dropped) and book.names() == []
    fresh = sign_definition(owned(owner=peer(MEMBER), admins=(), version=3), MEMBER)
    verify_definition(fresh)
    assert book.merge(fresh) and book.get("papers").owner == peer(MEMBER)
