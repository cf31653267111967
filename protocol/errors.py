"""The one exception tree of calinode, and the stable error codes that travel on the wire.

::

    CalinodeError                      root of everything calinode raises on purpose
    ├── ProtocolError                  a frame or message broke the wire protocol
    │   ├── LocalProtocolError         we were about to send something invalid
    │   └── RemoteProtocolError        the peer sent something invalid
    ├── JobError                       a job failed with a stable ``ErrorCode``
    │   (raised by job handlers, carried back to the caller as an error reply)
    ├── ConfigError                    bad configuration, flags or files
    ├── IdentityError                  unreadable or unsafe key files
    ├── RecordError                    unsigned, forged or stale capability record
    └── ApiError                       the local HTTP API answered with an error (CLI side)

Every error carries a ``code`` from :class:`ErrorCode`: the CLI and the HTTP API map codes to
messages, exit statuses and HTTP statuses; a peer that receives an error reply rebuilds a
:class:`JobError` with the same code.
"""

from __future__ import annotations

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
