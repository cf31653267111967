"""Exception groups collapse into the CalinodeError tree; the CLI exits per error code."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from typing import Any

import pytest

from calinode.node.cli.main import build_parser, main
from calinode.node.cli.rag import cmd_rag
from calinode.protocol.errors import (
    EXIT_DEADLINE,
    EXIT_STATUS,
    EXIT_UNAVAILABLE,
    EXIT_USAGE,
    BadRequest,
    CalinodeError,
    ErrorCode,
    JobError,
    collapse_group,
    exit_status,
    groups_collapsed,
)


class FakeCancelled(BaseException):
    """Stands for trio.Cancelled: a BaseException that is not an Exception."""


def test_the_first_calinode_error_of_a_nested_group_wins() -> None:
    first = JobError("shard 3 is closed", code=ErrorCode.SHARD_UNAVAILABLE)
    group = ExceptionGroup("outer", [ValueError("a bug"),
                                     ExceptionGroup("inner", [first, BadRequest("k")])])
    assert collapse_group(group) is first


def test_a_group_of_bugs_is_one_internal_error_that_keeps_its_cause() -> None:
    bug = KeyError("score")
    collapsed = collapse_group(ExceptionGroup("bugs", [bug, ValueError("x")]))
    assert isinstance(collapsed, CalinodeError) and collapsed.code is ErrorCode.INTERNAL
    assert collapsed.__cause__ is bug and "KeyError" in collapsed.message


def test_cancellation_and_interrupts_pass_through_untouched() -> None:
    cancelled = BaseExceptionGroup("cancelled", [FakeCancelled(), FakeCancelled()])
    assert collapse_group(cancelled) is cancelled
    interrupted = BaseExceptionGroup("stop", [KeyboardInterrupt(), JobError("x")])
    assert collapse_group(interrupted) is interrupted


def test_groups_collapsed_raises_one_member_of_the_tree() -> None:
    with pytest.raises(JobError) as caught, groups_collapsed():
        raise ExceptionGroup("g", [JobError("late", code=ErrorCode.DEADLINE_EXCEEDED)])
    assert caught.value.code is ErrorCode.DEADLINE_EXCEEDED
    with pytest.raises(CalinodeError) as internal, groups_collapsed():
        raise ExceptionGroup("g", [ZeroDivisionError()])
    assert internal.value.code is ErrorCode.INTERNAL
    assert isinstance(internal.value.__cause__, ZeroDivisionError)
    with pytest.raises(BaseExceptionGroup), groups_collapsed():
        raise BaseExceptionGroup("g", [FakeCancelled()])


def test_bad_request_is_a_job_error_with_its_code() -> None:
    error = BadRequest("k must be 1..1000")
    assert isinstance(error, JobError) and error.code is ErrorCode.BAD_REQUEST


def test_every_error_code_has_an_exit_status_and_the_help_shows_them() -> None:
    assert set(EXIT_STATUS) == set(ErrorCode)
    assert exit_status(ErrorCode.DEADLINE_EXCEEDED) == EXIT_DEADLINE
    assert exit_status(ErrorCode.BAD_REQUEST) == EXIT_USAGE
    epilog = build_parser().epilog or ""
    for code in ErrorCode:
        assert code.value in epilog


def test_the_cli_exits_with_the_status_of_the_error_code(
        capsys: pytest.CaptureFixture[str]) -> None:
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    status = main(["status", "--api", f"127.0.0.1:{port}", "--token", "t"])
    assert status == EXIT_UNAVAILABLE
    assert "PEER_UNREACHABLE" in capsys.readouterr().err
    with pytest.raises(SystemExit) as usage:
        main(["ping"])  # argparse: PEER_ID missing
    assert usage.value.code == EXIT_USAGE


class FakeAskClient:
    """Stands for CalinodeClient: a streamed ask whose retrieval found nothing."""

    def ask_stream(self, collection: str, question: str, **settings: Any
                   ) -> Iterator[dict[str, Any]]:
        text = f"The collection {collection!r} has nothing relevant to this question."
        yield {"text": text}
        yield {"done": {"answer": text, "sources": [], "no_sources": True, "partial": False,
                        "missing_shards": [], "served_by": "self", "finish_reason": "stop"}}


def test_calinode_ask_prints_that_there_are_no_sources(
        capsys: pytest.CaptureFixture[str]) -> None:
    args = build_parser().parse_args(["ask", "why?", "--collection", "papers"])
    assert cmd_rag(args, FakeAskClient()) == 0
    out = capsys.readouterr().out
    assert "nothing relevant" in out and "sources:\n  none:" in out
