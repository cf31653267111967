"""Real calinode daemons as OS processes on 127.0.0.1, driven through the real CLI."""

from __future__ import annotations

import atexit
import json
import os
import random
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from calinode.node.client import CalinodeClient
from calinode.protocol.errors import CalinodeError
from fork_server import ForkedDaemon, ForkServer

CALINODE = str(Path(sys.executable).with_name("calinode"))
FAST = ["--heartbeat-interval", "0.5", "--dead-after", "4"]


def _clean_env() -> dict[str, str]:
    """The test's environment without any CALINODE_* setting of the machine it runs on."""
    return {k: v for k, v in os.environ.items() if not k.startswith("CALINODE_")}


_fork_server: ForkServer | None = None


def _forks() -> ForkServer | None:
    """The session's fork server (started on first use), or None when it is turned off
    (``CALINODE_TEST_FORK_SERVER=0``) or cannot fork safely."""
    global _fork_server
    if os.environ.get("CALINODE_TEST_FORK_SERVER", "1") == "0":
        return None
    if _fork_server is None:
        _fork_server = ForkServer(_clean_env())
        atexit.register(_fork_server.close)
    return _fork_server if _fork_server.ready else None


def launch(argv: list[str], log: Path) -> subprocess.Popen[bytes] | ForkedDaemon:
    """``calinode ARGV`` as its own OS process writing to ``log``: forked from the session's
    fork server (``fork_server.py``: py-libp2p already imported), or a plain ``Popen`` of the
    installed script when ``CALINODE_TEST_FORK_SERVER=0`` or the server cannot fork safely."""
    forks = _forks()
    if forks is not None:
        return forks.spawn(argv, _clean_env(), str(log))
    with log.open("ab") as out:
        return subprocess.Popen([CALINODE, *argv], stdout=out, stderr=subprocess.STDOUT,
                                env=_clean_env())


def _worker_ports() -> range:
    """Ports this test process picks from: one range per pytest-xdist worker, all below the
    kernel's ephemeral range (32768+, where ``port 0`` binds land), so two workers never pick
    the same port between its probe and the daemon's bind."""
    worker = os.environ.get("PYTEST_XDIST_WORKER", "gw0").removeprefix("gw")
    n = int(worker) if worker.isdigit() else 0
    return range(10_000 + 2_000 * (n % 10), 12_000 + 2_000 * (n % 10))


def free_port() -> int:
    """A port free right now on 127.0.0.1, from this worker's range (see ``_worker_ports``)."""
    ports = _worker_ports()
    for _ in range(200):
        port = random.choice(ports)
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError(f"no free port in {ports}")


def note_time(kind: str, seconds: float, what: str) -> None:
    """With ``CALINODE_TEST_TIMINGS=FILE``, append one line (test, kind, seconds, what) to
    FILE: where an integration test's time goes, CLI runs and waits apart (the suite's time
    budget; README). Nothing at all otherwise."""
    path = os.environ.get("CALINODE_TEST_TIMINGS")
    if path:
        test = os.environ.get("PYTEST_CURRENT_TEST", "?").split(" ")[0]
        with open(path, "a", encoding="utf-8") as out:
            out.write(f"{test}\t{kind}\t{seconds:.2f}\t{what}\n")


def run_cli(
    *args: str, timeout: float = 600, check: bool = True
) -> subprocess.CompletedProcess[str]:
    started = time.monotonic()
    forks = _forks()
    if forks is not None:
        proc = _run_forked(forks, list(args), timeout)
    else:
        proc = subprocess.run([CALINODE, *args], capture_output=True, text=True,
                              timeout=timeout, env=_clean_env())
    note_time("cli", time.monotonic() - started, " ".join(args[:2]))
    if check and proc.returncode != 0:
        raise AssertionError(f"calinode {' '.join(args)} failed ({proc.returncode}):\n"
                             f"{proc.stdout}\n{proc.stderr}")
    return proc


def _run_forked(forks: ForkServer, args: list[str],
                timeout: float) -> subprocess.CompletedProcess[str]:
    """``calinode ARGS`` forked from the fork server, with what ``subprocess.run(...,
    capture_output=True, text=True)`` gives: stdout and stderr apart, newlines universal."""
    with tempfile.TemporaryDirectory(prefix="calinode-cli-") as tmp:
        out, err = Path(tmp, "stdout"), Path(tmp, "stderr")
        child = forks.spawn(args, _clean_env(), str(out), str(err))
        try:
            code = child.wait(timeout)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait(60)
            raise

        def text(path: Path) -> str:
            data = path.read_bytes().decode() if path.exists() else ""
            return data.replace("\r\n", "\n").replace("\r", "\n")

        return subprocess.CompletedProcess([CALINODE, *args], code, text(out), text(err))


def cli_json(*args: str) -> Any:
    return json.loads(run_cli(*args, "--json").stdout)


@dataclass
class Daemon:
    name: str
    home: Path
    port: int
    extra: list[str] = field(default_factory=list)
    proc: subprocess.Popen[bytes] | ForkedDaemon | None = None
    models: Path | None = None  # a prepared model registry to share; None: --no-models

    @property
    def node_file(self) -> Path:
        return self.home / "node.json"

    def start(self, *extra: str) -> Daemon:
        if extra:
            self.extra = list(extra)
        self.node_file.unlink(missing_ok=True)
        self.home.mkdir(parents=True, exist_ok=True)
        if self.models is not None and not (self.home / "models").exists():
            (self.home / "models").symlink_to(self.models, target_is_directory=True)
        models = [] if self.models is not None else ["--no-models"]
        started = time.monotonic()
        self.proc = launch(["start", "--home", str(self.home),
                            "--listen", f"/ip4/127.0.0.1/tcp/{self.port}",
                            "--api", "127.0.0.1:0", *FAST, *models, *self.extra],
                           self.home / "log")
        deadline = started + 60
        while not self.node_file.exists():
            if self.proc.poll() is not None:
                raise AssertionError(f"{self.name} exited early:\n{self.log()}")
            if time.monotonic() > deadline:
                raise AssertionError(f"{self.name} never became ready:\n{self.log()}")
            time.sleep(0.05)
        note_time("start", time.monotonic() - started, self.name)
        return self

    def log(self) -> str:
        path = self.home / "log"
        return path.read_text(errors="replace") if path.exists() else ""

    @property
    def info(self) -> dict[str, Any]:
        return dict(json.loads(self.node_file.read_text()))

    @property
    def token(self) -> str:
        """The node's local API token (``api.token`` in its home)."""
        return (self.home / "api.token").read_text().strip()

    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}

    @property
    def peer_id(self) -> str:
        return str(self.info["peer_id"])

    @property
    def addr(self) -> str:
        return f"/ip4/127.0.0.1/tcp/{self.port}/p2p/{self.peer_id}"

    def cli(self, *args: str) -> Any:
        return cli_json(*args, "--home", str(self.home))

    def api(self, method: str, *args: Any, **kwargs: Any) -> Any:
        """One call of the local API's client (``CalinodeClient.<method>``) in this process.

        The polls of ``wait_for`` go this way, not through the CLI: a CLI process every 0.1 s
        keeps one of two cores busy and slows the daemons being waited on (the CLI's own
        output is tested in test_cli_*). A refused call is an ``AssertionError``, as a failed
        CLI run is, so ``wait_for`` retries it."""
        try:
            with CalinodeClient.from_home(self.home) as client:
                return getattr(client, method)(*args, **kwargs)
        except CalinodeError as exc:
            raise AssertionError(f"{self.name}: {method} failed: {exc}") from exc

    def peers(self) -> dict[str, dict[str, Any]]:
        return {row["peer_id"]: row for row in self.api("peers")}

    def status(self) -> dict[str, Any]:
        return dict(self.api("status"))

    def collections(self) -> list[dict[str, Any]]:
        return list(self.api("collections"))

    def shards(self, collection: str) -> list[dict[str, Any]]:
        return list(self.api("shards", collection))

    def signal(self, signum: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(signum)

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGCONT)
            self.proc.kill()
            self.proc.wait(10)

    def stop(self) -> int:
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGCONT)
            self.proc.terminate()
            try:
                return self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
                raise AssertionError(f"{self.name} ignored SIGTERM:\n{self.log()}") from None
        return int(self.proc.returncode)


class Swarm:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.daemons: list[Daemon] = []

    def daemon(self, name: str, *, models: Path | None = None) -> Daemon:
        daemon = Daemon(name, self.root / name, free_port(), models=models)
        self.daemons.append(daemon)
        return daemon

    def close(self) -> None:
        for daemon in self.daemons:
            daemon.kill()


@pytest.fixture
def swarm(tmp_path: Path) -> Iterator[Swarm]:
    s = Swarm(tmp_path)
    try:
        yield s
    finally:
        s.close()


def wait_for(predicate: Any, timeout: float, what: str) -> float:
    """Poll until ``predicate()`` holds; return how long it took (for the report)."""
    started = time.monotonic()
    last_error: Exception | None = None
    while time.monotonic() - started < timeout:
        try:
            if predicate():
                note_time("wait", time.monotonic() - started, what)
                return time.monotonic() - started
        except (AssertionError, ValueError, KeyError) as exc:
            last_error = exc
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout} s waiting for {what} ({last_error})")


def offers_model(daemon: Daemon, peer_id: str, name: str) -> bool:
    """Whether ``daemon`` sees ``peer_id`` alive and offering model ``name`` (either kind)."""
    row = daemon.peers().get(peer_id)
    return bool(row and row["alive"] and any(
        m["name"] == name for kind in ("embed", "generate") for m in row["capabilities"][kind]))


def relayed_pair(swarm: Swarm, models: Path, model: str, threads: int = 2
                 ) -> tuple[Daemon, Daemon]:
    """A with the prepared default models, and C without models that knows only A: C relays
    every model job to A. Returns ``(a, c)`` once C sees A offer ``model``."""
    a = swarm.daemon("a", models=models).start("--threads", str(threads))
    c = swarm.daemon("c").start("--bootstrap", a.addr)
    wait_for(lambda: offers_model(c, a.peer_id, model), 30, "A's models seen by C")
    return a, c


def refuses_then_serves(daemon: Daemon, kind: str, attacks: list[dict[str, Any]],
                        good: dict[str, Any]) -> dict[str, Any]:
    """A real hostile libp2p peer sends ``daemon`` every job of ``attacks`` (each must be
    refused BAD_REQUEST), then ``good``; returns ``good``'s result, with the daemon alive."""
    import trio

    from hostile_peer import open_hostile_peer

    replies: list[dict[str, Any]] = []

    async def main() -> None:
        async with open_hostile_peer() as evil:
            await evil.connect(daemon.addr)
            for params in [*attacks, good]:
                replies.append(await evil.job(daemon.peer_id, kind, params))

    trio.run(main)
    assert [r.get("code") for r in replies[:-1]] == ["BAD_REQUEST"] * len(attacks), replies
    assert replies[-1]["t"] == "res", replies[-1]
    assert daemon.proc is not None and daemon.proc.poll() is None  # still running
    result: dict[str, Any] = replies[-1]["result"]
    return result


def shards_converged(daemon: Daemon, collection: str, replicas: int) -> bool:
    """Every shard of ``collection`` answers on ``replicas`` replicas with one digest, its
    owners among them (a restarted owner serves only once it has caught up)."""
    for row in daemon.shards(collection):
        live = [r for r in row["replicas"] if r["docs"] is not None]
        if len(live) < replicas or len({r["digest"] for r in live}) != 1:
            return False
        if not set(row["owners"]) <= {r["peer"] for r in live}:
            return False
    return True


@pytest.fixture(scope="session")
def prepared_models(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The default models, prepared once per test session with the real CLI."""
    home = tmp_path_factory.mktemp("models-home")
    run_cli("models", "--home", str(home), "prepare", timeout=900)
    return home / "models"
