"""Typed, bounded views of tool calling (issue 15): the tools a ``generate`` offers the model
and the calls it answers with.

A chat request may offer the model *tools* (OpenAI's ``tools``, type ``function``): a name,
a description and a JSON schema for the arguments. They travel inside ``generate`` params to
the peer that serves the model (which renders them into the prompt and, when a call is
required, builds the grammar that forces one), and the calls come back in the reply. Both
directions are peer input, so everything here is bounded: at most :data:`MAX_TOOLS` tools,
names matching :data:`TOOL_NAME` (OpenAI's own rule), a description of at most
:data:`MAX_TOOL_DESCRIPTION` characters, a parameters schema of at most
:data:`MAX_TOOL_SCHEMA_CHARS` characters of JSON (an object), all tools together at most
:data:`MAX_TOOLS_CHARS`; a call names a tool and carries its arguments as the JSON text of an
object of at most :data:`MAX_ARGUMENTS_CHARS` characters, under an id matching
:data:`CALL_ID`. The schema is checked as a schema where it is used
(``models/json_grammar.py``), as ``response_format`` schemas are.

No trio, no libp2p: pure values.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any, ClassVar, Final

from .validation import check_str, invalid

__all__ = [
    "CALL_ID",
    "MAX_ARGUMENTS_CHARS",
    "MAX_TOOLS",
    "MAX_TOOLS_CHARS",
    "MAX_TOOL_CALLS",
    "MAX_TOOL_DESCRIPTION",
    "MAX_TOOL_SCHEMA_CHARS",
    "TOOL_CHOICES",
    "TOOL_NAME",
    "ToolCall",
    "ToolSpec",
    "check_tools",
    "tool_calls_from_wire",
]

#: A tool's name (OpenAI's rule for function names).
TOOL_NAME: Final = re.compile(r"[a-zA-Z0-9_-]{1,64}")
#: A tool call's id (``call_<random>`` when calinode makes it; clients echo it back).
CALL_ID: Final = re.compile(r"[A-Za-z0-9_.:-]{1,64}")
#: Most tools one request may offer.
MAX_TOOLS: Final = 32
MAX_TOOL_DESCRIPTION: Final = 1024
#: Longest parameters schema of one tool (compact JSON text).
MAX_TOOL_SCHEMA_CHARS: Final = 8192
#: Longest text of all tools together (names, descriptions, schemas): they go into the prompt.
MAX_TOOLS_CHARS: Final = 32_768
#: Most tool calls one answer (or one history message) may carry.
MAX_TOOL_CALLS: Final = 8
#: Longest arguments of one call (compact JSON text of an object).
MAX_ARGUMENTS_CHARS: Final = 16_384
#: ``tool_choice`` on the wire: ``auto`` (text or a call) or ``required`` (a call; with
#: ``tool_name``, a call of that tool). OpenAI's ``none`` is a request without tools.
TOOL_CHOICES: Final = ("auto", "required")


def _json_object(name: str, text: object, max_len: int) -> dict[str, Any]:
    check_str(name, text, max_len=max_len)
    try:
        value = json.loads(str(text))
    except (ValueError, RecursionError):
        invalid(f"{name} is not JSON text")
    if not isinstance(value, dict):
        invalid(f"{name} must be the JSON text of an object")
    return value


@dataclass(frozen=True, kw_only=True, slots=True)
class ToolSpec:
    """One tool the model may call: ``parameters`` is its arguments' JSON schema as compact
    JSON text (an object)."""

    name: str
    description: str = ""
    parameters: str = '{"type":"object","properties":{}}'

    def __post_init__(self) -> None:
        check_str("tool name", self.name, max_len=64, pattern=TOOL_NAME)
        check_str("tool description", self.description, min_len=0,
                  max_len=MAX_TOOL_DESCRIPTION)
        _json_object(f"tool {self.name} parameters", self.parameters, MAX_TOOL_SCHEMA_CHARS)

    _KEYS: ClassVar[frozenset[str]] = frozenset({"name", "description", "parameters"})

    @property
    def schema(self) -> dict[str, Any]:
        value: dict[str, Any] = json.loads(self.parameters)
        return value

    @classmethod
    def from_wire(cls, data: object) -> ToolSpec:
        if not isinstance(data, dict):
            invalid(f"a tool must be a map, not {type(data).__name__}")
        unknown = sorted(repr(k)[:40] for k in data if k not in cls._KEYS)
        if unknown or "name" not in data:
            invalid(f"a tool has the fields name, description, parameters (got {unknown[:8]})")
        return cls(**data)

    def to_wire(self) -> dict[str, str]:
        return {"name": self.name, "description": self.description,
                "parameters": self.parameters}


def check_tools(tools: tuple[ToolSpec, ...]) -> None:
    """At most :data:`MAX_TOOLS` tools, distinct names, :data:`MAX_TOOLS_CHARS` in all."""
    if len(tools) > MAX_TOOLS:
        invalid(f"at most {MAX_TOOLS} tools, got {len(tools)}")
    names = [t.name for t in tools]
    if len(set(names)) != len(names):
        invalid("tool names must be distinct")
    size = sum(len(t.name) + len(t.description) + len(t.parameters) for t in tools)
    if size > MAX_TOOLS_CHARS:
        invalid(f"the tools are {size} characters in all, at most {MAX_TOOLS_CHARS}")


@dataclass(frozen=True, kw_only=True, slots=True)
class ToolCall:
    """One call the model made: ``arguments`` is the JSON text of an object."""

    id: str
    name: str
    arguments: str

    def __post_init__(self) -> None:
        check_str("tool call id", self.id, max_len=64, pattern=CALL_ID)
        check_str("tool call name", self.name, max_len=64, pattern=TOOL_NAME)
        _json_object(f"arguments of tool call {self.name}", self.arguments,
                     MAX_ARGUMENTS_CHARS)

    _KEYS: ClassVar[frozenset[str]] = frozenset({"id", "name", "arguments"})

    @classmethod
    def from_wire(cls, data: object) -> ToolCall:
        if not isinstance(data, dict) or set(data) != cls._KEYS:
            invalid("a tool call is a map of exactly id, name, arguments")
        return cls(**data)

    def to_wire(self) -> dict[str, str]:
        return {"id": self.id, "name": self.name, "arguments": self.arguments}

    def to_openai(self) -> dict[str, Any]:
        """OpenAI's ``message.tool_calls[i]``."""
        return {"id": self.id, "type": "function",
                "function": {"name": self.name, "arguments": self.arguments}}


def tool_calls_from_wire(value: object) -> tuple[ToolCall, ...]:
    """A list of at most :data:`MAX_TOOL_CALLS` calls."""
    if not isinstance(value, list):
        invalid(f"tool_calls must be a list, not {type(value).__name__}")
    if not 1 <= len(value) <= MAX_TOOL_CALLS:
        invalid(f"tool_calls must have 1 to {MAX_TOOL_CALLS} items, has {len(value)}")
    return tuple(ToolCall.from_wire(item) for item in value)
