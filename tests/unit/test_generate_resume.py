"""Resume (issue 14) in pure logic: the views of ``resume_tokens``, of streamed generate
pieces and of the ``resumed`` switches in a reply, with their refusals; the relay's
bookkeeping (:class:`~calinode.node.jobs.generate_resume.ResumeBook`); the stall option."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from calinode.node.config import GENERATE_STALL_TIMEOUT, resolve_config
from calinode.node.jobs.generate_resume import ResumeBook, resumable_request
from calinode.protocol.errors import ConfigError, ProtocolError, RemoteProtocolError
from calinode.protocol.job_params import MAX_RESUME_TOKENS, MAX_TOKEN_ID, GenerateParams
from calinode.protocol.job_replies import (
    MAX_CHUNK_TOKENS,
    MAX_RESUMES,
    GenerateChunk,
    GenerateReply,
    ResumeSwitch,
)

SHA = "ab" * 32
BASE: dict[str, Any] = {"model": "m", "prompt": "hi", "max_tokens": 10}


def reply(text: str = "tail", completion: int = 9, **extra: Any) -> dict[str, Any]:
    return {"model": "m", "sha256": SHA, "text": text, "finish_reason": "length",
            "usage": {"prompt_tokens": 3, "completion_tokens": completion}, **extra}


# -- GenerateParams.resume_tokens -----------------------------------------------------------


def test_resume_tokens_round_trip_and_are_absent_when_empty() -> None:
    params = GenerateParams.from_wire(dict(BASE, resume_tokens=[1, 2, MAX_TOKEN_ID]))
    assert params.resume_tokens == (1, 2, MAX_TOKEN_ID)
    assert params.to_wire()["resume_tokens"] == [1, 2, MAX_TOKEN_ID]
    assert GenerateParams.from_wire(params.to_wire()) == params
    plain = GenerateParams.from_wire(BASE)
    assert plain.resume_tokens == () and "resume_tokens" not in plain.to_wire()


@pytest.mark.parametrize("extra", [
    {"resume_tokens": "1,2"}, {"resume_tokens": [1, -1]}, {"resume_tokens": [True]},
    {"resume_tokens": [1.0]}, {"resume_tokens": [MAX_TOKEN_ID + 1]},
    {"resume_tokens": [None]}, {"resume_tokens": list(range(10))},
    {"resume_tokens": [1] * (MAX_RESUME_TOKENS + 1), "max_tokens": MAX_RESUME_TOKENS + 5},
    {"resume_tokens": [1], "n": 2}, {"resume_tokens": [1], "logprobs": True},
], ids=["not-a-list", "negative", "bool", "float", "over-int32", "none", "max-tokens",
        "too-many", "n", "logprobs"])
def test_bad_resume_tokens_are_refused_naming_the_field(extra: dict[str, Any]) -> None:
    with pytest.raises(RemoteProtocolError) as exc:
        GenerateParams.from_wire(dict(BASE, **extra))
    assert "resume_tokens" in exc.value.message


def test_a_locally_built_request_is_checked_too() -> None:
    with pytest.raises(ProtocolError):
        GenerateParams(model="m", prompt="x", max_tokens=2, resume_tokens=(1, 2))
    params = GenerateParams(model="m", prompt="x", max_tokens=3,
                            resume_tokens=[1, 2])  # type: ignore[arg-type]
    assert params.resume_tokens == (1, 2)  # kept as a tuple: the view stays frozen


# -- GenerateChunk ---------------------------------------------------------------------------


def test_a_piece_carries_its_token_ids_or_none() -> None:
    assert GenerateChunk.from_wire({"text": "a", "tokens": [7, 8]}) == GenerateChunk(
        text="a", tokens=(7, 8))
    old = GenerateChunk.from_wire({"text": "a"})
    assert old.tokens is None and old.to_wire() == {"text": "a"}
    assert GenerateChunk(text="a", tokens=(7,)).to_wire() == {"text": "a", "tokens": [7]}


@pytest.mark.parametrize("data", [
    {"text": 5}, {"tokens": [1]}, {"text": "a", "tokens": [-2]}, {"text": "a", "tokens": [False]},
    {"text": "a", "tokens": "12"}, {"text": "a", "tokens": [0] * (MAX_CHUNK_TOKENS + 1)},
    {"text": "a", "evil": 1}, "text", None,
], ids=["text-not-str", "no-text", "negative", "bool", "not-a-list", "too-many", "unknown-key",
        "not-a-map", "none"])
def test_a_malformed_piece_is_refused(data: Any) -> None:
    with pytest.raises(RemoteProtocolError):
        GenerateChunk.from_wire(data)


# -- GenerateReply.resumed -------------------------------------------------------------------


def test_resumed_switches_round_trip() -> None:
    wire = reply(resumed=[{"from": "p1", "to": "p2", "at_token": 4}])
    parsed = GenerateReply.from_wire(wire)
    assert parsed.resumed == (ResumeSwitch(from_peer="p1", to_peer="p2", at_token=4),)
    assert parsed.to_wire() == wire
    assert "resumed" not in GenerateReply.from_wire(reply()).to_wire()


@pytest.mark.parametrize("resumed", [
    [{"from": "p1", "to": "p2", "at_token": 1}] * (MAX_RESUMES + 1),
    [{"from": "p1", "to": "p2"}], [{"from": "", "to": "p2", "at_token": 1}],
    [{"from": "p1", "to": "p2", "at_token": -1}], [{"from": "p1", "to": 2, "at_token": 1}],
    [{"from": "p1", "to": "p2", "at_token": 1, "x": 1}], "p1",
    [{"from": "p" * 129, "to": "p2", "at_token": 1}],
], ids=["too-many", "missing-key", "empty-peer", "negative", "peer-not-str", "unknown-key",
        "not-a-list", "long-peer"])
def test_bad_resumed_switches_are_refused(resumed: Any) -> None:
    with pytest.raises(RemoteProtocolError):
        GenerateReply.from_wire(reply(resumed=resumed))


# -- ResumeBook ------------------------------------------------------------------------------


def piece(text: str, *tokens: int) -> GenerateChunk:
    return GenerateChunk(text=text, tokens=tokens)


def test_only_a_single_sample_without_logprobs_is_resumable() -> None:
    assert resumable_request(GenerateParams.from_wire(BASE))
    assert not resumable_request(GenerateParams.from_wire(dict(BASE, n=2)))
    assert not resumable_request(GenerateParams.from_wire(dict(BASE, logprobs=True)))


def test_nothing_received_means_a_plain_retry_not_a_resume() -> None:
    book = ResumeBook(max_tokens=10)
    assert not book.streamed and not book.can_resume()
    with pytest.raises(ValueError):
        book.switch("p1", "p2", dict(BASE))


def test_a_switch_sends_the_tokens_so_far_and_the_reply_reads_as_one() -> None:
    book = ResumeBook(max_tokens=10)
    assert book.received(piece("Once ", 1, 2)) == "Once "
    book.received(piece("upon ", 3))
    assert book.streamed and book.can_resume()
    wire = book.switch("p1", "p2", dict(BASE, stream=True))
    assert wire == dict(BASE, stream=True, resume_tokens=[1, 2, 3])
    GenerateParams.from_wire(wire)  # a valid request
    book.received(piece("a time", 4, 5))
    final = book.finish(GenerateReply.from_wire(reply(text="a time", completion=5)))
    assert final.text == "Once upon a time"
    assert final.completion_tokens == 5  # as the last peer counted: replayed ones once
    assert final.resumed == (ResumeSwitch(from_peer="p1", to_peer="p2", at_token=3),)


def test_two_switches_keep_every_peer_s_text_once() -> None:
    book = ResumeBook(max_tokens=10)
    book.received(piece("a", 1))
    book.switch("p1", "p2", dict(BASE))
    book.received(piece("b", 2))
    wire = book.switch("p2", "p3", dict(BASE))
    assert wire["resume_tokens"] == [1, 2]
    book.received(piece("c", 3))
    final = book.finish(GenerateReply.from_wire(reply(text="c", completion=3)))
    assert final.text == "abc"
    assert [s.at_token for s in final.resumed] == [1, 2]


def test_resumes_are_bounded() -> None:
    book = ResumeBook(max_tokens=100)
    for i in range(MAX_RESUMES):
        book.received(piece("x", i))
        book.switch(f"p{i}", f"p{i + 1}", dict(BASE))
    book.received(piece("x", 99))
    assert not book.can_resume()


def test_pieces_without_token_ids_make_the_stream_unresumable() -> None:
    book = ResumeBook(max_tokens=10)
    book.received(piece("a", 1))
    book.received(GenerateChunk(text="b"))  # a peer that predates resume
    assert book.streamed and not book.can_resume()


def test_nothing_left_to_generate_is_not_resumed() -> None:
    book = ResumeBook(max_tokens=2)
    book.received(piece("ab", 1, 2))
    assert not book.can_resume()  # the stream was complete: only the reply was lost


def test_a_reply_without_switches_is_unchanged() -> None:
    book = ResumeBook(max_tokens=10)
    book.received(piece("tail", 1))
    original = GenerateReply.from_wire(reply())
    assert book.finish(original) is original


def test_a_peer_s_own_resumed_claim_is_dropped() -> None:
    book = ResumeBook(max_tokens=10)
    claimed = GenerateReply.from_wire(reply(resumed=[{"from": "x", "to": "y", "at_token": 1}]))
    assert book.finish(claimed).resumed == ()


# -- the stall option ------------------------------------------------------------------------


def test_the_stall_timeout_has_a_default_and_an_environment_variable(tmp_path: Path) -> None:
    config = resolve_config(flags={}, env={}, toml={}, home=tmp_path)
    assert config.generate_stall_timeout == GENERATE_STALL_TIMEOUT
    assert config.test_token_delay == 0.0
    env = {"CALINODE_GENERATE_STALL_TIMEOUT": "2.5"}
    assert resolve_config(flags={}, env=env, toml={},
                          home=tmp_path).generate_stall_timeout == 2.5


@pytest.mark.parametrize("toml", [{"generate_stall_timeout": 0},
                                  {"generate_stall_timeout": 4000},
                                  {"test_token_delay": -1}, {"test_token_delay": 11}])
def test_out_of_range_resume_settings_are_refused(tmp_path: Path, toml: dict[str, Any]) -> None:
    with pytest.raises(ConfigError):
        resolve_config(flags={}, env={}, toml=toml, home=tmp_path)
