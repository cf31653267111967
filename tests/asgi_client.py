"""A fake HTTP client for raw ASGI endpoints in tests: one JSON request, every message
the endpoint sends recorded, and a disconnect on demand."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import trio


@dataclass
class FakeClient:
    """Sends one JSON body to a raw ASGI app and records what it answers; stays connected
    until ``disconnect`` is set."""

    body: dict[str, Any]
    sent: list[dict[str, Any]] = field(default_factory=list)
    disconnect: trio.Event = field(default_factory=trio.Event)
    delivered: bool = False

    async def receive(self) -> dict[str, Any]:
        if not self.delivered:
            self.delivered = True
            return {"type": "http.request", "body": json.dumps(self.body).encode(),
                    "more_body": False}
        await self.disconnect.wait()
        return {"type": "http.disconnect"}

    async def send(self, message: dict[str, Any]) -> None:
        self.sent.append(message)

    async def run(self, app: Any, path: str = "/v1/x") -> None:
        scope = {"type": "http", "method": "POST", "path": path, "query_string": b"",
                 "headers": [(b"content-type", b"application/json")]}
        await app(scope, self.receive, self.send)

    def status(self) -> int:
        return int(next(m["status"] for m in self.sent if m["type"] == "http.response.start"))

    def header(self, name: bytes) -> bytes:
        start = next(m for m in self.sent if m["type"] == "http.response.start")
        return dict(start["headers"])[name]

    def text(self) -> str:
        return b"".join(m.get("body", b"") for m in self.sent
                        if m["type"] == "http.response.body").decode()

    def finished(self) -> bool:
        return any(m["type"] == "http.response.body" and not m.get("more_body")
                   for m in self.sent)
