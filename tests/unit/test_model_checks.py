"""The checks ``calinode models add`` runs before installing a model (models/prepare/checks.py).

The GGUF header reader is tested on headers built here byte by byte (every truncation, hostile
lengths, missing keys) and on the real SmolLM2 file; the load checks run the real ONNX Runtime
and llama.cpp through ``ModelRegistry.install``, so a refused model is shown to leave nothing
in the registry. Each refusal has a positive control: the same path accepts a good model.
"""

from __future__ import annotations

import io
import json
import os
import struct
from dataclasses import replace
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from calinode.models.manifest import ModelFile, ModelManifest
from calinode.models.prepare.checks import (
    MAX_GGUF_METADATA,
    GgufArray,
    GgufFormatError,
    check_model,
    generation_problems,
    read_gguf_header,
)
from calinode.models.prepare.gguf import _smollm2_source
from calinode.models.prepare.minilm import locate_sources
from calinode.models.registry import ModelRegistry
from calinode.node.cli.model_use import (
    RunningNode,
    pinning_collections,
    removal_breaks,
    serve_hint,
    served_models,
)
from calinode.node.jobs.routing import require_candidates
from calinode.protocol.collections import CollectionDef
from calinode.protocol.errors import BadRequest, ErrorCode, JobError

PLACEHOLDER = (ModelFile(path="x", sha256="0" * 64, size=0),)
VOCAB = 30522  # the MiniLM tokenizer's


# -- GGUF bytes, built here ---------------------------------------------------------------------


def _string(text: str) -> bytes:
    raw = text.encode()
    return struct.pack("<Q", len(raw)) + raw


def _kv_string(key: str, value: str) -> bytes:
    return _string(key) + struct.pack("<I", 8) + _string(value)


def _kv_u32(key: str, value: int) -> bytes:
    return _string(key) + struct.pack("<II", 4, value)


def _kv_tokens(key: str, tokens: list[str]) -> bytes:
    return (_string(key) + struct.pack("<IIQ", 9, 8, len(tokens))
            + b"".join(_string(t) for t in tokens))


def _kv_floats(key: str, values: list[float]) -> bytes:
    return (_string(key) + struct.pack("<IIQ", 9, 6, len(values))
            + b"".join(struct.pack("<f", v) for v in values))


def _tensor(name: str, dims: tuple[int, ...]) -> bytes:
    return (_string(name) + struct.pack("<I", len(dims))
            + b"".join(struct.pack("<Q", d) for d in dims) + struct.pack("<IQ", 0, 0))


def gguf_bytes(pairs: list[bytes], tensors: list[bytes], *, version: int = 3,
               magic: bytes = b"GGUF") -> bytes:
    return (magic + struct.pack("<IQQ", version, len(tensors), len(pairs))
            + b"".join(pairs) + b"".join(tensors))


CHAT_PAIRS = [
    _kv_string("general.architecture", "llama"),
    _kv_u32("llama.context_length", 2048),
    _kv_string("tokenizer.ggml.model", "gpt2"),
    _kv_tokens("tokenizer.ggml.tokens", ["<s>", "</s>", "hello", "world"]),
    _kv_floats("tokenizer.ggml.scores", [0.0, 0.0, -1.0, -2.0]),
    _kv_string("tokenizer.chat_template", "{{ messages }}"),
]
TENSORS = [_tensor("token_embd.weight", (8, 4))]


def parse(data: bytes):  # type: ignore[no-untyped-def]
    return read_gguf_header(io.BytesIO(data), len(data))


def manifest_for(kind: str = "generate", **fields: object) -> ModelManifest:
    if kind == "generate":
        return ModelManifest(name="m", kind="generate", files=PLACEHOLDER, context_length=2048,
                             **fields)  # type: ignore[arg-type]
    return ModelManifest(name="m", kind="embed", files=PLACEHOLDER, dim=8, pooling="mean",
                         **fields)  # type: ignore[arg-type]


def test_a_wellformed_header_is_read() -> None:
    data = gguf_bytes(CHAT_PAIRS, TENSORS)
    header = parse(data)
    assert header.version == 3 and header.tensor_count == 1
    assert header.architecture == "llama"
    assert header.metadata["llama.context_length"] == 2048
    assert header.metadata["tokenizer.ggml.tokens"] == GgufArray(item_type=8, count=4)
    assert header.metadata["tokenizer.ggml.scores"] == GgufArray(item_type=6, count=4)
    assert header.data_offset == len(data)
    assert generation_problems(header, manifest_for()) == []


def test_every_truncation_of_a_header_is_refused_by_name() -> None:
    data = gguf_bytes(CHAT_PAIRS, TENSORS)
    for cut in range(len(data)):
        with pytest.raises(GgufFormatError, match=r"truncated|no GGUF magic"):
            parse(data[:cut])


def test_text_and_random_bytes_are_not_gguf() -> None:
    with pytest.raises(GgufFormatError, match="no GGUF magic: the file starts with b'# a '"):
        parse(b"# a text file named model.gguf\n" * 10)
    noise = np.random.default_rng(7).bytes(4096)
    assert not noise.startswith(b"GGUF")
    with pytest.raises(GgufFormatError, match="no GGUF magic"):
        parse(noise)


@pytest.mark.parametrize("version", [0, 1, 4, 0xFFFFFFFF])
def test_versions_llama_cpp_does_not_read_are_refused(version: int) -> None:
    with pytest.raises(GgufFormatError, match=f"GGUF version {version}"):
        parse(gguf_bytes(CHAT_PAIRS, TENSORS, version=version))


def test_hostile_counts_and_lengths_are_bounded() -> None:
    huge_metadata = b"GGUF" + struct.pack("<IQQ", 3, 0, MAX_GGUF_METADATA + 1)
    with pytest.raises(GgufFormatError, match=r"metadata count .* over the limit"):
        parse(huge_metadata)
    huge_key = b"GGUF" + struct.pack("<IQQQ", 3, 0, 1, 1 << 62)
    with pytest.raises(GgufFormatError, match=r"length of metadata key 0 .* over the limit"):
        parse(huge_key)
    long_string = (b"GGUF" + struct.pack("<IQQ", 3, 0, 1) + _string("k")
                   + struct.pack("<IQ", 8, 1 << 20) + b"x" * 10)
    with pytest.raises(GgufFormatError, match="truncated: value of 'k'"):
        parse(long_string)
    long_array = (b"GGUF" + struct.pack("<IQQ", 3, 0, 1) + _string("k")
                  + struct.pack("<IIQ", 9, 12, 1 << 23))
    with pytest.raises(GgufFormatError, match="truncated: value of 'k'"):
        parse(long_array)
    bad_type = b"GGUF" + struct.pack("<IQQ", 3, 0, 1) + _string("k") + struct.pack("<I", 13)
    with pytest.raises(GgufFormatError, match="unknown value type 13"):
        parse(bad_type)
    bad_dims = gguf_bytes(CHAT_PAIRS, [_string("t") + struct.pack("<I", 9)])
    with pytest.raises(GgufFormatError, match="9 dimensions"):
        parse(bad_dims)


def test_missing_architecture_vocabulary_tensors_and_template_are_named() -> None:
    bare = parse(gguf_bytes([_kv_u32("general.alignment", 32)], []))
    problems = generation_problems(bare, manifest_for())
    assert problems == ["no general.architecture in its metadata",
                        "no tokenizer (tokenizer.ggml.model) in its metadata",
                        "no vocabulary (tokenizer.ggml.tokens) in its metadata",
                        "no tensors: a vocabulary-only file cannot generate",
                        "no chat template in the file"]
    without_template = parse(gguf_bytes(CHAT_PAIRS[:-1], TENSORS))
    assert generation_problems(without_template, manifest_for()) == [
        "no chat template in the file"]
    assert generation_problems(without_template, manifest_for(chat=False)) == []
    assert generation_problems(without_template, manifest_for(chat_format="chatml")) == []


# -- the real loaders, through the registry -----------------------------------------------------


def tiny_encoder(dim: int) -> bytes:
    """An ONNX graph with the node's interface: input_ids -> last_hidden_state (b, t, dim)."""
    table = np.random.default_rng(dim).standard_normal((VOCAB, dim)).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("Gather", ["table", "input_ids"], ["last_hidden_state"])],
        "tiny-encoder",
        [helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["batch", "tokens"])],
        [helper.make_tensor_value_info("last_hidden_state", TensorProto.FLOAT,
                                       ["batch", "tokens", dim])],
        [numpy_helper.from_array(table, "table")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model.SerializeToString()


def install_onnx(tmp_path: Path, model_bytes: bytes, dim: int) -> ModelRegistry:
    source = tmp_path / "source"
    source.mkdir()
    (source / "model.onnx").write_bytes(model_bytes)
    tokenizer = locate_sources().tokenizer_dir / "tokenizer.json"
    (source / "tokenizer.json").write_bytes(tokenizer.read_bytes())
    registry = ModelRegistry(tmp_path / "models")
    manifest = ModelManifest(name="probe", kind="embed", files=PLACEHOLDER, dim=dim,
                             pooling="mean", source=str(source))
    registry.install(manifest, [(source / "model.onnx", "model.onnx"),
                                (source / "tokenizer.json", "tokenizer.json")],
                     check=check_model)
    return registry


def install_gguf(tmp_path: Path, data: bytes | Path, **fields: object) -> ModelRegistry:
    if isinstance(data, Path):
        source = data
    else:
        source = tmp_path / "model.gguf"
        source.write_bytes(data)
    registry = ModelRegistry(tmp_path / "models")
    manifest = replace(manifest_for(**fields), source=str(source))
    registry.install(manifest, [(source, source.name)], check=check_model)
    return registry


def assert_nothing_installed(tmp_path: Path) -> None:
    assert os.listdir(tmp_path / "models") == []  # no model, no staging folder


def test_a_working_onnx_encoder_is_installed(tmp_path: Path) -> None:
    registry = install_onnx(tmp_path, tiny_encoder(8), dim=8)
    assert registry.names() == ["probe"]


def test_random_bytes_as_onnx_are_refused(tmp_path: Path) -> None:
    noise = np.random.default_rng(1).bytes(100_000)
    with pytest.raises(BadRequest, match=r"source/model.onnx: not a usable ONNX embedding model "
                       r"\(ONNX Runtime: .*INVALID_PROTOBUF.*nothing was installed$") as caught:
        install_onnx(tmp_path, noise, dim=8)
    assert caught.value.code == ErrorCode.BAD_REQUEST
    assert "\n" not in str(caught.value) and ".probe-" not in str(caught.value)
    assert_nothing_installed(tmp_path)


def test_a_truncated_onnx_is_refused(tmp_path: Path) -> None:
    whole = tiny_encoder(8)
    with pytest.raises(BadRequest, match="not a usable ONNX embedding model"):
        install_onnx(tmp_path, whole[: len(whole) // 2], dim=8)
    assert_nothing_installed(tmp_path)


def test_an_onnx_of_another_dimension_is_refused_with_the_right_dim(tmp_path: Path) -> None:
    with pytest.raises(BadRequest, match="it gives 8-dimensional vectors, not the declared 384"
                       r"\); give --dim 8; nothing was installed"):
        install_onnx(tmp_path, tiny_encoder(8), dim=384)
    assert_nothing_installed(tmp_path)


def test_a_text_file_as_gguf_is_refused(tmp_path: Path) -> None:
    with pytest.raises(BadRequest, match=r"model.gguf: not a usable GGUF model \(no GGUF magic"):
        install_gguf(tmp_path, b"just some text\n")
    assert_nothing_installed(tmp_path)


def test_a_header_only_gguf_is_refused_by_llama_cpp(tmp_path: Path) -> None:
    """A header that parses, with tensors whose data is missing: llama.cpp's own check."""
    data = gguf_bytes(CHAT_PAIRS, TENSORS)
    with pytest.raises(BadRequest, match=r"llama.cpp cannot load it: "):
        install_gguf(tmp_path, data)
    assert_nothing_installed(tmp_path)


@pytest.fixture(scope="module")
def smollm2_file() -> Path:
    return _smollm2_source()[0]


def test_the_real_gguf_header_is_read(smollm2_file: Path) -> None:
    with smollm2_file.open("rb") as fh:
        header = read_gguf_header(fh, smollm2_file.stat().st_size)
    assert header.architecture == "llama" and header.tensor_count > 0
    tokens = header.metadata["tokenizer.ggml.tokens"]
    assert isinstance(tokens, GgufArray) and tokens.count == 49152


def test_the_real_gguf_is_installed_and_its_truncations_refused(
    tmp_path: Path, smollm2_file: Path
) -> None:
    registry = install_gguf(tmp_path / "whole", smollm2_file)
    assert registry.names() == ["m"]
    with smollm2_file.open("rb") as fh:
        data_offset = read_gguf_header(fh, smollm2_file.stat().st_size).data_offset
        head = smollm2_file.read_bytes()[: data_offset + 4096]
    cases = {"in-tensors": (head, "llama.cpp cannot load it: .*not within the file bounds"),
             "in-vocabulary": (head[:200_000], r"\(truncated: .*tokenizer.ggml")}
    for name, (data, why) in cases.items():
        folder = tmp_path / name
        folder.mkdir()
        with pytest.raises(BadRequest, match=why):
            install_gguf(folder, data)
        assert_nothing_installed(folder)


def test_a_chat_model_without_template_names_base_and_chat_format(tmp_path: Path) -> None:
    with pytest.raises(BadRequest, match=r"no chat template in the file.*--base.*--chat-format"):
        install_gguf(tmp_path, gguf_bytes(CHAT_PAIRS[:-1], TENSORS))
    with pytest.raises(BadRequest, match="unknown --chat-format 'nope'"):
        install_gguf(tmp_path, gguf_bytes(CHAT_PAIRS, TENSORS), chat_format="nope")
    assert_nothing_installed(tmp_path)


# -- saying how to serve a model ----------------------------------------------------------------


@pytest.mark.parametrize(("name", "kind", "advice"), [
    ("gemma3-270m", "generate",
     "serve it: calinode models prepare gemma3-270m, then calinode start --gen-model gemma3-270m"),
    ("bge-small", "embed",
     "serve it: calinode models add PATH --name bge-small, then calinode start --embed-model "
     "bge-small"),
])
def test_an_unserved_model_error_says_how_to_serve_it(name: str, kind: str, advice: str) -> None:
    with pytest.raises(JobError) as caught:
        require_candidates([], name, kind, ["smollm2-135m"])
    assert caught.value.code == ErrorCode.UNKNOWN_MODEL
    assert advice in caught.value.message


# -- who uses a model (models remove) -----------------------------------------------------------


def _definition(name: str, model: str, **settings: object) -> CollectionDef:
    return CollectionDef(name=name, model=model, model_sha256="0" * 64, dim=384,
                         pooling="mean", normalize=True, **settings)  # type: ignore[arg-type]


def test_pinning_collections_reads_live_definitions_and_moves_nothing(tmp_path: Path) -> None:
    folder = tmp_path / "collections"
    folder.mkdir()
    for definition in (_definition("docs", "minilm-l6-int8"), _definition("old", "minilm-l6-int8",
                       dropped=True, version=2), _definition("other", "bge-small")):
        (folder / f"{definition.name}.json").write_text(json.dumps(definition.to_wire()))
    (folder / "broken.json").write_text("{not json")
    (folder / "alien.json").write_text(json.dumps({"name": "alien", "model": ["x"]}))
    assert pinning_collections(tmp_path, "minilm-l6-int8") == ["docs"]
    assert pinning_collections(tmp_path, "bge-small") == ["other"]
    assert pinning_collections(tmp_path, "smollm2-135m") == []
    assert sorted(os.listdir(folder)) == ["alien.json", "broken.json", "docs.json", "old.json",
                                          "other.json"]  # nothing set aside by a look
    assert pinning_collections(tmp_path / "nowhere", "minilm-l6-int8") == []


@pytest.mark.parametrize("status", [{}, {"capabilities": None}, {"capabilities": {"embed": 3}},
                                    {"capabilities": {"embed": [None, {"name": 7}, "x"]}}])
def test_served_models_tolerates_odd_status_answers(status: dict[str, object]) -> None:
    assert served_models(status) == frozenset()


def test_what_removal_breaks_and_how_to_serve() -> None:
    status = {"capabilities": {"embed": [{"name": "minilm-l6-int8"}],
                               "generate": [{"name": "smollm2-135m"}]}}
    node = RunningNode(api="127.0.0.1:7412", served=served_models(status))
    assert removal_breaks("bge-small", "embed", [], node, preparable=False) == []
    assert removal_breaks("bge-small", "embed", [], None, preparable=False) == []
    # a name served under the other kind is not this model
    assert removal_breaks("minilm-l6-int8", "generate", [], node, preparable=True) == []
    breaks = removal_breaks("minilm-l6-int8", "embed", ["docs"], node, preparable=True)
    assert len(breaks) == 2 and breaks[0].startswith("collection docs pins minilm-l6-int8")
    assert "serves minilm-l6-int8" in breaks[1] and "prepares it again" in breaks[1]
    custom = removal_breaks("smollm2-135m", "generate", [], node, preparable=False)
    assert "its next start fails unless smollm2-135m is installed again" in custom[0]
    unsure = RunningNode(api="127.0.0.1:7412", unknown="UNAUTHORIZED")
    assert "could not say whether" in removal_breaks("x", "embed", [], unsure,
                                                     preparable=False)[0]
    assert serve_hint("smollm2-135m", "generate", node, default=True) is None
    assert serve_hint("gemma3-270m", "generate", node, default=False) == (
        "the running node does not serve gemma3-270m (a node loads its models at start); "
        "serve it: stop the node, then calinode start --gen-model gemma3-270m")
    for nobody in (None, unsure):
        assert serve_hint("gemma3-270m", "generate", nobody, default=False) == (
            "serve it: calinode start --gen-model gemma3-270m")


def test_chat_with_a_base_model_names_the_completion_flag(smollm2_file: Path) -> None:
    from calinode.models.generator import GenerationParams, GgufGenerator

    base = ModelManifest(name="base-model", kind="generate", context_length=2048, chat=False,
                         files=PLACEHOLDER)
    generator = GgufGenerator(base, smollm2_file, threads=1, n_ctx=64)
    try:
        with pytest.raises(JobError) as caught:
            generator.stream_chat([{"role": "user", "content": "hi"}], GenerationParams())
        assert caught.value.code == ErrorCode.BAD_REQUEST
        assert "calinode generate --completion --model base-model" in caught.value.message
        assert "stream_completion" not in caught.value.message
    finally:
        generator.close()
