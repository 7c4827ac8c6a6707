"""returned_view (slmc.schedules.returned_view): a function's returned reshape copy becomes a view."""

from __future__ import annotations

import numpy as np
import tvm
import tvm_ffi
from tvm import relax

from slmc.schedules.returned_view import returned_view


def _module() -> tvm.IRModule:
    """``head`` returns a reshape of a kernel's fresh result (rewritten); ``param`` returns a reshape of its
    parameter (kept: a view would alias the caller's tensor); ``both`` returns the result and its reshape (kept:
    two outputs would share memory). All as LegalizeOps leaves them."""
    from tvm.script import ir as I, relax as R, tirx as T

    @I.ir_module
    class Module:
        @T.prim_func(private=True, s_tir=True)
        def double(x: T.Buffer((T.int64(1), T.int64(8)), "float32"), y: T.Buffer((T.int64(1), T.int64(8)), "float32")):
            for i, j in T.grid(T.int64(1), T.int64(8)):
                with T.sblock("y"):
                    vi, vj = T.axis.remap("SS", [i, j])
                    y[vi, vj] = x[vi, vj] * T.float32(2)

        @T.prim_func(private=True, s_tir=True)
        def reshape(x: T.Buffer((T.int64(1), T.int64(8)), "float32"),
                    y: T.Buffer((T.int64(1), T.int64(1), T.int64(8)), "float32")):
            for i, j, k in T.grid(T.int64(1), T.int64(1), T.int64(8)):
                with T.sblock("r"):
                    vi, vj, vk = T.axis.remap("SSS", [i, j, k])
                    y[vi, vj, vk] = x[T.int64(0), vk]

        @R.function
        def head(x: R.Tensor((1, 8), "float32")) -> R.Tensor((1, 1, 8), "float32"):
            cls = Module
            with R.dataflow():
                h = R.call_tir(cls.double, (x,), out_ty=R.Tensor((1, 8), "float32"))
                out = R.call_tir(cls.reshape, (h,), out_ty=R.Tensor((1, 1, 8), "float32"))
                R.output(out)
            return out

        @R.function
        def both(x: R.Tensor((1, 8), "float32")):
            cls = Module
            with R.dataflow():
                h = R.call_tir(cls.double, (x,), out_ty=R.Tensor((1, 8), "float32"))
                out = R.call_tir(cls.reshape, (h,), out_ty=R.Tensor((1, 1, 8), "float32"))
                R.output(h, out)
            return (h, out)

        @R.function
        def param(x: R.Tensor((1, 8), "float32")) -> R.Tensor((1, 1, 8), "float32"):
            cls = Module
            with R.dataflow():
                out = R.call_tir(cls.reshape, (x,), out_ty=R.Tensor((1, 1, 8), "float32"))
                R.output(out)
            return out

    return Module


def test_a_returned_reshape_of_a_kernel_result_becomes_a_view_and_a_parameters_stays_a_copy():
    out = returned_view(_module())
    head, param, both = out["head"].script(), out["param"].script(), out["both"].script()
    assert "call_tir(reshape" not in head and "R.reshape(h, R.shape([1, 1, 8]))" in head
    assert "call_tir(reshape, (x,)" in param
    assert "call_tir(reshape, (h,)" in both


def test_the_view_is_exact_and_two_calls_do_not_share_memory():
    """Through TVM's dataflow lowering and memory planning: ``head`` runs one kernel (the copy gone from the
    VM code), its results equal numpy exactly, and the first result survives the second call (its storage
    is the call's own, not a planned buffer reused by the next call)."""
    from tvm.relax.backend.cpu_generic import pipeline

    target = tvm.target.Target({"kind": "llvm"})
    passes = tvm.transform.Sequential([returned_view, *pipeline.dataflow_lower_passes(target),
                                       *pipeline.finalize_passes(target)])
    vm = relax.VirtualMachine(relax.build(_module(), target=target, relax_pipeline=passes), tvm.cpu())
    kernels = []
    vm.set_instrument(tvm_ffi.convert(lambda _f, symbol, before, *_: kernels.append(str(symbol))
                                      if before and not str(symbol).startswith("vm.") else None))
    a, b = np.arange(8, dtype=np.float32).reshape(1, 8), np.ones((1, 8), np.float32)
    first = vm["head"](tvm.runtime.tensor(a))
    second = vm["head"](tvm.runtime.tensor(b))
    assert kernels == ["double", "double"]
    np.testing.assert_array_equal(first.numpy(), (2 * a).reshape(1, 1, 8))  # exact: max abs difference 0.0
    np.testing.assert_array_equal(second.numpy(), (2 * b).reshape(1, 1, 8))
