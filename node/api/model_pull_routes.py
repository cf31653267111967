"""``GET /v1/swarm/models`` and ``POST /v1/swarm/models/pull``: the node's side of
``calinode models list --swarm`` and ``calinode models pull``.

The pull runs in the node (its host is connected to the swarm and its peer table knows who
advertises what; ``node/blobs/``), so the CLI needs no libp2p host, identity or swarm key of
its own. With ``"stream": true`` the answer is NDJSON: a ``{"progress": {"done", "total"}}``
line at most every ``PROGRESS_EVERY`` seconds, then ``{"result": ...}``. A client that goes
away cancels the pull; what it verified stays on disk and the next pull resumes from it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import trio
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from calinode.node.api.bodies import field
from calinode.node.api.guard import read_json
from calinode.node.api.streaming import Answer, AnswerEndpoint, Emit
from calinode.protocol.errors import BadRequest, ErrorCode, JobError

if TYPE_CHECKING:
    from calinode.node.api.node_view import ApiNode
    from calinode.node.blobs.service import ModelTransfers

__all__ = ["model_pull_routes"]

PROGRESS_EVERY = 0.25


def _transfers(node: ApiNode) -> ModelTransfers:
    if node.transfers is None:
        raise JobError("this node does not transfer models", code=ErrorCode.INTERNAL)
    return node.transfers


def swarm_view(node: ApiNode) -> list[dict[str, Any]]:
    """Every model this node and its live peers advertise, with who holds it."""
    rows = {row["sha256"]: row for row in _transfers(node).swarm()}
    caps = node.capabilities()
    for offer in (*caps.embed, *caps.generate):
        row = rows.setdefault(offer.sha256, {"name": offer.name, "kind": offer.kind,
                                             "sha256": offer.sha256, "peers": []})
        row["peers"] = sorted({*row["peers"], node.peer_id})
    return sorted(rows.values(), key=lambda r: (r["name"], r["sha256"]))


def model_pull_routes(node: ApiNode) -> list[Route]:
    async def swarm(request: Request) -> JSONResponse:
        return JSONResponse(swarm_view(node))

    async def prepare(request: Request) -> Answer:
        body = await read_json(request)
        ref = field(body, "model", str)
        if not 1 <= len(ref) <= 128:
            raise BadRequest("model must be a name or a sha256")
        stream = field(body, "stream", bool, False)
        transfers = _transfers(node)

        async def whole() -> dict[str, Any]:
            result = await transfers.pull(ref, exclude=(node.peer_id,))
            return {"result": result.to_wire()}

        async def pieces(emit: Emit) -> None:
            state = {"done": -1, "total": 0}
            now = {"done": 0, "total": 0}

            def note(done: int, total: int) -> None:
                now["done"], now["total"] = done, total

            async with trio.open_nursery() as nursery:
                async def report() -> None:
                    while True:
                        if now != state:
                            state.update(now)
                            await emit({"progress": dict(now)})
                        await trio.sleep(PROGRESS_EVERY)

                nursery.start_soon(report)
                result = await transfers.pull(ref, on_progress=note, exclude=(node.peer_id,))
                nursery.cancel_scope.cancel()
            await emit({"progress": {"done": result.size, "total": result.size}})
            await emit({"result": result.to_wire()})

        return Answer(whole=whole, pieces=pieces, stream=stream)

    return [
        Route("/v1/swarm/models", swarm, methods=["GET"]),
        Route("/v1/swarm/models/pull", AnswerEndpoint(prepare), methods=["POST"]),
    ]
