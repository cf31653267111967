"""The pure shaping of the OpenAI-compatible routes: what a request may ask and what every
response and chunk looks like (no I/O; ``openai_routes.py`` serves them).

OpenAI clients read more than the text: ``created`` (unix seconds) and ``system_fingerprint``
on every response and chunk, a final usage chunk (``choices: []``) when a stream asked for
``stream_options: {"include_usage": true}`` (streamed usage is undefined in clients without
it), and message ``content`` given as an array of parts, which clients send routinely. A field
the swarm cannot honour is a ``BAD_REQUEST`` that names it, never a 200 that ignores it: a
client that asked for ``echo`` or an image would otherwise get a wrong answer it cannot tell
from a right one.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from calinode.protocol.capabilities import Capabilities
from calinode.protocol.errors import BadRequest, CalinodeError, ErrorCode

__all__ = ["COMPLETION_MAX_TOKENS", "MAX_CONTENT_PARTS", "ResponseFrame", "chat_messages",
           "completion_params", "content_text", "include_usage", "model_catalog", "model_row",
           "system_fingerprint", "text_completion", "text_completion_chunk", "usage"]

#: Parts in one message's ``content`` array: far above what a client sends, and a bound on
#: the loop a body of 64 MiB could otherwise make long.
MAX_CONTENT_PARTS = 256
#: Content part types that carry pixels: no model calinode serves has vision input.
IMAGE_PARTS = frozenset({"image_url", "input_image", "image"})
#: Other non-text part types OpenAI defines, refused by name as well.
OTHER_MEDIA_PARTS = frozenset({"input_audio", "file", "audio"})
#: ``max_tokens`` of ``/v1/completions`` when the request gives none (OpenAI's default there).
COMPLETION_MAX_TOKENS = 16
#: Characters of the model's sha256 in ``system_fingerprint``.
FINGERPRINT_SHA_CHARS = 12


def system_fingerprint(sha256: str, version: str) -> str:
    """``fp_<sha256 prefix>_calinode-<version>``: which model file and which calinode
    answered, so that a client that logs it can tell two answers' setups apart."""
    return f"fp_{sha256[:FINGERPRINT_SHA_CHARS]}_calinode-{version}"


def content_text(content: Any, *, model: str, where: str) -> Any:
    """A message's ``content``: a string as is, an array of parts as their text parts
    joined with newlines; an image part is refused naming the model's lack of vision. Any
    other value goes on unchanged, for the message view to refuse with its own words."""
    if not isinstance(content, list):
        return content
    if len(content) > MAX_CONTENT_PARTS:
        raise BadRequest(f"{where} has {len(content)} content parts; at most "
                         f"{MAX_CONTENT_PARTS}")
    texts: list[str] = []
    for j, part in enumerate(content):
        at = f"{where}[{j}]"
        kind = part.get("type") if isinstance(part, dict) else None
        if kind in IMAGE_PARTS:
            raise BadRequest(f"model {model!r} has no vision: it reads text only, so the "
                             f"image part {at} (type {kind!r}) cannot be sent to it")
        if kind in OTHER_MEDIA_PARTS:
            raise BadRequest(f"model {model!r} reads text only: content part {at} of type "
                             f"{kind!r} is not supported")
        if kind != "text":
            if isinstance(part, dict):
                shown = (f"type {kind[:40]!r}" if isinstance(kind, str)
                         else "an object without a string 'type'")
            else:
                shown = f"a {type(part).__name__}"
            raise BadRequest(f"content part {at} must be {{'type': 'text', 'text': ...}}, "
                             f"not {shown}")
        text = part.get("text")
        if not isinstance(text, str):
            raise BadRequest(f"content part {at} needs a string 'text'")
        texts.append(text)
    return "\n".join(texts)


def chat_messages(messages: Any, model: str) -> Any:
    """``messages`` with every content-part array turned into its text (see
    :func:`content_text`); anything that is not a list of objects goes on unchanged."""
    if not isinstance(messages, list):
        return messages
    return [dict(m, content=content_text(m.get("content"), model=model,
                                         where=f"messages[{i}].content"))
            if isinstance(m, dict) and "content" in m else m
            for i, m in enumerate(messages)]


def include_usage(body: dict[str, Any], *, stream: bool) -> bool:
    """``stream_options.include_usage``: whether a stream ends with a usage chunk. As on
    OpenAI, ``stream_options`` without ``stream`` is refused (it would silently do nothing)."""
    options = body.get("stream_options")
    if options is None:
        return False
    if not isinstance(options, dict):
        raise BadRequest("stream_options must be an object")
    if not stream:
        raise BadRequest("stream_options is only allowed when stream is true")
    wanted = options.get("include_usage", False)
    if not isinstance(wanted, bool):
        raise BadRequest("stream_options.include_usage must be a boolean")
    return wanted


def usage(result: dict[str, Any]) -> dict[str, int]:
    """OpenAI's ``usage`` of a generate result (the job reply's counts, plus their sum)."""
    counts = result["usage"]
    prompt, completion = int(counts["prompt_tokens"]), int(counts["completion_tokens"])
    return {"prompt_tokens": prompt, "completion_tokens": completion,
            "total_tokens": prompt + completion}


@dataclass(frozen=True, slots=True)
class ResponseFrame:
    """What every response and chunk of one request carries: its ``id``, ``created`` (unix
    seconds, when the request was read), ``model`` and ``system_fingerprint``; and whether its
    stream ends with a usage chunk."""

    id: str
    created: int
    model: str
    system_fingerprint: str
    include_usage: bool = False

    def header(self, obj: str) -> dict[str, Any]:
        return {"id": self.id, "object": obj, "created": self.created, "model": self.model,
                "system_fingerprint": self.system_fingerprint}

    def usage_chunk(self, obj: str, result: dict[str, Any]) -> dict[str, Any]:
        """The last chunk before ``data: [DONE]`` when usage was asked for: no choices."""
        return {**self.header(obj), "choices": [], "usage": usage(result)}


# ---------------------------------------------------------------------------- /v1/completions

def _refuse_unless(body: dict[str, Any], name: str, allowed: Iterable[Any], why: str) -> None:
    value = body.get(name)
    if value is not None and not any(value is a or (value == a and type(value) is type(a))
                                     for a in allowed):
        raise BadRequest(f"{name} is not supported on /v1/completions: {why}")


def completion_params(body: dict[str, Any], default_model: str) -> dict[str, Any]:
    """The generate params (wire form, for the ``GenerateParams`` view) of a
    ``/v1/completions`` request: ``prompt`` (one string), ``max_tokens`` (16 when absent, as
    on OpenAI), ``temperature``, ``top_p``, ``seed``, ``stop``. Fields that would change the
    answer and that the swarm cannot honour are refused by name; their neutral values
    (``echo: false``, ``n: 1``, a zero penalty...) pass, since clients send them by default."""
    _refuse_unless(body, "echo", [False], "the answer never repeats the prompt; "
                   "prepend it yourself")
    _refuse_unless(body, "suffix", [""], "no model served here does fill-in-the-middle")
    _refuse_unless(body, "n", [1], "one completion per request; send several requests")
    _refuse_unless(body, "best_of", [1], "one completion per request")
    _refuse_unless(body, "logprobs", [], "log-probabilities are not returned here")
    for penalty in ("presence_penalty", "frequency_penalty"):
        value = body.get(penalty)
        if value is not None and (isinstance(value, bool) or value != 0):
            raise BadRequest(f"{penalty} is not supported on /v1/completions (only 0)")
    bias = body.get("logit_bias")
    if bias not in (None, {}):
        raise BadRequest("logit_bias is not supported on /v1/completions")
    prompt = body.get("prompt")
    if isinstance(prompt, list):
        if len(prompt) != 1 or not isinstance(prompt[0], str):
            raise BadRequest("prompt must be one string (a list of prompts or of token ids "
                             "is not supported)")
        prompt = prompt[0]
    if not isinstance(prompt, str):
        raise BadRequest("prompt must be a string")
    params: dict[str, Any] = {"model": body.get("model") or default_model, "prompt": prompt,
                              "max_tokens": COMPLETION_MAX_TOKENS}
    if body.get("max_tokens") is not None:
        params["max_tokens"] = body["max_tokens"]
    for key in ("temperature", "top_p", "seed", "stop"):
        if body.get(key) is not None:
            params[key] = body[key]
    return params


def provenance(result: dict[str, Any]) -> dict[str, Any]:
    """Who answered: ``served_by``, and ``resumed`` (``[{from, to, at_token}]``) when the
    generation moved to another peer mid-way (its serving peer died or stalled)."""
    out: dict[str, Any] = {"served_by": result["served_by"]}
    if result.get("resumed"):
        out["resumed"] = result["resumed"]
    return out


def _text_choice(text: str, finish: str | None) -> dict[str, Any]:
    return {"index": 0, "text": text, "logprobs": None, "finish_reason": finish}


def text_completion(frame: ResponseFrame, result: dict[str, Any]) -> dict[str, Any]:
    """The whole ``text_completion`` answer of a generate result."""
    return {**frame.header("text_completion"),
            "choices": [_text_choice(result["text"], result["finish_reason"])],
            "usage": usage(result), **provenance(result)}


def text_completion_chunk(frame: ResponseFrame, text: str,
                          finish: str | None) -> dict[str, Any]:
    """One streamed piece: OpenAI streams completions as ``text_completion`` objects too."""
    return {**frame.header("text_completion"), "choices": [_text_choice(text, finish)]}


# ---------------------------------------------------------------------------- /v1/models

def model_row(offer_name: str, kind: str, sha256: str, chat: bool,
              context_length: int | None) -> dict[str, Any]:
    return {"id": offer_name, "object": "model", "created": 0, "owned_by": "calinode",
            "kind": kind, "sha256": sha256, "chat": chat, "context_length": context_length,
            "peers": []}


def model_catalog(sources: Iterable[tuple[str, Capabilities]]) -> dict[str, dict[str, Any]]:
    """Every model offered by ``sources`` (``(peer_id, capabilities)``, this node first), by
    name, with the peers that serve it. ``created`` is 0: no record says when a model file
    was made."""
    found: dict[str, dict[str, Any]] = {}
    for peer_id, caps in sources:
        for kind in ("embed", "generate"):
            for model in caps.models(kind):
                row = found.setdefault(model.name, model_row(
                    model.name, kind, model.sha256, model.chat if kind == "generate" else False,
                    model.context_length))
                row["peers"].append(peer_id)
    return found


def unknown_model(name: str, known: Iterable[str]) -> CalinodeError:
    names = sorted(known)
    return CalinodeError(f"no model {name[:128]!r} in the swarm (available: "
                         f"{', '.join(names) or 'none'})", code=ErrorCode.UNKNOWN_MODEL)
