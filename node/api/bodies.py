"""The one reader of JSON request bodies on the local HTTP API: each field checked for its type
(and range) before a route uses it, a wrong one refused as ``BAD_REQUEST`` naming the field.

One request timeout rule for every route: a number of seconds in ``(0, MAX_TIMEOUT]``, taken
out of the body (so a body passed on as job params does not carry it). Before issue 11 the
routes had three readers with two caps (300 s for ping and jobs, 600 s for inference and
RAG); the one cap is the largest, 600 s, because a long generation or a search of many queries
over a slow swarm legitimately takes minutes, and ``calinode search`` asks for exactly 600 s
(``CLI_SEARCH_BUDGET``). Lowering it would refuse requests the API accepts today; a client
that wants less gives less.
"""

from __future__ import annotations

from typing import Any

import trio

from calinode.protocol.errors import BadRequest

__all__ = ["DEFAULT_TIMEOUT", "MAX_TIMEOUT", "field", "integer", "peer_ids", "request_deadline",
           "string", "timeout_of"]

#: The longest a request may ask the node to work on it, in seconds (see the module docstring).
MAX_TIMEOUT = 600.0
#: A request's timeout when it gives none (routes with shorter work give their own).
DEFAULT_TIMEOUT = 120.0

_MISSING: Any = ...


def field(body: dict[str, Any], name: str, kind: type, default: Any = _MISSING) -> Any:
    """``body[name]`` of type ``kind`` (an int is a float; a bool is neither), or ``default``
    when absent; with no default, a missing field is refused."""
    value = body.get(name, default)
    if value is _MISSING:
        raise BadRequest(f"missing field {name!r}")
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if not isinstance(value, kind) or (isinstance(value, bool) and kind is not bool):
        raise BadRequest(f"field {name!r} must be {kind.__name__}")
    return value


def integer(body: dict[str, Any], name: str, default: int) -> int:
    """``body[name]`` as an integer (not a bool), ``default`` when absent."""
    value = body.get(name, default)
    if not isinstance(value, int) or isinstance(value, bool):
        raise BadRequest(f"{name} must be an integer")
    return value


def string(body: dict[str, Any], name: str, default: str | None = None) -> str:
    """``body[name]`` as a non-empty string, ``default`` when absent (None: required)."""
    value = body.get(name, default)
    if not isinstance(value, str) or not value:
        raise BadRequest(f"{name} must be a non-empty string")
    return value


def peer_ids(body: dict[str, Any], name: str) -> tuple[str, ...]:
    """``body[name]`` as a list of peer ids (strings), empty when absent."""
    value = body.get(name, [])
    if not isinstance(value, list) or not all(isinstance(p, str) for p in value):
        raise BadRequest(f"{name} must be a list of peer ids")
    return tuple(value)


def timeout_of(body: dict[str, Any], default: float = DEFAULT_TIMEOUT) -> float:
    """The request's ``timeout`` in seconds, removed from ``body``: a number in
    ``(0, MAX_TIMEOUT]``, ``default`` when absent."""
    value = body.pop("timeout", default)
    if not isinstance(value, int | float) or isinstance(value, bool) or not (
            0 < value <= MAX_TIMEOUT):
        raise BadRequest(f"timeout must be a number of seconds in (0, {MAX_TIMEOUT:.0f}]")
    return float(value)


def request_deadline(body: dict[str, Any], default: float = DEFAULT_TIMEOUT) -> float:
    """The one deadline (trio time) of this request, from its ``timeout``: set here, at the
    edge, and spent by every step (embed, shard search, generation) and every job of it."""
    return trio.current_time() + timeout_of(body, default)
