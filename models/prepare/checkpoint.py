"""What a Hugging Face checkpoint folder says about its embedding model, read before any
export (:func:`read_checkpoint`): the transformer's folder, pooling and normalization
(``modules.json``, ``1_Pooling/config.json``), ``max_tokens`` (``sentence_bert_config.json``
or the tokenizer's config), E5's ``query: ``/``passage: `` prefixes, the license. Pure file
reading, no torch: a folder calinode cannot export is refused here with a
:class:`~calinode.protocol.errors.ConfigError` that names what is missing."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from calinode.models.manifest import Pooling
from calinode.protocol.errors import ConfigError

# model types whose position ids count from pad_token_id + 1 (514 positions hold 512 tokens)
_PADDING_OFFSET_POSITIONS = frozenset(
    {"roberta", "xlm-roberta", "xlm-roberta-xl", "camembert", "mpnet", "data2vec-text"})

E5_QUERY_PREFIX = "query: "


E5_PASSAGE_PREFIX = "passage: "


@dataclass(frozen=True, kw_only=True)
class CheckpointInfo:
    """What a checkpoint folder says about its embeddings (read without torch)."""

    transformer_dir: Path
    tokenizer_json: Path
    pooling: Pooling
    normalize: bool
    max_tokens: int
    query_prefix: str
    passage_prefix: str
    license: str


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ConfigError(f"cannot read {path}: {exc}") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"{path} is not a JSON object")
    return data


def _pooling_of(config: dict[str, Any], path: Path) -> Pooling:
    mode = config.get("pooling_mode")
    if mode is None:  # the legacy form: one pooling_mode_* flag per mode
        mode = [key.removeprefix("pooling_mode_") for key, on in config.items()
                if key.startswith("pooling_mode_") and on is True]
    modes = [mode] if isinstance(mode, str) else list(mode)
    modes = ["mean" if m == "mean_tokens" else "cls" if m == "cls_token" else m for m in modes]
    if config.get("include_prompt", True) is False:
        raise ConfigError(f"{path}: pooling that excludes the prompt is not supported")
    if modes == ["mean"] or modes == ["cls"]:
        return "mean" if modes == ["mean"] else "cls"
    raise ConfigError(f"{path}: pooling {modes} is not supported (only mean or cls)")


def _is_e5(folder: Path) -> bool:
    # A hub cache snapshot is .../models--intfloat--e5-small-v2/snapshots/<hash>: look up too.
    names = [folder.name, *(p.name for p in folder.parents if p.name.startswith("models--"))]
    return any(re.search(r"(?:^|[^a-z0-9])e5(?:$|[^0-9])", n.lower()) for n in names)


def _license_of(folder: Path) -> str:
    readme = folder / "README.md"
    if not readme.is_file():
        return ""
    text = readme.read_text(encoding="utf-8", errors="replace")
    front = re.match(r"---\n(.*?)\n---", text, re.DOTALL)
    found = re.search(r"^license:\s*(\S+)\s*$", front.group(1), re.M) if front else None
    return found.group(1) if found else ""


def read_checkpoint(
    folder: Path, *, query_prefix: str | None = None, passage_prefix: str | None = None
) -> CheckpointInfo:
    """Read pooling, normalization, length limit and prefixes from a checkpoint folder."""
    if not (folder / "config.json").is_file() and not (folder / "modules.json").is_file():
        raise ConfigError(f"{folder} is not a Hugging Face checkpoint (no config.json)")
    transformer_dir, normalize = folder, True
    pooling: Pooling = "mean"
    prompts: dict[str, Any] = {}
    if (folder / "modules.json").is_file():
        try:
            modules = json.loads((folder / "modules.json").read_text(encoding="utf-8"))
            kinds = {str(m["type"]).rsplit(".", 1)[-1]: m for m in modules}
        except (OSError, ValueError, TypeError, KeyError) as exc:
            raise ConfigError(f"unreadable {folder / 'modules.json'}: {exc!r}") from exc
        unsupported = sorted(set(kinds) - {"Transformer", "Pooling", "Normalize"})
        if unsupported or "Transformer" not in kinds:
            raise ConfigError(f"{folder}: sentence-transformers modules {unsupported or ['?']} "
                              "are not supported (only Transformer, Pooling, Normalize)")
        transformer_dir = folder / kinds["Transformer"].get("path", "")
        if "Pooling" in kinds:
            pooling_config = folder / kinds["Pooling"]["path"] / "config.json"
            pooling = _pooling_of(_read_json(pooling_config), pooling_config)
        normalize = "Normalize" in kinds
        if (folder / "config_sentence_transformers.json").is_file():
            prompts = _read_json(folder / "config_sentence_transformers.json").get("prompts") or {}
    tokenizer_json = next((d / "tokenizer.json" for d in (transformer_dir, folder)
                           if (d / "tokenizer.json").is_file()), None)
    if tokenizer_json is None:
        raise ConfigError(f"{folder} has no tokenizer.json (a fast tokenizer file): calinode "
                          "runs the tokenizer without transformers, so the checkpoint needs one; "
                          "save it with AutoTokenizer.from_pretrained(...).save_pretrained(...)")
    config = _read_json(transformer_dir / "config.json")
    limit = int(config.get("max_position_embeddings") or 512)
    if config.get("model_type") in _PADDING_OFFSET_POSITIONS:  # positions start after pad id
        limit -= int(config.get("pad_token_id", 1)) + 1
    max_tokens = None
    for candidate in (transformer_dir, folder):
        st_config = candidate / "sentence_bert_config.json"
        if st_config.is_file() and _read_json(st_config).get("max_seq_length"):
            max_tokens = int(_read_json(st_config)["max_seq_length"])
            break
    if max_tokens is None and (transformer_dir / "tokenizer_config.json").is_file():
        length = _read_json(transformer_dir / "tokenizer_config.json").get("model_max_length")
        max_tokens = int(length) if isinstance(length, int | float) and length < 100_000 else None
    max_tokens = min(max_tokens or 512, limit)
    # given > the checkpoint's own prompts > E5's convention > none
    e5 = _is_e5(folder)
    if query_prefix is None:
        query_prefix = str(prompts.get("query", E5_QUERY_PREFIX if e5 else ""))
    if passage_prefix is None:
        passage_prefix = str(prompts.get("passage", prompts.get(
            "document", E5_PASSAGE_PREFIX if e5 else "")))
    return CheckpointInfo(transformer_dir=transformer_dir, tokenizer_json=tokenizer_json,
                          pooling=pooling, normalize=normalize, max_tokens=max_tokens,
                          query_prefix=query_prefix, passage_prefix=passage_prefix,
                          license=_license_of(folder))
