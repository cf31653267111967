"""OpenAI's ``choices`` of a chat completion, from a ``generate`` result.

A generate result (the dispatcher's reply view written back as a map, validated when it
arrived) holds the first sample in ``text``/``finish_reason``/``logprobs`` and the others in
``more_choices``; OpenAI lists them all in ``choices``, each with its ``index`` and, when they
were asked for, ``logprobs: {"content": [{token, logprob, bytes, top_logprobs}]}``. A sample
that called a tool has ``message.tool_calls`` (see ``tool_deltas.py``).
"""

from __future__ import annotations

from typing import Any

from calinode.node.api.tool_deltas import openai_tool_calls
from calinode.protocol.job_replies import TokenLogprob

__all__ = ["chat_choices"]


def chat_choices(result: dict[str, Any]) -> list[dict[str, Any]]:
    """Every sample of ``result`` as an OpenAI chat choice."""
    samples = [result, *result.get("more_choices", ())]
    return [_choice(i, sample) for i, sample in enumerate(samples)]


def _choice(index: int, sample: dict[str, Any]) -> dict[str, Any]:
    choice: dict[str, Any] = {"index": index, "finish_reason": sample["finish_reason"],
                              "message": {"role": "assistant", "content": sample["text"]}}
    if sample.get("tool_calls"):  # tool calling: content null unless text came first
        choice["message"] = {"role": "assistant", "content": sample["text"] or None,
                             "tool_calls": openai_tool_calls(sample["tool_calls"])}
    wire = sample.get("logprobs")
    choice["logprobs"] = None if wire is None else {
        "content": [TokenLogprob.from_wire(item, top=None).to_openai() for item in wire],
        "refusal": None}
    return choice
