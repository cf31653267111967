"""The one exception tree of calinode, and the stable error codes that travel on the wire.

::

    CalinodeError                      root of everything calinode raises on purpose
    ├── ProtocolError                  a frame or message broke the wire protocol
    │   ├── LocalProtocolError         we were about to send something invalid
    │   └── RemoteProtocolError        the peer sent something invalid
    ├── JobError                       a job failed with a stable ``ErrorCode``
    │   │  (raised by job handlers, carried back to the caller as an error reply)
    │   └── BadRequest                 the request itself is wrong (``BAD_REQUEST``): the one
    │                                  class every API route, job handler and check raises
    ├── ConfigError                    bad configuration, flags or files
    ├── IdentityError                  unreadable or unsafe key files
    ├── RecordError                    unsigned, forged or stale capability record
    └── ApiError                       the local HTTP API answered with an error (CLI side)

Every error carries a ``code`` from :class:`ErrorCode`: the CLI and the HTTP API map codes to
messages, exit statuses (:data:`EXIT_STATUS`, one table) and HTTP statuses; a peer that
receives an error reply rebuilds a :class:`JobError` with the same code.

Concurrency wraps errors in exception groups (a trio nursery raises a ``BaseExceptionGroup``).
:func:`collapse_group` / :func:`groups_collapsed` turn a group back into one member of this
tree at every nursery boundary an error can cross on its way to the API or the CLI: the
group's first ``CalinodeError``, else an ``INTERNAL`` error whose ``__cause__`` is the bug.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from enum import StrEnum


class ErrorCode(StrEnum):
    """Stable error codes. Never rename one: peers and scripts branch on them."""

    BAD_REQUEST = "BAD_REQUEST"
    MALFORMED_FRAME = "MALFORMED_FRAME"
    FRAME_TOO_LARGE = "FRAME_TOO_LARGE"
    UNKNOWN_KIND = "UNKNOWN_KIND"
    UNKNOWN_MODEL = "UNKNOWN_MODEL"
    OVERLOADED = "OVERLOADED"
    DEADLINE_EXCEEDED = "DEADLINE_EXCEEDED"
    SHARD_UNAVAILABLE = "SHARD_UNAVAILABLE"
    UNKNOWN_COLLECTION = "UNKNOWN_COLLECTION"
    UNAUTHORIZED = "UNAUTHORIZED"
    UNAUTHENTICATED = "UNAUTHENTICATED"
    PAYLOAD_TOO_LARGE = "PAYLOAD_TOO_LARGE"
    UNSUPPORTED_MEDIA_TYPE = "UNSUPPORTED_MEDIA_TYPE"
    NOT_FOUND = "NOT_FOUND"
    METHOD_NOT_ALLOWED = "METHOD_NOT_ALLOWED"
    NO_CAPABLE_PEER = "NO_CAPABLE_PEER"
    UNKNOWN_PEER = "UNKNOWN_PEER"
    PEER_UNREACHABLE = "PEER_UNREACHABLE"
    BAD_RECORD = "BAD_RECORD"
    CONFIG = "CONFIG"
    INTERNAL = "INTERNAL"


class CalinodeError(Exception):
    """Root of the calinode exception tree."""

    code: ErrorCode = ErrorCode.INTERNAL

    def __init__(self, message: str, *, code: ErrorCode | None = None) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code

    def __str__(self) -> str:
        return f"{self.code.value}: {self.message}"


class ProtocolError(CalinodeError):
    """A frame or message does not follow the calinode wire protocol."""

    code = ErrorCode.BAD_REQUEST


class LocalProtocolError(ProtocolError):
    """We were about to send something the protocol forbids (a bug on our side)."""


class RemoteProtocolError(ProtocolError):
    """The peer sent something the protocol forbids."""


class JobError(CalinodeError):
    """A job failed; ``code`` says why in a way a caller can branch on."""


class BadRequest(JobError):
    """The request is wrong (a field, a value, a combination): ``BAD_REQUEST``, naming it."""

    code = ErrorCode.BAD_REQUEST


class ConfigError(CalinodeError):
    """Invalid configuration: a flag, an environment variable or ``calinode.toml``."""

    code = ErrorCode.CONFIG


class IdentityError(CalinodeError):
    """A key file is missing, unreadable, malformed or readable by others."""

    code = ErrorCode.CONFIG


class RecordError(CalinodeError):
    """A capability record is unsigned, forged, or older than the one we hold."""

    code = ErrorCode.BAD_RECORD


class ApiError(CalinodeError):
    """The local HTTP API answered with an error, or could not be reached."""


# -- exception groups ---------------------------------------------------------------------------


def leaves(error: BaseException) -> Iterator[BaseException]:
    """The exceptions inside ``error``, nested groups flattened (``error`` itself if no
    group)."""
    if isinstance(error, BaseExceptionGroup):
        for inner in error.exceptions:
            yield from leaves(inner)
    else:
        yield error


def collapse_group(group: BaseExceptionGroup[BaseException]) -> BaseException:
    """The one exception to raise for ``group``.

    - the group itself when it holds a ``KeyboardInterrupt`` or ``SystemExit``, or nothing
      but ``BaseException`` subclasses that are not ``Exception`` (trio's ``Cancelled``): a
      cancel scope or the runner must see those as they are;
    - else its first ``CalinodeError`` (depth first): the error the caller can branch on
      (the others are siblings cancelled or failing for the same reason);
    - else an ``INTERNAL`` ``CalinodeError`` naming the first bug, with the bug as its
      ``__cause__`` (its traceback survives for the log).
    """
    inside = list(leaves(group))
    if any(isinstance(leaf, KeyboardInterrupt | SystemExit) for leaf in inside):
        return group  # the user or the runner stops everything: never mask that
    for leaf in inside:
        if isinstance(leaf, CalinodeError):
            return leaf
    bugs = [leaf for leaf in inside if isinstance(leaf, Exception)]
    if not bugs:
        return group
    first = bugs[0]
    internal = CalinodeError(f"internal error: {type(first).__name__}: {first}"[:500],
                             code=ErrorCode.INTERNAL)
    internal.__cause__ = first
    return internal


@contextmanager
def groups_collapsed() -> Iterator[None]:
    """Wrap a nursery (``with groups_collapsed(): async with trio.open_nursery() ...``) so that
    what leaves it is one member of the tree (:func:`collapse_group`), never a group."""
    try:
        yield
    except BaseExceptionGroup as group:
        collapsed = collapse_group(group)
        if collapsed is group:
            raise
        raise collapsed from collapsed.__cause__


# -- CLI exit statuses -------------------------------------------------------------------------

EXIT_OK = 0
#: a bug, or a code without a row below
EXIT_INTERNAL = 1
#: the request or the command line is wrong (argparse exits 2 for its own usage errors too)
EXIT_USAGE = 2
#: the answer came, but partial: some shards had no live replica (used by ``calinode search``
#: and ``ask`` unless ``--allow-partial``)
EXIT_PARTIAL = 3
#: the named model, collection, peer or route does not exist
EXIT_NOT_FOUND = 4
#: the API token is missing or wrong, or the caller may not do this
EXIT_DENIED = 5
#: nothing could serve it now (overloaded, no capable or reachable peer, a shard down): retry
EXIT_UNAVAILABLE = 6
#: the deadline passed before an answer
EXIT_DEADLINE = 7
#: configuration, key files or records are wrong on this machine
EXIT_CONFIG = 8
#: the command ran, but some of its documents failed (``calinode ingest``; the summary names
#: them)
EXIT_DOCS_FAILED = 9
#: Ctrl-C
EXIT_INTERRUPTED = 130

#: The exit status of the ``calinode`` command for each error code (every code has a row).
EXIT_STATUS: dict[ErrorCode, int] = {
    ErrorCode.BAD_REQUEST: EXIT_USAGE,
    ErrorCode.MALFORMED_FRAME: EXIT_USAGE,
    ErrorCode.FRAME_TOO_LARGE: EXIT_USAGE,
    ErrorCode.UNKNOWN_KIND: EXIT_USAGE,
    ErrorCode.PAYLOAD_TOO_LARGE: EXIT_USAGE,
    ErrorCode.UNSUPPORTED_MEDIA_TYPE: EXIT_USAGE,
    ErrorCode.METHOD_NOT_ALLOWED: EXIT_USAGE,
    ErrorCode.UNKNOWN_MODEL: EXIT_NOT_FOUND,
    ErrorCode.UNKNOWN_COLLECTION: EXIT_NOT_FOUND,
    ErrorCode.UNKNOWN_PEER: EXIT_NOT_FOUND,
    ErrorCode.NOT_FOUND: EXIT_NOT_FOUND,
    ErrorCode.UNAUTHORIZED: EXIT_DENIED,
    ErrorCode.UNAUTHENTICATED: EXIT_DENIED,
    ErrorCode.OVERLOADED: EXIT_UNAVAILABLE,
    ErrorCode.NO_CAPABLE_PEER: EXIT_UNAVAILABLE,
    ErrorCode.PEER_UNREACHABLE: EXIT_UNAVAILABLE,
    ErrorCode.SHARD_UNAVAILABLE: EXIT_UNAVAILABLE,
    ErrorCode.DEADLINE_EXCEEDED: EXIT_DEADLINE,
    ErrorCode.CONFIG: EXIT_CONFIG,
    ErrorCode.BAD_RECORD: EXIT_CONFIG,
    ErrorCode.INTERNAL: EXIT_INTERNAL,
}


def exit_status(code: ErrorCode) -> int:
    """The ``calinode`` exit status for an error with ``code`` (:data:`EXIT_STATUS`)."""
    return EXIT_STATUS.get(code, EXIT_INTERNAL)


def exit_status_table() -> str:
    """:data:`EXIT_STATUS` as text, one status a line (``calinode --help`` and the README)."""
    by_status: dict[int, list[str]] = {EXIT_OK: ["success"]}
    for code, status in EXIT_STATUS.items():
        by_status.setdefault(status, []).append(code.value)
    by_status.setdefault(EXIT_PARTIAL, []).insert(0, "partial answer (shards missing)")
    by_status.setdefault(EXIT_DOCS_FAILED, []).insert(0, "some documents failed (ingest)")
    by_status[EXIT_INTERNAL].append("any other error")
    by_status[EXIT_INTERRUPTED] = ["interrupted (Ctrl-C)"]
    return "\n".join(f"  {status:>3}  {', '.join(names)}"
                     for status, names in sorted(by_status.items()))
