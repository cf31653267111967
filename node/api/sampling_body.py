"""The OpenAI sampling fields of a chat request, read into ``generate`` job params.

``POST /v1/chat/completions`` takes, besides the plain settings:

- ``response_format``: ``{"type": "text"}`` (the default), ``{"type": "json_object"}`` (any
  JSON object) or ``{"type": "json_schema", "json_schema": {"name", "schema", "strict"}}``.
  Both JSON forms travel as a JSON schema (``json_object`` is ``{"type": "object"}``) to the
  peer that runs the model, which constrains decoding with the grammar llama.cpp's converter
  builds from it. The schema is also converted here, once, so that a schema structured output
  cannot enforce is a 400 naming the keyword before any peer is asked
  (:mod:`calinode.models.json_grammar`).
- ``n``: 1 to ``MAX_CHOICES`` independent samples (each with its own seed, derived from
  ``seed``).
- ``logprobs`` and ``top_logprobs`` (0 to ``MAX_TOP_LOGPROBS``).

Pure: :func:`sampling_params` maps a request body to the extra job params or raises
:class:`~calinode.protocol.errors.BadRequest`.
"""

from __future__ import annotations

import json
from typing import Any

from calinode.models.json_grammar import JSON_OBJECT_SCHEMA, schema_grammar
from calinode.protocol.errors import BadRequest, JobError
from calinode.protocol.job_params import MAX_CHOICES, MAX_SCHEMA_CHARS, MAX_TOP_LOGPROBS

__all__ = ["response_format_schema", "sampling_params"]


def sampling_params(body: dict[str, Any]) -> dict[str, Any]:
    """The ``generate`` params for ``body``'s ``response_format``, ``n``, ``logprobs`` and
    ``top_logprobs`` (only those it sets)."""
    params: dict[str, Any] = {}
    schema = response_format_schema(body.get("response_format"))
    if schema is not None:
        params["json_schema"] = schema
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


def response_format_schema(value: object) -> str | None:
    """The JSON schema (compact JSON text) a ``response_format`` asks for; None: free text."""
    if value is None:
        return None
    if not isinstance(value, dict) or not isinstance(value.get("type"), str):
        raise BadRequest('response_format must be an object with a "type"')
    kind = value["type"]
    if kind == "text":
        return None
    if kind == "json_object":
        return JSON_OBJECT_SCHEMA
    if kind != "json_schema":
        raise BadRequest(f"response_format type {kind[:40]!r} is not supported (text, "
                         "json_object, json_schema)")
    spec = value.get("json_schema")
    if not isinstance(spec, dict) or not isinstance(spec.get("schema"), dict):
        raise BadRequest('response_format json_schema needs {"json_schema": {"schema": {...}}}')
    try:
        text = json.dumps(spec["schema"], separators=(",", ":"), allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise BadRequest(f"response_format schema is not JSON: {exc}") from None
    if len(text) > MAX_SCHEMA_CHARS:
        raise BadRequest(f"response_format schema is {len(text)} characters of JSON, at most "
                         f"{MAX_SCHEMA_CHARS}")
    try:
        schema_grammar(text)  # refuse here what the serving peer would refuse
    except JobError as exc:
        raise BadRequest(exc.message) from None
    return text


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)
