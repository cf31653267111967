"""The node's persistent Ed25519 identity and the swarm's pre-shared key, on disk.

The identity lives in ``$CALINODE_HOME/identity.key`` (libp2p protobuf encoding, mode 0600)
and is created on first start; a key file that others can read is refused. The local API's
bearer token lives beside it in ``api.token`` (0600), also created on first start. The swarm
key uses the go-libp2p ``swarm.key`` layout (``/key/swarm/psk/1.0.0/``, ``/base16/``, 64 hex
digits) and is written by ``calinode keygen``.
"""

from __future__ import annotations

import os
import secrets
import stat
from pathlib import Path

from libp2p.crypto.ed25519 import create_new_key_pair
from libp2p.crypto.keys import KeyPair
from libp2p.identity_utils import load_identity, save_identity
from libp2p.peer.id import ID

from calinode.protocol.errors import IdentityError

IDENTITY_FILE = "identity.key"
API_TOKEN_FILE = "api.token"
_PSK_HEADER = "/key/swarm/psk/1.0.0/"
_PSK_ENCODING = "/base16/"


def _check_private(path: Path) -> None:
    mode = path.stat().st_mode
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise IdentityError(
            f"{path} is readable by other users (mode {stat.S_IMODE(mode):o}); "
            f"run: chmod 600 {path}"
        )


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


def write_private_file(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically, mode 0600, durable: the file is fsynced before
    its rename and the folder after it, so a crash leaves the old file or the new one."""
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.fchmod(fd, 0o600)
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    fsync_dir(path.parent)


def fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def load_or_create_api_token(home: Path) -> str:
    """The local API's bearer token, created (0600) on first use."""
    token = read_api_token(home)
    if token is not None:
        return token
    home.mkdir(parents=True, exist_ok=True, mode=0o700)
    token = secrets.token_urlsafe(32)
    write_private_file(home / API_TOKEN_FILE, (token + "\n").encode("ascii"))
    return token


def read_api_token(home: Path) -> str | None:
    """The token in ``home``, or None when there is none yet; refuses a file others can read."""
    path = home / API_TOKEN_FILE
    try:
        _check_private(path)
        token = path.read_text(encoding="ascii").strip()
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError) as exc:
        raise IdentityError(f"cannot read the API token {path}: {exc}") from exc
    if not token:
        raise IdentityError(f"the API token file {path} is empty; delete it and restart the node")
    return token


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
