"""planned_kills (slmc.schedules.planned_kills): no kill_object where the memory is planned and small."""

from __future__ import annotations

import numpy as np
import pytest
import tvm
from tvm import relax

import slmc.schedules.planned_kills as planned_kills_module
from slmc.schedules.planned_kills import planned_kills


def _module() -> tvm.IRModule:
    """``step``: static shapes (every storage planned, constant size), a chain of kernels and views, like a
    decode step; ``prefill``: the same over ``n`` rows (a symbolic-size storage: its kills stay)."""
    from tvm.script import ir as I, relax as R, tirx as T

    @I.ir_module
    class Module:
        @R.function
        def step(x: R.Tensor((1, 8), "float32"), w: R.Tensor((8,), "float32")) -> R.Tensor((1, 1, 8), "float32"):
            with R.dataflow():
                a = R.multiply(x, w)
                b = R.reshape(a, R.shape([1, 1, 8]))
                c = R.add(b, b)
                d = R.reshape(c, R.shape([1, 8]))
                e = R.multiply(d, w)
                out = R.reshape(e, R.shape([1, 1, 8]))
                R.output(out)
            return out

        @R.function
        def prefill(x: R.Tensor(("n", 8), "float32"), w: R.Tensor((8,), "float32")) -> R.Tensor(("n", 8), "float32"):
            n = T.int64()
            with R.dataflow():
                a = R.multiply(x, w)
                c = R.add(a, a)
                out = R.multiply(c, w)
                R.output(out)
            return out

    return Module


def _lowered(with_pass: bool) -> tvm.IRModule:
    """The module as TVM's CPU pipeline hands it to VM codegen, with or without ``planned_kills`` last."""
    from tvm.relax.backend.cpu_generic import pipeline

    target = tvm.target.Target({"kind": "llvm"})
    passes = [relax.transform.LegalizeOps(), *pipeline.dataflow_lower_passes(target), *pipeline.finalize_passes(target)]
    with target:
        return tvm.transform.Sequential(passes + ([planned_kills] if with_pass else []))(_module())


def _kills(func: relax.Function) -> int:
    return func.script().count("R.vm.kill_object(")


def test_a_planned_function_loses_its_kills_and_a_symbolic_one_keeps_them():
    before, after = _lowered(False), _lowered(True)
    assert _kills(before["step"]) > 0 and _kills(after["step"]) == 0
    assert _kills(after["prefill"]) == _kills(before["prefill"]) > 0
    # nothing else changed: the same allocations, views and kernels
    for op in ("R.vm.alloc_storage(", "R.vm.alloc_tensor(", "vm.builtin.reshape"):
        assert after["step"].script().count(op) == before["step"].script().count(op)


def test_more_planned_memory_than_the_bound_keeps_the_kills(monkeypatch):
    monkeypatch.setattr(planned_kills_module, "MAX_HELD_BYTES", 16)  # step plans 32-byte storages
    assert _kills(_lowered(True)["step"]) == _kills(_lowered(False)["step"]) > 0


@pytest.mark.parametrize("exec_mode", ["bytecode", "compiled"])
def test_without_kills_the_results_are_bit_exact_and_calls_do_not_share_memory(exec_mode):
    """Both VM modes; exact equality with the kills' build (tolerance 0: measured max abs difference 0.0), and
    the first call's result survives the second (the returned storage is the call's own)."""
    from tvm.relax.backend.cpu_generic import pipeline

    target = tvm.target.Target({"kind": "llvm"})
    rng = np.random.default_rng(0)
    x, w = rng.standard_normal((1, 8), dtype=np.float32), rng.standard_normal(8, dtype=np.float32)
    results = []
    for with_pass in (False, True):
        passes = [*pipeline.dataflow_lower_passes(target), *pipeline.finalize_passes(target)]
        passes += [planned_kills] if with_pass else []
        module = relax.transform.LegalizeOps()(_module())
        executable = relax.build(module, target=target, exec_mode=exec_mode,
                                 relax_pipeline=tvm.transform.Sequential(passes))
        vm = relax.VirtualMachine(executable, tvm.cpu())
        first = vm["step"](tvm.runtime.tensor(x), tvm.runtime.tensor(w))
        second = vm["step"](tvm.runtime.tensor(2 * x), tvm.runtime.tensor(w))
        results.append((first.numpy(), second.numpy()))
    expected = (x * w * 2 * w).reshape(1, 1, 8)
    np.testing.assert_array_equal(results[1][0], results[0][0])
    np.testing.assert_array_equal(results[1][1], results[0][1])
    np.testing.assert_allclose(results[1][0], expected, rtol=1e-6)
    np.testing.assert_allclose(results[1][1], 2 * expected, rtol=1e-6)
