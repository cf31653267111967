"""What a relaying node remembers of a generation so that another peer can finish it.

Issue 14 ("a generation outlives the peer that serves it"): the node that relays a generation
(``Dispatcher.generate``) asks its serving peer for a stream even when its own caller did not
(one sample, no logprobs), and every streamed piece carries the ids of the tokens it covers
(:class:`~calinode.protocol.job_replies.GenerateChunk`). When that peer dies, fails or goes
silent mid-stream, the same request goes to another peer with the same model file, plus the
tokens received so far (``GenerateParams.resume_tokens``); that peer replays them and streams
only what follows (``models/generator.py``), so the caller sees one uninterrupted stream.

:class:`ResumeBook` is that memory, pure and bounded: the text and token ids received, the
switches made (at most :data:`~calinode.protocol.job_replies.MAX_RESUMES`), whether the
stream so far can be resumed at all (a peer that sends no token ids, one that predates
resume, makes it unresumable), and the final reply as the caller must see it: the whole text
(the text before the last switch, then the last peer's), usage as the last peer counted it
(the prompt once, every completion token once: the replayed tokens are counted by the peer
that replays them, never by the relay), and the switches.

It cannot resume: a generation whose remaining peers hold another file of the model (a
different sha256: routing only ever offers one), several samples (``n > 1``) or one with
logprobs (the replayed tokens' logprobs are gone), a stream cut after its last token but
before its final reply, nor more than ``MAX_RESUMES`` times.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from calinode.protocol.job_params import MAX_RESUME_TOKENS, GenerateParams
from calinode.protocol.job_replies import MAX_RESUMES, GenerateChunk, GenerateReply, ResumeSwitch

__all__ = ["ResumeBook", "resumable_request"]


def resumable_request(params: GenerateParams) -> bool:
    """Whether a generation could be resumed (one sample, no logprobs, no tools: a tool call
    is held back from the stream and parsed from the whole text on the serving node, which a
    replay on another node would not have): such a request is
    streamed from its serving peer even when the caller wants one whole reply."""
    return params.n == 1 and not params.logprobs and not params.tools


@dataclass
class ResumeBook:
    """The pieces of one generation received so far, and its switches of peer."""

    max_tokens: int
    max_resumes: int = MAX_RESUMES
    tokens: list[int] = field(default_factory=list)
    pieces: list[str] = field(default_factory=list)
    switches: list[ResumeSwitch] = field(default_factory=list)
    #: False once a piece came without token ids (a peer that predates resume)
    has_token_ids: bool = True
    #: how many pieces had been received at the last switch (their text is the prefix of
    #: the final reply's; the last peer's reply holds only what it generated)
    _pieces_at_switch: int = 0

    @property
    def streamed(self) -> bool:
        """Whether any text has reached the caller (a plain retry would repeat it)."""
        return any(self.pieces)

    def received(self, chunk: GenerateChunk) -> str:
        """Record one streamed piece; return its text (to pass on to the caller)."""
        self.pieces.append(chunk.text)
        if chunk.tokens is None:
            self.has_token_ids = False
        else:
            self.tokens.extend(chunk.tokens)
        return chunk.text

    def can_resume(self) -> bool:
        """Whether another peer may take over now: tokens to replay, all of them known,
        some left to generate, and switches left."""
        return (self.has_token_ids and 0 < len(self.tokens) < self.max_tokens
                and len(self.tokens) <= MAX_RESUME_TOKENS
                and len(self.switches) < self.max_resumes)

    def switch(self, from_peer: str, to_peer: str, wire: dict[str, Any]) -> dict[str, Any]:
        """Record the move from ``from_peer`` to ``to_peer``; return the request for the
        latter: the original ``wire`` plus the tokens received so far."""
        if not self.can_resume():
            raise ValueError("this generation cannot be resumed now")
        self.switches.append(ResumeSwitch(from_peer=from_peer, to_peer=to_peer,
                                          at_token=len(self.tokens)))
        self._pieces_at_switch = len(self.pieces)
        return dict(wire, resume_tokens=list(self.tokens))

    def finish(self, reply: GenerateReply) -> GenerateReply:
        """The final reply as the caller must see it (see the module docstring). Its
        ``resumed`` are this relay's own switches: whatever a peer claimed there is dropped."""
        if not self.switches:
            return dataclasses.replace(reply, resumed=()) if reply.resumed else reply
        prefix = "".join(self.pieces[:self._pieces_at_switch])
        return dataclasses.replace(reply, text=prefix + reply.text,
                                   resumed=tuple(self.switches))

