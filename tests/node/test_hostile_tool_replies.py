"""A hostile generation peer answering tool calls it was not asked for (issue 15).

A real py-libp2p peer advertises a generation model and answers the node's ``generate`` jobs
with broken tool calls: a tool nobody offered, another tool than the one the request forced,
calls without the ``tool_calls`` finish reason, a required call answered as plain text,
arguments that are not a JSON object. The relaying node checks each reply against what it
asked, counts it as ``bad_reply`` and passes none of it on; then it answers the same request
correctly when the peer does, and keeps serving.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import trio
from libp2p.abc import INetStream
from libp2p.custom_types import TProtocol

from calinode.node.daemon import Node
from calinode.protocol.errors import JobError
from calinode.protocol.ids import JOB_PROTOCOL, META_PROTOCOL
from hostile_peer import HostilePeer, decode_last, frame, open_hostile_peer, read_all
from node_harness import open_nodes, wait_until

MODEL = "evil-gen"
SHA = "ab" * 32
TOOLS = [{"name": "get_weather", "description": "", "parameters": '{"type":"object"}'},
         {"name": "get_time", "description": "", "parameters": '{"type":"object"}'}]
ASK: dict[str, Any] = {"model": MODEL, "messages": [{"role": "user", "content": "Hi"}],
                       "max_tokens": 16, "tools": TOOLS, "tool_choice": "required",
                       "tool_name": "get_time"}
CALL = {"id": "call_1", "name": "get_time", "arguments": '{"tz": "UTC"}'}
GOOD: dict[str, Any] = {"model": MODEL, "sha256": SHA, "text": "", "finish_reason": "tool_calls",
                        "tool_calls": [CALL], "usage": {"prompt_tokens": 1, "completion_tokens": 1}}
BROKEN = {
    "unoffered_tool": dict(GOOD, tool_calls=[dict(CALL, name="rm_rf")]),
    "not_the_forced_tool": dict(GOOD, tool_calls=[dict(CALL, name="get_weather")]),
    "calls_without_finish_reason": dict(GOOD, finish_reason="stop"),
    "required_call_as_text": dict(GOOD, text="no", finish_reason="stop", tool_calls=None),
    "arguments_not_an_object": dict(GOOD, tool_calls=[dict(CALL, arguments="[1]")]),
    "too_many_calls": dict(GOOD, tool_calls=[CALL] * 9),
}


class HostileGenerator:
    """Serves ``generate`` jobs with ``BROKEN[mode]`` (``GOOD`` when ``mode`` is empty)."""

    def __init__(self, evil: HostilePeer) -> None:
        self.evil, self.mode, self.asked = evil, "", 0
        evil.host.set_stream_handler(TProtocol(JOB_PROTOCOL), self.serve)
        evil.host.set_stream_handler(TProtocol(META_PROTOCOL), self.exchange)

    def record(self) -> dict[str, Any]:
        return self.evil.record(capabilities={
            "jobs": ["generate"], "generate": [{"name": MODEL, "sha256": SHA,
                                                "context_length": 2048, "chat": True}]})

    async def exchange(self, stream: INetStream) -> None:
        await read_all(stream)
        await stream.write(frame(self.evil.exchange_wire(self.record())))
        await stream.close()

    async def serve(self, stream: INetStream) -> None:
        request = decode_last(await read_all(stream))
        self.asked += 1
        result = BROKEN[self.mode] if self.mode else GOOD
        await stream.write(frame({"t": "res", "id": request["id"], "result": result,
                                  "served_by": self.evil.peer_id}))
        await stream.close()


@pytest.mark.slow
async def test_broken_tool_call_replies_are_refused_and_counted(
    tmp_path: Path, bootstrap_of: Callable[[Node], str]
) -> None:
    async with open_nodes(tmp_path) as start, open_hostile_peer() as evil:
        node = await start("relay")
        await evil.connect(bootstrap_of(node))
        peer = HostileGenerator(evil)
        await evil.exchange(node.peer_id, evil.exchange_wire(peer.record()))
        await wait_until(lambda: any(e.peer_id == evil.peer_id and e.caps.models("generate")
                                     for e in node.table.alive()), timeout=60)
        for mode in BROKEN:
            peer.mode = mode
            asked, refused = peer.asked, node.rejections.counts["bad_reply"]
            with trio.fail_after(60), pytest.raises(JobError):
                await node.dispatcher.generate(dict(ASK), timeout=50)
            assert peer.asked == asked + 1, mode
            assert node.rejections.counts["bad_reply"] == refused + 1, mode
        peer.mode = ""
        with trio.fail_after(60):
            result = await node.dispatcher.generate(dict(ASK), timeout=50)
        assert result["finish_reason"] == "tool_calls" and result["tool_calls"] == [CALL]
        assert result["served_by"] == evil.peer_id
        assert (await evil.job(node.peer_id, "ping", {}))["t"] == "res"
