"""NPU regions as a QDQ ONNX model (the interchange NPU SDKs ingest) and its execution by ONNX Runtime.

Each region ``i`` becomes a disjoint subgraph of one model (opset 13: per-axis DequantizeLinear):

    x_i (int8 [M, K]) -> DequantizeLinear(activation_scale)                      \\
    W_i^T (int8 [K, N] initializer) -> DequantizeLinear(weight_scales, axis=1)   -> MatMul
    (+ DequantizeLinear(int32 bias codes, activation_scale * weight_scales, axis=0) -> Add)
    -> QuantizeLinear(output_scale, zero point int8 0) -> y_i (int8 [M, N])

Inputs and outputs are int8 codes: the float -> int8 quantization of a region's input and the
int8 -> float dequantization of its output happen on the CPU at the region boundary in slmc's
artifact, so the model holds exactly what an NPU executes. ONNX Runtime's QuantizeLinear rounds half
to even and saturates to [-128, 127]; it evaluates the rescale in float (or, after its QDQ fusion,
as QLinearMatMul with a float requantize scale), so results may differ from the fixed-point integer
reference by one int8 step where the exact value lies within float error of a rounding tie.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from slmc.npu.layers import NpuLayer

OPSET = 13


def _region_nodes(i: int, layer: NpuLayer) -> tuple[list[onnx.NodeProto], list[onnx.TensorProto]]:
    p = f"r{i}_"
    inits = [
        numpy_helper.from_array(np.ascontiguousarray(layer.qweight.T), p + "w_q"),
        numpy_helper.from_array(layer.weight_scales.astype(np.float32), p + "w_scale"),
        numpy_helper.from_array(np.zeros(layer.out_features, dtype=np.int8), p + "w_zero"),
        numpy_helper.from_array(np.array(layer.activation_scale, dtype=np.float32), p + "x_scale"),
        numpy_helper.from_array(np.array(0, dtype=np.int8), p + "x_zero"),
        numpy_helper.from_array(np.array(layer.output_scale, dtype=np.float32), p + "y_scale"),
        numpy_helper.from_array(np.array(0, dtype=np.int8), p + "y_zero"),
    ]
    nodes = [
        helper.make_node("DequantizeLinear", [f"x{i}", p + "x_scale", p + "x_zero"], [p + "x"], name=p + "dq_x"),
        helper.make_node("DequantizeLinear", [p + "w_q", p + "w_scale", p + "w_zero"], [p + "w"], axis=1, name=p + "dq_w"),
        helper.make_node("MatMul", [p + "x", p + "w"], [p + "mm"], name=p + "matmul"),
    ]
    total = p + "mm"
    if layer.bias is not None:
        inits += [numpy_helper.from_array(layer.bias_codes, p + "b_q"),
                  numpy_helper.from_array(layer.accumulator_scales.astype(np.float32), p + "b_scale"),
                  numpy_helper.from_array(np.zeros(layer.out_features, dtype=np.int32), p + "b_zero")]
        nodes += [helper.make_node("DequantizeLinear", [p + "b_q", p + "b_scale", p + "b_zero"], [p + "b"], axis=0,
                                   name=p + "dq_b"),
                  helper.make_node("Add", [p + "mm", p + "b"], [p + "sum"], name=p + "add_bias")]
        total = p + "sum"
    nodes.append(helper.make_node("QuantizeLinear", [total, p + "y_scale", p + "y_zero"], [f"y{i}"], name=p + "q_y"))
    return nodes, inits


def qdq_model(layers: Sequence[NpuLayer], name: str) -> onnx.ModelProto:
    """One QDQ ONNX model holding every region (inputs ``x{i}``, outputs ``y{i}``, int8), checked."""
    nodes, inits, inputs, outputs = [], [], [], []
    for i, layer in enumerate(layers):
        region_nodes, region_inits = _region_nodes(i, layer)
        nodes += region_nodes
        inits += region_inits
        inputs.append(helper.make_tensor_value_info(f"x{i}", TensorProto.INT8, ["M", layer.in_features]))
        outputs.append(helper.make_tensor_value_info(f"y{i}", TensorProto.INT8, ["M", layer.out_features]))
    graph = helper.make_graph(nodes, name, inputs, outputs, initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="slmc")
    model.ir_version = 8
    onnx.checker.check_model(model, full_check=True)
    return model


def run_onnxruntime(model: onnx.ModelProto, codes: Sequence[np.ndarray]) -> list[np.ndarray]:
    """Execute the QDQ model with ONNX Runtime's CPU provider (default graph optimizations)."""
    import onnxruntime as ort

    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, {f"x{i}": np.ascontiguousarray(c) for i, c in enumerate(codes)})
