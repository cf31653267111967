"""The pure shaping of the OpenAI routes (node/api/openai_shapes.py): content-part arrays,
``stream_options``, ``/v1/completions`` fields and refusals, the response objects and
``system_fingerprint``, the model catalog."""

from __future__ import annotations

from typing import Any

import pytest

from calinode.node.api.openai_shapes import (
    COMPLETION_MAX_TOKENS,
    MAX_CONTENT_PARTS,
    ResponseFrame,
    chat_messages,
    completion_params,
    content_text,
    include_usage,
    model_catalog,
    provenance,
    system_fingerprint,
    text_completion,
    text_completion_chunk,
)
from calinode.protocol.capabilities import Capabilities, ModelOffer
from calinode.protocol.errors import BadRequest

SHA = "0123456789abcdef" * 4
RESULT = {"text": "blue sky", "finish_reason": "length", "served_by": "peer-a",
          "usage": {"prompt_tokens": 7, "completion_tokens": 4}}
FRAME = ResponseFrame(id="cmpl-1", created=1_700_000_000, model="gen",
                      system_fingerprint=system_fingerprint(SHA, "1.2.3"), include_usage=True)


def test_text_parts_are_joined_and_a_string_stays_as_is() -> None:
    parts = [{"type": "text", "text": "first"}, {"type": "text", "text": "second"}]
    assert content_text(parts, model="m", where="c") == "first\nsecond"
    assert content_text("plain", model="m", where="c") == "plain"
    assert content_text([], model="m", where="c") == ""


def test_other_values_go_on_for_the_message_view_to_refuse() -> None:
    assert content_text(None, model="m", where="c") is None
    assert content_text(5, model="m", where="c") == 5


@pytest.mark.parametrize("kind", ["image_url", "input_image"])
def test_an_image_part_names_the_models_lack_of_vision(kind: str) -> None:
    messages = [{"role": "system", "content": "be brief"},
                {"role": "user", "content": [{"type": "text", "text": "what is this?"},
                                             {"type": kind, kind: {"url": "data:,"}}]}]
    with pytest.raises(BadRequest) as caught:
        chat_messages(messages, "smollm2-135m")
    message = caught.value.message
    assert "'smollm2-135m' has no vision" in message and "messages[1].content[1]" in message


@pytest.mark.parametrize(("part", "named"), [
    ({"type": "input_audio", "input_audio": {}}, "input_audio"),
    ({"type": "video"}, "type 'video'"),
    ({"text": "no type"}, "without a string 'type'"),
    ("just a string", "not a str"),
    ({"type": "text", "text": 3}, "string 'text'"),
])
def test_a_part_that_is_not_text_is_refused_by_name(part: Any, named: str) -> None:
    with pytest.raises(BadRequest) as caught:
        content_text([part], model="m", where="messages[0].content")
    assert named in caught.value.message and "messages[0].content[0]" in caught.value.message


def test_too_many_parts_are_refused_before_any_is_read() -> None:
    parts = [{"type": "text", "text": "x"}] * (MAX_CONTENT_PARTS + 1)
    with pytest.raises(BadRequest, match="content parts"):
        content_text(parts, model="m", where="c")


def test_chat_messages_rewrites_only_part_arrays() -> None:
    messages: list[Any] = [{"role": "user", "content": [{"type": "text", "text": "hi"}]},
                           {"role": "assistant", "content": "hello"}, "not a message"]
    assert chat_messages(messages, "m") == [{"role": "user", "content": "hi"},
                                            {"role": "assistant", "content": "hello"},
                                            "not a message"]
    assert chat_messages(None, "m") is None


@pytest.mark.parametrize(("body", "stream", "wanted"), [
    ({}, True, False),
    ({"stream_options": None}, False, False),
    ({"stream_options": {"include_usage": True}}, True, True),
    ({"stream_options": {"include_usage": False}}, True, False),
    ({"stream_options": {}}, True, False),
])
def test_include_usage(body: dict[str, Any], stream: bool, wanted: bool) -> None:
    assert include_usage(body, stream=stream) is wanted


@pytest.mark.parametrize(("body", "stream", "named"), [
    ({"stream_options": {"include_usage": True}}, False, "only allowed when stream"),
    ({"stream_options": {"include_usage": "yes"}}, True, "include_usage"),
    ({"stream_options": [True]}, True, "stream_options must be an object"),
])
def test_bad_stream_options_are_refused(body: dict[str, Any], stream: bool,
                                        named: str) -> None:
    with pytest.raises(BadRequest, match=named):
        include_usage(body, stream=stream)


def test_system_fingerprint_names_the_model_file_and_the_version() -> None:
    assert system_fingerprint(SHA, "1.2.3") == "fp_0123456789ab_calinode-1.2.3"


def test_completion_params_take_openai_fields_and_default_to_16_tokens() -> None:
    params = completion_params({"prompt": "Once", "temperature": 0.2, "top_p": 0.5, "seed": 4,
                                "stop": "\n", "echo": False, "n": 1, "best_of": 1,
                                "logit_bias": {}, "suffix": None, "presence_penalty": 0,
                                "frequency_penalty": 0.0, "user": "u1"}, "gen")
    assert params == {"model": "gen", "prompt": "Once", "max_tokens": COMPLETION_MAX_TOKENS,
                      "temperature": 0.2, "top_p": 0.5, "seed": 4, "stop": "\n"}
    assert COMPLETION_MAX_TOKENS == 16
    one = completion_params({"prompt": ["Once"], "model": "other", "max_tokens": 3}, "gen")
    assert (one["model"], one["prompt"], one["max_tokens"]) == ("other", "Once", 3)


@pytest.mark.parametrize(("extra", "named"), [
    ({"echo": True}, "echo"),
    ({"suffix": "end"}, "suffix"),
    ({"n": 2}, "n is not supported"),
    ({"n": True}, "n is not supported"),
    ({"best_of": 3}, "best_of"),
    ({"logprobs": 2}, "logprobs"),
    ({"logprobs": 0}, "logprobs"),
    ({"logit_bias": {"50256": -100}}, "logit_bias"),
    ({"presence_penalty": 0.5}, "presence_penalty"),
    ({"frequency_penalty": "x"}, "frequency_penalty"),
    ({"frequency_penalty": False}, "frequency_penalty"),
    ({"prompt": ["a", "b"]}, "one string"),
    ({"prompt": [1, 2, 3]}, "one string"),
    ({"prompt": None}, "prompt must be a string"),
])
def test_completion_fields_the_swarm_cannot_honour_are_refused_by_name(
        extra: dict[str, Any], named: str) -> None:
    with pytest.raises(BadRequest) as caught:
        completion_params({"prompt": "Once", **extra}, "gen")
    assert named in caught.value.message


def test_text_completion_objects() -> None:
    whole = text_completion(FRAME, RESULT)
    assert whole == {
        "id": "cmpl-1", "object": "text_completion", "created": 1_700_000_000, "model": "gen",
        "system_fingerprint": "fp_0123456789ab_calinode-1.2.3",
        "choices": [{"index": 0, "text": "blue sky", "logprobs": None,
                     "finish_reason": "length"}],
        "usage": {"prompt_tokens": 7, "completion_tokens": 4, "total_tokens": 11},
        "served_by": "peer-a"}
    chunk = text_completion_chunk(FRAME, "blue", None)
    assert chunk["object"] == "text_completion" and chunk["created"] == 1_700_000_000
    assert chunk["choices"] == [{"index": 0, "text": "blue", "logprobs": None,
                                 "finish_reason": None}]
    assert chunk["system_fingerprint"] == FRAME.system_fingerprint


def test_the_usage_chunk_has_no_choices() -> None:
    last = FRAME.usage_chunk("chat.completion.chunk", RESULT)
    assert last["choices"] == [] and last["object"] == "chat.completion.chunk"
    assert last["usage"] == {"prompt_tokens": 7, "completion_tokens": 4, "total_tokens": 11}
    assert (last["id"], last["created"], last["model"]) == ("cmpl-1", 1_700_000_000, "gen")


def test_the_catalog_lists_each_model_once_with_every_peer_serving_it() -> None:
    gen = ModelOffer(name="gen", kind="generate", sha256=SHA, context_length=2048, chat=False)
    emb = ModelOffer(name="emb", kind="embed", sha256="f" * 64, dim=8, pooling="mean")
    catalog = model_catalog([("me", Capabilities(generate=(gen,))),
                             ("peer", Capabilities(generate=(gen,), embed=(emb,)))])
    assert catalog["gen"] == {"id": "gen", "object": "model", "created": 0,
                              "owned_by": "calinode", "kind": "generate", "sha256": SHA,
                              "chat": False, "context_length": 2048, "peers": ["me", "peer"]}
    assert catalog["emb"]["peers"] == ["peer"] and catalog["emb"]["kind"] == "embed"


def test_a_resumed_generation_says_where_it_moved_and_a_plain_one_does_not() -> None:
    switch = {"from": "12D3KooWdead", "to": "12D3KooWalive", "at_token": 61}
    assert provenance({"served_by": "12D3KooWalive", "resumed": [switch]}) == {
        "served_by": "12D3KooWalive", "resumed": [switch]}
    assert provenance({"served_by": "12D3KooWalive", "resumed": []}) == {
        "served_by": "12D3KooWalive"}
    assert provenance({"served_by": "12D3KooWalive"}) == {"served_by": "12D3KooWalive"}
