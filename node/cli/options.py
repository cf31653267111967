"""How every ``calinode`` command reads its command line, the same way everywhere.

- :class:`CalinodeParser` is the parser class of the whole tree (sub-commands inherit it): a
  usage error is one line ``calinode: error: BAD_REQUEST: ...; see: calinode X --help`` and
  exit status 2 (``EXIT_USAGE``), like every other error; help shows each flag's default.
- :func:`add_common_options` gives every parser of the tree (the top level, each command and
  each action) the options that mean the same thing everywhere: ``--home``, ``--json``,
  ``--debug``, ``--verbose``, and ``--api``/``--token`` where a node's API is used. They are
  all ``default=SUPPRESS``, so ``calinode --home H models list`` and ``calinode models list
  --home H`` both keep ``H`` (argparse copies a sub-command's defaults over the values the
  top level parsed); :func:`finish_namespace` then fills the ones never given.
- :data:`SHARED_HELP` is the help text of the flags several commands share (``-k``,
  ``--collection``, ``--timeout``, ...), given to any that was declared without one.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterator
from typing import Any, NoReturn

from calinode.protocol.errors import EXIT_USAGE

#: commands that talk to a node's local API (``start`` serves it): the only ones ``--api``
#: and ``--token`` mean something for
API_COMMANDS = frozenset({"start", "embed", "generate", "collections", "ingest", "delete",
                          "search", "ask", "shards", "invite", "status", "peers", "ping",
                          "dashboard", "doctor", "bench", "models"})

#: help for flags and arguments shared by several commands, by ``dest``
SHARED_HELP = {
    "k": "how many hits to use",
    "collection": "the collection (see: calinode collections list)",
    "shards": "shards the collection is split into",
    "replicas": "copies of every shard",
    "timeout": "seconds to wait for the answer",
    "max_tokens": "most tokens to generate",
    "temperature": "sampling temperature (default: the model's)",
    "seed": "sampling seed, for repeatable output",
    "name": "the name (of the collection, or of the model to install)",
    "query": "the text to search for",
    "question": "the question to answer",
    "prompt": "the prompt",
    "texts": "the texts to embed",
    "log_level": "log level of the daemon (default info; --debug: debug)",
    "pooling": "how token vectors become one vector (default mean, or the model's "
               "1_Pooling/config.json)",
    "no_normalize": "keep vectors as the model gives them (default: unit length)",
}


class DefaultsFormatter(argparse.RawDescriptionHelpFormatter):
    """Help that shows a flag's default unless it has none (None, False) or says it already."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help or ""
        default = action.default
        if (not action.option_strings or default in (None, False, [], ())
                or default is argparse.SUPPRESS or "default" in text.lower()):
            return text
        return f"{text} (default: %(default)s)" if text else "(default: %(default)s)"


class CalinodeParser(argparse.ArgumentParser):
    """The parser of every ``calinode`` command: one-line usage errors, defaults in help."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("formatter_class", DefaultsFormatter)
        super().__init__(*args, **kwargs)

    def parse_args(self, args: Any = None, namespace: Any = None) -> Any:
        """Parse, then fill the shared options given nowhere (:func:`finish_namespace`) on
        the top-level parser (sub-command parsers go through ``parse_known_args``)."""
        parsed = super().parse_args(args, namespace)
        return finish_namespace(parsed) if hasattr(parsed, "command") else parsed

    def error(self, message: str) -> NoReturn:
        print(f"calinode: error: BAD_REQUEST: {message}; see: {self.prog} --help",
              file=sys.stderr)
        sys.exit(EXIT_USAGE)


def parsers(parser: argparse.ArgumentParser) -> Iterator[argparse.ArgumentParser]:
    """``parser`` and every sub-command parser below it (each once)."""
    seen: set[int] = set()
    stack = [parser]
    while stack:
        current = stack.pop()
        if id(current) in seen:
            continue
        seen.add(id(current))
        yield current
        for action in current._actions:
            if isinstance(action, argparse._SubParsersAction):
                stack.extend(action.choices.values())


def _command_of(prog: str) -> str:
    words = prog.split()
    return words[1] if len(words) > 1 else ""


def _add_if_missing(parser: argparse.ArgumentParser, flag: str, **kwargs: Any) -> None:
    if flag not in parser._option_string_actions:
        parser.add_argument(flag, default=argparse.SUPPRESS, **kwargs)


def add_common_options(root: argparse.ArgumentParser) -> None:
    """Give every parser of the tree the shared options (see the module docstring), and help
    text to every flag declared without one."""
    for parser in parsers(root):
        command = _command_of(parser.prog)
        _add_if_missing(parser, "--home", metavar="DIR",
                        help="node home (default: $CALINODE_HOME or ~/.local/share/calinode)")
        _add_if_missing(parser, "--json", action="store_true",
                        help="print machine-readable JSON")
        _add_if_missing(parser, "--debug", action="store_true",
                        help="debug log lines, and a traceback with any error")
        _add_if_missing(parser, "--verbose", action="store_true",
                        help="show the log lines of libraries (onnxruntime, llama.cpp, ...)")
        if not command or command in API_COMMANDS:
            _add_if_missing(parser, "--api", metavar="HOST:PORT",
                            help="node API (default: the home's node.json, $CALINODE_API, "
                                 "or 127.0.0.1:7412)")
        if not command or (command in API_COMMANDS and command != "start"):
            _add_if_missing(parser, "--token", help="API token (default: $CALINODE_TOKEN, "
                            "or the home's api.token)")
        for action in parser._actions:
            if action.help is None and action.dest in SHARED_HELP:
                action.help = SHARED_HELP[action.dest]
        for action in parser._actions:  # defaults of options that are not SUPPRESS stay
            if action.dest in ("home", "json", "api", "token", "debug", "verbose"):
                action.default = argparse.SUPPRESS


def finish_namespace(args: argparse.Namespace) -> argparse.Namespace:
    """Fill the shared options that were given nowhere; refuse ``--api``/``--token`` given
    at the top level to a command that uses no API (it would be silently ignored)."""
    for name in ("home", "api", "token"):
        if not hasattr(args, name):
            setattr(args, name, None)
    for name in ("json", "debug", "verbose"):
        if not hasattr(args, name):
            setattr(args, name, False)
    if args.command not in API_COMMANDS:
        for name in ("api", "token"):
            if getattr(args, name) is not None:
                print(f"calinode: error: BAD_REQUEST: --{name} does not apply to calinode "
                      f"{args.command} (it uses no node API); drop it", file=sys.stderr)
                sys.exit(EXIT_USAGE)
    if args.command == "start" and args.token is not None:
        print("calinode: error: BAD_REQUEST: --token does not apply to calinode start (the "
              "node keeps its token in the home's api.token); drop it", file=sys.stderr)
        sys.exit(EXIT_USAGE)
    return args
