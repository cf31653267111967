"""A search query that arrives as a vector (embedded by the client, e.g. the dashboard's
in-browser embedding) instead of a text: checked against the collection it searches.

A collection pins its embedding model (DESIGN.md, invariants): a vector is accepted only with
the ``model_sha256`` of that model and exactly its ``dim`` components, all finite numbers, and
not all zero. It is then L2-normalized when the collection's model normalizes (a client's
float32 rounding must not move the scores off the node's own), and searched like a text
query after its embedding. Pure: no I/O, unit-tested.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from calinode.protocol.collections import CollectionDef
from calinode.protocol.errors import BadRequest

__all__ = ["query_vector"]


def query_vector(definition: CollectionDef, vector: Any, model_sha256: Any) -> np.ndarray:
    """``vector`` as a (1, dim) float32 row to search ``definition`` with, or ``BadRequest``
    naming what is wrong: another model (``model_sha256``), the wrong number of components,
    a value that is not a finite number, or a zero vector."""
    if not isinstance(model_sha256, str) or not model_sha256:
        raise BadRequest("model_sha256 must be given with vector: the sha256 of the model that "
                         "embedded it")
    if model_sha256 != definition.model_sha256:
        raise BadRequest(f"model_sha256 {model_sha256[:64]!r} is not the model of collection "
                         f"{definition.name} ({definition.model}, sha256 "
                         f"{definition.model_sha256}): embed the query with that model")
    if not isinstance(vector, list):
        raise BadRequest("vector must be a list of numbers")
    if len(vector) != definition.dim:
        raise BadRequest(f"vector has {len(vector)} components; collection {definition.name} "
                         f"has dimension {definition.dim}")
    for index, value in enumerate(vector):
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise BadRequest(f"vector[{index}] is not a finite number")
        try:
            finite = math.isfinite(value)
        except OverflowError:  # an int beyond any float
            raise BadRequest("vector holds a number too large for a float") from None
        if not finite:
            raise BadRequest(f"vector[{index}] is not a finite number")
    row = np.asarray([vector], dtype=np.float64)
    if np.abs(row).max() > np.finfo(np.float32).max:
        raise BadRequest("vector holds a number beyond float32's range")
    norm = float(np.linalg.norm(row))
    if norm == 0.0:
        raise BadRequest("vector is all zeros")
    if definition.normalize:
        row = row / norm
    return np.ascontiguousarray(row, dtype=np.float32)
