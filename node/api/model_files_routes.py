"""The files of this node's embedding models, by sha256, for clients that run them themselves
(the dashboard's in-browser embedding, ``node/dashboard/static/embed.js``).

- ``GET /v1/models/{sha256}/manifest``: what the client needs to embed exactly as the node does
  (dim, pooling, normalize, the query/passage prefixes, max_tokens) and the files' hashes;
- ``GET /v1/models/{sha256}/file``: the ONNX graph, streamed;
- ``GET /v1/models/{sha256}/tokenizer``: its ``tokenizer.json``;
- ``GET /v1/models/{sha256}/browser-graph``: the graph a browser runs to get this node's
  vectors (``models/browser_graph.py``): the model file itself, unless this machine's int8
  kernel saturates, when it is a copy that spells that arithmetic out; the manifest names it
  (``browser_graph``: sha256, size, what it emulates).

``{sha256}`` is a model's identity (the sha256 of its primary file, what records advertise and
collections pin), so the files are immutable: ``ETag`` is their sha256 and
``Cache-Control`` says ``immutable`` (``private``: they sit behind the API token). A hash this
node does not serve (not one of its loaded embedding models; generation models are not
served: GGUF files are hundreds of MB) is 404 ``UNKNOWN_MODEL``. A file is hashed once (in a
worker thread) before it is first served, and again whenever its size or mtime changes: bytes
that no longer match their manifest are refused (``CONFIG``), never sent under its sha256.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import trio
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import Route

from calinode.models.browser_graph import BrowserGraph, browser_graph
from calinode.models.embedder import TOKENIZER_FILE
from calinode.models.manifest import ModelFile, ModelManifest, sha256_file
from calinode.protocol.errors import ConfigError, ErrorCode, JobError

if TYPE_CHECKING:
    from calinode.node.api.node_view import ApiNode

__all__ = ["model_files_routes"]

_SHA256 = re.compile(r"[0-9a-f]{64}")
#: a year: the longest browsers honour; the bytes under a sha256 never change
CACHE_CONTROL = "private, max-age=31536000, immutable"


@dataclass(frozen=True)
class _Checked:
    """A file whose bytes were found to hash to its manifest's sha256, at this size and
    mtime."""

    size: int
    mtime_ns: int
    ok: bool


class ModelFiles:
    """Finds a loaded embedding model by sha256 and the checked path of one of its files."""

    def __init__(self, node: ApiNode) -> None:
        self.node = node
        self._checked: dict[Path, _Checked] = {}  # one entry per file of a loaded model
        self._graphs: dict[str, BrowserGraph] = {}  # one per loaded model, built when asked
        self._building = trio.Lock()

    async def browser_graph(self, manifest: ModelManifest) -> BrowserGraph:
        """The graph a browser should run for ``manifest`` (built once, in a worker thread,
        from the checked model file)."""
        path = await self.checked_path(manifest, manifest.primary)
        async with self._building:
            graph = self._graphs.get(manifest.sha256)
            if graph is None:
                graph = await trio.to_thread.run_sync(browser_graph, path)
                self._graphs[manifest.sha256] = graph
        return graph

    def manifest(self, sha256: str) -> ModelManifest:
        if _SHA256.fullmatch(sha256):
            for service in self.node.models.embed.values():
                manifest: ModelManifest = service.embedder.manifest
                if manifest.sha256 == sha256:
                    return manifest
        raise JobError(f"this node serves no embedding model with sha256 {sha256[:64]!r}; "
                       "see GET /v1/models", code=ErrorCode.UNKNOWN_MODEL)

    async def checked_path(self, manifest: ModelManifest, file: ModelFile) -> Path:
        """The file's path, after checking that its bytes are the manifest's (cached while
        its size and mtime stay)."""
        path = self.node.model_registry.path_of(manifest, file)
        try:
            stat = path.stat()
        except OSError as exc:
            raise ConfigError(f"model {manifest.name}: {file.path} is unreadable: "
                              f"{exc.strerror}") from None
        known = self._checked.get(path)
        if known is None or (known.size, known.mtime_ns) != (stat.st_size, stat.st_mtime_ns):
            ok = stat.st_size == file.size and (
                await trio.to_thread.run_sync(sha256_file, path)) == file.sha256
            known = _Checked(stat.st_size, stat.st_mtime_ns, ok)
            self._checked[path] = known
        if not known.ok:
            raise ConfigError(f"model {manifest.name}: {file.path} no longer matches its "
                              f"sha256; check it with: calinode models verify {manifest.name}")
        return path


def manifest_view(manifest: ModelManifest, graph: BrowserGraph) -> dict[str, Any]:
    """What a client needs to embed as the node does (``models/embedder.py``)."""
    tokenizer = manifest.file(TOKENIZER_FILE)
    return {**manifest.advertised(),
            "browser_graph": {"sha256": graph.sha256, "size": len(graph.data),
                              "emulates": graph.emulates},
            "batch_invariant": manifest.batch_invariant,
            "files": [{"path": f.path, "sha256": f.sha256, "size": f.size}
                      for f in manifest.files],
            "tokenizer": {"path": tokenizer.path, "sha256": tokenizer.sha256,
                          "size": tokenizer.size}}


def _immutable(request: Request, body: Path | bytes, sha256: str, media_type: str) -> Response:
    headers = {"ETag": f'"{sha256}"', "Cache-Control": CACHE_CONTROL}
    given = request.headers.get("if-none-match", "")
    if sha256 in {tag.strip().removeprefix("W/").strip('"') for tag in given.split(",")}:
        return Response(status_code=304, headers=headers)
    if isinstance(body, bytes):
        return Response(body, media_type=media_type, headers=headers)
    return FileResponse(body, media_type=media_type, headers=headers)


def model_files_routes(node: ApiNode) -> list[Route]:
    files = ModelFiles(node)

    async def manifest(request: Request) -> JSONResponse:
        found = files.manifest(request.path_params["sha256"])
        return JSONResponse(manifest_view(found, await files.browser_graph(found)))

    async def model_file(request: Request) -> Response:
        found = files.manifest(request.path_params["sha256"])
        path = await files.checked_path(found, found.primary)
        return _immutable(request, path, found.sha256, "application/octet-stream")

    async def tokenizer(request: Request) -> Response:
        found = files.manifest(request.path_params["sha256"])
        item = found.file(TOKENIZER_FILE)
        path = await files.checked_path(found, item)
        return _immutable(request, path, item.sha256, "application/json")

    async def graph(request: Request) -> Response:
        found = files.manifest(request.path_params["sha256"])
        built = await files.browser_graph(found)
        return _immutable(request, built.data, built.sha256, "application/octet-stream")

    return [
        Route("/v1/models/{sha256}/manifest", manifest),
        Route("/v1/models/{sha256}/browser-graph", graph),
        Route("/v1/models/{sha256}/file", model_file),
        Route("/v1/models/{sha256}/tokenizer", tokenizer),
    ]
