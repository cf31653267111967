"""What tool calling (issue 15) changes in one ``generate`` job on the serving node.

A request that offers tools gets the tools block in its prompt (``models/tool_prompt.py``),
stops at the end of a call block, and, when a call is required (``tool_choice`` required or
a ``tool_name``), decodes under the grammar that forces one (``models/tool_grammar.py``, built
here from the validated tools, in a worker thread: a few milliseconds per tool). Its streamed
text goes through a :class:`~calinode.models.tool_output.CallHoldBack` so that a call is
never shown as text, and each sample's answer is parsed into ``tool_calls``.

Tool history (assistant ``tool_calls``, ``tool`` results) is rendered for every chat, with or
without tools offered.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import trio

from calinode.models.tool_grammar import CALL_CLOSE, tool_call_grammar
from calinode.models.tool_output import CallHoldBack, tool_reply_fields
from calinode.models.tool_prompt import render_messages
from calinode.protocol.errors import ErrorCode, JobError
from calinode.protocol.job_params import GenerateParams
from calinode.protocol.tools import MAX_ARGUMENTS_CHARS

if TYPE_CHECKING:
    from calinode.models.generator import GenerationParams

__all__ = ["ToolTurn", "chat_messages_of"]


def chat_messages_of(request: GenerateParams) -> list[dict[str, str]] | None:
    """The request's messages as the generator takes them (tools block and tool history
    rendered); None for a completion prompt."""
    if request.messages is None:
        return None
    return render_messages(request.messages, request.tools, request.tool_choice,
                           request.tool_name)


@dataclass(frozen=True, slots=True)
class ToolTurn:
    """The tools of one request and, when a call is forced, its grammar."""

    offered: frozenset[str]
    grammar: str | None

    @classmethod
    async def of(cls, request: GenerateParams) -> ToolTurn | None:
        """None when the request offers no tools."""
        if not request.tools:
            return None
        grammar = None
        if request.tool_choice == "required":
            grammar = await trio.to_thread.run_sync(tool_call_grammar, request.tools,
                                                    request.tool_name)
        return cls(frozenset(t.name for t in request.tools), grammar)

    def settings(self, settings: GenerationParams) -> GenerationParams:
        return dataclasses.replace(settings, grammar=self.grammar,
                                   stop=(*settings.stop, CALL_CLOSE))

    def hold_back(self) -> CallHoldBack:
        return CallHoldBack(silent=self.grammar is not None)

    def reply_fields(self, text: str, finish: str) -> dict[str, Any]:
        """The sample's reply fields; a forced call that ended (``stop``) yet does not parse
        (its arguments beyond ``MAX_ARGUMENTS_CHARS``) is an error, never a reply that
        breaks what was asked."""
        fields = tool_reply_fields(text, finish, self.offered)
        if self.grammar is not None and fields["finish_reason"] == "stop":
            raise JobError(f"the forced tool call does not parse as a call of at most "
                           f"{MAX_ARGUMENTS_CHARS} characters of arguments",
                           code=ErrorCode.INTERNAL)
        return fields
