"""slmc.schedules.gpu: every GPU kernel gets thread bindings; a rule's own failure falls through."""

import pytest
import tvm
from tvm import relax, tirx
from tvm.script import tirx as T

from slmc.schedules.gpu import schedule_gpu_kernels
from slmc.backend.relax_pipeline import PipelineRecord, build_pipeline
from slmc.spec.target import load_target

MALI = load_target("mali-g710")


def _sum_of_full_module() -> tvm.IRModule:
    """``sum(full([n], 1)) + sum(x)`` for ``x: [n]``: the reduction of a fill (the fixture LM counts its
    sequence length this way), on which TVM 0.27's dlight Reduction rule asserts."""
    n = tirx.Var("n", "int64")
    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType((n,), "int64"))
    with bb.function("main", [x]):
        with bb.dataflow():
            full = bb.emit(relax.op.full(relax.ShapeExpr([n]), relax.const(1, "int64"), "int64"))
            out = bb.emit_output(relax.op.add(relax.op.sum(full), relax.op.sum(x)))
        bb.emit_func_output(out)
    return bb.get()


def _thread_bound(func: tirx.PrimFunc) -> bool:
    return "threadIdx" in func.script()


def test_every_kernel_gets_thread_bindings_and_rule_failures_are_noted():
    record = PipelineRecord()
    target = MALI.tvm_target()
    tvm.compile(_sum_of_full_module(), target=target, relax_pipeline=build_pipeline(MALI, target, record))
    kernels = {gv.name_hint: f for gv, f in record.module.functions.items() if isinstance(f, tirx.PrimFunc)}
    device_kernels = {n: f for n, f in kernels.items() if "shape_func" not in n}
    assert device_kernels and all(_thread_bound(f) for f in device_kernels.values()), list(device_kernels)
    assert any("dlight.gpu.Reduction failed on kernel" in note and "next rule was tried" in note for note in record.notes), record.notes


@T.prim_func
def _blockless(a: T.Buffer((16,), "float32"), b: T.Buffer((16,), "float32")):
    T.func_attr({"global_symbol": "blockless"})
    for i in range(16):
        b[i] = a[i] * T.float32(2)


def test_a_kernel_no_rule_schedules_is_an_error_naming_it():
    mod = tvm.IRModule({"blockless": _blockless})
    notes: list[str] = []
    with MALI.tvm_target(), pytest.raises(RuntimeError, match="kernel 'blockless' has no thread bindings"):
        schedule_gpu_kernels(notes)(mod)
