"""Tools and tool-call history rendered into plain chat messages (issue 15).

Why not llama-cpp-python's function-calling handlers (``chatml-function-calling``,
``functionary``)? They are whole completion loops: they call ``Llama.create_completion``
themselves (their own sampler, no per-token cancel, no stop hold-back, no logprobs, no
streamed tool-call deltas) and hard-code ChatML around the model's own template. SmolLM2's
template (and the other GGUF templates calinode serves) has no tool section at all. So the
tools become a *system-prompt block* in one fixed, documented convention, and the model's own
chat template renders the messages as for any chat (its special tokens, its roles)::

    You can call tools. The available tools, one JSON object per line:
    <tools>
    {"name": "get_weather", "description": "...", "parameters": {...}}
    </tools>
    To call a tool, answer with exactly this and nothing else:
    <tool_call>
    {"name": "<tool name>", "arguments": <the arguments as a JSON object>}
    </tool_call>
    <one line that says what tool_choice asks: answer or call, call one, call this one>

The block is appended to the first system message (or is the system message). The same
``<tool_call>`` block (the Hermes / Qwen convention, which small instruct models have seen)
is what the output parser (``tool_output.py``) reads and the grammar (``tool_grammar.py``)
forces. History: an assistant message's ``tool_calls`` are written as such blocks after its
text; a ``tool`` message becomes a user message ``<tool_response>`` block (most templates know
only system, user and assistant), consecutive ones merged into one message so that roles
still alternate.

``tool_choice`` ``none`` is a request without tools: no block, but tool history is still
rendered, so a client may ask for the final answer after a tool result with ``none``.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Final

from calinode.models.tool_grammar import CALL_CLOSE, CALL_OPEN
from calinode.protocol.job_params import ChatMessage
from calinode.protocol.tools import ToolCall, ToolSpec

__all__ = ["RESPONSE_CLOSE", "RESPONSE_OPEN", "call_block", "render_messages", "tools_block"]

RESPONSE_OPEN: Final = "<tool_response>"
RESPONSE_CLOSE: Final = "</tool_response>"


def tools_block(tools: Sequence[ToolSpec], choice: str, name: str | None) -> str:
    """The system-prompt block offering ``tools`` (see the module docstring)."""
    lines = ["You can call tools. The available tools, one JSON object per line:", "<tools>"]
    for tool in tools:
        lines.append(json.dumps({"name": tool.name, "description": tool.description,
                                 "parameters": tool.schema}, ensure_ascii=False))
    lines += ["</tools>", "To call a tool, answer with exactly this and nothing else:",
              CALL_OPEN,
              '{"name": "<tool name>", "arguments": <the arguments as a JSON object>}',
              CALL_CLOSE]
    if name is not None:
        lines.append(f"Now call the tool {name}.")
    elif choice == "required":
        lines.append("Now call one of the tools.")
    else:
        lines.append("If no tool is needed, answer the user directly in plain text.")
    return "\n".join(lines)


def call_block(call: ToolCall) -> str:
    """One call as the model writes it (arguments re-dumped; kept as text if not JSON)."""
    try:
        arguments = json.dumps(json.loads(call.arguments), ensure_ascii=False)
    except ValueError:
        arguments = call.arguments
    return (f'{CALL_OPEN}\n{{"name": {json.dumps(call.name)}, "arguments": {arguments}}}\n'
            f"{CALL_CLOSE}")


def _plain(message: ChatMessage) -> tuple[str, str]:
    if message.role == "tool":
        return "user", f"{RESPONSE_OPEN}\n{message.content}\n{RESPONSE_CLOSE}"
    if message.tool_calls:
        parts = [message.content] if message.content.strip() else []
        parts += [call_block(call) for call in message.tool_calls]
        return message.role, "\n".join(parts)
    return message.role, message.content


def render_messages(messages: Sequence[ChatMessage], tools: Sequence[ToolSpec] = (),
                    choice: str = "auto", name: str | None = None) -> list[dict[str, str]]:
    """``messages`` as plain ``{"role", "content"}`` messages for the model's chat template,
    with the tools block when ``tools`` are offered."""
    out: list[dict[str, str]] = []
    merge = False  # the previous message was a tool result: a following one joins it
    for message in messages:
        role, content = _plain(message)
        is_result = message.role == "tool"
        if out and role == "user" and out[-1]["role"] == "user" and (is_result or merge):
            out[-1]["content"] += "\n" + content
        else:
            out.append({"role": role, "content": content})
        merge = is_result
    if tools:
        block = tools_block(tools, choice, name)
        if out and out[0]["role"] == "system":
            out[0]["content"] = f"{out[0]['content']}\n\n{block}"
        else:
            out.insert(0, {"role": "system", "content": block})
    return out
