"""calinode.models: model backends behind small blocking interfaces (call them from a worker
thread: ``trio.to_thread.run_sync``). Nothing here imports trio or libp2p.

Map of the package:

- ``ModelManifest``, ``ModelFile`` (manifest.py): what a model is (sha256 of its primary file)
  and how to run it; ``batch_invariant`` says whether batching may change a vector.
- ``ModelRegistry`` (registry.py): ``$CALINODE_HOME/models/<name>/``: install, verify, remove.
- ``OnnxEmbedder``, ``EmbedResult`` (embedder.py): ONNX Runtime + tokenizers; bucketing,
  pooling, normalization, prefixes, ``dimensions``.
- ``GgufGenerator``, ``GenerationParams`` (generator.py): llama.cpp chat and completion with
  token streaming and cancellation, structured output and logprobs.
- ``schema_grammar`` (json_grammar.py): a JSON schema as the GBNF grammar of structured
  output, via llama.cpp's converter, refusing by name what it would not enforce.
- Tool calling: ``render_messages`` (tool_prompt.py): tools and tool history as a
  system-prompt block and plain messages; ``tool_call_grammar`` (tool_grammar.py): the GBNF
  that forces one call of an allowed tool; ``parse_tool_output``, ``CallHoldBack``
  (tool_output.py): an answer read back as a call, and what of it may stream as text.
- ``ensure_models`` (defaults.py): the embedded defaults, prepared from PyPI packages when
  missing (by :mod:`calinode.models.prepare`).
- ``store/``: ``ShardStore`` (store/shard_store.py): one shard replica: SQLite (the truth,
  fsync per write) with FAISS rebuilt from it at open; search, fetch, digest, changes/apply;
  its record types, validation, FAISS wrapper, SQL and digest each in their module.
- ``prepare/``: how a model gets into the registry: ``prepare_minilm`` (minilm.py),
  ``prepare_smollm2``, ``prepare_gemma3`` (gguf.py), ``export_checkpoint`` (export.py: any
  BERT-family checkpoint to ONNX, verified against torch; optional ``export`` extra),
  ``check_model`` (checks.py: what ``calinode models add`` verifies before installing).
- browser_graph.py: the graph served to the browser's onnxruntime-web, emulating this CPU's
  integer kernel where it saturates, so browser and node vectors agree.
"""
