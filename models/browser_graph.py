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
copy of the graph in which every ``MatMulInteger`` with constant int8 weights (zero point 0,
as ``quantize_dynamic`` makes them) computes the exact product and then the correction that
turns it into the saturating one. The exact product comes from the same weights as uint8
with zero point 128, whose ``U8U8`` kernel widens to int16 first (exact on every CPU and in
WASM). Only the pairs of weights that *can* overflow for some activation need a correction
(:func:`saturating_pairs`: 1.6% of MiniLM's): their pair sums are computed from the gathered
activations, clipped to int16, and the difference is added into their columns. The copy is
about the size of the original (plus the candidate pairs' indexes) and runs at nearly its
speed. On a CPU whose kernel is exact the browser gets the original bytes.

Blocking (onnx parsing, hashing): call from a worker thread.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import numpy as np

from calinode.protocol.errors import ConfigError

__all__ = ["BrowserGraph", "browser_graph", "int8_gemm_saturates", "saturating_pairs"]

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


def saturating_pairs(weights: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The (pair, column) indexes of int8 ``weights`` (K x N) whose pair of products can leave
    int16 for some uint8 activations: ``255 * (b0+ + b1+) > 32767`` or ``255 * (b0- + b1-) <
    -32768``. Only these differ between the saturating kernel and an exact one (1.6% of
    MiniLM's pairs)."""
    b = weights.astype(np.int32)
    pairs = b.shape[0] // 2  # an odd last row has no partner: it cannot overflow alone
    b0, b1 = b[0:2 * pairs:2], b[1:2 * pairs:2]
    high = 255 * (np.maximum(b0, 0) + np.maximum(b1, 0)) > 32767
    low = 255 * (np.minimum(b0, 0) + np.minimum(b1, 0)) < -32768
    rows, columns = np.nonzero(high | low)
    return rows, columns


def _emulate_pair_saturation(data: bytes) -> bytes | None:
    """``data`` with every MatMulInteger of constant int8 weights followed by the correction
    that makes its exact result the saturating kernel's: for the pairs that can overflow
    (:func:`saturating_pairs`), ``clip(p, int16) - p`` of the pair sum ``p``, added into its
    column (``ScatterElements`` with ``reduction="add"``). None when no node needs one."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    model = onnx.load_from_string(data)
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)
    if opset < 16:  # ScatterElements' reduction="add"
        return None
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
        rows, columns = saturating_pairs(b)
        if not len(rows):
            nodes.append(node)
            continue
        out = node.output[0]
        p = f"{out}__sat"
        # the exact product: the same weights as uint8 with zero point 128 take the U8U8
        # kernel, which widens to int16 before multiplying (exact on every CPU, and in WASM)
        shifted = (b.astype(np.int16) + 128).astype(np.uint8)
        exact = helper.make_node(
            "MatMulInteger", [node.input[0], const(f"{p}_wu8", shifted), node.input[2],
                              const(f"{p}_wz", np.full(b.shape[1], 128, dtype=np.uint8))],
            [f"{p}_exact"], name=node.name)
        wide = b.astype(np.int32)
        nodes += [
            exact,
            helper.make_node("Cast", [node.input[0]], [f"{p}_a"], to=TensorProto.INT32),
            helper.make_node("Gather", [f"{p}_a", const(f"{p}_i0", 2 * rows)], [f"{p}_a0"],
                             axis=-1),
            helper.make_node("Gather", [f"{p}_a", const(f"{p}_i1", 2 * rows + 1)],
                             [f"{p}_a1"], axis=-1),
            helper.make_node("Mul", [f"{p}_a0", const(f"{p}_b0", wide[2 * rows, columns])],
                             [f"{p}_m0"]),
            helper.make_node("Mul", [f"{p}_a1", const(f"{p}_b1", wide[2 * rows + 1, columns])],
                             [f"{p}_m1"]),
            helper.make_node("Add", [f"{p}_m0", f"{p}_m1"], [f"{p}_pair"]),  # [..., L]
            helper.make_node("Clip", [f"{p}_pair",
                                      const(f"{p}_lo", np.array(-32768, dtype=np.int32)),
                                      const(f"{p}_hi", np.array(32767, dtype=np.int32))],
                             [f"{p}_clipped"]),
            helper.make_node("Sub", [f"{p}_clipped", f"{p}_pair"], [f"{p}_lost"]),
            helper.make_node("Shape", [f"{p}_lost"], [f"{p}_lshape"]),
            helper.make_node("Expand", [const(f"{p}_cols", columns.astype(np.int64)),
                                        f"{p}_lshape"], [f"{p}_where"]),
            helper.make_node("Shape", [f"{p}_exact"], [f"{p}_yshape"]),
            helper.make_node("ConstantOfShape", [f"{p}_yshape"], [f"{p}_zeros"],
                             value=numpy_helper.from_array(np.array([0], dtype=np.int32))),
            helper.make_node("ScatterElements", [f"{p}_zeros", f"{p}_where", f"{p}_lost"],
                             [f"{p}_fix"], axis=-1, reduction="add"),
            helper.make_node("Add", [f"{p}_exact", f"{p}_fix"], [out]),
        ]
        changed += 1
    if not changed:
        return None
    del graph.node[:]
    graph.node.extend(nodes)
    used = {name for item in nodes for name in item.input}
    kept = [item for item in graph.initializer if item.name in used]  # not the int8 weights
    del graph.initializer[:]
    graph.initializer.extend([*kept, *extra])
    return bytes(model.SerializeToString())
