"""A fork server for the integration tier's daemons and CLI runs: real ``calinode start``
(and ``calinode status``, ``search``...) processes without paying the imports for each.

Importing py-libp2p 0.8.1 costs a daemon about 1.5 s of CPU before it does anything (it
imports its QUIC, TLS and ACME stacks unconditionally), and the integration tier starts
daemons well over a hundred times. This server, started once per test session, imports
py-libp2p, trio and the web stack, then forks one child per daemon; the child points its
output at the daemon's log, takes the daemon's environment and runs the CLI's own ``main``
with ``start``'s arguments, exactly as ``calinode start`` would. Each daemon is still its
own OS process with its own pid, killed, stopped and restarted with real signals.

Only modules that start no thread are imported before the fork (a forked child keeps only
the forking thread; numpy's OpenBLAS and onnxruntime start threads at import, so they are
imported by each child, as in a real start). The server checks that it has one thread before
it serves, and the harness falls back to plain ``subprocess.Popen`` when it does not, or
when ``CALINODE_TEST_FORK_SERVER=0``.

The CLI runs of ``daemon_harness.run_cli`` are forked the same way (stdout and stderr to
files of their own, read back as ``subprocess.run`` would give them): the tier runs the CLI
about 150 times, each paying ~0.45 s of start-up and imports as a fresh process.

Wire: JSON lines on the server's stdin/stdout.
``{"spawn": argv, "env": {...}, "log": path, "err": path | null}`` answers
``{"pid": n, "child": k}``; ``{"poll": k}`` answers ``{"code": int | null}`` (the ``subprocess``
convention: ``-N`` for death by signal N). A child is named by ``k``, the
server's count of its spawns, never by its pid: pids wrap (``pid_max`` is 32768 here) and a
long run reuses them, so an exit code kept under a pid would be read as a new daemon's (it
then looked dead at birth, and the harness gave up on it while it ran).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from typing import IO, Any

#: Thread-free imports a daemon or a CLI run makes anyway (see the module docstring).
PRELOAD = ("trio", "libp2p", "libp2p.host.basic_host", "libp2p.security.noise.transport",
           "libp2p.stream_muxer.yamux.yamux", "multiaddr", "msgpack", "orjson",
           "hypercorn.trio", "starlette.applications", "tokenizers", "cryptography",
           "calinode.node.cli.main", "calinode.node.client")


def _child(argv: list[str], env: dict[str, str], log: str, err: str | None) -> None:
    """In the forked child: become ``calinode ARGV`` and never return. Its stdout goes to
    ``log``, its stderr there too or to ``err``."""
    code = 1
    try:
        flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT
        out = os.open(log, flags, 0o666)
        devnull = os.open(os.devnull, os.O_RDONLY)
        os.dup2(devnull, 0)
        os.dup2(out, 1)
        os.dup2(out if err is None else os.open(err, flags, 0o666), 2)
        os.closerange(3, 65536)
        for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGCHLD):
            signal.signal(signum, signal.SIG_DFL)
        # as in a freshly started Python: SIGPIPE ignored, so a write to a socket a peer
        # reset is an EPIPE error the daemon handles, not a silent death (SIG_DFL here made
        # daemons under the relayed-record flood die with status -13)
        signal.signal(signal.SIGPIPE, signal.SIG_IGN)
        os.environ.clear()
        os.environ.update(env)
        sys.argv = ["calinode", *argv]
        from calinode.node.cli.main import main

        code = main(argv)
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    except BaseException:  # the child must end here, whatever happened
        import traceback

        traceback.print_exc()
    finally:
        try:
            import logging

            logging.shutdown()
            sys.stdout.flush()
            sys.stderr.flush()
        finally:
            os._exit(code)


def serve() -> None:
    """The server's loop: read a request, answer it, reap finished children."""
    for name in PRELOAD:
        __import__(name)
    threads = len(os.listdir("/proc/self/task"))
    print(json.dumps({"ready": threads == 1, "threads": threads}), flush=True)
    live: dict[int, int] = {}  # pid -> child number, while the child is not reaped
    codes: dict[int, int] = {}  # child number -> exit code
    spawned = 0
    for line in sys.stdin:
        while True:  # reap whatever ended since the last request
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                break
            if pid == 0:
                break
            if pid in live:
                codes[live.pop(pid)] = os.waitstatus_to_exitcode(status)
        request = json.loads(line)
        if "spawn" in request:
            spawned += 1
            pid = os.fork()
            if pid == 0:
                _child(request["spawn"], request["env"], request["log"], request.get("err"))
            live[pid] = spawned
            answer: dict[str, Any] = {"pid": pid, "child": spawned}
        else:
            answer = {"code": codes.get(request["poll"])}
        print(json.dumps(answer), flush=True)


class ForkServer:
    """The test process's end: one server per session, shared by every ``Daemon``."""

    def __init__(self, env: dict[str, str]) -> None:
        self.proc = subprocess.Popen([sys.executable, __file__], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, text=True, env=env)
        self.lock = threading.Lock()
        hello = self._read()
        self.ready = bool(hello["ready"])

    def _read(self) -> dict[str, Any]:
        stdout: IO[str] | None = self.proc.stdout
        assert stdout is not None
        line = stdout.readline()
        if not line:
            raise RuntimeError("the fork server ended")
        return dict(json.loads(line))

    def ask(self, request: dict[str, Any]) -> dict[str, Any]:
        with self.lock:
            assert self.proc.stdin is not None
            self.proc.stdin.write(json.dumps(request) + "\n")
            self.proc.stdin.flush()
            return self._read()

    def spawn(self, argv: list[str], env: dict[str, str], log: str,
              err: str | None = None) -> ForkedDaemon:
        answer = self.ask({"spawn": argv, "env": env, "log": log, "err": err})
        return ForkedDaemon(self, int(answer["pid"]), int(answer["child"]))

    def close(self) -> None:
        if self.proc.poll() is None:
            assert self.proc.stdin is not None
            self.proc.stdin.close()
            self.proc.wait(30)


class ForkedDaemon:
    """What ``subprocess.Popen`` gives for a daemon, for a child of the fork server."""

    def __init__(self, server: ForkServer, pid: int, child: int) -> None:
        self.server, self.pid, self.child = server, pid, child
        self.returncode: int | None = None

    def poll(self) -> int | None:
        if self.returncode is None:
            code = self.server.ask({"poll": self.child})["code"]
            self.returncode = None if code is None else int(code)
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        deadline = None if timeout is None else time.monotonic() + timeout
        while self.poll() is None:
            if deadline is not None and time.monotonic() > deadline:
                raise subprocess.TimeoutExpired(f"pid {self.pid}", timeout or 0)
            time.sleep(0.02)
        assert self.returncode is not None
        return self.returncode

    def send_signal(self, signum: int) -> None:
        # polled first: a child the server has not reaped keeps its pid (a zombie at worst),
        # so the signal cannot reach another process that took over the number
        if self.poll() is None:
            os.kill(self.pid, signum)

    def terminate(self) -> None:
        self.send_signal(signal.SIGTERM)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)


if __name__ == "__main__":
    serve()
