"""``CalinodeClient``: a small synchronous client for a node's local HTTP API.

Scripts and the CLI use it the same way::

    from calinode.node.client import CalinodeClient
    client = CalinodeClient.from_home()   # or CalinodeClient("127.0.0.1:7412", token="...")
    print(client.status()["peer_id"])
    for peer in client.peers():
        print(peer["peer_id"], peer["alive"])
    client.ping("12D3KooW...", count=3)

Every failure raises :class:`calinode.protocol.errors.ApiError` with a stable ``code``. The
API wants the bearer token from the node's home (``api.token``): ``from_home`` reads it, or
give it as ``token=`` / ``$CALINODE_TOKEN`` for a node whose home is elsewhere.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx

from calinode.node.config import DEFAULT_API, resolve_home
from calinode.node.node_file import read_node_file
from calinode.node.private_files import read_api_token
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


def locate_token(token: str | None = None, home: str | None = None) -> str | None:
    """``token`` if given, else ``CALINODE_TOKEN``, else the home's ``api.token``."""
    if token:
        return token
    if os.environ.get("CALINODE_TOKEN"):
        return os.environ["CALINODE_TOKEN"]
    return read_api_token(resolve_home(home, os.environ))


class CalinodeClient:
    def __init__(self, api: str = DEFAULT_API, *, token: str | None = None,
                 timeout: float = 60.0) -> None:
        self.api = api.removeprefix("http://")
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._http = httpx.Client(base_url=f"http://{self.api}", timeout=timeout,
                                  headers=headers)

    @classmethod
    def from_home(cls, home: str | Path | None = None, *, api: str | None = None,
                  token: str | None = None) -> CalinodeClient:
        where = str(home) if home else None
        return cls(locate_api(api, where), token=locate_token(token, where))

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
            self._raise_for(response.status_code, data, response.text)
        return data

    @staticmethod
    def _raise_for(status: int, data: Any, text: str) -> None:
        error = data.get("error", {}) if isinstance(data, dict) else {}
        try:
            code = ErrorCode(error.get("code", "INTERNAL"))
        except ValueError:
            code = ErrorCode.INTERNAL
        raise ApiError(str(error.get("message", text)), code=code)

    def healthz(self) -> dict[str, Any]:
        return dict(self._request("GET", "/healthz"))

    def status(self) -> dict[str, Any]:
        return dict(self._request("GET", "/v1/status"))

    def invite(self) -> dict[str, Any]:
        """``{"invite": "cal1...", "swarm": mode}`` (``invite`` is None in an open swarm)."""
        return dict(self._request("GET", "/v1/invite"))

    def dashboard_login(self) -> dict[str, Any]:
        """A one-time dashboard login: ``{"code", "url", "expires_in"}``."""
        return dict(self._request("POST", "/v1/dashboard/login-code", {}))

    def peers(self) -> list[dict[str, Any]]:
        return list(self._request("GET", "/v1/peers"))

    def ping(self, peer_id: str, *, count: int = 1, timeout: float = 5.0) -> dict[str, Any]:
        return dict(self._request("POST", "/v1/ping",
                                  {"peer_id": peer_id, "count": count, "timeout": timeout},
                                  timeout=timeout * count))

    def doctor(self, *, timeout: float = 30.0) -> dict[str, Any]:
        """The node's facts for ``calinode doctor`` (``GET /v1/doctor``)."""
        return dict(self._request("GET", "/v1/doctor", timeout=timeout))

    def bench(self, what: str, *, peer_id: str | None = None, model: str | None = None,
              seconds: float = 0.5, timeout: float = 150.0) -> dict[str, Any]:
        """One ``calinode bench`` measurement (``POST /v1/bench``)."""
        body: dict[str, Any] = {"what": what, "seconds": seconds}
        if peer_id:
            body["peer_id"] = peer_id
        if model:
            body["model"] = model
        return dict(self._request("POST", "/v1/bench", body, timeout=timeout))

    def job(self, kind: str, params: dict[str, Any] | None = None, *,
            peer_id: str | None = None, timeout: float = 30.0) -> dict[str, Any]:
        body: dict[str, Any] = {"kind": kind, "params": params or {}, "timeout": timeout}
        if peer_id:
            body["peer_id"] = peer_id
        return dict(self._request("POST", "/v1/jobs", body, timeout=timeout))

    def embed(self, texts: list[str], *, model: str | None = None, input_type: str = "passage",
              dimensions: int | None = None, timeout: float = 120.0) -> dict[str, Any]:
        body: dict[str, Any] = {"texts": texts, "input_type": input_type, "timeout": timeout}
        if model:
            body["model"] = model
        if dimensions is not None:
            body["dimensions"] = dimensions
        return dict(self._request("POST", "/v1/embed", body, timeout=timeout))

    def generate(self, *, prompt: str | None = None, messages: list[dict[str, str]] | None = None,
                 model: str | None = None, timeout: float = 300.0,
                 **settings: Any) -> dict[str, Any]:
        """One finished generation: ``{text, finish_reason, usage, served_by, ...}``."""
        return dict(self._request("POST", "/v1/generate",
                                  self._generate_body(prompt, messages, model, timeout, settings),
                                  timeout=timeout))

    def generate_stream(self, *, prompt: str | None = None,
                        messages: list[dict[str, str]] | None = None, model: str | None = None,
                        timeout: float = 300.0, **settings: Any) -> Iterator[dict[str, Any]]:
        """Yields ``{"text": ...}`` pieces as they are generated, then ``{"done": {...}}``."""
        body = self._generate_body(prompt, messages, model, timeout, settings)
        body["stream"] = True
        yield from self._ndjson("/v1/generate", body, timeout)

    def _ndjson(self, path: str, body: dict[str, Any], timeout: float
                ) -> Iterator[dict[str, Any]]:
        try:
            with self._http.stream("POST", path, json=body,
                                   timeout=timeout + 10.0) as response:
                if response.status_code >= 400:
                    response.read()
                    self._raise_for(response.status_code, response.json(), response.text)
                for line in response.iter_lines():
                    if not line.strip():
                        continue
                    item = json.loads(line)
                    if "error" in item:
                        self._raise_for(500, item, line)
                    yield item
        except httpx.HTTPError as exc:
            raise ApiError(f"lost the calinode API at {self.api}: {type(exc).__name__}",
                           code=ErrorCode.PEER_UNREACHABLE) from exc

    @staticmethod
    def _generate_body(prompt: str | None, messages: list[dict[str, str]] | None,
                       model: str | None, timeout: float, settings: dict[str, Any]
                       ) -> dict[str, Any]:
        body: dict[str, Any] = {"timeout": timeout}
        body.update({k: v for k, v in settings.items() if v is not None})
        if prompt is not None:
            body["prompt"] = prompt
        if messages is not None:
            body["messages"] = messages
        if model:
            body["model"] = model
        return body

    def models(self) -> list[dict[str, Any]]:
        return list(self._request("GET", "/v1/models")["data"])

    def swarm_models(self) -> list[dict[str, Any]]:
        """Models this node and its live peers advertise, with the peers holding each."""
        return list(self._request("GET", "/v1/swarm/models"))

    def pull_model(self, model: str, *, timeout: float = 3600.0) -> Iterator[dict[str, Any]]:
        """Pull ``model`` (name or sha256) into the node's home: ``{"progress"}`` lines,
        then ``{"result"}``."""
        return self._ndjson("/v1/swarm/models/pull", {"model": model, "stream": True},
                            timeout)

    def collections(self) -> list[dict[str, Any]]:
        return list(self._request("GET", "/v1/collections"))

    def create_collection(self, name: str, **settings: Any) -> dict[str, Any]:
        body = {"name": name, **{k: v for k, v in settings.items() if v is not None}}
        return dict(self._request("POST", "/v1/collections", body))

    def collection(self, name: str) -> dict[str, Any]:
        return dict(self._request("GET", f"/v1/collections/{name}"))

    def update_collection(self, name: str, **settings: Any) -> dict[str, Any]:
        body = {k: v for k, v in settings.items() if v is not None}
        return dict(self._request("PATCH", f"/v1/collections/{name}", body))

    def drop_collection(self, name: str) -> dict[str, Any]:
        return dict(self._request("DELETE", f"/v1/collections/{name}"))

    def ingest(self, collection: str, docs: list[dict[str, Any]], *,
               timeout: float = 600.0) -> dict[str, Any]:
        return dict(self._request("POST", "/v1/ingest", {"collection": collection, "docs": docs},
                                  timeout=timeout))

    def search(self, collection: str, query: str | None = None, *,
               queries: list[dict[str, str]] | None = None, k: int = 10,
               timeout: float = 60.0, per_doc: bool = False,
               text: bool = True) -> list[dict[str, Any]]:
        """One result per query: ``{query_id, hits, partial, missing_shards}``. ``per_doc``:
        the ``k`` best distinct documents, each by its best chunk; ``text=False``: hits
        without text and metadata (ids and scores, for evaluation runs)."""
        body: dict[str, Any] = {"collection": collection, "k": k, "timeout": timeout}
        if per_doc:
            body["group_by"] = "doc"
        if not text:
            body["text"] = False
        if query is not None:
            body["query"] = query
        else:
            body["queries"] = queries
        return list(self._request("POST", "/v1/search", body, timeout=timeout))

    def ask(self, collection: str, question: str, *, k: int = 5, model: str | None = None,
            max_tokens: int = 256, timeout: float = 300.0) -> dict[str, Any]:
        body: dict[str, Any] = {"collection": collection, "question": question, "k": k,
                                "max_tokens": max_tokens, "timeout": timeout}
        if model:
            body["model"] = model
        return dict(self._request("POST", "/v1/ask", body, timeout=timeout))

    def agent(self, collection: str, question: str, *, model: str | None = None,
              max_steps: int | None = None, max_tokens: int | None = None,
              timeout: float = 180.0) -> dict[str, Any]:
        """The agent's answer (``/v1/ask`` with ``"agent": true``): answer, sources, steps,
        the bound hit."""
        body = self._agent_body(collection, question, model, max_steps, max_tokens, timeout)
        return dict(self._request("POST", "/v1/ask", body, timeout=timeout + 10))

    def agent_stream(self, collection: str, question: str, *, model: str | None = None,
                     max_steps: int | None = None, max_tokens: int | None = None,
                     timeout: float = 180.0) -> Iterator[dict[str, Any]]:
        """Yields ``{"step": ...}`` as the agent makes each step, then ``{"done": ...}``."""
        body = self._agent_body(collection, question, model, max_steps, max_tokens, timeout)
        yield from self._ndjson("/v1/ask", {**body, "stream": True}, timeout)

    @staticmethod
    def _agent_body(collection: str, question: str, model: str | None, max_steps: int | None,
                    max_tokens: int | None, timeout: float) -> dict[str, Any]:
        body: dict[str, Any] = {"collection": collection, "question": question,
                                "agent": True, "timeout": timeout}
        for key, value in (("model", model), ("max_steps", max_steps),
                           ("max_tokens", max_tokens)):
            if value is not None:
                body[key] = value
        return body

    def shards(self, collection: str | None = None) -> list[dict[str, Any]]:
        path = "/v1/shards" + (f"?collection={collection}" if collection else "")
        return list(self._request("GET", path))

    def delete(self, collection: str, doc_ids: list[str]) -> dict[str, Any]:
        return dict(self._request("POST", "/v1/delete",
                                  {"collection": collection, "doc_ids": doc_ids}))

    def ask_stream(self, collection: str, question: str, *, k: int = 5,
                   model: str | None = None, max_tokens: int = 256,
                   timeout: float = 300.0) -> Iterator[dict[str, Any]]:
        """Yields ``{"text": ...}`` pieces of the answer, then ``{"done": {answer, sources}}``."""
        body: dict[str, Any] = {"collection": collection, "question": question, "k": k,
                                "max_tokens": max_tokens, "timeout": timeout, "stream": True}
        if model:
            body["model"] = model
        yield from self._ndjson("/v1/ask", body, timeout)
