"""The node's home folder as one daemon owns it: private, locked, and its addresses free.

- The home is mode 0700 and the daemon runs with umask 077, so every file it writes there
  (keys, ``node.json``, definitions, SQLite shard stores) is 0600 whatever the user's umask.
- :func:`lock_home` takes an exclusive ``flock`` on ``home/daemon.lock`` for the daemon's
  lifetime: a second ``calinode start`` on the same home exits at once with the running one's
  pid, instead of starting with the same peer id and later deleting the first one's
  ``node.json``. The kernel drops the lock when the process dies (kill -9 included).
- :func:`check_free` binds each listen address once *without* ``SO_REUSEPORT`` before the
  libp2p host starts: py-libp2p listens with ``SO_REUSEPORT``, so two nodes could otherwise
  share one port and the kernel would split incoming connections between two peer ids.
"""

from __future__ import annotations

import errno
import fcntl
import ipaddress
import os
import socket
from pathlib import Path

from multiaddr import Multiaddr

from calinode.node.identity import read_swarm_key, write_swarm_key
from calinode.protocol.errors import ConfigError

__all__ = ["LOCK_FILE", "SWARM_KEY_FILE", "check_api_free", "check_free", "is_loopback_only",
           "lock_home", "make_private_home", "resolve_swarm_key", "unlock_home"]

LOCK_FILE = "daemon.lock"


def make_private_home(home: Path) -> None:
    """Create ``home`` (0700) or tighten an existing one; new files get 0600 (umask 077)."""
    try:
        home.mkdir(parents=True, exist_ok=True, mode=0o700)
        if home.stat().st_mode & 0o077:
            home.chmod(0o700)
    except OSError as exc:
        hint = ("check the owner and mode of it and its parents, or give another --home "
                "(or $CALINODE_HOME)" if isinstance(exc, PermissionError)
                else "give another --home (or $CALINODE_HOME)")
        raise ConfigError(f"cannot use {home} as the node's home: {exc.strerror}; {hint}") from exc
    os.umask(0o077)


def lock_home(home: Path) -> int:
    """Take ``home``'s daemon lock (a file descriptor to keep open, see :func:`unlock_home`),
    or raise ``ConfigError`` naming the daemon that holds it."""
    fd = os.open(home / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        holder = os.pread(fd, 32, 0).decode("ascii", "replace").strip() or "?"
        os.close(fd)
        if exc.errno not in (errno.EAGAIN, errno.EACCES):
            raise
        raise ConfigError(f"another calinode daemon (pid {holder}) is running on {home}; "
                          "stop it first, or give this one another --home") from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    return fd


def unlock_home(fd: int) -> None:
    os.close(fd)  # closing the descriptor releases the lock


def check_free(listen: tuple[str, ...]) -> None:
    """Raise ``ConfigError`` for the first ``/ip4|ip6/HOST/tcp/PORT`` address already taken."""
    for text in listen:
        try:
            addr = Multiaddr(text)
            host = addr.value_for_protocol("ip4") if "ip4" in text else addr.value_for_protocol(
                "ip6")
            port = int(addr.value_for_protocol("tcp"))
        except Exception as exc:
            raise ConfigError(f"bad --listen address {text!r}: {exc}") from exc
        if port == 0:
            continue
        _probe(str(host), port, f"cannot listen on {text}",
               "another node or program holds the port; pick another with --listen")


def check_api_free(api: str) -> None:
    """Raise ``ConfigError`` when the local API's ``HOST:PORT`` is taken."""
    host, _, port = api.rpartition(":")
    if int(port):
        _probe(host.strip("[]"), int(port), f"cannot serve the local API on {api}",
               "another node or program holds it; pick another with --api")


def _probe(host: str, port: int, what: str, hint: str) -> None:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the API's listener
        try:
            probe.bind((host, port))
        except OSError as exc:
            raise ConfigError(f"{what}: {exc.strerror} ({hint})") from None


SWARM_KEY_FILE = "swarm.key"


def is_loopback_only(listen: tuple[str, ...]) -> bool:
    """Every listen address is on 127.0.0.0/8 or ::1 (nothing beyond this machine)."""
    for text in listen:
        host = text.split("/")[2] if text.count("/") >= 2 else ""
        try:
            if not ipaddress.ip_address(host).is_loopback:
                return False
        except ValueError:
            return False
    return True


def resolve_swarm_key(home: Path, *, listen: tuple[str, ...], key_file: Path | None,
                      join_key: str | None, open_swarm: bool) -> tuple[str | None, str]:
    """The swarm key this node uses (None: an open swarm) and why, in words (blocking).

    ``--open`` wins; then the key of a ``--join`` invite (saved into the home, so restarts
    need no invite); then ``--swarm-key``; then the home's ``swarm.key``; a node that listens
    beyond loopback with none of these creates one in the home. A loopback-only node without
    a key runs open: nothing outside this machine can reach it.
    """
    home_key = home / SWARM_KEY_FILE
    if open_swarm:
        return None, "open (--open)"
    if join_key is not None:
        if home_key.exists():
            if read_swarm_key(home_key) != join_key:
                raise ConfigError(f"this home already belongs to another swarm ({home_key}); "
                                  "use a fresh --home to join this one")
        else:
            write_swarm_key(home_key, join_key)
        return join_key, f"private (key from the invite, saved to {home_key})"
    if key_file is not None:
        return read_swarm_key(key_file), f"private (key {key_file})"
    if home_key.exists():
        return read_swarm_key(home_key), f"private (key {home_key})"
    if is_loopback_only(listen):
        return None, "open (listening on loopback only)"
    write_swarm_key(home_key)
    return read_swarm_key(home_key), f"private (new key {home_key})"
