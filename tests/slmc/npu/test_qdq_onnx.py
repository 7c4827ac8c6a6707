import numpy as np

from slmc.npu.integer_kernel import build_reference, run_reference
from slmc.npu.qdq_onnx import OPSET, qdq_model, run_onnxruntime

from npu_helpers import random_layer


def test_qdq_model_structure():
    model = qdq_model([random_layer(0, 4, 32, 8, bias=True)], "regions")
    ops = [node.op_type for node in model.graph.node]
    assert ops.count("DequantizeLinear") == 3 and ops.count("QuantizeLinear") == 1 and "MatMul" in ops and "Add" in ops
    assert model.opset_import[0].version == OPSET
    assert [i.name for i in model.graph.input] == ["x0"] and [o.name for o in model.graph.output] == ["y0"]


def test_onnxruntime_on_the_qdq_export_agrees_with_tvm_within_one_int8_step():
    layers = [random_layer(i, 32, 128, 64, bias=i == 0) for i in range(3)]
    _, executable = build_reference(layers, "half_up")
    tvm_out = run_reference(executable, [layer.codes for layer in layers])
    ort_out = run_onnxruntime(qdq_model(layers, "regions"), [layer.codes for layer in layers])
    for a, b in zip(tvm_out, ort_out):
        diff = np.abs(a.astype(np.int32) - b.astype(np.int32))
        assert b.dtype == np.int8 and diff.max() <= 1
        assert (diff == 0).mean() > 0.99  # measured: 1.0 (no element differs) on these layers
