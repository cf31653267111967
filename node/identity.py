"""The node's persistent Ed25519 identity and the swarm's pre-shared key, on disk.

The identity lives in ``$CALINODE_HOME/identity.key`` (libp2p protobuf encoding, mode 0600)
and is created on first start; a key file that others can read is refused. (The local API's
token and the file helpers are in ``private_files.py``, free of libp2p so the CLI starts
fast.) The swarm key uses the go-libp2p ``swarm.key`` layout (``/key/swarm/psk/1.0.0/``,
``/base16/``, 64 hex digits) and is written by ``calinode keygen``.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path

from libp2p.crypto.ed25519 import create_new_key_pair
from libp2p.crypto.keys import KeyPair
from libp2p.identity_utils import load_identity, save_identity
from libp2p.peer.id import ID

from calinode.node.private_files import check_private as _check_private
from calinode.node.private_files import write_private_file
from calinode.protocol.errors import IdentityError

IDENTITY_FILE = "identity.key"
_PSK_HEADER = "/key/swarm/psk/1.0.0/"
_PSK_ENCODING = "/base16/"


def load_or_create_identity(home: Path) -> KeyPair:
    """Load the node key from ``home``, creating home and key on first use."""
    path = home / IDENTITY_FILE
    if path.exists():
        _check_private(path)
        try:
            return load_identity(path)
        except (OSError, ValueError) as exc:
            raise IdentityError(f"cannot load node identity {path}: {exc}") from exc
    home.mkdir(parents=True, exist_ok=True, mode=0o700)
    key_pair = create_new_key_pair()
    tmp = path.with_suffix(".tmp")
    save_identity(key_pair, tmp)
    write_private_file(path, tmp.read_bytes())  # 0600, fsynced, folder fsynced after rename
    tmp.unlink()
    return key_pair


def peer_id_of(key_pair: KeyPair) -> str:
    return ID.from_pubkey(key_pair.public_key).to_base58()


def new_swarm_key() -> str:
    """A fresh 32-byte swarm key as 64 hex digits."""
    return secrets.token_hex(32)


def format_swarm_key(hex_key: str) -> str:
    return f"{_PSK_HEADER}\n{_PSK_ENCODING}\n{hex_key}\n"


def parse_swarm_key(text: str) -> str:
    """Accept the go-libp2p layout or a bare line of 64 hex digits; return the hex key."""
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    if lines[:1] == [_PSK_HEADER]:
        if len(lines) != 3 or lines[1] != _PSK_ENCODING:
            raise IdentityError("swarm key must be /key/swarm/psk/1.0.0/, /base16/, 64 hex digits")
        lines = lines[2:]
    if len(lines) != 1:
        raise IdentityError("swarm key file must hold exactly one key")
    key = lines[0].lower()
    if len(key) != 64 or any(c not in "0123456789abcdef" for c in key):
        raise IdentityError("swarm key must be 64 hex digits (32 bytes); make one: calinode keygen")
    return key


def read_swarm_key(path: Path) -> str:
    try:
        _check_private(path)
        return parse_swarm_key(path.read_text(encoding="ascii"))
    except FileNotFoundError:
        raise IdentityError(
            f"swarm key {path} not found; make one: calinode keygen --out {path}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise IdentityError(f"cannot read swarm key {path}: {exc}") from exc


def write_swarm_key(path: Path, hex_key: str | None = None) -> str:
    """Write a new (or the given) swarm key to ``path`` with mode 0600; refuse to overwrite."""
    key = parse_swarm_key(hex_key) if hex_key else new_swarm_key()
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise IdentityError(f"{path} exists; remove it first or choose another --out") from None
    with os.fdopen(fd, "w", encoding="ascii") as fh:
        fh.write(format_swarm_key(key))
    return key
