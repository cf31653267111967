"""msgpack codec with limits: a frame payload is exactly one msgpack map with str keys.

:func:`unpack` decodes in two passes:

1. :func:`scan`, a pure-Python walk over the msgpack encoding that reads type bytes and length
   fields and skips str/bin bodies *without building any object*.  It refuses truncated input,
   trailing bytes, a top level that is not a map, map keys that are not str, ext types and the
   never-used byte ``0xc1``, and anything over a :class:`~calinode.protocol.limits.Limits` bound:
   objects, depth, str/bin/array/map sizes, and the estimated memory the objects would take
   (see :mod:`calinode.protocol.limits`).  It stops at the first problem, so its cost is bounded
   by ``max_objects`` steps whatever the frame size.  Container headers are also checked against
   the bytes left (every item takes at least one byte), so a three-byte array header cannot claim
   100 000 items that are not there.
2. ``msgpack.unpackb`` with the same limits, which now only has to reject invalid UTF-8 (and,
   as a backstop, anything the scan missed).  Every msgpack exception becomes a
   :class:`~calinode.protocol.errors.RemoteProtocolError` with code ``MALFORMED_FRAME``.

The memory estimate (:attr:`ScanResult.memory`) is an upper bound of what ``unpackb`` allocates
for the payload, from per-type costs measured on CPython 3.11 (see the ``_COST_*`` constants; a
unit test checks the bound).  It leaves out interpreter-wide tables that decoding can grow, such as
the table of interned strings that map keys go into: those grow with the number of distinct live
keys in the process, not with one frame.  Small numbers cost 10-20 times their wire size as
Python objects, so a large numeric array must travel as a bin (see
:mod:`calinode.protocol.vectors`), never as a msgpack array.

Duplicate map keys are not refused: msgpack keeps the last value.

:func:`pack` encodes with ``use_bin_type=True`` (``bytes`` -> bin, ``str`` -> str) and raises
:class:`~calinode.protocol.errors.LocalProtocolError` for objects msgpack cannot encode.  Given
``limits``, it also scans its own output, so we never send what a peer would refuse.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Final, NoReturn, cast

import msgpack

from .errors import ErrorCode, LocalProtocolError, RemoteProtocolError
from .limits import DEFAULT_LIMITS, Limits

__all__ = ["ScanResult", "pack", "scan", "unpack"]

# What a leading byte announces.  The second member of a table entry is the number of bytes that
# follow for a number, or the size of the length field for str/bin/array/map (0: the length is in
# the low bits of the leading byte, as in fixstr, fixarray and fixmap).
_PLAIN: Final = 0  # nil, true, false, positive/negative fixint: nothing follows
_NUMBER: Final = 1  # int 8..64, uint 8..64, float 32/64
_STR: Final = 2
_BIN: Final = 3
_ARRAY: Final = 4
_MAP: Final = 5
_EXT: Final = 6  # ext 8/16/32 and fixext 1..16: refused
_NEVER: Final = 7  # 0xc1, reserved by the msgpack spec: refused

_TYPED: Final[dict[int, tuple[int, int]]] = {
    0xC0: (_PLAIN, 0), 0xC1: (_NEVER, 0), 0xC2: (_PLAIN, 0), 0xC3: (_PLAIN, 0),
    0xC4: (_BIN, 1), 0xC5: (_BIN, 2), 0xC6: (_BIN, 4),
    0xC7: (_EXT, 1), 0xC8: (_EXT, 2), 0xC9: (_EXT, 4),
    0xCA: (_NUMBER, 4), 0xCB: (_NUMBER, 8),
    0xCC: (_NUMBER, 1), 0xCD: (_NUMBER, 2), 0xCE: (_NUMBER, 4), 0xCF: (_NUMBER, 8),
    0xD0: (_NUMBER, 1), 0xD1: (_NUMBER, 2), 0xD2: (_NUMBER, 4), 0xD3: (_NUMBER, 8),
    0xD4: (_EXT, 0), 0xD5: (_EXT, 0), 0xD6: (_EXT, 0), 0xD7: (_EXT, 0), 0xD8: (_EXT, 0),
    0xD9: (_STR, 1), 0xDA: (_STR, 2), 0xDB: (_STR, 4),
    0xDC: (_ARRAY, 2), 0xDD: (_ARRAY, 4),
    0xDE: (_MAP, 2), 0xDF: (_MAP, 4),
}  # fmt: skip


def _leading_byte(b: int) -> tuple[int, int]:
    if b <= 0x7F or b >= 0xE0:
        return (_PLAIN, 0)
    if b <= 0x8F:
        return (_MAP, 0)
    if b <= 0x9F:
        return (_ARRAY, 0)
    if b <= 0xBF:
        return (_STR, 0)
    return _TYPED[b]


_TABLE: Final = tuple(_leading_byte(b) for b in range(256))

# Conservative Python heap cost, in bytes, of what msgpack builds for each kind of object
# (CPython 3.11, 64-bit, measured with tracemalloc and rounded up).  A list or dict slot holding a
# child is charged to the container.  nil, booleans, fixints, "" and one-character strings are
# shared singletons and cost nothing.
_COST_NUMBER: Final = 32  # float, or int of up to 2 digits (|value| < 2**60) ...
_COST_NUMBER64: Final = 40  # ... or of 3 digits (int 64, uint 64); a uint 8 is a cached small int
_COST_BIN: Final = 40  # bytes header, plus the body
_COST_LIST: Final = 64  # list header, plus 9 bytes per item (8-byte slots; msgpack grows long
#                         lists by appending, which over-allocates by up to 1/8)
_COST_ASCII: Final = 56  # compact ASCII str header, plus one byte per character
_COST_STR: Final = 80  # any other str header, plus 2 or 4 bytes per UTF-8 byte (see _str_cost)
_COST_KEY: Final = 48  # map keys are interned: a slot in the interpreter's table of them
# The first _KEY_DEDUP_COUNT distinct keys of at most _KEY_DEDUP_LEN bytes are charged once per
# payload (legitimate messages repeat a small vocabulary of keys); any other key, every time.
_KEY_DEDUP_LEN: Final = 64
_KEY_DEDUP_COUNT: Final = 256
_NON_ASCII: Final = re.compile(rb"[\x80-\xff]")
_ASTRAL: Final = re.compile(rb"[\xf0-\xff]")  # lead byte of a 4-byte UTF-8 sequence (or junk)


def _dict_cost(entries: int) -> int:
    """Upper bound of a dict presized for ``entries`` (hash table sizes are powers of two)."""
    slots = 8
    while slots * 2 // 3 < entries:
        slots *= 2
    return 120 + 15 * slots


def _str_cost(data: bytes, start: int, end: int) -> tuple[int, int]:
    """(bytes of the str object, extra scratch bytes while decoding it) for UTF-8 bytes."""
    length = end - start
    if _NON_ASCII.search(data, start, end) is None:
        return _COST_ASCII + length, 0
    # The decoder writes into a buffer sized for ``length`` characters of the widest kind seen
    # so far and widens it (copying) when it meets a wider character.
    if _ASTRAL.search(data, start, end) is None:
        return _COST_STR + 2 * length, 3 * length  # at most UCS-2
    return _COST_STR + 4 * length, 5 * length  # UCS-4


@dataclass(frozen=True, kw_only=True, slots=True)
class ScanResult:
    """What :func:`scan` learned about a payload it accepted."""

    #: msgpack objects in the payload (containers, keys and values).
    objects: int
    #: Deepest container nesting (the top-level map is depth 1).
    depth: int
    #: Upper bound, in bytes, of the memory ``msgpack.unpackb`` will allocate for it.
    memory: int


def _malformed(reason: str) -> NoReturn:
    raise RemoteProtocolError(reason, code=ErrorCode.MALFORMED_FRAME)


def scan(data: bytes, limits: Limits = DEFAULT_LIMITS) -> ScanResult:
    """Check that ``data`` is one msgpack map within ``limits``; say what it holds.

    Raises :class:`~calinode.protocol.errors.RemoteProtocolError`: ``FRAME_TOO_LARGE`` when
    ``data`` is longer than ``max_frame``, otherwise ``MALFORMED_FRAME`` with the reason.
    """
    size = len(data)
    if size > limits.max_frame:
        raise RemoteProtocolError(
            f"payload of {size} bytes exceeds max_frame={limits.max_frame}",
            code=ErrorCode.FRAME_TOO_LARGE,
        )
    if size == 0:
        _malformed("empty payload")
    if _TABLE[data[0]][0] != _MAP:
        _malformed(f"top-level value is not a map (leading byte 0x{data[0]:02x})")
    table = _TABLE
    max_objects, max_depth = limits.max_objects, limits.max_depth
    budget = limits.max_expansion * size + limits.expansion_slack
    cost = 0  # estimated bytes of every object built so far ...
    transient = 0  # ... plus the scratch space of decoding the longest str
    objects = 0
    depth = 0
    pos = 0
    remaining = 1  # items still to read in the innermost open container (a map: keys + values)
    in_map = False
    stack: list[tuple[int, bool]] = []  # (remaining, in_map) of every enclosing container
    keys: set[bytes] = set()  # short map keys already charged: msgpack interns keys
    while True:
        if objects == max_objects:
            _malformed(f"more than max_objects={max_objects} objects")
        objects += 1
        if pos >= size:
            _malformed(f"truncated at byte {pos}")
        lead = data[pos]
        pos += 1
        kind, arg = table[lead]
        is_key = in_map and not remaining & 1  # a map's items alternate key, value
        if is_key and kind != _STR:
            _malformed(f"map key at byte {pos - 1} is not a str")
        items = 0
        if kind == _PLAIN:
            pass
        elif kind == _NUMBER:
            pos += arg
            if arg == 8:
                cost += _COST_NUMBER64
            elif lead != 0xCC:
                cost += _COST_NUMBER
        elif kind >= _EXT:
            what = "an ext type" if kind == _EXT else "the reserved byte 0xc1"
            _malformed(f"{what} at byte {pos - 1}")
        else:
            if arg == 0:
                length = lead & (0x1F if kind == _STR else 0x0F)
            elif pos + arg > size:
                _malformed(f"truncated at byte {pos}")
            else:
                length = int.from_bytes(data[pos : pos + arg], "big")
                pos += arg
            if kind == _STR:
                if length > limits.max_str:
                    _malformed(f"str of {length} bytes exceeds max_str={limits.max_str}")
                start, pos = pos, pos + length
                if length > 1 and pos <= size:
                    if is_key and length <= _KEY_DEDUP_LEN:
                        key = bytes(data[start:pos])  # hashable even from a bytearray
                        charge = key not in keys
                        if charge and len(keys) < _KEY_DEDUP_COUNT:
                            keys.add(key)
                    else:
                        charge = True
                    if charge:
                        final, scratch = _str_cost(data, start, pos)
                        cost += final + (_COST_KEY if is_key else 0)
                        transient = max(transient, scratch)
            elif kind == _BIN:
                if length > limits.max_bin:
                    _malformed(f"bin of {length} bytes exceeds max_bin={limits.max_bin}")
                pos += length
                cost += _COST_BIN + length
            elif kind == _ARRAY:
                if length > limits.max_array:
                    _malformed(f"array of {length} items exceeds max_array={limits.max_array}")
                items = length
                cost += _COST_LIST + 9 * length
            else:
                if length > limits.max_map:
                    _malformed(f"map of {length} entries exceeds max_map={limits.max_map}")
                items = 2 * length
                cost += _dict_cost(length)
            if kind >= _ARRAY:
                if len(stack) >= max_depth:
                    _malformed(f"nesting deeper than max_depth={max_depth}")
                depth = max(depth, len(stack) + 1)
                if items > size - pos:  # every item takes at least one byte
                    _malformed(f"truncated: {items} items announced at byte {pos - 1}")
        if pos > size:
            _malformed(f"truncated: {pos - size} bytes missing")
        if cost + transient > budget:
            _malformed(
                f"decoding would take about {cost + transient} bytes of memory, over the "
                f"budget of {budget} for a {size}-byte payload"
            )
        if items:  # descend into a non-empty container
            stack.append((remaining, in_map))
            remaining, in_map = items, kind == _MAP
            continue
        remaining -= 1  # one value complete; close every container it completes
        while remaining == 0 and stack:
            remaining, in_map = stack.pop()
            remaining -= 1
        if remaining == 0:
            break
    if pos != size:
        _malformed(f"{size - pos} trailing bytes after the top-level map")
    return ScanResult(objects=objects, depth=depth, memory=cost + transient)


def unpack(data: bytes, limits: Limits = DEFAULT_LIMITS) -> dict[str, Any]:
    """Decode one frame payload into a dict, within ``limits``.

    Raises :class:`~calinode.protocol.errors.RemoteProtocolError` (``MALFORMED_FRAME``, or
    ``FRAME_TOO_LARGE`` for a payload over ``max_frame``) and nothing else.
    """
    scan(data, limits)
    try:
        obj = msgpack.unpackb(
            data,
            raw=False,
            strict_map_key=True,
            use_list=True,
            max_str_len=limits.max_str,
            max_bin_len=limits.max_bin,
            max_array_len=limits.max_array,
            max_map_len=limits.max_map,
            max_ext_len=0,
        )
    except (ValueError, TypeError, OverflowError, msgpack.UnpackException) as exc:
        # ValueError covers UnicodeDecodeError, ExtraData, FormatError and StackError.
        raise RemoteProtocolError(
            f"undecodable msgpack: {type(exc).__name__}: {exc}", code=ErrorCode.MALFORMED_FRAME
        ) from exc
    if not isinstance(obj, dict):  # pragma: no cover - scan() already guarantees a map
        _malformed("top-level value is not a map")
    return cast(dict[str, Any], obj)


def pack(obj: object, *, limits: Limits | None = None) -> bytes:
    """Encode ``obj`` with msgpack (``use_bin_type=True``).

    Raises :class:`~calinode.protocol.errors.LocalProtocolError` when msgpack cannot encode it
    (an unsupported type, an int out of the 64-bit range, a lone surrogate in a str...).  With
    ``limits``, the result must also pass :func:`scan`: a peer with those limits would refuse
    anything else, so the failure is ours (``LocalProtocolError`` with the same code).
    """
    try:
        data = cast(bytes, msgpack.packb(obj, use_bin_type=True))
    except (TypeError, ValueError, OverflowError) as exc:
        raise LocalProtocolError(
            f"cannot encode {type(obj).__name__} with msgpack: {type(exc).__name__}: {exc}",
            code=ErrorCode.BAD_REQUEST,
        ) from exc
    if limits is not None:
        try:
            scan(data, limits)
        except RemoteProtocolError as exc:
            raise LocalProtocolError(f"refusing to send: {exc.message}", code=exc.code) from exc
    return data
