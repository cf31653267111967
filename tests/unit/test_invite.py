"""Invites and the choice between a private and an open swarm."""

from __future__ import annotations

from pathlib import Path

import pytest

from calinode.node.home import SWARM_KEY_FILE, is_loopback_only, resolve_swarm_key
from calinode.node.identity import read_swarm_key, write_swarm_key
from calinode.node.invite import decode_invite, encode_invite
from calinode.protocol.errors import ConfigError

ADDR = "/ip4/192.0.2.5/tcp/7411/p2p/12D3KooWExample"
KEY = "ab" * 32
LAN = ("/ip4/0.0.0.0/tcp/7411",)
LOOP = ("/ip4/127.0.0.1/tcp/7411",)


def test_invite_round_trip() -> None:
    token = encode_invite([ADDR, "/ip4/127.0.0.1/tcp/7411/p2p/12D3KooWExample"], KEY)
    assert token.startswith("cal1.") and " " not in token and "=" not in token
    invite = decode_invite("  " + token + "\n")
    assert invite.addrs[0] == ADDR and invite.key == KEY


@pytest.mark.parametrize("token", [
    "", "cal1.", "cal2.abc", "--bootstrap", encode_invite([ADDR], KEY)[:-12],
    encode_invite(["/ip4/192.0.2.5/tcp/7411"], KEY),     # no peer id
    encode_invite([ADDR], "12"),                          # damaged key
    "cal1." + "A" * 5000])
def test_damaged_invites_say_so(token: str) -> None:
    with pytest.raises(ConfigError):
        decode_invite(token)


def test_loopback_only() -> None:
    assert is_loopback_only((*LOOP, "/ip6/::1/tcp/1"))
    assert not is_loopback_only(LAN)
    assert not is_loopback_only((*LOOP, "/ip4/192.0.2.1/tcp/1"))
    assert not is_loopback_only(("/dns4/localhost/tcp/1",))


def test_a_node_beyond_loopback_is_private_with_a_new_key_kept_across_restarts(
    tmp_path: Path,
) -> None:
    key, mode = resolve_swarm_key(tmp_path, listen=LAN, key_file=None, join_key=None,
                                  open_swarm=False)
    assert key is not None and mode.startswith("private")
    assert (tmp_path / SWARM_KEY_FILE).stat().st_mode & 0o777 == 0o600
    again, _ = resolve_swarm_key(tmp_path, listen=LAN, key_file=None, join_key=None,
                                 open_swarm=False)
    assert again == key
    # and it stays private on loopback too once the home has a key
    assert resolve_swarm_key(tmp_path, listen=LOOP, key_file=None, join_key=None,
                             open_swarm=False)[0] == key


def test_open_and_loopback(tmp_path: Path) -> None:
    assert resolve_swarm_key(tmp_path, listen=LAN, key_file=None, join_key=None,
                             open_swarm=True) == (None, "open (--open)")
    key, mode = resolve_swarm_key(tmp_path, listen=LOOP, key_file=None, join_key=None,
                                  open_swarm=False)
    assert key is None and "loopback" in mode
    assert not (tmp_path / SWARM_KEY_FILE).exists()


def test_join_saves_the_key_and_refuses_another_swarms_home(tmp_path: Path) -> None:
    key, _ = resolve_swarm_key(tmp_path, listen=LOOP, key_file=None, join_key=KEY,
                               open_swarm=False)
    assert key == KEY and read_swarm_key(tmp_path / SWARM_KEY_FILE) == KEY
    with pytest.raises(ConfigError, match="another swarm"):
        resolve_swarm_key(tmp_path, listen=LOOP, key_file=None, join_key="cd" * 32,
                          open_swarm=False)


def test_an_explicit_key_file_wins_over_the_home(tmp_path: Path) -> None:
    write_swarm_key(tmp_path / SWARM_KEY_FILE, KEY)
    write_swarm_key(tmp_path / "other.key", "cd" * 32)
    assert resolve_swarm_key(tmp_path, listen=LAN, key_file=tmp_path / "other.key",
                             join_key=None, open_swarm=False)[0] == "cd" * 32
