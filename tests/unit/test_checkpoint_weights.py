"""models/prepare/weights.py: checkpoint tensors go into a graph's initializers only when every
name, dtype and shape fits, and any misfit is refused naming the tensor (a tiny real graph,
run in ONNX Runtime)."""

from __future__ import annotations

import re
from collections.abc import Callable

import numpy as np
import onnxruntime as ort
import pytest
from onnx import ModelProto, TensorProto, helper, numpy_helper

from calinode.models.prepare.weights import (
    Slot,
    WeightMismatch,
    fill_initializers,
    weight_slots,
)

RNG = np.random.default_rng(7)


def _graph(*, with_bias: bool = True) -> ModelProto:
    """y = (x @ W^T + b) * g, with W stored transposed under an exporter's name (``val_3``)
    as torch's dynamo exporter does, b and g under ``inner.`` + their checkpoint names."""
    weight = numpy_helper.from_array(np.zeros((4, 3), np.float32), "val_3")
    bias = numpy_helper.from_array(np.zeros(3, np.float32), "inner.lin.bias")
    gain = numpy_helper.from_array(np.ones(3, np.float32), "inner.norm.weight")
    scale = numpy_helper.from_array(np.array(2.0, np.float32), "val_9")  # a scalar constant
    nodes = [helper.make_node("MatMul", ["x", "val_3"], ["mm"])]
    if with_bias:
        nodes.append(helper.make_node("Add", ["mm", "inner.lin.bias"], ["lin"]))
    nodes += [helper.make_node("Mul", ["lin" if with_bias else "mm", "inner.norm.weight"],
                               ["normed"]),
              helper.make_node("Mul", ["normed", "val_9"], ["y"])]
    graph = helper.make_graph(
        nodes, "tiny", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3])],
        [weight, bias, gain, scale] if with_bias else [weight, gain, scale])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def _checkpoint() -> dict[str, np.ndarray]:
    return {"lin.weight": RNG.standard_normal((3, 4)).astype(np.float32),
            "lin.bias": RNG.standard_normal(3).astype(np.float32),
            "norm.weight": RNG.standard_normal(3).astype(np.float32),
            "pooler.dense.weight": np.zeros((2, 2), np.float32)}


def _run(model: ModelProto, x: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return np.asarray(session.run(None, {"x": x})[0])


def test_slots_name_every_weight_and_transpose_the_matmul_one() -> None:
    assert sorted(weight_slots(_graph(), prefix="inner."), key=lambda s: s.initializer) == [
        Slot("inner.lin.bias", "lin.bias", transposed=False),
        Slot("inner.norm.weight", "norm.weight", transposed=False),
        Slot("val_3", "lin.weight", transposed=True),
    ]


def test_the_filled_graph_computes_with_the_checkpoint_weights() -> None:
    model, tensors = _graph(), _checkpoint()
    fill_initializers(model, tensors, weight_slots(model, prefix="inner."),
                      unused=("pooler.",))
    x = RNG.standard_normal((1, 4)).astype(np.float32)
    expected = (x @ tensors["lin.weight"].T + tensors["lin.bias"]) * tensors["norm.weight"] * 2
    np.testing.assert_allclose(_run(model, x), expected, rtol=1e-5)


@pytest.mark.parametrize(("change", "named"), [
    (lambda t: t.pop("lin.bias"), "missing from the checkpoint: lin.bias"),
    (lambda t: t.update({"lin.weight": np.zeros((4, 3), np.float32)}),
     "of the wrong dtype or shape: lin.weight float32[3, 4] for val_3 float32[4, 3]"),
    (lambda t: t.update({"norm.weight": np.zeros(3, np.float64)}),
     "of the wrong dtype or shape: norm.weight float64[3]"),
    (lambda t: t.update({"encoder.extra.weight": np.zeros(3, np.float32)}),
     "in the checkpoint but not in the graph: encoder.extra.weight"),
])
def test_a_misfit_tensor_is_refused_by_name_and_nothing_changes(
    change: Callable[[dict[str, np.ndarray]], object], named: str
) -> None:
    model, tensors = _graph(), _checkpoint()
    before = model.SerializeToString()
    change(tensors)
    with pytest.raises(WeightMismatch, match=re.escape(named)):
        fill_initializers(model, tensors, weight_slots(model, prefix="inner."),
                          unused=("pooler.",))
    assert model.SerializeToString() == before


def test_the_unused_prefixes_are_the_only_tensors_that_may_be_left_over() -> None:
    model = _graph()
    with pytest.raises(WeightMismatch, match=r"not in the graph: pooler\.dense\.weight"):
        fill_initializers(model, _checkpoint(), weight_slots(model, prefix="inner."))


def test_a_weight_the_graph_does_not_name_is_refused() -> None:
    with pytest.raises(WeightMismatch, match="no checkpoint name: val_3"):
        weight_slots(_graph(with_bias=False), prefix="inner.")


def test_two_initializers_for_one_tensor_are_refused() -> None:
    model = _graph()
    slots = [*weight_slots(model, prefix="inner."),
             Slot("inner.norm.weight", "lin.bias", transposed=False)]
    with pytest.raises(WeightMismatch, match=r"matched to several initializers: lin\.bias"):
        fill_initializers(model, _checkpoint(), slots, unused=("pooler.",))
