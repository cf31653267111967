"""Collections, ingest, search, ask and shards on the local HTTP API.

``GET/POST /v1/collections`` (without ``replicas``: min(2, live index peers), said in the
reply's ``replicas_default`` and ``notes``), ``GET/DELETE /v1/collections/{name}``, ``PATCH
/v1/collections/{name}`` (``{replicas, write_quorum?}``: a new signed definition version),
``POST /v1/ingest`` (``{collection, docs}``; a ``_id`` given twice keeps the last version,
named in the reply's ``duplicates``; a document above ``MAX_DOCUMENT_CHARS`` fails alone),
``POST /v1/search`` (``{collection, query}`` or
``{collection, queries: [{_id, text}]}``, or ``{collection, vector, model_sha256}`` (a query
embedded by the client, e.g. in the browser: checked against the collection's pinned model
and dimension), ``k``; ``"group_by": "doc"`` for the k best distinct
documents, each by its best chunk; ``"text": false`` for hits without text and metadata),
``POST /v1/ask`` (``{collection, question, k, model}``; with ``"agent": true`` the agent's
bounded tool loop: ``{collection, question, model, max_steps, max_tokens}``),
``GET /v1/shards?collection=NAME``.
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING, Any

from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from calinode.node.api.bodies import integer, peer_ids, request_deadline, string
from calinode.node.api.guard import read_json
from calinode.node.api.json_response import FastJSONResponse
from calinode.node.api.streaming import Answer, AnswerEndpoint, Emit
from calinode.node.ingest_input import prepare
from calinode.protocol.collections import CollectionDef
from calinode.protocol.errors import BadRequest

if TYPE_CHECKING:
    from calinode.node.api.node_view import ApiNode

#: Seconds an agent request may take when it names no ``timeout`` (several generations).
AGENT_TIMEOUT = 180.0


def collection_info(definition: CollectionDef) -> dict[str, Any]:
    """A definition for people and scripts: the write quorum once, as it applies (``quorum``)
    and why (``quorum_rule``: ``majority`` of the replicas, or ``set`` by ``--write-quorum``);
    the wire's ``write_quorum`` (0 for "a majority") is left out."""
    info = definition.to_wire()
    info["quorum_rule"] = "set" if info.pop("write_quorum") else "majority"
    info["quorum"] = definition.quorum
    return info

async def shard_rows(node: ApiNode, name: str) -> list[dict[str, Any]]:
    """Every shard of ``name`` across the swarm (the coordinator asks the holders)."""
    return await node.coordinator.shard_rows(name)


async def collections(node: ApiNode, request: Request) -> JSONResponse:
    if request.method == "GET":
        return JSONResponse([d.to_wire() for d in node.book.all() if not d.dropped])
    body = await read_json(request)
    chosen = body.get("replicas") is None
    definition, notes = await node.coordinator.create(
        string(body, "name"), model=string(body, "model", node.config.embed_models[0]),
        shards=integer(body, "shards", 16),
        replicas=None if chosen else integer(body, "replicas", 0),
        write_quorum=integer(body, "write_quorum", 0),
        index_kind=string(body, "index_kind", "flat"), admins=peer_ids(body, "admins"),
        writers=peer_ids(body, "writers"), readers=peer_ids(body, "readers"))
    return JSONResponse({**definition.to_wire(), "quorum": definition.quorum,
                         "replicas_default": chosen, "notes": notes})


async def collection(node: ApiNode, request: Request) -> JSONResponse:
    name = request.path_params["name"]
    if request.method == "DELETE":
        return JSONResponse((await node.coordinator.drop(name)).to_wire())
    if request.method == "PATCH":
        body = await read_json(request)
        quorum = None if body.get("write_quorum") is None else integer(body, "write_quorum", 0)
        changed, notes = await node.coordinator.update(
            name, replicas=integer(body, "replicas", 0), write_quorum=quorum)
        return JSONResponse({**changed.to_wire(), "quorum": changed.quorum,
                             "notes": notes})
    return JSONResponse(collection_info(node.book.get(name)))


async def ingest(node: ApiNode, request: Request) -> JSONResponse:
    body = await read_json(request)
    docs = body.get("docs")
    if not isinstance(docs, list) or not docs:
        raise BadRequest("docs must be a non-empty list of {_id, title, text, ...}")
    prepared = prepare(docs)  # oversize refused, the last version of a repeated _id wins
    summary = await node.coordinator.ingest(string(body, "collection"), prepared.docs)
    summary["documents"] = prepared.read
    summary["failed"] = [*prepared.failed, *summary["failed"]]
    summary["duplicates"] = prepared.duplicates
    summary["duplicate_lines"] = prepared.duplicate_lines
    return JSONResponse(summary)


async def delete(node: ApiNode, request: Request) -> JSONResponse:
    body = await read_json(request)
    ids = body.get("doc_ids")
    if not isinstance(ids, list):
        raise BadRequest("doc_ids must be a list of document ids")
    return JSONResponse(await node.coordinator.delete(string(body, "collection"), ids))


async def search(node: ApiNode, request: Request) -> JSONResponse:
    body = await read_json(request)
    deadline = request_deadline(body)
    group_by, with_text = _search_options(body)
    if "vector" in body:
        return await _search_by_vector(node, body, deadline, group_by == "doc", with_text)
    queries: Any
    if "query" in body:
        queries = [{"_id": "q", "text": string(body, "query")}]
    else:
        queries = body.get("queries")
        if not isinstance(queries, list) or not queries or not all(
                isinstance(q, dict) and isinstance(q.get("text"), str) for q in queries):
            raise BadRequest("give query, queries as a list of {_id, text}, or vector with "
                             "model_sha256")
    results = await node.coordinator.search(
        string(body, "collection"), [q["text"] for q in queries], k=integer(body, "k", 10),
        deadline=deadline, per_doc=group_by == "doc", text=with_text)
    return FastJSONResponse([{"query_id": str(q.get("_id", i)), **r}
                             for i, (q, r) in enumerate(zip(queries, results, strict=True))])


def _search_options(body: dict[str, Any]) -> tuple[str | None, bool]:
    """``group_by`` (None, ``chunk`` or ``doc``) and ``text`` (bool) of a search body."""
    group_by = body.get("group_by")
    if group_by not in (None, "chunk", "doc"):
        raise BadRequest('group_by must be "doc" (the k best documents) or "chunk" (the '
                         'default)')
    with_text = body.get("text", True)
    if not isinstance(with_text, bool):
        raise BadRequest("text must be true or false")
    return group_by, with_text


async def _search_by_vector(node: ApiNode, body: dict[str, Any], deadline: float,
                            per_doc: bool, with_text: bool) -> JSONResponse:
    """``{collection, vector, model_sha256}``: a query the client embedded (the dashboard's
    in-browser embedding), checked against the collection's model and dimension
    (``node/rag/query_vector.py``); answered like a one-query text search."""
    if "query" in body or "queries" in body:
        raise BadRequest("give either vector (with model_sha256) or query/queries, not both")
    result = await node.coordinator.search_by_vector(
        string(body, "collection"), body.get("vector"), body.get("model_sha256"),
        k=integer(body, "k", 10), deadline=deadline, per_doc=per_doc, text=with_text)
    return FastJSONResponse([{"query_id": "q", **result}])


async def ask(node: ApiNode, request: Request) -> Answer:
    """JSON, or with ``stream: true`` NDJSON: ``{"text"}`` lines, then ``{"done"}``; a
    client that disconnects cancels the answer (retrieval or generation)."""
    body = await read_json(request)
    agent = body.get("agent", False)
    if not isinstance(agent, bool):
        raise BadRequest("agent must be true or false")
    if agent:
        return _agent(node, body)
    deadline = request_deadline(body)
    args = (string(body, "collection"), string(body, "question"))
    settings: dict[str, Any] = {"k": integer(body, "k", 5), "model": body.get("model"),
                                "max_tokens": integer(body, "max_tokens", 256),
                                "deadline": deadline}

    async def whole() -> dict[str, Any]:
        return await node.coordinator.ask(*args, **settings)

    async def pieces(emit: Emit) -> None:
        async def on_text(text: str) -> None:
            await emit({"text": text})

        await emit({"done": await node.coordinator.ask(*args, on_text=on_text, **settings)})

    return Answer(whole=whole, pieces=pieces, stream=body.get("stream") is True)


def _agent(node: ApiNode, body: dict[str, Any]) -> Answer:
    """``{"agent": true, collection, question, model?, max_steps?, max_tokens?}``: the
    bounded tool loop (the coordinator's ``agent``). Streamed: a ``{"step": ...}`` line per
    step (tool, args, hits or chars or error) as it is done, then ``{"done": ...}``."""
    deadline = request_deadline(body, AGENT_TIMEOUT)
    args = (string(body, "collection"), string(body, "question"))
    model = body.get("model")
    if model is not None and not isinstance(model, str):
        raise BadRequest("model must be a string")
    settings: dict[str, Any] = {
        "model": model, "deadline": deadline,
        "max_steps": None if body.get("max_steps") is None else integer(body, "max_steps", 0),
        "max_tokens": (None if body.get("max_tokens") is None
                       else integer(body, "max_tokens", 0))}

    async def whole() -> dict[str, Any]:
        return await node.coordinator.agent(*args, **settings)

    async def pieces(emit: Emit) -> None:
        async def on_step(step: dict[str, Any]) -> None:
            await emit({"step": step})

        await emit({"done": await node.coordinator.agent(*args, on_step=on_step, **settings)})

    return Answer(whole=whole, pieces=pieces, stream=body.get("stream") is True)


async def shards(node: ApiNode, request: Request) -> JSONResponse:
    names = ([request.query_params["collection"]] if "collection" in request.query_params
             else node.book.names())
    rows = []
    for name in names:
        rows.extend(await shard_rows(node, name))
    return JSONResponse(rows)


def rag_routes(node: ApiNode) -> list[Route]:
    def on(handler: Any) -> Any:
        return functools.partial(handler, node)

    return [
        Route("/v1/collections", on(collections), methods=["GET", "POST"]),
        Route("/v1/collections/{name}", on(collection), methods=["GET", "DELETE", "PATCH"]),
        Route("/v1/ingest", on(ingest), methods=["POST"]),
        Route("/v1/search", on(search), methods=["POST"]),
        Route("/v1/delete", on(delete), methods=["POST"]),
        Route("/v1/ask", AnswerEndpoint(on(ask)), methods=["POST"]),
        Route("/v1/shards", on(shards)),
    ]
