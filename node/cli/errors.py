"""The one error path of the ``calinode`` command (every command, ``start`` included).

An error a user can act on prints exactly one line on stderr, ``calinode: error: CODE:
message; what to do next``, and the command exits with the status of its code
(``protocol/errors.py``: ``EXIT_STATUS``). Expected errors are:

- every :class:`CalinodeError` except ``INTERNAL`` ones;
- the operating-system errors a user causes and can fix (:func:`expected_os_error`): an
  address in use, a missing file, a permission, a full or read-only disk.

A reader that stops reading (``calinode peers --json | head``) ends the command quietly
with status 141 (128 + SIGPIPE), as a shell tool does. Anything else is a bug: one line
``internal error ...; please report it with the log at PATH``, the traceback written to PATH
(and on stderr with ``--debug``). An exception group from the daemon's nurseries is looked
through for the first expected error, else collapsed (``collapse_group``).
"""

from __future__ import annotations

import errno
import os
import sys
import tempfile
import time
import traceback
from pathlib import Path

from calinode.protocol.errors import (
    EXIT_INTERRUPTED,
    CalinodeError,
    ErrorCode,
    collapse_group,
    exit_status,
    leaves,
)

#: the status of a command whose reader closed its stdout (128 + SIGPIPE)
EXIT_BROKEN_PIPE = 141

# errno -> (code, what to do next)
_OS_ERRORS: dict[int, tuple[ErrorCode, str]] = {
    errno.EADDRINUSE: (ErrorCode.CONFIG, "another program holds the address; stop it or pick "
                       "another port (--listen, --api)"),
    errno.EADDRNOTAVAIL: (ErrorCode.CONFIG, "the address is not one of this machine's; check "
                          "--listen and --api"),
    errno.ENOENT: (ErrorCode.NOT_FOUND, "check the path"),
    errno.ENOTDIR: (ErrorCode.NOT_FOUND, "check the path"),
    errno.EISDIR: (ErrorCode.BAD_REQUEST, "give a file, not a folder"),
    errno.EACCES: (ErrorCode.CONFIG, "check the owner and mode of the file, or use another "
                   "--home"),
    errno.EPERM: (ErrorCode.CONFIG, "check the owner and mode of the file, or use another "
                  "--home"),
    errno.EROFS: (ErrorCode.CONFIG, "the file system is read-only; use another --home"),
    errno.ENOSPC: (ErrorCode.CONFIG, "the disk is full; free some space"),
    errno.EDQUOT: (ErrorCode.CONFIG, "the disk quota is used up; free some space"),
}


def expected_os_error(exc: BaseException) -> CalinodeError | None:
    """``exc`` as a one-line error when it is an OS error a user can fix, else None."""
    if not isinstance(exc, OSError) or exc.errno not in _OS_ERRORS:
        return None
    code, hint = _OS_ERRORS[exc.errno]
    what = exc.strerror or os.strerror(exc.errno)
    names = [str(n) for n in (exc.filename, exc.filename2) if n is not None]
    where = f": {' -> '.join(names)}" if names else ""
    return CalinodeError(f"{what}{where}; {hint}", code=code)


def expected_error(exc: BaseException) -> CalinodeError | None:
    """The error to show ``exc`` as in one line, or None when ``exc`` is a bug.

    A group yields its first expected leaf (the siblings were cancelled or failed for the
    same reason); an ``INTERNAL`` error is a bug whatever raised it."""
    if isinstance(exc, BaseExceptionGroup):
        for leaf in leaves(exc):
            found = expected_error(leaf)
            if found is not None:
                return found
        collapsed = collapse_group(exc)
        return None if collapsed is exc else expected_error(collapsed)
    if isinstance(exc, CalinodeError):
        return None if exc.code is ErrorCode.INTERNAL and exc.__cause__ is not None else exc
    return expected_os_error(exc)


def interrupted(exc: BaseException) -> bool:
    """Ctrl-C, alone or inside a group."""
    return any(isinstance(leaf, KeyboardInterrupt) for leaf in leaves(exc))


def write_crash_log(exc: BaseException) -> Path | None:
    """Write ``exc``'s traceback to a new private file in the temp folder; its path, or None
    when even that fails (the traceback then goes to stderr)."""
    name = f"calinode-crash-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}.log"
    path = Path(tempfile.gettempdir()) / name
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(f"calinode {' '.join(sys.argv[1:])}\n")
            fh.write("".join(traceback.format_exception(exc)))
    except OSError:
        return None
    return path


def _silence_stdout() -> None:
    """Point stdout at /dev/null so that the interpreter's final flush does not fail again."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):
        pass


def report(exc: BaseException, *, debug: bool) -> int:
    """Print ``exc`` as the one error line (plus the traceback with ``debug``); its status."""
    if interrupted(exc):
        return EXIT_INTERRUPTED
    if isinstance(exc, BrokenPipeError):
        _silence_stdout()
        return EXIT_BROKEN_PIPE
    if debug:
        traceback.print_exception(exc, file=sys.stderr)
    error = expected_error(exc)
    if error is not None:
        message = error.message
        if error.code is ErrorCode.INTERNAL and "please report" not in message:
            # a bug the node reported (an API 500): its traceback is in the node's log
            message += "; please report it with the node's log"
        print(f"calinode: error: {error.code.value}: {message}", file=sys.stderr)
        return exit_status(error.code)
    bug = exc.__cause__ if isinstance(exc, CalinodeError) and exc.__cause__ else exc
    if isinstance(bug, BaseExceptionGroup):
        collapsed = collapse_group(bug)
        bug = collapsed.__cause__ or collapsed
    log = write_crash_log(exc)
    if log is None and not debug:
        traceback.print_exception(exc, file=sys.stderr)
    where = f"the log at {log}" if log is not None else "the traceback above"
    print(f"calinode: error: INTERNAL: internal error: {type(bug).__name__}: "
          f"{str(bug)[:300]}; please report it with {where}", file=sys.stderr)
    return exit_status(ErrorCode.INTERNAL)
