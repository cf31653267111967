"""The graph a browser runs to embed exactly as this node does (``node/dashboard/static/embed.js``).

A dynamically quantized model (``minilm-l6-int8``) multiplies uint8 activations by int8 weights
in ``MatMulInteger``. On x86-64 with AVX2 but without VNNI, ONNX Runtime's kernel for that
(MLAS ``U8S8``) uses ``vpmaddubsw``, which adds each pair of neighbouring products
(``a[2i]*b[2i] + a[2i+1]*b[2i+1]``) into a *saturating* int16 before summing the pairs in int32
(ONNX Runtime's quantization docs name the issue). onnxruntime-web's WASM kernels compute the
product exactly, so a browser's vector drifts from the node's (cosine 0.986 to 0.994 measured
on this machine's CPU, against the >= 0.999 required) although both run the same file.

So the node measures its own kernel once (:func:`int8_gemm_saturates`, a four-element
``MatMulInteger`` whose pair sum overflows int16) and, when it saturates, gives the browser a
copy of the graph in which every ``MatMulInteger`` with constant int8 weights is spelled out as
that arithmetic in int32 ONNX operators: products, pair sums clipped to int16, sums, minus the
activation zero point times the weights' column sums (the weights' zero point must be 0, as
``quantize_dynamic`` makes them). The weights stay int8 initializers (cast at run time), so the
copy is the size of the original. On a CPU whose kernel is exact the browser gets the original
bytes. The spelled-out product holds ``tokens x K x N`` int32 values per layer, about 2.4 MB a
token for MiniLM's feed-forward layers: fine for queries, not for long documents.

Blocking (onnx parsing, hashing): call from a worker thread.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import numpy as np

from calinode.protocol.errors import ConfigError

__all__ = ["BrowserGraph", "browser_graph", "int8_gemm_saturates"]

#: what a saturating graph's ``emulates`` says (the manifest view shows it to the browser)
U8S8_PAIR_SATURATION = "u8s8-int16-pair-saturation"


@dataclass(frozen=True)
class BrowserGraph:
    """The bytes a browser should run for a model, their sha256, and what they emulate
    (None: the model file itself)."""

    data: bytes
    sha256: str
    emulates: str | None


@cache
def int8_gemm_saturates() -> bool:
    """Whether this machine's ONNX Runtime CPU ``MatMulInteger`` (uint8 x int8) saturates
    pairs of products to int16: 255*127 + 255*127 = 64770 comes out as 32767."""
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    weights = np.full((4, 1), 127, dtype=np.int8)
    graph = helper.make_graph(
        [helper.make_node("MatMulInteger", ["A", "B", "azp", "bzp"], ["Y"])], "probe",
        [helper.make_tensor_value_info("A", TensorProto.UINT8, [None, 4])],
        [helper.make_tensor_value_info("Y", TensorProto.INT32, [None, 1])],
        [numpy_helper.from_array(weights, "B"),
         numpy_helper.from_array(np.array(0, dtype=np.uint8), "azp"),
         numpy_helper.from_array(np.array([0], dtype=np.int8), "bzp")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    session = ort.InferenceSession(model.SerializeToString(),
                                   providers=["CPUExecutionProvider"])
    rows = np.full((16, 4), 255, dtype=np.uint8)  # a GEMM, as in a model's layers
    (result,) = session.run(None, {"A": rows})
    exact = 4 * 255 * 127
    return bool((result != exact).any())


def browser_graph(model_path: Path, *, saturates: bool | None = None) -> BrowserGraph:
    """The graph a browser runs to reproduce this node's arithmetic for ``model_path``."""
    data = model_path.read_bytes()
    if saturates is None:
        saturates = int8_gemm_saturates()
    if saturates:
        emulated = _emulate_pair_saturation(data)
        if emulated is not None:
            return BrowserGraph(emulated, hashlib.sha256(emulated).hexdigest(),
                                U8S8_PAIR_SATURATION)
    return BrowserGraph(data, hashlib.sha256(data).hexdigest(), None)


def _emulate_pair_saturation(data: bytes) -> bytes | None:
    """``data`` with every MatMulInteger of constant int8 weights spelled out as the saturating
    kernel computes it; None when the graph has no such node."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    model = onnx.load_from_string(data)
    graph = model.graph
    initializers = {item.name: item for item in graph.initializer}
    nodes: list[onnx.NodeProto] = []
    extra: list[onnx.TensorProto] = []
    changed = 0

    def const(name: str, values: np.ndarray) -> str:
        extra.append(numpy_helper.from_array(values, name))
        return name

    for node in graph.node:
        weights = initializers.get(node.input[1]) if node.op_type == "MatMulInteger" else None
        if weights is None or weights.data_type != TensorProto.INT8 or len(weights.dims) != 2:
            nodes.append(node)
            continue
        b = numpy_helper.to_array(weights)
        if len(node.input) > 3 and node.input[3]:
            zero = initializers.get(node.input[3])
            if zero is None or numpy_helper.to_array(zero).any():
                raise ConfigError(f"MatMulInteger {node.name}: weights with a non-zero zero "
                                  "point cannot be emulated")
        k, n = b.shape
        if k % 2:
            raise ConfigError(f"MatMulInteger {node.name}: odd inner dimension {k}")
        column_sums = b.astype(np.int32).sum(axis=0, dtype=np.int32)
        p = f"{node.output[0]}__sat"
        out = node.output[0]
        nodes += [
            helper.make_node("Cast", [node.input[0]], [f"{p}_a"], to=TensorProto.INT32),
            helper.make_node("Unsqueeze", [f"{p}_a", const(f"{p}_ax", np.array([-1]))],
                             [f"{p}_a1"]),  # [..., K, 1]
            helper.make_node("Cast", [node.input[1]], [f"{p}_b"], to=TensorProto.INT32),
            helper.make_node("Mul", [f"{p}_a1", f"{p}_b"], [f"{p}_prod"]),  # [..., K, N]
            helper.make_node("Shape", [f"{p}_prod"], [f"{p}_shape"]),
            helper.make_node("Slice", [f"{p}_shape", const(f"{p}_0", np.array([0])),
                                       const(f"{p}_m2", np.array([-2]))], [f"{p}_lead"]),
            helper.make_node("Concat", [f"{p}_lead", const(f"{p}_pairs",
                                                           np.array([k // 2, 2, n]))],
                             [f"{p}_pshape"], axis=0),
            helper.make_node("Reshape", [f"{p}_prod", f"{p}_pshape"], [f"{p}_p"]),
            helper.make_node("ReduceSum", [f"{p}_p", const(f"{p}_axp", np.array([-2]))],
                             [f"{p}_pair"], keepdims=0),  # [..., K/2, N]
            helper.make_node("Clip", [f"{p}_pair",
                                      const(f"{p}_lo", np.array(-32768, dtype=np.int32)),
                                      const(f"{p}_hi", np.array(32767, dtype=np.int32))],
                             [f"{p}_sat"]),
            helper.make_node("ReduceSum", [f"{p}_sat", const(f"{p}_axk", np.array([-2]))],
                             [f"{p}_sum"], keepdims=0),  # [..., N]
            helper.make_node("Cast", [node.input[2]], [f"{p}_zp"], to=TensorProto.INT32),
            helper.make_node("Mul", [f"{p}_zp", const(f"{p}_colsum", column_sums)],
                             [f"{p}_shift"]),
            helper.make_node("Sub", [f"{p}_sum", f"{p}_shift"], [out]),
        ]
        changed += 1
    if not changed:
        return None
    del graph.node[:]
    graph.node.extend(nodes)
    used = {name for node in nodes for name in node.input}
    kept = [item for item in graph.initializer if item.name in used]  # the weights' zero points
    del graph.initializer[:]
    graph.initializer.extend([*kept, *extra])
    return bytes(model.SerializeToString())
