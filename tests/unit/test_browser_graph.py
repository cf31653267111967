"""The graph a browser runs to reproduce this node's int8 arithmetic (models/browser_graph.py):
every MatMulInteger of constant int8 weights spelled out as a saturating uint8 x int8 kernel
(pairs of products clipped to int16) computes, checked against numpy on a small real ONNX
graph whatever this machine's kernel is; and the machine's own kernel reproduced exactly."""

from __future__ import annotations

import hashlib

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

from calinode.models.browser_graph import (
    U8S8_PAIR_SATURATION,
    browser_graph,
    int8_gemm_saturates,
)

K, N = 512, 256


def int8_model(seed: int = 3) -> tuple[bytes, np.ndarray]:
    """float input -> DynamicQuantizeLinear -> MatMulInteger (int8 weights, zero point 0):
    the pattern ``quantize_dynamic`` writes; returns the model and its weights."""
    rng = np.random.default_rng(seed)
    weights = rng.integers(-127, 128, size=(K, N), dtype=np.int8)
    nodes = [
        helper.make_node("DynamicQuantizeLinear", ["x"], ["xq", "xs", "xz"]),
        helper.make_node("MatMulInteger", ["xq", "w", "xz", "wz"], ["y"]),
    ]
    graph = helper.make_graph(
        nodes, "tiny",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", "tokens", K])],
        [helper.make_tensor_value_info("y", TensorProto.INT32, ["batch", "tokens", N])],
        [numpy_helper.from_array(weights, "w"),
         numpy_helper.from_array(np.zeros(N, dtype=np.int8), "wz")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model.SerializeToString(), weights


def run(data: bytes, x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """y, and the quantized input and its zero point (for the numpy reference)."""
    model = onnx.load_from_string(data)
    model.graph.output.extend([helper.make_tensor_value_info("xq", TensorProto.UINT8, None),
                               helper.make_tensor_value_info("xz", TensorProto.UINT8, None)])
    session = ort.InferenceSession(model.SerializeToString(),
                                   providers=["CPUExecutionProvider"])
    y, xq, xz = session.run(["y", "xq", "xz"], {"x": x})
    return y, xq, xz


def saturating_reference(xq: np.ndarray, xz: np.ndarray, w: np.ndarray) -> np.ndarray:
    a, b = xq.astype(np.int64), w.astype(np.int64)
    pairs = (a[..., 0::2, None] * b[0::2] + a[..., 1::2, None] * b[1::2])
    return (np.clip(pairs, -32768, 32767).sum(axis=-2) - int(xz) * b.sum(axis=0)).astype(
        np.int32)


def test_the_spelled_out_graph_computes_the_saturating_kernel_exactly(tmp_path) -> None:
    data, weights = int8_model()
    path = tmp_path / "model.onnx"
    path.write_bytes(data)
    graph = browser_graph(path, saturates=True)
    assert graph.emulates == U8S8_PAIR_SATURATION
    assert graph.sha256 == hashlib.sha256(graph.data).hexdigest() != hashlib.sha256(
        data).hexdigest()
    x = np.random.default_rng(4).standard_normal((1, 9, K)).astype(np.float32) * 3
    x[0, 0] = np.abs(x[0, 0])  # a row of large same-sign activations: pairs overflow int16
    y, xq, xz = run(graph.data, x)
    want = saturating_reference(xq, xz, weights)
    exact = (xq.astype(np.int64) - int(xz)) @ weights.astype(np.int64)
    assert (want != exact).any(), "the input must make some pairs saturate"
    np.testing.assert_array_equal(y, want)


def test_the_browser_gets_this_machines_arithmetic(tmp_path) -> None:
    data, _ = int8_model(seed=8)
    path = tmp_path / "model.onnx"
    path.write_bytes(data)
    graph = browser_graph(path)
    x = np.random.default_rng(9).standard_normal((2, 5, K)).astype(np.float32) * 3
    original, _, _ = run(data, x)
    spelled, _, _ = run(graph.data, x)
    np.testing.assert_array_equal(spelled, original)
    if not int8_gemm_saturates():
        assert graph.data == data and graph.emulates is None


def test_an_exact_kernel_or_a_graph_without_int8_weights_gets_the_file_itself(
        tmp_path) -> None:
    data, _ = int8_model()
    path = tmp_path / "model.onnx"
    path.write_bytes(data)
    exact = browser_graph(path, saturates=False)
    assert exact.data == data and exact.emulates is None
    assert exact.sha256 == hashlib.sha256(data).hexdigest()
    float_graph = helper.make_model(helper.make_graph(
        [helper.make_node("Relu", ["x"], ["y"])], "f",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])]),
        opset_imports=[helper.make_opsetid("", 17)])
    path.write_bytes(float_graph.SerializeToString())
    assert browser_graph(path, saturates=True).emulates is None
