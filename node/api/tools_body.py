"""The tool calling fields of an OpenAI chat request, read into ``generate`` job params
(issue 15).

``POST /v1/chat/completions`` takes:

- ``tools``: at most ``MAX_TOOLS`` of ``{"type": "function", "function": {"name",
  "description", "parameters", "strict"}}``; a name matches ``^[a-zA-Z0-9_-]{1,64}$``, names
  are distinct, a description is at most ``MAX_TOOL_DESCRIPTION`` characters, ``parameters``
  is a JSON schema of an object (absent: no arguments) of at most ``MAX_TOOL_SCHEMA_CHARS``
  characters of JSON, with the keywords structured output enforces (an unsupported one is a
  400 naming it, checked by :func:`check_tool_schemas` before any peer is asked); all tools
  together at most ``MAX_TOOLS_CHARS``. ``strict`` is accepted (a forced call always follows
  the schema).
- ``tool_choice``: ``auto`` (the default with tools: text or a call), ``none`` (the tools are
  not sent at all), ``required`` (a call of one of them) or
  ``{"type": "function", "function": {"name": ...}}`` (a call of that one).
- ``parallel_tool_calls``: a boolean, accepted; an answer holds at most one call.

Refused by name: the legacy ``functions`` / ``function_call`` (use ``tools``), ``tool_choice``
``required`` or named without ``tools``, and tools together with a JSON ``response_format``.

Messages: an assistant message may carry ``tool_calls`` (``[{"id", "type": "function",
"function": {"name", "arguments"}}]``, its ``content`` then null or text), a ``tool`` message
answers one by ``tool_call_id``; :func:`wire_messages` turns them into the job's message form.

Pure: no I/O.
"""

from __future__ import annotations

import json
from typing import Any

from calinode.models.json_grammar import BadSchema
from calinode.models.tool_grammar import check_tool_schemas
from calinode.protocol.errors import BadRequest, ProtocolError
from calinode.protocol.tools import (
    MAX_TOOL_CALLS,
    MAX_TOOL_SCHEMA_CHARS,
    MAX_TOOLS,
    ToolSpec,
    check_tools,
)

__all__ = ["check_tools_schemas", "tool_params", "wire_messages"]

_FUNCTION_KEYS = frozenset({"name", "description", "parameters", "strict"})
#: OpenAI message fields a client echoes back from a response, null or empty, that carry
#: nothing for the model
_ECHOED = frozenset({"refusal", "audio", "function_call", "annotations", "name"})


def _tool(i: int, item: object) -> dict[str, Any]:
    where = f"tools[{i}]"
    if not isinstance(item, dict) or item.get("type") != "function":
        raise BadRequest(f'{where} must be {{"type": "function", "function": {{...}}}} '
                         "(only function tools are supported)")
    function = item.get("function")
    if not isinstance(function, dict):
        raise BadRequest(f"{where}.function must be an object")
    unknown = sorted(str(k)[:40] for k in function if k not in _FUNCTION_KEYS)
    if unknown:
        raise BadRequest(f"{where}.function: unknown fields {unknown[:8]}")
    strict = function.get("strict")
    if strict is not None and not isinstance(strict, bool):
        raise BadRequest(f"{where}.function.strict must be a boolean")
    parameters = function.get("parameters", {"type": "object", "properties": {}})
    if not isinstance(parameters, dict):
        raise BadRequest(f"{where}.function.parameters must be a JSON schema object")
    try:
        text = json.dumps(parameters, separators=(",", ":"), allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise BadRequest(f"{where}.function.parameters is not JSON: {exc}") from None
    if len(text) > MAX_TOOL_SCHEMA_CHARS:
        raise BadRequest(f"{where}.function.parameters is {len(text)} characters of JSON, at "
                         f"most {MAX_TOOL_SCHEMA_CHARS}")
    description = function.get("description") or ""
    try:
        return ToolSpec(name=function.get("name", ""), description=description,
                        parameters=text).to_wire()
    except ProtocolError as exc:
        raise BadRequest(f"{where}.function: {exc.message}") from None


def _choice(value: object, names: list[str]) -> tuple[str, str | None]:
    """``(tool_choice, tool_name)`` on the wire; ``("none", None)`` drops the tools."""
    if value is None:
        return ("auto", None) if names else ("none", None)
    if value in ("auto", "none", "required"):
        if value == "required" and not names:
            raise BadRequest("tool_choice required needs tools")
        return str(value), None
    if isinstance(value, dict) and value.get("type") == "function" and isinstance(
            value.get("function"), dict):
        name = value["function"].get("name")
        if not isinstance(name, str) or name not in names:
            raise BadRequest(f"tool_choice names the function {str(name)[:64]!r}, which is "
                             f"not one of the tools ({', '.join(names) or 'none given'})")
        return "required", name
    raise BadRequest('tool_choice must be "auto", "none", "required" or '
                     '{"type": "function", "function": {"name": ...}}')


def tool_params(body: dict[str, Any], *, structured: bool = False) -> dict[str, Any]:
    """The ``generate`` params for ``body``'s ``tools``, ``tool_choice`` and
    ``parallel_tool_calls`` (only what they set); ``structured``: the request also asked for
    a JSON ``response_format``."""
    for legacy in ("functions", "function_call"):
        if body.get(legacy) is not None:
            raise BadRequest(f"{legacy} is the deprecated form of tool calling and is not "
                             "supported: use tools and tool_choice")
    parallel = body.get("parallel_tool_calls")
    if parallel is not None and not isinstance(parallel, bool):
        raise BadRequest("parallel_tool_calls must be a boolean")
    tools = body.get("tools")
    if tools is None:
        tools = []
    if not isinstance(tools, list) or len(tools) > MAX_TOOLS:
        raise BadRequest(f"tools must be a list of at most {MAX_TOOLS} tools")
    wire = [_tool(i, item) for i, item in enumerate(tools)]
    try:
        check_tools(tuple(ToolSpec.from_wire(t) for t in wire))  # distinct names, total size
    except ProtocolError as exc:
        raise BadRequest(exc.message) from None
    choice, name = _choice(body.get("tool_choice"), [t["name"] for t in wire])
    if choice == "none" or not wire:
        return {}
    if structured:
        raise BadRequest("tools and a JSON response_format do not combine: a tool's "
                         "arguments already follow its parameters schema")
    out: dict[str, Any] = {"tools": wire, "tool_choice": choice}
    if name is not None:
        out["tool_name"] = name
    return out


def check_tools_schemas(params: dict[str, Any]) -> None:
    """Refuse (400) a tool whose parameters schema a forced call could not enforce, naming
    the keyword; blocking (a few milliseconds a tool): run it in a worker thread."""
    try:
        check_tool_schemas([ToolSpec.from_wire(t) for t in params.get("tools", ())])
    except (BadSchema, ProtocolError) as exc:
        raise BadRequest(exc.message) from None


def _call(where: str, item: object) -> dict[str, Any]:
    if not isinstance(item, dict) or not isinstance(item.get("function"), dict):
        raise BadRequest(f'{where} must be {{"id", "type": "function", "function": '
                         '{"name", "arguments"}}')
    if item.get("type", "function") != "function":
        raise BadRequest(f"{where}.type must be function")
    function = item["function"]
    arguments = function.get("arguments")
    if isinstance(arguments, dict):
        arguments = json.dumps(arguments)
    return {"id": item.get("id"), "name": function.get("name"), "arguments": arguments}


def wire_messages(messages: Any) -> Any:
    """OpenAI chat messages in the ``generate`` job's form: assistant ``tool_calls`` as
    ``{"id", "name", "arguments"}`` (null content as empty text); echoed null fields
    dropped. Anything else goes on unchanged for the message view to refuse."""
    if not isinstance(messages, list):
        return messages
    out: list[Any] = []
    for i, message in enumerate(messages):
        if not isinstance(message, dict):
            out.append(message)
            continue
        m = {k: v for k, v in message.items() if not (k in _ECHOED and v in (None, [], ""))}
        calls = m.pop("tool_calls", None)
        if calls:
            if not isinstance(calls, list) or len(calls) > MAX_TOOL_CALLS:
                raise BadRequest(f"messages[{i}].tool_calls must be a list of at most "
                                 f"{MAX_TOOL_CALLS} calls")
            m["tool_calls"] = [_call(f"messages[{i}].tool_calls[{j}]", c)
                               for j, c in enumerate(calls)]
            if m.get("content") is None:
                m["content"] = ""
        out.append(m)
    return out
