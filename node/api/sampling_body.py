"""The OpenAI sampling fields of a chat request, read into ``generate`` job params.

``POST /v1/chat/completions`` takes, besides the plain settings:

- ``response_format``: ``{"type": "text"}`` (the default), ``{"type": "json_object"}`` (any
  JSON object) or ``{"type": "json_schema", "json_schema": {"name", "schema", "strict"}}``.
  Both JSON forms become a GBNF grammar that constrains decoding on the peer that runs the
  model, so even a 135M model answers JSON that parses (and, with a schema, validates). The
  schema is converted here, on the node that got the request, by llama.cpp's own
  JSON-schema-to-GBNF converter (``llama_cpp.llama_grammar``); only the grammar travels.
- ``n``: 1 to ``MAX_CHOICES`` independent samples (each with its own seed, derived from
  ``seed``).
- ``logprobs`` and ``top_logprobs`` (0 to ``MAX_TOP_LOGPROBS``).

The converter ignores, without a word, the schema keywords it cannot express (``minimum``,
``not``, ``uniqueItems``, most ``format`` values ...): a request would get JSON that parses
but may not validate. So a schema is walked first and every keyword outside what the
converter honours is refused with a 400 that names it and where it is. Schemas are bounded
(``MAX_SCHEMA_CHARS`` of JSON, ``MAX_SCHEMA_DEPTH`` levels, ``MAX_PROPERTIES`` per object,
repetition counts up to ``MAX_REPEAT``) so the conversion stays small and fast (it runs in
the request's task: a few milliseconds at these bounds), and the grammar it gives must fit
``MAX_GRAMMAR_CHARS``.

Everything here is pure: :func:`sampling_params` maps a request body to the extra job params
or raises :class:`~calinode.protocol.errors.BadRequest`.
"""

from __future__ import annotations

import json
import re
from typing import Any, Final

from llama_cpp import llama_grammar

from calinode.protocol.errors import BadRequest
from calinode.protocol.job_params import MAX_CHOICES, MAX_GRAMMAR_CHARS, MAX_TOP_LOGPROBS

__all__ = ["MAX_SCHEMA_CHARS", "json_schema_grammar", "sampling_params"]

#: Longest JSON schema (its compact JSON text, in characters).
MAX_SCHEMA_CHARS: Final = 16_384
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
    "definitions", "pattern", "format", "minLength", "maxLength"})
#: Keywords that only describe (no constraint to enforce).
ANNOTATIONS: Final = frozenset({
    "title", "description", "$schema", "$id", "$comment", "default", "examples",
    "deprecated", "readOnly", "writeOnly"})
#: ``format`` values the converter enforces.
FORMATS: Final = frozenset({"uuid", "uuid1", "uuid2", "uuid3", "uuid4", "uuid5", "date",
                            "time", "date-time"})
TYPES: Final = frozenset({"string", "number", "integer", "boolean", "null", "object",
                          "array"})
_QUANTIFIER = re.compile(r"\{(\d+)(?:,(\d*))?\}")


def sampling_params(body: dict[str, Any]) -> dict[str, Any]:
    """The ``generate`` params for ``body``'s ``response_format``, ``n``, ``logprobs`` and
    ``top_logprobs`` (only those it sets)."""
    params: dict[str, Any] = {}
    grammar = response_format_grammar(body.get("response_format"))
    if grammar is not None:
        params["grammar"] = grammar
    n = body.get("n")
    if n is not None:
        if not _is_int(n) or not 1 <= n <= MAX_CHOICES:
            raise BadRequest(f"n must be an integer in 1..{MAX_CHOICES}")
        params["n"] = n
    logprobs = body.get("logprobs")
    if logprobs is not None and not isinstance(logprobs, bool):
        raise BadRequest("logprobs must be true or false")
    top = body.get("top_logprobs")
    if top is not None:
        if not _is_int(top) or not 0 <= top <= MAX_TOP_LOGPROBS:
            raise BadRequest(f"top_logprobs must be an integer in 0..{MAX_TOP_LOGPROBS}")
        if not logprobs:
            raise BadRequest("top_logprobs needs logprobs: true")
    if logprobs:
        params["logprobs"] = True
        params["top_logprobs"] = top or 0
    return params


def response_format_grammar(value: object) -> str | None:
    """The grammar of a ``response_format`` (None: free text)."""
    if value is None:
        return None
    if not isinstance(value, dict) or not isinstance(value.get("type"), str):
        raise BadRequest('response_format must be an object with a "type"')
    kind = value["type"]
    if kind == "text":
        return None
    if kind == "json_object":
        return str(llama_grammar.JSON_GBNF)
    if kind != "json_schema":
        raise BadRequest(f"response_format type {kind[:40]!r} is not supported (text, "
                         "json_object, json_schema)")
    spec = value.get("json_schema")
    if not isinstance(spec, dict) or not isinstance(spec.get("schema"), dict):
        raise BadRequest('response_format json_schema needs {"json_schema": {"schema": {...}}}')
    return json_schema_grammar(spec["schema"])


def json_schema_grammar(schema: dict[str, Any]) -> str:
    """GBNF text for JSON that validates against ``schema`` (refused with a 400 naming the
    first keyword or value the converter would not enforce)."""
    try:
        text = json.dumps(schema, separators=(",", ":"), allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise BadRequest(f"response_format schema is not JSON: {exc}") from None
    if len(text) > MAX_SCHEMA_CHARS:
        raise BadRequest(f"response_format schema is {len(text)} characters of JSON, at most "
                         f"{MAX_SCHEMA_CHARS}")
    _check_schema(schema, "#", 0)
    try:
        grammar = str(llama_grammar.json_schema_to_gbnf(text))
    except (AssertionError, ValueError, KeyError, TypeError, IndexError,
            RecursionError) as exc:
        raise BadRequest(f"response_format schema cannot be turned into a grammar: "
                         f"{str(exc)[:200]}") from None
    if len(grammar) > MAX_GRAMMAR_CHARS:
        raise BadRequest(f"response_format schema gives a grammar of {len(grammar)} "
                         f"characters, at most {MAX_GRAMMAR_CHARS}: simplify it")
    return grammar


def _unsupported(what: str, where: str) -> BadRequest:
    return BadRequest(f"response_format schema: {what} at {where} is not supported by "
                      "structured output (supported keywords: "
                      f"{', '.join(sorted(SCHEMA_KEYWORDS))})")


def _check_schema(schema: object, where: str, depth: int) -> None:
    """Refuse what the converter would ignore or choke on, naming the keyword and path."""
    if depth > MAX_SCHEMA_DEPTH:
        raise BadRequest(f"response_format schema is nested deeper than {MAX_SCHEMA_DEPTH} "
                         f"at {where}")
    if schema is True or schema == {}:
        return
    if not isinstance(schema, dict):
        raise BadRequest(f"response_format schema: {where} must be a schema object")
    for key in schema:
        if key not in SCHEMA_KEYWORDS and key not in ANNOTATIONS:
            raise _unsupported(f"keyword {str(key)[:40]!r}", where)
    _check_values(schema, where)
    for key in ("properties", "$defs", "definitions"):
        children = schema.get(key, {})
        if not isinstance(children, dict):
            raise BadRequest(f"response_format schema: {where}/{key} must be an object")
        if key == "properties" and len(children) > MAX_PROPERTIES:
            raise BadRequest(f"response_format schema: {where} has more than "
                             f"{MAX_PROPERTIES} properties")
        for name, child in children.items():
            _check_schema(child, f"{where}/{key}/{name}", depth + 1)
    for key in ("anyOf", "oneOf", "allOf", "prefixItems"):
        if key in schema:
            children = schema[key]
            if not isinstance(children, list) or not children:
                raise BadRequest(f"response_format schema: {where}/{key} must be a "
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


def _check_values(schema: dict[str, Any], where: str) -> None:
    kinds = schema.get("type")
    for kind in kinds if isinstance(kinds, list) else [] if kinds is None else [kinds]:
        if kind not in TYPES:
            raise _unsupported(f"type {str(kind)[:40]!r}", where)
    if "format" in schema and schema["format"] not in FORMATS:
        raise _unsupported(f"format {str(schema['format'])[:40]!r}", where)
    for key in ("minItems", "maxItems", "minLength", "maxLength"):
        if key in schema and (not _is_int(schema[key]) or not 0 <= schema[key] <= MAX_REPEAT):
            raise BadRequest(f"response_format schema: {where}/{key} must be an integer in "
                             f"0..{MAX_REPEAT}")
    required = schema.get("required", [])
    if not isinstance(required, list) or not all(isinstance(r, str) for r in required):
        raise BadRequest(f"response_format schema: {where}/required must be a list of names")
    ref = schema.get("$ref")
    if ref is not None and (not isinstance(ref, str) or not ref.startswith("#/")):
        raise _unsupported(f"$ref {str(ref)[:60]!r} (only local #/ references)", where)
    if "enum" in schema and (not isinstance(schema["enum"], list) or not schema["enum"]):
        raise BadRequest(f"response_format schema: {where}/enum must be a non-empty list")
    pattern = schema.get("pattern")
    if pattern is not None:
        if not isinstance(pattern, str) or len(pattern) > MAX_REPEAT:
            raise BadRequest(f"response_format schema: {where}/pattern must be a string of "
                             f"at most {MAX_REPEAT} characters")
        if not (pattern.startswith("^") and pattern.endswith("$")):
            raise _unsupported("a pattern not anchored with ^...$", where)
        for low, high in _QUANTIFIER.findall(pattern):
            if int(low) > MAX_REPEAT or (high and int(high) > MAX_REPEAT):
                raise BadRequest(f"response_format schema: {where}/pattern repeats more "
                                 f"than {MAX_REPEAT} times")


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)
