"""The error of a collection whose pinned model file no reachable node serves.

A collection pins its embedding model by name *and* sha256: vectors of two files never mix in
one index. When a default model is rebuilt (``minilm-l6`` was, from the original float32
weights), a fresh home serves the same name with another sha256, and every search or ingest
of an older collection is refused. The refusal says which file is pinned,
which one is served, and the two ways out, so an operator need not read the source.
"""

from __future__ import annotations

from calinode.protocol.collections import CollectionDef
from calinode.protocol.errors import ErrorCode, JobError

#: the former default files, rebuilt byte for byte on demand under these names
FORMER_DEFAULTS = {"minilm-l6": "minilm-l6-v1"}


def pinned_model_not_served(definition: CollectionDef, served_sha256: str, *,
                            what: str) -> JobError:
    """``UNKNOWN_MODEL``: ``what`` (e.g. "the queries") would be embedded by a file of the
    collection's model other than the pinned one. Pure."""
    former = FORMER_DEFAULTS.get(definition.model)
    rebuild = (f" (`calinode models prepare {former}` rebuilds the former default "
               f"{definition.model} byte for byte, to check or copy it)" if former else "")
    return JobError(
        f"collection {definition.name} pins model {definition.model} with sha256 "
        f"{definition.model_sha256}, but the nodes serving {definition.model} run sha256 "
        f"{served_sha256[:64]}, another file, so {what} cannot be embedded for it: serve the "
        f"pinned file from a node whose home still holds it{rebuild}, or move the collection "
        f"to the served model: `calinode collections create NEW --model {definition.model}`, "
        f"`calinode ingest DOCS --collection NEW`, then `calinode collections drop "
        f"{definition.name}`", code=ErrorCode.UNKNOWN_MODEL)
