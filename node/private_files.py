"""Private files in the node's home: written atomically, mode 0600, durable; the API token.

Kept free of libp2p imports (like ``node_file.py``): the CLI reads the API token on every
command, and importing libp2p costs about a second.
"""

from __future__ import annotations

import os
import secrets
import stat
from pathlib import Path

from calinode.protocol.errors import IdentityError

__all__ = ["API_TOKEN_FILE", "check_private", "fsync_dir", "load_or_create_api_token",
           "read_api_token", "write_private_file"]

API_TOKEN_FILE = "api.token"


def check_private(path: Path) -> None:
    """Refuse a key or token file that other users can read."""
    mode = path.stat().st_mode
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise IdentityError(
            f"{path} is readable by other users (mode {stat.S_IMODE(mode):o}); "
            f"run: chmod 600 {path}"
        )


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
        check_private(path)
        token = path.read_text(encoding="ascii").strip()
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError) as exc:
        raise IdentityError(f"cannot read the API token {path}: {exc}") from exc
    if not token:
        raise IdentityError(f"the API token file {path} is empty; delete it and restart the node")
    return token
