"""A model's answer read back as tool calls (issue 15), and the text it may stream meanwhile.

The model calls a tool by writing the block of :mod:`calinode.models.tool_prompt`
(``<tool_call>`` JSON ``</tool_call>``; generation stops at the closing tag, so it may be
missing). :func:`parse_tool_output` splits an answer into the text before the block and the
call: the JSON must be an object with a ``name`` the request offered and ``arguments`` that
are an object (or the JSON text of one). Anything else, including a malformed block, is
plain text, as a model that answered without calling would have written it. The call gets a
fresh id, ``call_<24 hex digits>``.

:class:`CallHoldBack` decides what of a streaming answer may go out as text: everything up to
a ``<tool_call>`` (holding back a tail that may begin one, and leading blank space), nothing
after; with a forced call (``silent``), nothing at all.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Collection
from typing import Any

from calinode.models.tool_grammar import CALL_CLOSE, CALL_OPEN
from calinode.protocol.errors import ProtocolError
from calinode.protocol.tools import ToolCall

__all__ = ["CallHoldBack", "new_call_id", "parse_tool_output", "tool_reply_fields"]


def new_call_id() -> str:
    return f"call_{secrets.token_hex(12)}"


def _call(body: str, offered: Collection[str]) -> ToolCall | None:
    try:
        # strict=False: the grammar's JSON strings may hold raw control characters (a
        # newline), which json.dumps escapes below
        value, _ = json.JSONDecoder(strict=False).raw_decode(body.strip())
    except (ValueError, RecursionError):
        return None
    if not isinstance(value, dict) or set(value) != {"name", "arguments"}:
        return None
    name, arguments = value["name"], value["arguments"]
    if isinstance(arguments, str):
        try:
            arguments = json.loads(arguments, strict=False)
        except (ValueError, RecursionError):
            return None
    if not isinstance(name, str) or name not in offered or not isinstance(arguments, dict):
        return None
    try:
        return ToolCall(id=new_call_id(), name=name,
                        arguments=json.dumps(arguments, ensure_ascii=False))
    except ProtocolError:  # arguments too long
        return None


def parse_tool_output(text: str, offered: Collection[str]) -> tuple[str, tuple[ToolCall, ...]]:
    """``(text before the call, (the call,))``, or ``(text, ())`` when it holds no valid
    call of a tool in ``offered``."""
    start = text.find(CALL_OPEN)
    if start < 0:
        return text, ()
    body = text[start + len(CALL_OPEN):]
    end = body.find(CALL_CLOSE)
    call = _call(body if end < 0 else body[:end], offered)
    if call is None:
        return text, ()
    return text[:start].strip(), (call,)


class CallHoldBack:
    """Filters streamed text: :meth:`feed` gives what may be shown now, :meth:`rest` what was
    held back once the answer turned out to hold no call."""

    def __init__(self, *, silent: bool = False) -> None:
        self.silent = silent
        self._all = ""  # the answer so far
        self._out = 0  # how much of it was shown: always a prefix
        self._calling = False

    def feed(self, text: str) -> str:
        self._all += text
        if self.silent or self._calling:
            return ""
        pending = self._all[self._out:]
        start = pending.find(CALL_OPEN)
        if start >= 0:
            self._calling = True
            return self._show(pending[:start] if pending[:start].strip() else "")
        if self._out == 0 and not pending.strip():
            return ""
        hold = 0
        for size in range(min(len(CALL_OPEN) - 1, len(pending)), 0, -1):
            if pending.endswith(CALL_OPEN[:size]):
                hold = size
                break
        return self._show(pending[:len(pending) - hold])

    def _show(self, text: str) -> str:
        self._out += len(text)
        return text

    def rest(self) -> str:
        """What was not shown, to show when the answer held no call after all."""
        return self._show(self._all[self._out:])


def tool_reply_fields(text: str, finish: str, offered: Collection[str]) -> dict[str, Any]:
    """The reply fields of one sample: ``text`` and ``finish_reason``, and ``tool_calls``
    (finish reason ``tool_calls``) when the answer is a call."""
    content, calls = parse_tool_output(text, offered)
    if not calls:
        return {"text": text, "finish_reason": finish}
    return {"text": content, "finish_reason": "tool_calls",
            "tool_calls": [call.to_wire() for call in calls]}
