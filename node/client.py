"""``CalinodeClient``: a small synchronous client for a node's local HTTP API.

Scripts and the CLI use it the same way::

    from calinode.node.client import CalinodeClient
    client = CalinodeClient.from_home()          # or CalinodeClient("127.0.0.1:7412")
    print(client.status()["peer_id"])
    for peer in client.peers():
        print(peer["peer_id"], peer["alive"])
    client.ping("12D3KooW...", count=3)

Every failure raises :class:`calinode.protocol.errors.ApiError` with a stable ``code``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import httpx

from calinode.node.config import DEFAULT_API, resolve_home
from calinode.node.node_file import read_node_file
from calinode.protocol.errors import ApiError, ErrorCode


def locate_api(api: str | None = None, home: str | None = None) -> str:
    """``api`` if given, else ``CALINODE_API``, else the running node's ``node.json``."""
    if api:
        return api
    if os.environ.get("CALINODE_API"):
        return os.environ["CALINODE_API"]
    info = read_node_file(resolve_home(home, os.environ))
    if info and isinstance(info.get("api"), str):
        return str(info["api"])
    return DEFAULT_API


class CalinodeClient:
    def __init__(self, api: str = DEFAULT_API, *, timeout: float = 60.0) -> None:
        self.api = api.removeprefix("http://")
        self._http = httpx.Client(base_url=f"http://{self.api}", timeout=timeout)

    @classmethod
    def from_home(cls, home: str | Path | None = None, *, api: str | None = None) -> CalinodeClient:
        return cls(locate_api(api, str(home) if home else None))

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> CalinodeClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _request(self, method: str, path: str, body: dict[str, Any] | None = None,
                 timeout: float | None = None) -> Any:
        try:
            response = self._http.request(
                method, path, json=body,
                timeout=None if timeout is None else timeout + 10.0)
        except httpx.HTTPError as exc:
            raise ApiError(
                f"cannot reach the calinode API at {self.api} ({type(exc).__name__}); "
                "is the node running? start one with: calinode start",
                code=ErrorCode.PEER_UNREACHABLE,
            ) from exc
        try:
            data = response.json()
        except ValueError:
            raise ApiError(f"API answered {response.status_code} with a non-JSON body",
                           code=ErrorCode.INTERNAL) from None
        if response.status_code >= 400:
            error = data.get("error", {}) if isinstance(data, dict) else {}
            try:
                code = ErrorCode(error.get("code", "INTERNAL"))
            except ValueError:
                code = ErrorCode.INTERNAL
            raise ApiError(str(error.get("message", response.text)), code=code)
        return data

    def healthz(self) -> dict[str, Any]:
        return dict(self._request("GET", "/healthz"))

    def status(self) -> dict[str, Any]:
        return dict(self._request("GET", "/v1/status"))

    def peers(self) -> list[dict[str, Any]]:
        return list(self._request("GET", "/v1/peers"))

    def ping(self, peer_id: str, *, count: int = 1, timeout: float = 5.0) -> dict[str, Any]:
        return dict(self._request("POST", "/v1/ping",
                                  {"peer_id": peer_id, "count": count, "timeout": timeout},
                                  timeout=timeout * count))

    def job(self, kind: str, params: dict[str, Any] | None = None, *,
            peer_id: str | None = None, timeout: float = 30.0) -> dict[str, Any]:
        body: dict[str, Any] = {"kind": kind, "params": params or {}, "timeout": timeout}
        if peer_id:
            body["peer_id"] = peer_id
        return dict(self._request("POST", "/v1/jobs", body, timeout=timeout))
