"""A collection's incarnation and replication changes (issue 10): ``created`` names the
incarnation of a name, a replication change is a new signed version only the owner or an
admin may make, and definitions made before ``created`` existed still verify."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest
from libp2p.crypto.ed25519 import create_new_key_pair
from libp2p.peer.id import ID

from calinode.node.index.collections import CollectionBook, sign_definition, verify_definition
from calinode.node.index.replicas import _open_replica
from calinode.protocol.collections import CollectionDef
from calinode.protocol.errors import ErrorCode, JobError, ProtocolError

OWNER, MEMBER = create_new_key_pair(), create_new_key_pair()


def owned(**overrides: object) -> CollectionDef:
    settings: dict[str, object] = {
        "name": "papers", "model": "m", "model_sha256": "a" * 64, "dim": 4, "pooling": "mean",
        "normalize": True, "owner": ID.from_pubkey(OWNER.public_key).to_base58()}
    settings.update(overrides)
    return CollectionDef(**settings)  # type: ignore[arg-type]


def test_created_travels_and_is_left_out_when_unknown() -> None:
    legacy = owned()
    assert "created" not in legacy.to_wire()  # old definitions keep their exact wire form
    signed = sign_definition(legacy, OWNER)
    verify_definition(CollectionDef.from_wire(signed.to_wire()))
    again = sign_definition(owned(version=3, created=3), OWNER)
    wire = again.to_wire()
    assert wire["created"] == 3
    assert CollectionDef.from_wire(wire) == again
    verify_definition(CollectionDef.from_wire(wire))
    with pytest.raises(JobError) as err:  # the incarnation is signed like every field
        verify_definition(replace(again, created=1))
    assert err.value.code is ErrorCode.UNAUTHORIZED


@pytest.mark.parametrize("created", [-1, 4, True, 1.5, "1"])
def test_created_is_an_int_no_later_than_the_version(created: object) -> None:
    wire = owned(version=3).to_wire()
    wire["created"] = created
    with pytest.raises(ProtocolError):
        CollectionDef.from_wire(wire)


def test_a_replication_change_needs_the_owner(tmp_path: Path) -> None:
    book = CollectionBook(tmp_path)
    first = sign_definition(owned(replicas=1, created=1), OWNER)
    assert book.merge(first)
    raised = sign_definition(replace(first, replicas=2, version=2), OWNER)
    assert book.merge(raised) and book.get("papers").replicas == 2
    foreign = sign_definition(replace(raised, replicas=5, version=3), MEMBER)
    with pytest.raises(JobError) as err:
        book.merge(foreign)
    assert err.value.code is ErrorCode.UNAUTHORIZED
    assert book.get("papers").replicas == 2
    on_disk = json.loads((tmp_path / "papers.json").read_text())
    assert on_disk["replicas"] == 2 and on_disk["created"] == 1


def test_a_replica_of_an_earlier_incarnation_is_deleted_at_open(tmp_path: Path) -> None:
    folder = tmp_path / "papers" / "0"
    store, _, _ = _open_replica(folder, dim=4, index_kind="flat", created=1)
    store.close()
    (folder / "READY").write_text("ready\n")
    store, _, ready = _open_replica(folder, dim=4, index_kind="flat", created=1)
    store.close()
    assert ready  # the same incarnation: kept as it is
    store, _, ready = _open_replica(folder, dim=8, index_kind="flat", created=3)
    assert not ready and store.count() == (0, 0)  # another dimension opens: it starts empty
    store.close()
    assert (folder / "INCARNATION").read_text().strip() == "3"

    with pytest.raises(JobError) as err:  # an outdated definition never deletes newer data
        _open_replica(folder, dim=4, index_kind="flat", created=1)
    assert err.value.code is ErrorCode.SHARD_UNAVAILABLE
    assert (folder / "INCARNATION").read_text().strip() == "3"
