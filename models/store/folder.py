"""A shard store's folder on disk::

    docs.sqlite (+ -wal, -shm)   the document store: WAL mode, synchronous=FULL
    LOCK                         flock()ed while a ShardStore has the folder open

The lock keeps two stores (two daemons on one home, or a test's second open) from writing one
folder; :func:`fsync_dir` makes the creation of the files durable.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path
from typing import Final

from calinode.protocol.errors import ConfigError

__all__ = ["DB_FILE", "LOCK_FILE", "fsync_dir", "lock_folder"]

DB_FILE: Final = "docs.sqlite"
LOCK_FILE: Final = "LOCK"


def lock_folder(path: Path) -> int:
    """Create ``path`` if needed and flock its LOCK file; the open fd holds the lock
    (``ConfigError`` when another store holds it)."""
    path.mkdir(parents=True, exist_ok=True)
    fd = os.open(path / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise ConfigError(f"shard store {path} is already open") from None
    return fd


def fsync_dir(path: Path) -> None:
    """Make the creation of the store's files durable (their directory entries)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
