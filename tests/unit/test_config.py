from pathlib import Path

import pytest

from calinode.node.config import DEFAULT_API, NodeConfig, load_config, resolve_config
from calinode.protocol.errors import ConfigError

HOME = Path("/tmp/calinode-test-home")

PEER_A = "12D3KooWQJSEkT4RjJURkjpnpsgKBz2SjVArSSyCEQtZtcug4Ccm"
PEER_B = "12D3KooWNFLqZ6bozaRYfaDDw9iCb5VDB2SH9VmzHyAvyM1jE6HQ"

def test_defaults() -> None:
    config = resolve_config(flags={}, env={}, toml={}, home=HOME)
    assert config.api == DEFAULT_API
    assert config.listen == ("/ip4/0.0.0.0/tcp/7411",)
    assert config.bootstrap == () and config.allow == () and not config.mdns


def test_precedence_flags_over_env_over_toml() -> None:
    toml = {"api": "127.0.0.1:1000", "log_level": "debug",
            "bootstrap": ["/ip4/1.2.3.4/tcp/1/p2p/" + PEER_A]}
    env = {"CALINODE_API": "127.0.0.1:2000", "CALINODE_MDNS": "1"}
    flags = {"api": "127.0.0.1:3000", "bootstrap": None, "listen": []}
    config = resolve_config(flags=flags, env=env, toml=toml, home=HOME)
    assert config.api == "127.0.0.1:3000"  # flag beats env and toml
    assert config.mdns is True  # env beats default
    assert config.log_level == "debug"  # toml beats default
    assert config.bootstrap == ("/ip4/1.2.3.4/tcp/1/p2p/" + PEER_A,)  # unset flag does not override
    env_only = resolve_config(flags={}, env=env, toml=toml, home=HOME)
    assert env_only.api == "127.0.0.1:2000"


def test_stream_interval_from_each_source() -> None:
    assert resolve_config(flags={}, env={}, toml={}, home=HOME).stream_interval == 0.1
    assert resolve_config(flags={}, env={}, toml={"stream_interval": 0.05},
                          home=HOME).stream_interval == 0.05
    env = {"CALINODE_STREAM_INTERVAL": "0"}  # every token on its own
    assert resolve_config(flags={}, env=env, toml={}, home=HOME).stream_interval == 0.0


def test_env_lists_are_comma_separated() -> None:
    env = {"CALINODE_BOOTSTRAP":
           f"/ip4/1.1.1.1/tcp/1/p2p/{PEER_A}, /ip4/2.2.2.2/tcp/2/p2p/{PEER_B}",
           "CALINODE_ALLOW": "A,B"}
    config = resolve_config(flags={}, env=env, toml={}, home=HOME)
    assert config.bootstrap == (f"/ip4/1.1.1.1/tcp/1/p2p/{PEER_A}",
                                f"/ip4/2.2.2.2/tcp/2/p2p/{PEER_B}")
    assert config.allow == ("A", "B")


@pytest.mark.parametrize(
    ("source", "settings"),
    [
        ("toml", {"no_such_setting": 1}),
        ("toml", {"max_jobs": "many"}),
        ("env", {"CALINODE_API": "nonsense"}),
        ("env", {"CALINODE_MDNS": "perhaps"}),
        ("flags", {"listen": ["not-a-multiaddr"]}),
        ("flags", {"log_level": "loud"}),
        ("toml", {"heartbeat_interval": 10, "dead_after": 5}),
        ("env", {"CALINODE_STREAM_INTERVAL": "5"}),
        ("flags", {"stream_interval": -0.1}),
        ("toml", {"replica_gc_after": -1}),
    ],
)
def test_bad_settings_raise_config_error(source: str, settings: dict[str, object]) -> None:
    kwargs: dict[str, dict[str, object]] = {"flags": {}, "env": {}, "toml": {}}
    kwargs[source] = settings
    with pytest.raises(ConfigError):
        resolve_config(home=HOME, **kwargs)  # type: ignore[arg-type]


def test_load_config_reads_toml_in_home(tmp_path: Path) -> None:
    (tmp_path / "calinode.toml").write_text('api = "127.0.0.1:4444"\nmdns = true\n')
    config = load_config({"home": str(tmp_path)}, env={})
    assert config.api == "127.0.0.1:4444" and config.mdns and config.home == tmp_path
    via_env = load_config({}, env={"CALINODE_HOME": str(tmp_path), "CALINODE_API": "127.0.0.1:5"})
    assert via_env.api == "127.0.0.1:5"


def test_broken_toml_is_a_config_error(tmp_path: Path) -> None:
    (tmp_path / "calinode.toml").write_text("api = [unclosed\n")
    with pytest.raises(ConfigError, match=r"calinode\.toml"):
        load_config({"home": str(tmp_path)}, env={})


def test_api_host_port() -> None:
    config = NodeConfig(home=HOME, api="127.0.0.1:0")
    assert (config.api_host, config.api_port) == ("127.0.0.1", 0)


@pytest.mark.parametrize("addr", ["/ip4/127.0.0.1/tcp/8111", "/ip4/127.0.0.1/tcp/8111/p2p/xyz",
                                  "/ip4/999.0.0.1/tcp/1/p2p/" + PEER_A])
def test_a_bootstrap_address_without_a_valid_peer_id_is_a_config_error(addr: str) -> None:
    with pytest.raises(ConfigError, match="/ip4/HOST/tcp/PORT/p2p/PEER_ID"):
        resolve_config(flags={"bootstrap": [addr]}, env={}, toml={}, home=HOME)
