"""The command line reads the same everywhere, and every error takes the one error path."""

from __future__ import annotations

import argparse
import errno
from pathlib import Path

import pytest

from calinode.node.cli.errors import EXIT_BROKEN_PIPE, expected_error, report
from calinode.node.cli.main import build_parser, main
from calinode.node.cli.options import API_COMMANDS, parsers
from calinode.protocol.errors import (
    EXIT_CONFIG,
    EXIT_INTERNAL,
    EXIT_INTERRUPTED,
    EXIT_NOT_FOUND,
    EXIT_USAGE,
    CalinodeError,
    ConfigError,
    ErrorCode,
    collapse_group,
)


def _leaf_commands() -> list[list[str]]:
    """Every command as the words that name it (``["models", "list"]``, ``["status"]``)."""
    root = build_parser()
    found: list[list[str]] = []
    for parser in parsers(root):
        words = parser.prog.split()[1:]
        has_sub = any(isinstance(a, argparse._SubParsersAction) for a in parser._actions)
        if words and not has_sub:
            found.append(words)
    return sorted(found)


def _required_args(words: list[str]) -> list[str]:
    """Arguments that make ``words`` parse (positionals and required flags)."""
    root = build_parser()
    leaf = next(p for p in parsers(root) if p.prog.split()[1:] == words)
    args: list[str] = []
    for action in leaf._actions:
        if not action.option_strings:
            if action.nargs not in ("?", "*"):
                args.append("x")
        elif action.required:
            args += [action.option_strings[0], "1" if action.type in (int, float) else "x"]
    return args


def test_every_flag_of_every_command_has_help_text() -> None:
    missing = [f"{parser.prog} {'/'.join(action.option_strings)}"
               for parser in parsers(build_parser()) for action in parser._actions
               if action.option_strings and not action.help]
    assert missing == []


def test_the_help_shows_the_defaults_of_the_shared_flags() -> None:
    root = build_parser()
    helps = {p.prog: p.format_help() for p in parsers(root)}
    assert "-k K" in helps["calinode search"] and "(default: 10)" in helps["calinode search"]
    assert "(default: 16)" in helps["calinode collections create"]
    assert "(default: 256)" in helps["calinode generate"]
    assert "(default: 300.0)" in helps["calinode generate"]
    assert "(default: None)" not in "".join(helps.values())


@pytest.mark.parametrize("words", _leaf_commands(), ids=" ".join)
def test_home_and_json_are_accepted_before_and_after_every_command(words: list[str]) -> None:
    rest = _required_args(words)
    for argv in (["--home", "H", "--json", *words, *rest],
                 [*words, *rest, "--home", "H", "--json"],
                 [words[0], "--home", "H", "--json", *words[1:], *rest]):
        args = build_parser().parse_args(argv)
        assert (args.home, args.json, args.debug) == ("H", True, False), argv
    if words[0] in API_COMMANDS:
        for argv in (["--api", "h:1", *words, *rest], [*words, *rest, "--api", "h:1"]):
            assert build_parser().parse_args(argv).api == "h:1"


def test_unset_shared_options_are_filled() -> None:
    args = build_parser().parse_args(["status"])
    assert (args.home, args.api, args.token, args.json, args.debug, args.verbose) == (
        None, None, None, False, False, False)


def test_api_for_a_command_without_an_api_is_a_one_line_usage_error(
        capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        build_parser().parse_args(["--api", "h:1", "id"])
    assert exited.value.code == EXIT_USAGE
    err = capsys.readouterr().err
    assert err.startswith("calinode: error: BAD_REQUEST: --api does not apply") and \
        err.count("\n") == 1


def test_models_pull_and_list_swarm_talk_to_a_node_api() -> None:
    args = build_parser().parse_args(["models", "pull", "minilm-l6-int8", "--api", "h:1"])
    assert (args.models_command, args.model, args.api) == ("pull", "minilm-l6-int8", "h:1")
    assert build_parser().parse_args(["models", "list", "--swarm"]).swarm


def test_a_usage_error_is_one_line_with_exit_status_2(
        capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["search", "--collection", "c", "-k", "many"])
    assert exited.value.code == EXIT_USAGE
    err = capsys.readouterr().err
    assert err.startswith("calinode: error: BAD_REQUEST: argument -k: invalid int value")
    assert err.count("\n") == 1 and "see: calinode search --help" in err


@pytest.mark.parametrize(("number", "code"), [
    (errno.EADDRINUSE, ErrorCode.CONFIG), (errno.ENOENT, ErrorCode.NOT_FOUND),
    (errno.EACCES, ErrorCode.CONFIG), (errno.EISDIR, ErrorCode.BAD_REQUEST),
    (errno.ENOSPC, ErrorCode.CONFIG)])
def test_expected_os_errors_have_a_code_and_name_the_file(number: int, code: ErrorCode) -> None:
    error = expected_error(OSError(number, "why", "/some/file"))
    assert error is not None and error.code is code
    assert error.message.startswith("why: /some/file; ")


def test_a_group_shows_its_first_expected_error() -> None:
    group = BaseExceptionGroup("nursery", [
        ValueError("a sibling bug"), BaseExceptionGroup("inner", [
            OSError(errno.EADDRINUSE, "Address already in use")])])
    error = expected_error(group)
    assert error is not None and error.code is ErrorCode.CONFIG
    assert expected_error(BaseExceptionGroup("g", [ConfigError("bad")])) is not None
    assert expected_error(BaseExceptionGroup("g", [ValueError("bug")])) is None
    assert expected_error(OSError(errno.EBADF, "Bad file descriptor")) is None


def test_report_prints_one_line_and_the_status_of_the_code(
        capsys: pytest.CaptureFixture[str]) -> None:
    status = report(BaseExceptionGroup("g", [ConfigError("nope; do this")]), debug=False)
    assert status == EXIT_CONFIG
    assert capsys.readouterr().err == "calinode: error: CONFIG: nope; do this\n"
    assert report(FileNotFoundError(errno.ENOENT, "No such file", "q.jsonl"),
                  debug=False) == EXIT_NOT_FOUND
    assert report(BaseExceptionGroup("g", [KeyboardInterrupt()]), debug=False) == \
        EXIT_INTERRUPTED
    assert report(BrokenPipeError(errno.EPIPE, "Broken pipe"), debug=False) == EXIT_BROKEN_PIPE


def test_a_bug_is_one_line_asking_for_a_report_with_the_crash_log(
        capsys: pytest.CaptureFixture[str]) -> None:
    try:
        {}["missing"]
    except KeyError as bug:
        collapsed = collapse_group(BaseExceptionGroup("g", [bug]))
    assert isinstance(collapsed, CalinodeError)
    assert report(collapsed, debug=False) == EXIT_INTERNAL
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert err.startswith("calinode: error: INTERNAL: internal error: KeyError: ")
    log = Path(err.rsplit("please report it with the log at ", 1)[1].strip())
    try:
        text = log.read_text()
        assert "Traceback" in text and "KeyError" in text
        assert log.stat().st_mode & 0o077 == 0
    finally:
        log.unlink()


def test_debug_prints_the_traceback_too(capsys: pytest.CaptureFixture[str]) -> None:
    try:
        raise ConfigError("bad")
    except ConfigError as error:
        assert report(error, debug=True) == EXIT_CONFIG
    err = capsys.readouterr().err
    assert "Traceback" in err and err.endswith("calinode: error: CONFIG: bad\n")


def test_library_info_lines_on_the_root_logger_are_quiet_unless_verbose(
        capsys: pytest.CaptureFixture[str]) -> None:
    import logging

    from calinode.node.cli.log_setup import configure_logging

    root = logging.getLogger()
    saved = (list(root.handlers), root.level)
    try:
        configure_logging("info")
        logging.info('Quantization parameters for tensor:"x" not specified')  # onnxruntime's way
        logging.getLogger("calinode.node.daemon").info("calinode line")
        logging.warning("a library warning")
        err = capsys.readouterr().err
        assert "Quantization" not in err and "calinode line" in err and "library warning" in err
        configure_logging("info", verbose=True)
        logging.info("Quantization parameters")
        assert "Quantization" in capsys.readouterr().err
    finally:
        for handler in list(root.handlers):
            root.removeHandler(handler)
        for handler in saved[0]:
            root.addHandler(handler)
        root.setLevel(saved[1])


def test_peers_shows_each_peer_s_capabilities_in_a_few_words() -> None:
    from calinode.node.cli.main import capability_summary

    caps = {"jobs": ["ping", "embed"], "embed": [{"name": "minilm-l6-int8"}],
            "generate": [{"name": "smollm2-135m"}], "index": True}
    assert capability_summary(caps) == "embed:minilm-l6-int8 gen:smollm2-135m index"
    assert capability_summary({"jobs": ["ping"], "embed": [], "generate": []}) == "-"


def test_a_bug_the_node_reported_asks_for_a_report_with_the_node_s_log(
        capsys: pytest.CaptureFixture[str]) -> None:
    from calinode.protocol.errors import ApiError

    assert report(ApiError("internal error: KeyError"), debug=False) == EXIT_INTERNAL
    assert capsys.readouterr().err == ("calinode: error: INTERNAL: internal error: KeyError; "
                                       "please report it with the node's log\n")
