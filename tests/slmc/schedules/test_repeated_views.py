"""repeated_views (slmc.schedules.repeated_views): one view per repeated reshape of the same tensor."""

from __future__ import annotations

import numpy as np
import tvm
from tvm import relax

from slmc.schedules.repeated_views import repeated_views


def _module() -> tvm.IRModule:
    """``step`` reshapes its table ``t`` to the same shape twice (like each layer's rotary tables) and once to
    another shape (kept); the block's output is a reshape too (kept: only dataflow variables are replaced)."""
    from tvm.script import ir as I, relax as R

    @I.ir_module
    class Module:
        @R.function
        def step(x: R.Tensor((1, 1, 1, 8), "float32"), t: R.Tensor((1, 1, 8), "float32")) -> R.Tensor((1, 8), "float32"):
            with R.dataflow():
                a = R.reshape(t, R.shape([1, 1, 1, 8]))
                b = R.multiply(x, a)
                c = R.reshape(t, R.shape([1, 1, 1, 8]))
                d = R.add(b, c)
                e = R.reshape(t, R.shape([1, 8]))
                f = R.reshape(d, R.shape([1, 8]))
                out = R.add(f, e)
                R.output(out)
            return out

    return Module


def test_the_second_same_reshape_is_the_first_and_other_shapes_stay():
    out = repeated_views(_module())["step"].script()
    assert out.count("R.reshape(t, R.shape([1, 1, 1, 8]))") == 1
    assert "R.add(b, a)" in out
    assert out.count("R.reshape(t, R.shape([1, 8]))") == 1


def test_the_rewritten_step_is_bit_exact():
    """Through TVM's CPU lowering (legalized first), the same numbers as without the pass (tolerance 0: measured
    max abs difference 0.0)."""
    from tvm.relax.backend.cpu_generic import pipeline

    target = tvm.target.Target({"kind": "llvm"})
    rng = np.random.default_rng(0)
    x, t = rng.standard_normal((1, 1, 1, 8), dtype=np.float32), rng.standard_normal((1, 1, 8), dtype=np.float32)
    results = []
    for extra in ([], [repeated_views]):
        passes = [relax.transform.LegalizeOps(), *extra, *pipeline.dataflow_lower_passes(target),
                  *pipeline.finalize_passes(target)]
        executable = relax.build(_module(), target=target, relax_pipeline=tvm.transform.Sequential(passes))
        results.append(relax.VirtualMachine(executable, tvm.cpu())["step"](tvm.runtime.tensor(x), tvm.runtime.tensor(t)).numpy())
    np.testing.assert_array_equal(results[1], results[0])
    np.testing.assert_allclose(results[0], (x.reshape(1, 8) * t.reshape(1, 8)) + 2 * t.reshape(1, 8), rtol=1e-6)
