"""``calinode models ...``: the models installed in a node's home (no daemon needed).

``list``, ``prepare NAME...`` (the embedded defaults), ``add PATH --name NAME`` (an ONNX
folder with tokenizer.json, or a GGUF file), ``remove NAME``, ``verify [NAME...]`` and
``export CHECKPOINT_DIR --name NAME [--int8]`` (needs the optional ``export`` extra: torch).
A running node loads models at start: restart it to pick up changes.

Two actions go through the home's running node, because only it is connected to the swarm
(its peer table knows who advertises what; no second host, identity or swarm key in the CLI):
``list --swarm`` (which peers hold which models) and ``pull NAME|SHA256``, which fetches a
model from the peers advertising it into the node's home (``node/blobs/``: chunks from
several peers at once, each verified on arrival, resumable after a crash), with a progress
bar on stderr and, with ``--json``, one object at the end.

``add`` installs a model only once it has passed the checks of ``models/prepare/checks.py`` on the
copied bytes (it loads and runs as the node will run it). ``remove`` refuses a model that a
collection of the home pins or that the home's running node serves, unless ``--force``, which
says what breaks (``node/cli/model_use.py``). ``prepare`` and ``add`` end with how to serve the
model when the home's running node does not.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

from calinode.node.cli.render import Column, print_table
from calinode.protocol.errors import BadRequest, ConfigError


def add_models_parser(sub: Any) -> None:
    models = sub.add_parser("models", help="list, prepare, add, remove, verify, export, "
                            "pull models")
    msub = models.add_subparsers(dest="models_command", required=True, metavar="ACTION")
    listing = msub.add_parser("list", help="installed models (--swarm: the swarm's)")
    listing.add_argument("--swarm", action="store_true",
                         help="the models the running node and its live peers advertise, "
                              "and which peers hold each")
    pull = msub.add_parser("pull", help="fetch a model from the peers that hold it (through "
                           "the running node, into its home)")
    pull.add_argument("model", metavar="NAME|SHA256")
    pull.add_argument("--timeout", type=float, default=3600.0,
                      help="seconds to wait for the whole model")
    prepare = msub.add_parser("prepare", help="prepare embedded defaults (no network needed)")
    prepare.add_argument("names", nargs="*", metavar="NAME",
                         help="minilm-l6, minilm-l6-int8, smollm2-135m, gemma3-270m "
                              "(default: the two defaults)")
    prepare.add_argument("--force", action="store_true", help="prepare again even if intact")
    add = msub.add_parser("add", help="install an ONNX model folder or a GGUF file")
    add.add_argument("path", help="folder with model.onnx + tokenizer.json, or a .gguf file")
    add.add_argument("--name", required=True)
    add.add_argument("--dim", type=int, help="embedding size (read from a sentence-transformers "
                     "1_Pooling/config.json when present)")
    add.add_argument("--pooling", choices=["mean", "cls"], default=None)
    add.add_argument("--no-normalize", action="store_true")
    add.add_argument("--query-prefix", default="", help='e.g. "query: " for E5 models')
    add.add_argument("--passage-prefix", default="", help='e.g. "passage: " for E5 models')
    add.add_argument("--max-tokens", type=int, default=512)
    add.add_argument("--context-length", type=int, default=4096, help="GGUF: context length")
    add.add_argument("--chat-format", help="GGUF: llama-cpp-python chat format (default: the "
                     "template inside the file)")
    add.add_argument("--base", action="store_true", help="GGUF: a base model (completion only)")
    remove = msub.add_parser("remove", help="uninstall a model (refused while in use)")
    remove.add_argument("name")
    remove.add_argument("--force", action="store_true",
                        help="remove it even if a collection pins it or the running node "
                             "serves it (prints what breaks)")
    verify = msub.add_parser("verify", help="re-hash model files")
    verify.add_argument("names", nargs="*", metavar="NAME")
    export = msub.add_parser("export", help="export a Hugging Face checkpoint to ONNX (torch)")
    export.add_argument("checkpoint", help="a local sentence-transformers/transformers folder")
    export.add_argument("--name", required=True)
    export.add_argument("--int8", action="store_true", help="also make NAME-int8")


#: ``calinode models list``: plain lines keep these widths
MODEL_COLUMNS = (Column("NAME", 20), Column("KIND", 9), Column("SIZE MB", 8, ">"),
                 Column("SHA256", gap="  "))
NO_MODELS = "(none: calinode models prepare, or calinode start, prepares defaults)"


def model_cells(row: dict[str, Any]) -> tuple[str, ...]:
    """One installed model (its advertised manifest and ``size`` in bytes) as table cells."""
    return (row["name"], row["kind"], f"{row['size'] / 1e6:.1f}", row["sha256"][:16])


def _home(args: argparse.Namespace) -> Path:
    from calinode.node.config import resolve_home

    return resolve_home(args.home, os.environ)


def _registry(args: argparse.Namespace) -> Any:
    from calinode.models.registry import ModelRegistry

    return ModelRegistry(_home(args) / "models")


def _progress(message: str) -> None:
    print(f"  {message}", file=sys.stderr, flush=True)


def _add(args: argparse.Namespace, registry: Any) -> Any:
    from calinode.models.manifest import ModelFile, ModelManifest
    from calinode.models.prepare.checks import check_model

    path = Path(args.path).expanduser()
    placeholder = (ModelFile(path="x", sha256="0" * 64, size=0),)
    if path.is_file() and path.suffix == ".gguf":
        manifest = ModelManifest(
            name=args.name, kind="generate", files=placeholder,
            context_length=args.context_length, chat_format=args.chat_format,
            chat=not args.base, source=str(path))
        return registry.install(manifest, [(path, path.name)], progress=_progress,
                                check=check_model)
    if not (path / "model.onnx").is_file() or not (path / "tokenizer.json").is_file():
        raise ConfigError(f"{path}: expected a .gguf file or a folder with model.onnx and "
                          "tokenizer.json (for a torch checkpoint: calinode models export)")
    dim, pooling = args.dim, args.pooling
    pooling_file = path / "1_Pooling" / "config.json"
    if pooling_file.is_file():
        config = json.loads(pooling_file.read_text())
        dim = dim or config.get("word_embedding_dimension")
        pooling = pooling or ("cls" if config.get("pooling_mode_cls_token") else "mean")
    if not dim:
        raise ConfigError("give --dim (the embedding size) for this model")
    manifest = ModelManifest(
        name=args.name, kind="embed", files=placeholder, dim=dim, pooling=pooling or "mean",
        normalize=not args.no_normalize, query_prefix=args.query_prefix,
        passage_prefix=args.passage_prefix, max_tokens=args.max_tokens, source=str(path))
    return registry.install(manifest, [(path / "model.onnx", "model.onnx"),
                                       (path / "tokenizer.json", "tokenizer.json")],
                            progress=_progress, check=check_model)


def _serve_hint(args: argparse.Namespace, manifest: Any) -> None:
    """Say how to serve ``manifest``'s model when the home's running node does not."""
    from calinode.models.defaults import DEFAULT_EMBED_MODEL, DEFAULT_GEN_MODEL
    from calinode.node.cli.model_use import running_node, serve_hint

    hint = serve_hint(manifest.name, manifest.kind, running_node(_home(args)),
                      default=manifest.name in (DEFAULT_EMBED_MODEL, DEFAULT_GEN_MODEL))
    if hint:
        print(f"{manifest.name}: {hint}", file=sys.stderr)


def _remove(args: argparse.Namespace, registry: Any) -> None:
    """Remove a model, refusing one in use unless ``--force`` (then say what breaks)."""
    from calinode.models.defaults import PREPARABLE
    from calinode.node.cli.model_use import pinning_collections, removal_breaks, running_node

    manifest = registry.get(args.name)  # UNKNOWN_MODEL when not installed
    home = _home(args)
    breaks = removal_breaks(manifest.name, manifest.kind,
                            pinning_collections(home, manifest.name), running_node(home),
                            preparable=manifest.name in PREPARABLE)
    if breaks and not args.force:
        raise BadRequest(f"model {manifest.name} is in use: {'; '.join(breaks)}; "
                         f"to remove it anyway: calinode models remove {manifest.name} --force")
    for line in breaks:
        print(f"calinode: warning: {line}", file=sys.stderr)
    registry.remove(manifest.name)


#: ``calinode models list --swarm``
SWARM_COLUMNS = (Column("NAME", 20), Column("KIND", 9), Column("SHA256", 18),
                 Column("PEERS", gap="  "))


def _client(args: argparse.Namespace) -> Any:
    from calinode.node.client import CalinodeClient

    return CalinodeClient.from_home(args.home, api=args.api, token=getattr(args, "token", None))


def _list_swarm(args: argparse.Namespace) -> int:
    with _client(args) as client:
        rows = client.swarm_models()
    if args.json:
        print(json.dumps(rows, indent=2))
    else:
        print_table(SWARM_COLUMNS, [(r["name"], r["kind"], r["sha256"][:16],
                                     ", ".join(p[-8:] for p in r["peers"])) for r in rows],
                    empty="(no model advertised: is the node part of a swarm?)")
    return 0


class PullBar:
    """``calinode models pull``'s progress on stderr: ``rich``'s bar at a terminal, else a
    plain line each 10%; nothing with ``--json``."""

    def __init__(self, name: str, *, quiet: bool) -> None:
        from calinode.node.cli.render import is_terminal

        self.name = name
        self.quiet = quiet
        self.bar: Any = None
        self.task: Any = None
        self.tenths = -1
        if not quiet and is_terminal(sys.stderr):
            from rich.console import Console
            from rich.progress import (
                BarColumn,
                DownloadColumn,
                Progress,
                TextColumn,
                TransferSpeedColumn,
            )

            self.bar = Progress(TextColumn(f"pull {name}"), BarColumn(), DownloadColumn(),
                                TransferSpeedColumn(), console=Console(file=sys.stderr))

    def update(self, done: int, total: int) -> None:
        if self.quiet or not total:
            return
        if self.bar is not None:
            if self.task is None:
                self.bar.start()
                self.task = self.bar.add_task("pull", total=total)
            self.bar.update(self.task, completed=done)
            return
        tenths = 10 * done // total
        if tenths != self.tenths:
            self.tenths = tenths
            print(f"pull {self.name}: {done / 1e6:.1f}/{total / 1e6:.1f} MB "
                  f"({100 * done // total}%)", file=sys.stderr, flush=True)

    def close(self) -> None:
        if self.bar is not None and self.task is not None:
            self.bar.stop()


def _pull(args: argparse.Namespace, registry: Any) -> int:
    result: dict[str, Any] = {}
    bar = PullBar(args.model, quiet=args.json)
    try:
        with _client(args) as client:
            for line in client.pull_model(args.model, timeout=args.timeout):
                if "progress" in line:
                    bar.update(int(line["progress"]["done"]), int(line["progress"]["total"]))
                elif "result" in line:
                    result = dict(line["result"])
    finally:
        bar.close()
    if args.json:
        print(json.dumps(result))
    elif result.get("already_installed"):
        print(f"{result['name']} ({result['sha256'][:16]}) is already installed")
    else:
        faulty = result.get("faulty_peers") or {}
        print(f"pulled {result['name']} (sha256 {result['sha256'][:16]}, "
              f"{result['size'] / 1e6:.1f} MB: {result['fetched_bytes'] / 1e6:.1f} MB fetched, "
              f"{result['resumed_bytes'] / 1e6:.1f} MB resumed, from "
              f"{len(result['peers'])} peer(s) in {result['seconds']:.1f} s)")
        for peer, count in faulty.items():
            print(f"calinode: warning: peer {peer} sent {count} corrupt chunk(s); they were "
                  "fetched again from another peer", file=sys.stderr)
    return 0


def _list(args: argparse.Namespace, registry: Any) -> int:
    if getattr(args, "swarm", False):
        return _list_swarm(args)
    rows = [m.advertised() | {"size": sum(f.size for f in m.files)}
            for m in registry.manifests()]
    if args.json:
        print(json.dumps(rows, indent=2))
    else:
        print_table(MODEL_COLUMNS, [model_cells(row) for row in rows], empty=NO_MODELS)
    return 0


def _prepare(args: argparse.Namespace, registry: Any) -> int:
    from calinode.models.defaults import (
        DEFAULT_EMBED_MODEL,
        DEFAULT_GEN_MODEL,
        prepare_default,
    )

    prepared = []
    for name in args.names or [DEFAULT_EMBED_MODEL, DEFAULT_GEN_MODEL]:
        print(f"preparing {name}", file=sys.stderr)
        try:
            manifest = prepare_default(name, registry, progress=_progress, force=args.force)
        except KeyError:
            raise ConfigError(f"{name} is not an embedded default") from None
        prepared.append({"name": manifest.name, "kind": manifest.kind,
                         "sha256": manifest.sha256})
        if not args.json:
            print(f"{manifest.name}\t{manifest.sha256}")
        _serve_hint(args, manifest)
    if args.json:
        print(json.dumps(prepared, indent=2))
    return 0


def _install(args: argparse.Namespace, registry: Any) -> int:
    manifest = _add(args, registry)
    print(json.dumps({"installed": manifest.name, "kind": manifest.kind,
                      "sha256": manifest.sha256}) if args.json else
          f"installed {manifest.name} ({manifest.kind}, sha256 {manifest.sha256[:16]})")
    _serve_hint(args, manifest)
    return 0


def _uninstall(args: argparse.Namespace, registry: Any) -> int:
    _remove(args, registry)
    print(json.dumps({"removed": args.name}) if args.json else f"removed {args.name}")
    return 0


def _verify(args: argparse.Namespace, registry: Any) -> int:
    report = {name: registry.verify(name) for name in (args.names or registry.names())}
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        for name, problems in report.items():
            print(f"{name}: {'ok' if not problems else '; '.join(problems)}")
    return 0 if not any(report.values()) else 1


def _export(args: argparse.Namespace, registry: Any) -> int:
    try:
        from calinode.models.prepare.export import export_checkpoint
    except ImportError as exc:
        raise ConfigError("export needs torch: pip install 'calinode[export]'") from exc
    exported = export_checkpoint(Path(args.checkpoint).expanduser(), args.name, registry,
                                 int8=args.int8, progress=_progress)
    print(json.dumps({"exported": [{"name": m.name, "kind": m.kind, "sha256": m.sha256}
                                   for m in exported.manifests]})
          if args.json else exported)
    return 0


ACTIONS = {"list": _list, "prepare": _prepare, "add": _install, "remove": _uninstall,
           "verify": _verify, "export": _export, "pull": _pull}


def cmd_models(args: argparse.Namespace) -> int:
    registry = _registry(args)
    action = ACTIONS.get(args.models_command)
    if action is None:
        raise ConfigError(f"unknown models action {args.models_command}")
    return action(args, registry)
