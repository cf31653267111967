"""Node configuration: defaults < ``calinode.toml`` in the home < ``CALINODE_*`` env < flags.

:func:`resolve_config` is pure: it takes the three sources as plain mappings, so precedence is
unit-tested without touching the environment or the disk. :func:`load_config` is the I/O shell
around it that reads the environment and the TOML file.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from calinode.protocol.errors import ConfigError

DEFAULT_P2P_PORT = 7411
DEFAULT_API = "127.0.0.1:7412"
CONFIG_FILE = "calinode.toml"
ENV_PREFIX = "CALINODE_"


def default_home(env: Mapping[str, str]) -> Path:
    """``$XDG_DATA_HOME/calinode``, else ``~/.local/share/calinode``."""
    xdg = env.get("XDG_DATA_HOME")
    base = Path(xdg) if xdg else Path(env.get("HOME", str(Path.home()))) / ".local" / "share"
    return base / "calinode"


# Tokens produced within this window travel together: at most 10 messages a second per stream
# instead of one per token. Every message costs each hop (this node, a relaying node, the
# client) a wake-up and a socket write, which a machine whose cores run the model pays for in
# tokens/s. Measured through a relaying peer on 2 cores (bench/bench_models.py): 0.88x direct
# with 20 ms windows, 0.93-1.01x with 50 ms, 0.96-0.98x with 100 ms. The first token goes at
# once, and a model slower than 10 tokens/s still streams token by token. ``--stream-interval``.
STREAM_INTERVAL = 0.1
#: The lowest ``--blob-rate`` (bytes/s): a 1 MiB chunk then waits at most ~4 s per transfer
#: in line, and the default four transfers stay well inside a puller's 60 s chunk deadline.
MIN_BLOB_RATE = 256 * 1024

# A streamed generation whose serving peer sends nothing for this long after its first piece
# is resumed on another peer (issue 14). Pieces come at least every STREAM_INTERVAL while the
# peer generates; 15 s allows a CPU-starved peer or a GC pause many times over, and is short
# against a 300 s generation budget. calinode.toml or CALINODE_GENERATE_STALL_TIMEOUT.
GENERATE_STALL_TIMEOUT = 15.0


@dataclass(frozen=True, kw_only=True)
class NodeConfig:
    """Everything ``calinode start`` needs. Times are seconds."""

    home: Path
    listen: tuple[str, ...] = (f"/ip4/0.0.0.0/tcp/{DEFAULT_P2P_PORT}",)
    bootstrap: tuple[str, ...] = ()
    api: str = DEFAULT_API
    swarm_key: Path | None = None
    join: str | None = None  # an invite (calinode invite): bootstrap addresses + swarm key
    open_swarm: bool = False  # no swarm key even when listening beyond loopback
    allow: tuple[str, ...] = ()
    trust: tuple[str, ...] = ()  # open swarm: peers this node sends documents and prompts to
    mdns: bool = False
    mdns_interfaces: tuple[str, ...] = ()
    log_level: str = "info"
    heartbeat_interval: float = 1.0
    dead_after: float = 6.0
    drop_after: float = 120.0
    max_jobs: int = 64
    max_jobs_per_peer: int = 16
    embed_models: tuple[str, ...] = ("minilm-l6-int8",)
    gen_models: tuple[str, ...] = ("smollm2-135m",)
    no_models: bool = False
    threads: int = 0  # compute threads per model; 0: every core
    stream_interval: float = STREAM_INTERVAL  # 0: each token on its own
    index: bool = False  # host shard replicas of collections
    # a replica this node no longer owns is deleted once every owner has held the same copy
    # for this long (seconds); 0 keeps such replicas forever
    replica_gc_after: float = 600.0
    # model transfers to peers (/calinode/blob/1.0.0): chunks served at once, and a bytes/s
    # cap over all of them (0: none); a transfer past the first is refused OVERLOADED
    blob_max_transfers: int = 4
    blob_rate: int = 0
    # TEST ONLY: serve every model chunk with a flipped byte (pullers must refetch it
    # elsewhere and report this node); hidden from --help
    test_only_corrupt_chunks: bool = False
    # a streaming generation peer silent this long (seconds) mid-stream is resumed elsewhere
    generate_stall_timeout: float = GENERATE_STALL_TIMEOUT
    # TEST ONLY: seconds this node's generators pause after each streamed piece (tests kill
    # a serving node mid-stream); 0 in any real use
    test_token_delay: float = 0.0
    #: TEST ONLY: every embedding model call takes this many times as long (a slow peer in
    #: tests/integration/test_scale_out.py); 1: off
    test_only_embed_slowdown: float = 1.0

    def __post_init__(self) -> None:
        host, sep, port = self.api.rpartition(":")
        if not sep or not host or not port.isdigit() or int(port) > 65535:
            raise ConfigError(f"api must be HOST:PORT, got {self.api!r}")
        for addr in (*self.listen, *self.bootstrap):
            if not addr.startswith("/"):
                raise ConfigError(f"{addr!r} is not a multiaddr (expected /ip4/HOST/tcp/PORT...)")
        for addr in self.bootstrap:
            _check_bootstrap(addr)
        if not self.listen:
            raise ConfigError("at least one --listen address is required")
        if self.log_level.lower() not in {"debug", "info", "warning", "error"}:
            raise ConfigError(
                f"log level must be debug, info, warning or error: {self.log_level!r}")
        if not 0 < self.heartbeat_interval < self.dead_after < self.drop_after:
            raise ConfigError("need 0 < heartbeat_interval < dead_after < drop_after")
        if self.threads < 0:
            raise ConfigError("threads must be 0 (every core) or more")
        if not 0 <= self.stream_interval <= 1:
            raise ConfigError("stream_interval must be 0 to 1 seconds")
        if not 0 < self.generate_stall_timeout <= 3600:
            raise ConfigError("generate_stall_timeout must be more than 0 and at most 3600 "
                              "seconds")
        if not 0 <= self.test_token_delay <= 10:
            raise ConfigError("test_token_delay must be 0 to 10 seconds")
        if not 1 <= self.test_only_embed_slowdown <= 100:
            raise ConfigError("test_only_embed_slowdown must be 1 (off) to 100")
        if self.replica_gc_after < 0:
            raise ConfigError("replica_gc_after must be 0 (never) or more seconds")
        if self.max_jobs < 1 or self.max_jobs_per_peer < 1:
            raise ConfigError("max_jobs and max_jobs_per_peer must be at least 1")
        if not 1 <= self.blob_max_transfers <= 64:
            raise ConfigError("blob_max_transfers must be 1 to 64")
        if self.blob_rate != 0 and self.blob_rate < MIN_BLOB_RATE:
            raise ConfigError(f"blob_rate must be 0 (no cap) or at least {MIN_BLOB_RATE} "
                              "bytes/s (a 1 MiB chunk must reach a peer within its deadline)")
        if self.open_swarm and (self.join or self.swarm_key):
            raise ConfigError("--open runs without a swarm key: drop --join/--swarm-key, or "
                              "drop --open")
        if self.join and self.swarm_key:
            raise ConfigError("--join carries its own swarm key: drop --swarm-key")

    @property
    def api_host(self) -> str:
        return self.api.rpartition(":")[0]

    @property
    def api_port(self) -> int:
        return int(self.api.rpartition(":")[2])


def _check_bootstrap(addr: str) -> None:
    """A ``--bootstrap`` address must parse and name its peer (``/p2p/PEER_ID``): a one-line
    ``CONFIG`` error here, instead of a failure once the daemon is half started."""
    from multiaddr import Multiaddr

    try:
        names = [protocol.name for protocol in Multiaddr(addr).protocols()]
    except Exception as exc:
        raise ConfigError(f"bad --bootstrap address {addr!r} ({exc}); expected "
                          "/ip4/HOST/tcp/PORT/p2p/PEER_ID: copy the --bootstrap line another "
                          "node printed") from None
    if "p2p" not in names:
        raise ConfigError(f"--bootstrap address {addr!r} has no /p2p/PEER_ID; copy the whole "
                          "--bootstrap line another node printed "
                          "(/ip4/HOST/tcp/PORT/p2p/PEER_ID)")


_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}
_TUPLES = {"listen", "bootstrap", "allow", "trust", "mdns_interfaces", "embed_models",
           "gen_models"}
_BOOLS = {"mdns", "no_models", "index", "open_swarm", "test_only_corrupt_chunks"}
_FLOATS = {"heartbeat_interval", "dead_after", "drop_after", "stream_interval",
           "replica_gc_after", "generate_stall_timeout", "test_token_delay",
           "test_only_embed_slowdown"}
_INTS = {"max_jobs", "max_jobs_per_peer", "threads", "blob_max_transfers", "blob_rate"}
_KEYS = {f.name for f in fields(NodeConfig)} - {"home"}


def _coerce(key: str, value: Any, source: str) -> Any:
    try:
        if key in _TUPLES:
            if isinstance(value, str):
                return tuple(part.strip() for part in value.split(",") if part.strip())
            if isinstance(value, list | tuple) and all(isinstance(v, str) for v in value):
                return tuple(value)
            raise TypeError(value)
        if key in _BOOLS:
            if isinstance(value, bool):
                return value
            if isinstance(value, str) and value.lower() in _TRUE | _FALSE:
                return value.lower() in _TRUE
            raise TypeError(value)
        if key == "swarm_key":
            return Path(value).expanduser() if value else None
        if key == "join":
            return str(value) if value else None
        if key in _FLOATS:
            return float(value)
        if key in _INTS:
            if isinstance(value, bool):
                raise TypeError(value)
            return int(value)
        if not isinstance(value, str):
            raise TypeError(value)
        return value
    except (TypeError, ValueError):
        raise ConfigError(f"{source}: invalid value for {key}: {value!r}") from None


def resolve_config(
    *, flags: Mapping[str, Any], env: Mapping[str, str], toml: Mapping[str, Any], home: Path
) -> NodeConfig:
    """Merge the sources; later ones win: ``toml`` < ``env`` < ``flags`` (None means unset)."""
    merged: dict[str, Any] = {}
    for key, value in toml.items():
        if key not in _KEYS:
            raise ConfigError(f"{home / CONFIG_FILE}: unknown setting {key!r}")
        merged[key] = _coerce(key, value, CONFIG_FILE)
    for key in _KEYS:
        raw = env.get(ENV_PREFIX + key.upper())
        if raw:  # an empty variable counts as unset
            merged[key] = _coerce(key, raw, ENV_PREFIX + key.upper())
    for key, value in flags.items():
        if key in _KEYS and value is not None and value != [] and value != ():
            merged[key] = _coerce(key, value, f"--{key.replace('_', '-')}")
    return NodeConfig(home=home, **merged)


def resolve_home(flag: str | None, env: Mapping[str, str]) -> Path:
    if flag:
        return Path(flag).expanduser()
    if env.get(ENV_PREFIX + "HOME"):
        return Path(env[ENV_PREFIX + "HOME"]).expanduser()
    return default_home(env)


def read_toml(home: Path) -> dict[str, Any]:
    path = home / CONFIG_FILE
    try:
        with path.open("rb") as fh:
            return tomllib.load(fh)
    except FileNotFoundError:
        return {}
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"cannot read {path}: {exc}; fix its TOML syntax") from exc
    # any other OSError (a permission, a folder in its place) goes up as it is: the CLI's
    # one error path names it and says what to do (node/cli/errors.py)


def load_config(flags: Mapping[str, Any], env: Mapping[str, str] | None = None) -> NodeConfig:
    """Read the environment and ``calinode.toml`` and merge them under ``flags``."""
    env = dict(os.environ) if env is None else env
    home = resolve_home(flags.get("home"), env)
    return resolve_config(flags=flags, env=env, toml=read_toml(home), home=home)


__all__ = ["DEFAULT_API", "DEFAULT_P2P_PORT", "NodeConfig", "load_config", "resolve_config"]

