"""Invites: everything a second machine needs to join a private swarm, in one paste.

A node that listens beyond loopback runs a *private* swarm by default: only holders of its
swarm key can complete a connection. Passing an address and a key file to every machine is
two steps and easy to get wrong, so the ready line prints one token instead::

    calinode start --join cal1.eyJ2IjoxLCJhZGRycyI6WyIvaXA0LzE5Mi4xNjguMS41L3RjcC83NDEx...

The token is ``cal1.`` + base64url (no padding) of compact JSON
``{"v": 1, "addrs": ["/ip4/.../tcp/.../p2p/12D3KooW...", ...], "key": "<64 hex digits>"}``.
It is a secret (it carries the swarm key): share it like a password. ``calinode invite``
prints it again for a running node. Pure functions: no I/O here.
"""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass

from calinode.node.identity import parse_swarm_key
from calinode.protocol.errors import ConfigError, IdentityError

__all__ = ["PREFIX", "Invite", "decode_invite", "encode_invite"]

PREFIX = "cal1."
MAX_ADDRS = 8
MAX_TOKEN = 4096


@dataclass(frozen=True)
class Invite:
    addrs: tuple[str, ...]  # bootstrap multiaddrs with /p2p/ ids
    key: str  # the swarm key, 64 hex digits


def encode_invite(addrs: list[str] | tuple[str, ...], key: str) -> str:
    body = json.dumps({"v": 1, "addrs": list(addrs)[:MAX_ADDRS], "key": key},
                      separators=(",", ":")).encode()
    return PREFIX + base64.urlsafe_b64encode(body).decode().rstrip("=")


def decode_invite(token: str) -> Invite:
    """The invite in ``token``; ``ConfigError`` that says what is wrong with it."""
    token = token.strip()
    if not token.startswith(PREFIX) or len(token) > MAX_TOKEN:
        raise ConfigError("an invite starts with 'cal1.'; copy the whole --join line the "
                          "first node printed (or run: calinode invite on it)")
    raw = token[len(PREFIX):]
    try:
        data = json.loads(base64.urlsafe_b64decode(raw + "=" * (-len(raw) % 4)))
    except (binascii.Error, ValueError, UnicodeDecodeError):
        raise ConfigError("the invite is damaged (was it cut short when copied?)") from None
    if not isinstance(data, dict) or data.get("v") != 1:
        raise ConfigError("the invite is not a calinode v1 invite; update calinode") from None
    addrs = data.get("addrs")
    if (not isinstance(addrs, list) or not addrs or len(addrs) > MAX_ADDRS
            or not all(isinstance(a, str) and a.startswith("/") and "/p2p/" in a
                       for a in addrs)):
        raise ConfigError("the invite has no usable address")
    try:
        key = parse_swarm_key(str(data.get("key", "")))
    except IdentityError:
        raise ConfigError("the invite's swarm key is damaged") from None
    return Invite(addrs=tuple(addrs), key=key)
