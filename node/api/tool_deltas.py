"""Tool calls in OpenAI's chat shapes: the message's ``tool_calls`` and the streamed deltas
(issue 15).

A streamed call looks as OpenAI streams it, so that clients' stream helpers (the ``openai``
client's ``ChatCompletionStreamState``, LangChain's chunk merging) assemble it: a first delta
per call with its ``index``, ``id``, ``type`` and ``function.name`` and empty ``arguments``,
then deltas holding only ``index`` and a fragment of ``function.arguments``; the stream's last
chunk then has ``finish_reason: "tool_calls"``. The first delta of the answer also carries
``role: "assistant"`` (and ``content: null``) when no text came before. The serving peer
sends the call whole once it is complete (the text of a call is never streamed as text), so
the fragments are cut here, :data:`ARGUMENT_FRAGMENT` characters each.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any, Final

from calinode.protocol.tools import ToolCall

__all__ = ["ARGUMENT_FRAGMENT", "openai_tool_calls", "tool_call_deltas"]

ARGUMENT_FRAGMENT: Final = 24


def openai_tool_calls(wire: Iterable[Any]) -> list[dict[str, Any]]:
    """A result's ``tool_calls`` (wire form, validated when the reply arrived) as OpenAI's
    ``message.tool_calls``."""
    return [ToolCall.from_wire(call).to_openai() for call in wire]


def tool_call_deltas(wire: Iterable[Any], *, with_role: bool) -> Iterator[dict[str, Any]]:
    """The ``delta`` objects that stream the calls ``wire``."""
    for index, call in enumerate(openai_tool_calls(wire)):
        head: dict[str, Any] = {"tool_calls": [{
            "index": index, "id": call["id"], "type": "function",
            "function": {"name": call["function"]["name"], "arguments": ""}}]}
        if with_role and index == 0:
            head = {"role": "assistant", "content": None, **head}
        yield head
        arguments = call["function"]["arguments"]
        for start in range(0, len(arguments), ARGUMENT_FRAGMENT):
            yield {"tool_calls": [{"index": index, "function": {
                "arguments": arguments[start:start + ARGUMENT_FRAGMENT]}}]}
