"""Field checks shared by every message type, and the boundary between local and remote errors.

Message types validate themselves once, in ``__post_init__``, with the ``check_*`` functions
below, which raise :class:`~calinode.protocol.errors.LocalProtocolError` (``BAD_REQUEST``): a
message built locally with a bad value is our bug.  The same constructors build messages from
the wire, inside :func:`from_peer`, which turns that error into a
:class:`~calinode.protocol.errors.RemoteProtocolError` with the same code and text: the value came
from the peer.  So the rules live in one place, and a decoded message is exactly as valid as one
built locally.

Types are checked strictly: ``bool`` is not an ``int`` (although it is a subclass of one), a
``str`` field does not accept ``bytes`` and vice versa, and wire maps must carry exactly the
expected keys (no missing field, no unknown field; extensible data goes into the free-form maps
such as ``params`` and ``capabilities``).
"""

from __future__ import annotations

import dataclasses
import functools
import re
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, Final, NoReturn

from .errors import ErrorCode, LocalProtocolError, RemoteProtocolError

__all__ = [
    "BASE58",
    "DIGEST",
    "JOB_KIND",
    "MAX_INT64",
    "MODEL_NAME",
    "SHA256",
    "check_bytes",
    "check_instance",
    "check_int",
    "check_str",
    "check_str_map",
    "field_names",
    "from_peer",
    "invalid",
    "wire_fields",
]

#: A base58 (bitcoin alphabet) string, as libp2p peer ids are written.
BASE58: Final = re.compile(r"[1-9A-HJ-NP-Za-km-z]+")
#: A model's name as manifests write it: lowercase letters, digits, ``.``, ``_`` and ``-``.
MODEL_NAME: Final = re.compile(r"[a-z0-9][a-z0-9._-]{0,127}")
#: A sha256 in lowercase hex (a model file's identity).
SHA256: Final = re.compile(r"[0-9a-f]{64}")
#: A shard digest in lowercase hex.
DIGEST: Final = re.compile(r"[0-9a-f]{1,128}")
#: A job kind: ``[a-z][a-z0-9_.-]*`` (callers bound its length).
JOB_KIND: Final = re.compile(r"[a-z][a-z0-9_.-]*")
#: Largest signed 64-bit int: the bound of counters and timestamps on the wire.
MAX_INT64: Final = 2**63 - 1


def invalid(reason: str) -> NoReturn:
    """Refuse a field value (a local error; :func:`from_peer` makes it a remote one)."""
    raise LocalProtocolError(reason, code=ErrorCode.BAD_REQUEST)


def _type_name(value: object) -> str:
    return type(value).__name__


def check_str(
    name: str,
    value: object,
    *,
    max_len: int,
    min_len: int = 1,
    pattern: re.Pattern[str] | None = None,
) -> None:
    """``value`` is a str of ``min_len..max_len`` characters (fully matching ``pattern``)."""
    if not isinstance(value, str):
        invalid(f"{name} must be a str, not {_type_name(value)}")
    if not min_len <= len(value) <= max_len:
        invalid(f"{name} must have {min_len} to {max_len} characters, has {len(value)}")
    if pattern is not None and pattern.fullmatch(value) is None:
        invalid(f"{name} {value!r} does not match {pattern.pattern}")


def check_int(name: str, value: object, *, lo: int, hi: int) -> None:
    """``value`` is an int (not a bool) in ``lo..hi``."""
    if not isinstance(value, int) or isinstance(value, bool):
        invalid(f"{name} must be an int, not {_type_name(value)}")
    if not lo <= value <= hi:
        invalid(f"{name} must be in {lo}..{hi}, is {value}")


def check_bytes(name: str, value: object, *, max_len: int, min_len: int = 0) -> None:
    """``value`` is a bytes object of ``min_len..max_len`` bytes."""
    if not isinstance(value, bytes):
        invalid(f"{name} must be bytes, not {_type_name(value)}")
    if not min_len <= len(value) <= max_len:
        invalid(f"{name} must have {min_len} to {max_len} bytes, has {len(value)}")


def check_str_map(name: str, value: object) -> None:
    """``value`` is a dict whose keys are all str (its values are not inspected)."""
    if not isinstance(value, dict):
        invalid(f"{name} must be a map, not {_type_name(value)}")
    for key in value:
        if not isinstance(key, str):
            invalid(f"{name} keys must be str, found {_type_name(key)}")


def check_instance(name: str, value: object, cls: type) -> None:
    """``value`` is an instance of ``cls``."""
    if not isinstance(value, cls):
        invalid(f"{name} must be a {cls.__name__}, not {_type_name(value)}")


@contextmanager
def from_peer() -> Iterator[None]:
    """Turn a :class:`LocalProtocolError` raised inside into a :class:`RemoteProtocolError`."""
    try:
        yield
    except LocalProtocolError as exc:
        raise RemoteProtocolError(exc.message, code=exc.code) from None


@functools.cache
def field_names(cls: Any) -> frozenset[str]:
    """Names of the fields of dataclass ``cls``: the keys of its wire map, besides ``"t"``."""
    return frozenset(field.name for field in dataclasses.fields(cls))


def wire_fields(obj: object, cls: Any, tag: str | None) -> dict[str, Any]:
    """The fields of a wire map for dataclass ``cls``: its field names plus ``"t" == tag``.

    A map without a tag (``tag=None``) is a part of a message, such as ``load``.  Raises
    :class:`RemoteProtocolError` (``BAD_REQUEST``) unless the map holds exactly those keys.
    Returns a new dict without ``"t"``, ready to be passed to ``cls`` as keyword arguments.
    """
    names = field_names(cls)
    what = f"{tag!r} message" if tag is not None else f"{cls.__name__} map"
    if not isinstance(obj, dict):
        raise RemoteProtocolError(
            f"{what} must be a map, not {_type_name(obj)}", code=ErrorCode.BAD_REQUEST
        )
    fields = dict(obj)
    if tag is not None and fields.pop("t", None) != tag:
        raise RemoteProtocolError(f"{what} must have t={tag!r}", code=ErrorCode.BAD_REQUEST)
    if fields.keys() != names:
        missing = sorted(names - fields.keys())
        unknown = sorted(repr(k) for k in fields.keys() - names)[:8]
        raise RemoteProtocolError(
            f"{what}: missing fields {missing}, unknown fields {unknown}",
            code=ErrorCode.BAD_REQUEST,
        )
    return fields
