import os
from pathlib import Path

import pytest

from calinode.node.identity import (
    format_swarm_key,
    load_or_create_identity,
    parse_swarm_key,
    peer_id_of,
    read_swarm_key,
    write_swarm_key,
)
from calinode.protocol.errors import IdentityError


def test_identity_is_created_once_with_mode_0600(tmp_path: Path) -> None:
    first = load_or_create_identity(tmp_path / "home")
    key_file = tmp_path / "home" / "identity.key"
    assert oct(key_file.stat().st_mode & 0o777) == "0o600"
    again = load_or_create_identity(tmp_path / "home")
    assert peer_id_of(first) == peer_id_of(again)
    assert peer_id_of(first).startswith("12D3KooW")


def test_identity_readable_by_others_is_refused(tmp_path: Path) -> None:
    load_or_create_identity(tmp_path)
    os.chmod(tmp_path / "identity.key", 0o644)
    with pytest.raises(IdentityError, match="chmod 600"):
        load_or_create_identity(tmp_path)


def test_corrupt_identity_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "identity.key"
    path.write_bytes(b"garbage")
    path.chmod(0o600)
    with pytest.raises(IdentityError, match="cannot load"):
        load_or_create_identity(tmp_path)


def test_swarm_key_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "swarm.key"
    key = write_swarm_key(path)
    assert oct(path.stat().st_mode & 0o777) == "0o600"
    assert read_swarm_key(path) == key and len(key) == 64
    assert path.read_text().startswith("/key/swarm/psk/1.0.0/\n/base16/\n")
    with pytest.raises(IdentityError, match="exists"):
        write_swarm_key(path)


@pytest.mark.parametrize("text", ["", "zz" * 32, "ab" * 31, "/key/swarm/psk/1.0.0/\n/base64/\nxx"])
def test_bad_swarm_keys(text: str) -> None:
    with pytest.raises(IdentityError):
        parse_swarm_key(text)


def test_bare_hex_swarm_key_is_accepted() -> None:
    key = "ab" * 32
    assert parse_swarm_key(key) == key == parse_swarm_key(format_swarm_key(key))
