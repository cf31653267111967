"""JSON schemas as GBNF grammars for structured output, refusing what would not be enforced.

Structured output (OpenAI's ``response_format``) constrains decoding with a grammar that
llama.cpp's own converter (``llama_cpp.llama_grammar``) builds from a JSON schema::

    grammar = schema_grammar('{"type": "object", "properties": {"a": {"type": "integer"}}}')

The schema, not the grammar, is what travels to the peer that runs the model, and that peer
converts it here. Arbitrary GBNF from a peer would be a way to kill the process: llama.cpp
terminates (an uncaught C++ exception) when a grammar allows a character no token of the
vocabulary can produce (``root ::= [\\x00]`` does it), and no check short of running it tells.
The converter's grammars are made of JSON punctuation, ASCII literals (``json.dumps`` escapes
the rest) and its built-in character classes, which every vocabulary covers; ``pattern`` (a
regular expression turned into character classes) is the one keyword that could reintroduce
such a grammar, so it is refused. The converter also writes ``json.dumps`` escapes of
``const``/``enum`` strings and property names into the grammar unescaped, where GBNF reads
them back as characters (``\\u0000`` becomes a NUL no token produces: the same crash), so
such strings may not hold control characters, quotes, backslashes or characters outside the
Basic Multilingual Plane (see :func:`_check_literal`).

The converter ignores, without a word, the keywords it cannot express (``minimum``, ``not``,
``uniqueItems``, most ``format`` values ...): a request would get JSON that parses but may not
validate. So a schema is walked first and every keyword outside what the converter honours is
refused (``BAD_REQUEST``) naming the keyword and where it is. Schemas are bounded
(``MAX_SCHEMA_CHARS`` of JSON, ``MAX_SCHEMA_DEPTH`` levels, ``MAX_PROPERTIES`` per object,
repetition counts up to ``MAX_REPEAT``) so the conversion stays small and fast (a few
milliseconds at these bounds), and the grammar it gives must fit ``MAX_GRAMMAR_CHARS``.
``{"type": "object"}`` is OpenAI's ``json_object``: any JSON object.
"""

from __future__ import annotations

import json
from typing import Any, Final

from llama_cpp import llama_grammar

from calinode.protocol.errors import ErrorCode, JobError
from calinode.protocol.job_params import MAX_SCHEMA_CHARS

__all__ = ["JSON_OBJECT_SCHEMA", "MAX_GRAMMAR_CHARS", "schema_grammar"]

#: OpenAI's ``json_object``: any JSON object.
JSON_OBJECT_SCHEMA: Final = '{"type":"object"}'
#: Longest grammar a schema may give.
MAX_GRAMMAR_CHARS: Final = 65_536
#: Deepest nesting of subschemas.
MAX_SCHEMA_DEPTH: Final = 12
#: Most properties of one object schema (optional ones cost the converter quadratic rules).
MAX_PROPERTIES: Final = 64
#: Largest ``minItems``/``maxItems``/``minLength``/``maxLength`` and ``{n,m}`` in a pattern.
MAX_REPEAT: Final = 256

#: Keywords the converter turns into grammar rules.
SCHEMA_KEYWORDS: Final = frozenset({
    "type", "properties", "required", "additionalProperties", "items", "prefixItems",
    "minItems", "maxItems", "enum", "const", "anyOf", "oneOf", "allOf", "$ref", "$defs",
    "definitions", "format", "minLength", "maxLength"})
#: Keywords that only describe (no constraint to enforce).
ANNOTATIONS: Final = frozenset({
    "title", "description", "$schema", "$id", "$comment", "default", "examples",
    "deprecated", "readOnly", "writeOnly"})
#: ``format`` values the converter enforces.
FORMATS: Final = frozenset({"uuid", "uuid1", "uuid2", "uuid3", "uuid4", "uuid5", "date",
                            "time", "date-time"})
TYPES: Final = frozenset({"string", "number", "integer", "boolean", "null", "object",
                          "array"})


class BadSchema(JobError):
    """A schema structured output cannot enforce (``BAD_REQUEST``)."""

    def __init__(self, message: str) -> None:
        super().__init__(message, code=ErrorCode.BAD_REQUEST)


def schema_grammar(text: str) -> str:
    """GBNF text for JSON that validates against the JSON schema ``text`` (refused with a
    ``BAD_REQUEST`` naming the first keyword or value the converter would not enforce)."""
    if not isinstance(text, str) or len(text) > MAX_SCHEMA_CHARS:
        raise BadSchema(f"a JSON schema must be at most {MAX_SCHEMA_CHARS} characters of JSON")
    try:
        schema = json.loads(text)
    except (ValueError, RecursionError) as exc:
        raise BadSchema(f"response_format schema is not JSON: {str(exc)[:100]}") from None
    if not isinstance(schema, dict):
        raise BadSchema("response_format schema must be a JSON object")
    _check_schema(schema, "#", 0)
    try:
        grammar = str(llama_grammar.json_schema_to_gbnf(text))
    except (AssertionError, ValueError, KeyError, TypeError, IndexError,
            RecursionError) as exc:
        raise BadSchema(f"response_format schema cannot be turned into a grammar: "
                         f"{str(exc)[:200]}") from None
    if len(grammar) > MAX_GRAMMAR_CHARS:
        raise BadSchema(f"response_format schema gives a grammar of {len(grammar)} "
                         f"characters, at most {MAX_GRAMMAR_CHARS}: simplify it")
    return grammar


def _unsupported(what: str, where: str) -> BadSchema:
    return BadSchema(f"response_format schema: {what} at {where} is not supported by "
                      "structured output (supported keywords: "
                      f"{', '.join(sorted(SCHEMA_KEYWORDS))})")


def _check_schema(schema: object, where: str, depth: int) -> None:
    """Refuse what the converter would ignore or choke on, naming the keyword and path."""
    if depth > MAX_SCHEMA_DEPTH:
        raise BadSchema(f"response_format schema is nested deeper than {MAX_SCHEMA_DEPTH} "
                         f"at {where}")
    if schema is True or schema == {}:  # any value
        return
    if not isinstance(schema, dict):
        raise BadSchema(f"response_format schema: {where} must be a schema object")
    for key in schema:
        if key not in SCHEMA_KEYWORDS and key not in ANNOTATIONS:
            raise _unsupported(f"keyword {str(key)[:40]!r}", where)
    _check_values(schema, where)
    for key in ("properties", "$defs", "definitions"):
        children = schema.get(key, {})
        if not isinstance(children, dict):
            raise BadSchema(f"response_format schema: {where}/{key} must be an object")
        if key == "properties" and len(children) > MAX_PROPERTIES:
            raise BadSchema(f"response_format schema: {where} has more than "
                             f"{MAX_PROPERTIES} properties")
        for name, child in children.items():
            _check_schema(child, f"{where}/{key}/{name}", depth + 1)
    for key in ("anyOf", "oneOf", "allOf", "prefixItems"):
        if key in schema:
            children = schema[key]
            if not isinstance(children, list) or not children:
                raise BadSchema(f"response_format schema: {where}/{key} must be a "
                                 "non-empty list")
            for i, child in enumerate(children):
                _check_schema(child, f"{where}/{key}/{i}", depth + 1)
    items = schema.get("items")
    if isinstance(items, list):
        for i, child in enumerate(items):
            _check_schema(child, f"{where}/items/{i}", depth + 1)
    elif items is not None:
        _check_schema(items, f"{where}/items", depth + 1)
    extra = schema.get("additionalProperties")
    if extra is not None and not isinstance(extra, bool):
        _check_schema(extra, f"{where}/additionalProperties", depth + 1)


def _check_literal(value: object, where: str) -> None:
    """A ``const``/``enum`` value or a property name: every string in it (keys too) free of
    what the converter would turn into a grammar no token can follow."""
    if isinstance(value, str):
        for char in value:
            code = ord(char)
            if (code < 0x20 or 0x7F <= code < 0xA0 or 0xD800 <= code < 0xE000 or code > 0xFFFF
                    or char in '"\\'):
                raise BadSchema(f"response_format schema: {where} holds the character "
                                f"U+{code:04X}, which structured output cannot enforce "
                                "(no control characters, quotes, backslashes, surrogates or "
                                "characters beyond U+FFFF in const, enum or property names)")
    elif isinstance(value, list):
        for item in value:
            _check_literal(item, where)
    elif isinstance(value, dict):
        for key, item in value.items():
            _check_literal(key, where)
            _check_literal(item, where)


def _check_values(schema: dict[str, Any], where: str) -> None:
    kinds = schema.get("type")
    for kind in kinds if isinstance(kinds, list) else [] if kinds is None else [kinds]:
        if kind not in TYPES:
            raise _unsupported(f"type {str(kind)[:40]!r}", where)
    if "format" in schema and schema["format"] not in FORMATS:
        raise _unsupported(f"format {str(schema['format'])[:40]!r}", where)
    for key in ("minItems", "maxItems", "minLength", "maxLength"):
        if key in schema and (not _is_int(schema[key]) or not 0 <= schema[key] <= MAX_REPEAT):
            raise BadSchema(f"response_format schema: {where}/{key} must be an integer in "
                             f"0..{MAX_REPEAT}")
    required = schema.get("required", [])
    if not isinstance(required, list) or not all(isinstance(r, str) for r in required):
        raise BadSchema(f"response_format schema: {where}/required must be a list of names")
    ref = schema.get("$ref")
    if ref is not None and (not isinstance(ref, str) or not ref.startswith("#/")):
        raise _unsupported(f"$ref {str(ref)[:60]!r} (only local #/ references)", where)
    if "enum" in schema and (not isinstance(schema["enum"], list) or not schema["enum"]):
        raise BadSchema(f"response_format schema: {where}/enum must be a non-empty list")
    for key in ("const", "enum", "required"):
        _check_literal(schema.get(key), f"{where}/{key}")
    properties = schema.get("properties")
    if isinstance(properties, dict):
        _check_literal(list(properties), f"{where}/properties")


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)
