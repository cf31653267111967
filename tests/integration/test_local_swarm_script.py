"""The deploy/ folder: shell syntax, compose file, systemd unit, Dockerfile, and real runs of
deploy/local-swarm.sh (on 127.0.0.1, and in network namespaces when root) whenever the
calinode command can run.

The swarm tests never leave daemons or namespaces behind: `local-swarm.sh stop` runs in a
`finally`, and anything it missed is killed / deleted afterwards (and reported as a failure).
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pytest

pytestmark = [pytest.mark.integration, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
SWARM_SCRIPT = DEPLOY / "local-swarm.sh"
EXPECTED_SCRIPTS = ("docker-entrypoint.sh", "local-swarm.sh")
SHELL_SCRIPTS = sorted({*EXPECTED_SCRIPTS, *(p.name for p in DEPLOY.glob("*.sh"))})
CALINODE_ENV_VARS = (
    "CALINODE_HOME",
    "CALINODE_LISTEN",
    "CALINODE_BOOTSTRAP",
    "CALINODE_API",
    "CALINODE_SWARM_KEY",
    "CALINODE_ALLOW",
    "CALINODE_MDNS",
    "CALINODE_LOG_LEVEL",
    "CALINODE_STREAM_INTERVAL",
    "CALINODE_REPLICA_GC_AFTER",
)
READY_TIMEOUT = 60  # seconds the script waits for each node.json
PEERS_TIMEOUT = 30.0  # seconds for node 1 to list the other nodes as peers
PEER_ID_PREFIX = "12D3KooW"


# -------------------------------------------------------------------------------------------
# Static checks


@pytest.mark.parametrize("name", EXPECTED_SCRIPTS)
def test_expected_script_exists_and_is_executable(name: str) -> None:
    path = DEPLOY / name
    assert path.is_file(), f"{path} is missing"
    assert os.access(path, os.X_OK), f"{path} is not executable (chmod +x, and commit the mode)"


@pytest.mark.parametrize("name", SHELL_SCRIPTS)
def test_shell_script_syntax(name: str) -> None:
    path = DEPLOY / name
    if not path.is_file():
        pytest.skip(f"{path} is missing (reported by the existence test)")
    result = subprocess.run(["bash", "-n", str(path)], capture_output=True, text=True, check=False)
    assert result.returncode == 0, f"bash -n {name}:\n{result.stderr}"
    first_line = path.read_text(encoding="utf-8").splitlines()[0]
    posix = first_line.strip() in ("#!/bin/sh", "#!/usr/bin/env sh")
    if posix and shutil.which("sh"):
        result = subprocess.run(
            ["sh", "-n", str(path)], capture_output=True, text=True, check=False
        )
        assert result.returncode == 0, f"sh -n {name}:\n{result.stderr}"
    if shutil.which("shellcheck"):
        result = subprocess.run(
            ["shellcheck", "--severity=warning", str(path)],
            capture_output=True,
            text=True,
            check=False,
        )
        assert result.returncode == 0, f"shellcheck {name}:\n{result.stdout}{result.stderr}"


def test_local_swarm_help_and_usage_errors() -> None:
    result = _run_swarm_script("--help", env=os.environ.copy(), timeout=30)
    assert result.returncode == 0, result.stderr
    for word in ("start", "stop", "status", "--netns", "--dir", "CALINODE_BIN"):
        assert word in result.stdout
    result = _run_swarm_script("frobnicate", env=os.environ.copy(), timeout=30)
    assert result.returncode == 2
    assert "unknown command" in result.stderr
    result = _run_swarm_script("start", "-n", "0", env=os.environ.copy(), timeout=30)
    assert result.returncode != 0
    assert "-n must be" in result.stderr


def test_compose_file() -> None:
    path = DEPLOY / "compose.yaml"
    text = path.read_text(encoding="utf-8")
    for needle in ("node1", "node2", "node3", "/seed/node.json", "/swarm/swarm.key"):
        assert needle in text
    assert "7412:" not in text, "the HTTP API must not be published"
    try:
        import yaml
    except ImportError:
        return  # the YAML checks need PyYAML; the text checks above still ran
    doc = yaml.safe_load(text)
    services = doc["services"]
    assert set(services) == {"node1", "node2", "node3"}
    data_volumes = set()
    for name, service in services.items():
        build = service["build"]
        assert build["context"] == ".."
        assert build["dockerfile"] == "deploy/Dockerfile"
        command = " ".join(service["command"])
        assert "start" in command
        assert "--swarm-key /swarm/swarm.key" in command
        volumes = [str(v) for v in service["volumes"]]
        data = [v.split(":")[0] for v in volumes if v.split(":")[1] == "/data"]
        assert len(data) == 1, f"{name} needs exactly one volume at /data: {volumes}"
        data_volumes.add(data[0])
        assert any(v.split(":")[1] == "/swarm" for v in volumes), f"{name}: no /swarm volume"
        assert "7412" not in json.dumps(service.get("ports", []))
        if name == "node1":
            assert _environment(service).get("CALINODE_SWARM_KEY_CREATE") == "1"
            continue
        env = _environment(service)
        assert env.get("CALINODE_BOOTSTRAP_FROM") == "/seed/node.json"
        assert env.get("CALINODE_BOOTSTRAP_HOST") == "node1"
        seed = [v for v in volumes if v.split(":")[1] == "/seed"]
        assert seed and seed[0].endswith(":ro"), f"{name}: node1's home must be at /seed:ro"
        assert seed[0].split(":")[0] in {
            v.split(":")[0] for v in services["node1"]["volumes"] if ":/data" in v
        }
    assert len(data_volumes) == 3, "each node needs its own home volume"
    assert data_volumes | {"swarm"} <= set(doc["volumes"])


def test_systemd_unit() -> None:
    unit = _parse_unit((DEPLOY / "calinode.service").read_text(encoding="utf-8"))
    service = unit["Service"]
    assert service["Restart"] == ["always"]
    assert service["ExecStart"] == ["/opt/calinode/bin/calinode start"]  # deploy/install.sh
    assert service["User"] == ["calinode"]
    assert service["StateDirectory"] == ["calinode"]
    assert "CALINODE_HOME=/var/lib/calinode" in service["Environment"]
    assert service["EnvironmentFile"] == ["-/etc/calinode/calinode.env"]
    assert service["KillSignal"] == ["SIGTERM"]
    assert "TimeoutStopSec" in service
    for key in ("NoNewPrivileges", "PrivateTmp", "ProtectHome"):
        assert service[key] == ["yes"], key
    assert service["ProtectSystem"] == ["strict"]
    assert "/var/lib/calinode" in service["ReadWritePaths"]
    assert unit["Install"]["WantedBy"] == ["multi-user.target"]


def test_env_example_documents_every_variable() -> None:
    text = (DEPLOY / "calinode.env.example").read_text(encoding="utf-8")
    for var in CALINODE_ENV_VARS:
        assert re.search(rf"^#?{var}=", text, re.MULTILINE), f"{var} is not documented"


def test_dockerfile() -> None:
    text = (DEPLOY / "Dockerfile").read_text(encoding="utf-8")
    lines = [line.strip() for line in text.splitlines()]
    assert "FROM python:3.11-slim" in lines
    assert "build-essential" in text
    assert "cmake" in text
    assert "deploy/install.sh /opt/calinode" in text  # the one install recipe
    users = [line.split()[1] for line in lines if line.startswith("USER ")]
    assert users and users[-1] not in ("root", "0"), "the daemon must not run as root"
    assert "ENV CALINODE_HOME=/data" in lines
    assert any(line.startswith("VOLUME") and "/data" in line for line in lines)
    assert [line for line in lines if line.startswith("EXPOSE")] == ["EXPOSE 7411"]
    assert "0.0.0.0:7412" not in text, "the API must stay on 127.0.0.1 inside the container"
    assert "HEALTHCHECK" in text
    assert "/healthz" in text
    assert "127.0.0.1:7412" in text
    assert 'ENTRYPOINT ["calinode"]' in lines
    assert 'CMD ["start"]' in lines


# -------------------------------------------------------------------------------------------
# Real swarms


def test_local_swarm_start_status_stop(tmp_path: Path) -> None:
    calinode = _calinode_command(tmp_path)
    swarm_dir = tmp_path / "swarm"
    env = _script_env(calinode)
    pids: dict[int, int] = {}
    stop: subprocess.CompletedProcess[str] | None = None
    leftovers: list[int] = []
    try:
        result = _run_swarm_script("start", "-n", "3", "--dir", str(swarm_dir), env=env)
        assert result.returncode == 0, f"start failed:\n{result.stderr}"
        nodes = _parse_start_output(result.stdout, 3)
        pids = _read_pids(swarm_dir)
        assert sorted(pids) == [1, 2, 3]
        for i, (peer, addr, api) in nodes.items():
            info = json.loads((swarm_dir / f"node{i}" / "node.json").read_text(encoding="utf-8"))
            assert info["peer_id"] == peer
            assert info["api"] == api
            assert re.fullmatch(rf"/ip4/127\.0\.0\.1/tcp/[1-9][0-9]*/p2p/{peer}", addr), addr
            assert re.fullmatch(r"127\.0\.0\.1:[1-9][0-9]*", api), api
            assert _is_alive(pids[i]), f"node{i} (pid {pids[i]}) is not running"
            with urllib.request.urlopen(f"http://{api}/healthz", timeout=10) as response:
                assert response.status == 200

        status = _run_swarm_script("status", "--dir", str(swarm_dir), env=env, timeout=60)
        assert status.returncode == 0, status.stdout + status.stderr
        assert [line.split("\t")[1] for line in status.stdout.splitlines()] == ["running"] * 3

        others = {nodes[2][0], nodes[3][0]}
        _wait_for_peers([str(calinode)], swarm_dir / "node1", others, env)
    finally:
        pids |= _read_pids(swarm_dir)
        stop = _stop_swarm(swarm_dir, env)
        leftovers = _kill_leftovers({*pids.values(), *_processes_using(swarm_dir)})
    assert stop is not None, "local-swarm.sh stop timed out"
    assert stop.returncode == 0, f"stop failed:\n{stop.stderr}"
    assert not leftovers, f"processes alive after stop (killed now): {leftovers}"
    assert "SIGKILL" not in stop.stderr, f"a daemon ignored SIGTERM:\n{stop.stderr}"
    for i in (1, 2, 3):
        assert not (swarm_dir / f"node{i}" / "node.json").exists(), "node.json left after exit"


def test_local_swarm_netns(tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("--netns needs root")
    ip = shutil.which("ip")
    if ip is None:
        pytest.skip("--netns needs the ip command (iproute2)")
    _require_netns(ip)
    calinode = _calinode_command(tmp_path)
    before = _cn_namespaces(ip)
    if before:
        pytest.skip(f"cn-* network namespaces already exist ({sorted(before)}): another swarm?")
    swarm_dir = tmp_path / "swarm"
    env = _script_env(calinode)
    pids: dict[int, int] = {}
    stop: subprocess.CompletedProcess[str] | None = None
    leftovers: list[int] = []
    left_namespaces: set[str] = set()
    try:
        result = _run_swarm_script("start", "-n", "2", "--netns", "--dir", str(swarm_dir), env=env)
        assert result.returncode == 0, f"start --netns failed:\n{result.stderr}"
        nodes = _parse_start_output(result.stdout, 2)
        pids = _read_pids(swarm_dir)
        assert {"cn-hub", "cn-node1", "cn-node2"} <= _cn_namespaces(ip)
        for i, (peer, addr, api) in nodes.items():
            assert (swarm_dir / f"node{i}" / "node.json").is_file()
            assert addr == f"/ip4/10.77.0.{i}/tcp/7411/p2p/{peer}"
            assert api == "127.0.0.1:7412"
            home = str(swarm_dir / f"node{i}")
            in_netns = [ip, "netns", "exec", f"cn-node{i}", str(calinode)]
            status = subprocess.run(
                [*in_netns, "status", "--home", home, "--json"],
                capture_output=True,
                text=True,
                timeout=60,
                env=env,
                check=False,
            )
            assert status.returncode == 0, f"status in cn-node{i}:\n{status.stderr}"
            json.loads(status.stdout)
        netns_cmd = [ip, "netns", "exec", "cn-node1", str(calinode)]
        _wait_for_peers(netns_cmd, swarm_dir / "node1", {nodes[2][0]}, env)
    finally:
        pids |= _read_pids(swarm_dir)
        stop = _stop_swarm(swarm_dir, env)
        leftovers = _kill_leftovers({*pids.values(), *_processes_using(swarm_dir)})
        left_namespaces = _cn_namespaces(ip) - before
        for name in left_namespaces:
            subprocess.run([ip, "netns", "del", name], capture_output=True, check=False)
    assert stop is not None, "local-swarm.sh stop timed out"
    assert stop.returncode == 0, f"stop failed:\n{stop.stderr}"
    assert not leftovers, f"processes alive after stop (killed now): {leftovers}"
    assert not left_namespaces, f"namespaces left after stop (deleted now): {left_namespaces}"
    assert not (swarm_dir / "netns").exists()
    assert "SIGKILL" not in stop.stderr, f"a daemon ignored SIGTERM:\n{stop.stderr}"
    for i in (1, 2):
        assert not (swarm_dir / f"node{i}" / "node.json").exists(), "node.json left after exit"


# -------------------------------------------------------------------------------------------
# Helpers


def _environment(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        return dict(str(item).partition("=")[::2] for item in env)
    return {str(k): str(v) for k, v in env.items()}


def _parse_unit(text: str) -> dict[str, dict[str, list[str]]]:
    """A systemd unit as {section: {key: [values in order]}} (keys may repeat)."""
    sections: dict[str, dict[str, list[str]]] = {}
    current: dict[str, list[str]] | None = None
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("[") and line.endswith("]"):
            current = sections.setdefault(line[1:-1], {})
            continue
        assert current is not None, f"line outside a section: {line}"
        key, sep, value = line.partition("=")
        assert sep, f"not a key=value line: {line}"
        current.setdefault(key.strip(), []).append(value.strip())
    return sections


def _runs(command: list[str]) -> tuple[bool, str]:
    try:
        result = subprocess.run(
            [*command, "--help"], capture_output=True, text=True, timeout=120, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return False, str(exc)
    output = result.stdout + result.stderr
    return result.returncode == 0 and "start" in output, output[-2000:]


def _calinode_command(tmp_path: Path) -> Path:
    """An executable that runs calinode, or skip: the venv's console script (sibling of
    sys.executable), else `calinode` on PATH, else a wrapper around
    `python -m calinode.node.cli`."""
    why = "no calinode console script next to sys.executable or on PATH"
    candidates = [Path(sys.executable).with_name("calinode")]
    on_path = shutil.which("calinode")
    if on_path:
        candidates.append(Path(on_path))
    for candidate in candidates:
        if candidate.is_file() and os.access(candidate, os.X_OK):
            ok, output = _runs([str(candidate)])
            if ok:
                return candidate
            why = f"{candidate} --help failed:\n{output}"
    try:
        has_module = importlib.util.find_spec("calinode.node.cli") is not None
    except ImportError:
        has_module = False
    if has_module:
        wrapper = tmp_path / "calinode-wrapper"
        wrapper.write_text(
            f'#!/bin/sh\nexec "{sys.executable}" -m calinode.node.cli "$@"\n', encoding="utf-8"
        )
        wrapper.chmod(0o755)
        ok, output = _runs([str(wrapper)])
        if ok:
            return wrapper
        why = f"{sys.executable} -m calinode.node.cli --help failed:\n{output}"
    pytest.skip(f"the calinode command is not runnable yet ({why})")


def _script_env(calinode: Path) -> dict[str, str]:
    """The test's environment without CALINODE_* settings, with CALINODE_BIN set."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CALINODE_")}
    env["CALINODE_BIN"] = str(calinode)
    env["CALINODE_SWARM_TIMEOUT"] = str(READY_TIMEOUT)
    return env


def _run_swarm_script(
    *args: str, env: dict[str, str], timeout: float = 3 * READY_TIMEOUT + 60
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", str(SWARM_SCRIPT), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
        stdin=subprocess.DEVNULL,
        check=False,
    )


def _parse_start_output(stdout: str, count: int) -> dict[int, tuple[str, str, str]]:
    """{index: (peer id, p2p address, API address)} from the lines `start` prints."""
    lines = stdout.splitlines()
    assert len(lines) == count, f"expected {count} node lines, got:\n{stdout}"
    nodes: dict[int, tuple[str, str, str]] = {}
    for expected_index, line in enumerate(lines, start=1):
        fields = line.split("\t")
        assert len(fields) == 4, f"expected index, peer id, address, API: {line!r}"
        index, peer, addr, api = fields
        assert int(index) == expected_index
        assert peer.startswith(PEER_ID_PREFIX), peer
        assert addr.endswith(f"/p2p/{peer}"), addr
        nodes[expected_index] = (peer, addr, api)
    assert len({peer for peer, _, _ in nodes.values()}) == count, "peer ids must differ"
    return nodes


def _wait_for_peers(
    command: list[str], home: Path, expected: set[str], env: dict[str, str]
) -> None:
    """Poll `calinode peers --home HOME --json` until every expected peer id shows up."""
    deadline = time.monotonic() + PEERS_TIMEOUT
    output = ""
    while True:
        result = subprocess.run(
            [*command, "peers", "--home", str(home), "--json"],
            capture_output=True,
            text=True,
            timeout=60,
            env=env,
            check=False,
        )
        output = result.stdout + result.stderr
        if result.returncode == 0 and all(peer in result.stdout for peer in expected):
            return
        if time.monotonic() > deadline:
            pytest.fail(f"{home.name} does not list {sorted(expected)} as peers:\n{output}")
        time.sleep(0.5)


def _read_pids(swarm_dir: Path) -> dict[int, int]:
    pids: dict[int, int] = {}
    for pid_file in swarm_dir.glob("node*/pid"):
        try:
            index = int(pid_file.parent.name.removeprefix("node"))
            pids[index] = int(pid_file.read_text(encoding="utf-8").split()[0])
        except (OSError, ValueError, IndexError):
            continue
    return pids


def _processes_using(swarm_dir: Path) -> set[int]:
    """Live processes whose command line mentions swarm_dir (the daemons' --home), so that
    leftovers are found even when their pid files are gone."""
    needle = str(swarm_dir).encode()
    found: set[int] = set()
    try:
        entries = list(Path("/proc").iterdir())
    except OSError:
        return found
    for entry in entries:
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        if needle in cmdline and _is_alive(int(entry.name)):
            found.add(int(entry.name))
    return found


def _is_alive(pid: int) -> bool:
    """The process exists and is not a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text(encoding="utf-8")
    except FileNotFoundError:
        return False
    except OSError:
        try:
            os.kill(pid, 0)
        except OSError:
            return False
        return True
    return stat.rpartition(")")[2].split()[0] != "Z"


def _stop_swarm(swarm_dir: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str] | None:
    try:
        return _run_swarm_script("stop", "--dir", str(swarm_dir), env=env, timeout=120)
    except subprocess.TimeoutExpired:
        return None


def _kill_leftovers(pids: Iterable[int]) -> list[int]:
    """SIGKILL the process groups (the script starts each daemon in its own session) of the
    pids still alive; returns them."""
    alive = [pid for pid in pids if _is_alive(pid)]
    for pid in alive:
        for kill in (os.killpg, os.kill):
            try:
                kill(pid, signal.SIGKILL)
                break
            except OSError:
                continue
    return alive


def _require_netns(ip: str) -> None:
    name = f"calinode-probe-{os.getpid()}"
    added = subprocess.run([ip, "netns", "add", name], capture_output=True, text=True, check=False)
    if added.returncode != 0:
        pytest.skip(f"cannot create network namespaces here: {added.stderr.strip()}")
    subprocess.run([ip, "netns", "del", name], capture_output=True, check=False)


def _cn_namespaces(ip: str) -> set[str]:
    listing = subprocess.run(
        [ip, "netns", "list"], capture_output=True, text=True, check=False
    ).stdout
    names = {line.split()[0] for line in listing.splitlines() if line.split()}
    return {name for name in names if name.startswith("cn-")}
