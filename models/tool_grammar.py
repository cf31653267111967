"""The GBNF grammar that forces a tool call (``tool_choice`` required or named, issue 15).

The call is written in the convention of :mod:`calinode.models.tool_prompt`::

    <tool_call>
    {"name": "get_weather", "arguments": {"city": "Paris"}}
    </tool_call>

and the grammar allows exactly that: one of the allowed names, then arguments that validate
against that tool's parameters schema. Each tool's arguments grammar is the one
:func:`~calinode.models.json_grammar.schema_grammar` builds (so the same refusals hold: a
keyword the converter would not enforce is a ``BAD_REQUEST`` naming it, and grammar text never
comes from a peer); its rules are renamed with a per-tool prefix (``t0-``, ``t1-`` ...) so the
tools' grammars can live side by side under one ``root``.

Parameters must describe an object (OpenAI's rule); a schema that says nothing about the type
(``{}``, or only ``properties``) is taken as an object.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from typing import Any, Final

from calinode.models.json_grammar import MAX_GRAMMAR_CHARS, BadSchema, schema_grammar
from calinode.protocol.tools import ToolSpec

__all__ = ["CALL_CLOSE", "CALL_OPEN", "check_tool_schemas", "tool_call_grammar"]

CALL_OPEN: Final = "<tool_call>"
CALL_CLOSE: Final = "</tool_call>"
_RULE: Final = re.compile(r"^([a-zA-Z0-9-]+) ::= (.*)$")
#: a GBNF body token: a string literal, a character class, a rule name, anything else
_TOKEN: Final = re.compile(r'"(?:\\.|[^"\\])*"|\[(?:\\.|[^\]\\])*\]|[a-zA-Z0-9-]+|.', re.S)
_TYPE_KEYWORDS: Final = frozenset({"type", "anyOf", "oneOf", "allOf", "$ref", "enum", "const"})


def arguments_schema(tool: ToolSpec) -> dict[str, Any]:
    """``tool``'s parameters schema, ``type: object`` added when it names no type."""
    schema = tool.schema
    if not _TYPE_KEYWORDS & schema.keys():
        schema = dict(schema, type="object")
    if schema.get("type") != "object":
        raise BadSchema(f"tool {tool.name}: parameters must be a schema of type object "
                        "(the arguments are a JSON object)")
    return schema


def _arguments_grammar(tool: ToolSpec) -> str:
    try:
        return schema_grammar(json.dumps(arguments_schema(tool), separators=(",", ":")))
    except BadSchema as exc:
        raise BadSchema(exc.message.replace("response_format schema",
                                            f"tool {tool.name} parameters")) from None


def check_tool_schemas(tools: Sequence[ToolSpec]) -> None:
    """Refuse (``BAD_REQUEST``) a tool whose parameters a forced call could not enforce."""
    for tool in tools:
        _arguments_grammar(tool)


def _renamed(grammar: str, prefix: str) -> list[str]:
    """``grammar``'s rules with every rule name (defined or referenced) prefixed."""
    rules = [_RULE.match(line) for line in grammar.splitlines() if line.strip()]
    if not all(rules):
        raise BadSchema("a tool's parameters gave a grammar calinode cannot combine")
    names = {m.group(1) for m in rules if m}
    out = []
    for match in rules:
        assert match is not None
        body = "".join(prefix + t if t in names else t for t in _TOKEN.findall(match.group(2)))
        out.append(f"{prefix}{match.group(1)} ::= {body}")
    return out


def _literal(text: str) -> str:
    """``text`` as a GBNF string literal (``json.dumps`` escapes are GBNF escapes too; tool
    names are ``[a-zA-Z0-9_-]`` anyway)."""
    return json.dumps(text)


def tool_call_grammar(tools: Sequence[ToolSpec], name: str | None = None) -> str:
    """GBNF for one call of one of ``tools`` (only ``name`` when given)."""
    allowed = [t for t in tools if name is None or t.name == name]
    if not allowed:
        raise BadSchema(f"no tool named {name!r} to call")
    opening, closing = _literal(CALL_OPEN + "\n{"), _literal("}\n" + CALL_CLOSE)
    name_key, arguments_key = _literal('"name":'), _literal('"arguments":')
    lines = [f"root ::= {opening} space {name_key} space call {closing}",
             'space ::= " "?',
             "call ::= " + " | ".join(f"t{i}-call" for i in range(len(allowed)))]
    for i, tool in enumerate(allowed):
        prefix = f"t{i}-"
        name_value = _literal(json.dumps(tool.name) + ",")
        lines.append(f"{prefix}call ::= {name_value} space {arguments_key} space {prefix}root")
        lines += _renamed(_arguments_grammar(tool), prefix)
    grammar = "\n".join(lines) + "\n"
    if len(grammar) > MAX_GRAMMAR_CHARS:
        raise BadSchema(f"the tools give a grammar of {len(grammar)} characters, at most "
                        f"{MAX_GRAMMAR_CHARS}: offer fewer or simpler tools")
    return grammar
