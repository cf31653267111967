"""A fake node for unit tests of the generate and chat routes: its dispatcher records the
generate params the route sends and answers with a fixed reply (a fake: no job runs)."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

PLAIN_REPLY: dict[str, Any] = {"text": "ok", "finish_reason": "stop", "served_by": "me",
                               "usage": {"prompt_tokens": 1, "completion_tokens": 1}}


class FakeDispatcher:
    def __init__(self, reply: dict[str, Any]) -> None:
        self.reply = reply
        self.sent: list[dict[str, Any]] = []

    def candidates(self, kind: str, name: str) -> list[Any]:  # the chat route asks first
        return [SimpleNamespace(peer_id="me", sha256="ab" * 32)]

    async def generate(self, params: dict[str, Any], **_: Any) -> dict[str, Any]:
        self.sent.append(params)
        return dict(self.reply)


def fake_node(reply: dict[str, Any] = PLAIN_REPLY) -> Any:
    """A node serving one generation model, ``gen``, whose dispatcher answers ``reply``."""
    return SimpleNamespace(models=SimpleNamespace(embed={}, generate={"gen": None}),
                           dispatcher=FakeDispatcher(reply))
