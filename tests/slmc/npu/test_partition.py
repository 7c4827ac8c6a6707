import tvm
from tvm import relax

from slmc.graph.ir import op_name
from slmc.npu.partition import PATTERN, partition


def test_every_w8a8_linear_becomes_an_npu_region(w8a8_lm):
    graph, module, _ = w8a8_lm
    merged, regions = partition(module)
    w8a8 = [n for n in graph.op_nodes() if op_name(n) == "w8a8_linear"]
    assert len(w8a8) == 12 and len(regions) == len(w8a8)  # tiny-lm: 2 blocks x 6 linears; lm_head excluded
    assert all(r.composites == [PATTERN] and len(r.weights) == 1 and r.weights[0].endswith("qweight") for r in regions)
    codegen = [f for f in merged.functions.values() if isinstance(f, relax.Function) and f.attrs and "Codegen" in f.attrs]
    assert codegen and all(str(f.attrs["Codegen"]) == "npu" for f in codegen)


def test_float_kernels_are_not_matched():
    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType([4, 8], "float32"))
    with bb.function("main", [x]):
        with bb.dataflow():
            y = bb.emit(relax.op.matmul(x, relax.const(tvm.runtime.tensor(__import__("numpy").ones((8, 8), "float32")))))
            out = bb.emit_output(y)
        bb.emit_func_output(out)
    _, regions = partition(relax.transform.LegalizeOps()(bb.get()))
    assert regions == []
