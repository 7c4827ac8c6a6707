"""The residual add + RMSNorm rewrite (slmc.schedules.residual_norm): kernels per layer, numerics, what it leaves."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import tvm
from tvm import relax

from slmc.schedules.residual_norm import FUSED, PLAIN, ResidualNorm, residual_norm

WIDTH = 576  # SmolLM-135M's hidden size


def _norm(bb: relax.BlockBuilder, x: relax.Expr, weight: relax.Expr, eps: float) -> relax.Var:
    """``w * (x * rsqrt(mean(x^2) + eps))`` as torch.export lowers LlamaRMSNorm."""
    square = bb.emit(relax.op.power(x, relax.const(2.0, "float32")))
    mean = bb.emit(relax.op.mean(square, axis=[-1], keepdims=True))
    scale = bb.emit(relax.op.rsqrt(relax.op.add(mean, relax.const(eps, "float32"))))
    return bb.emit(relax.op.multiply(weight, bb.emit(relax.op.multiply(x, scale))))


def _module(eps: float = 1e-6, early_use: bool = False, axis: int = -1) -> tvm.IRModule:
    """main(a, b, w) = (s = a + b, rmsnorm(s) * w, s * 2 [an extra consumer of the sum]): the norm's sum is
    read on by the next residual add, as in a decoder layer; ``early_use`` reads it before the norm too."""
    tokens = tvm.tirx.Var("t", "int64")
    a, b = (relax.Var(n, relax.TensorType([1, tokens, WIDTH], "float32")) for n in "ab")
    w = relax.Var("w", relax.TensorType([WIDTH], "float32"))
    bb = relax.BlockBuilder()
    with bb.function("main", [a, b, w]):
        with bb.dataflow():
            s = bb.emit(relax.op.add(a, b))
            early = bb.emit(relax.op.negative(s)) if early_use else None
            if axis == -1:
                y = _norm(bb, s, w, eps)
            else:  # a mean over the token axis: no RMSNorm
                square = bb.emit(relax.op.power(s, relax.const(2.0, "float32")))
                mean = bb.emit(relax.op.mean(square, axis=[axis], keepdims=True))
                y = bb.emit(relax.op.multiply(w, relax.op.multiply(s, relax.op.rsqrt(relax.op.add(mean, relax.const(eps, "float32"))))))
            later = bb.emit(relax.op.multiply(s, relax.const(2.0, "float32")))
            out = bb.emit_output(relax.Tuple([y, later] + ([early] if early is not None else [])))
        bb.emit_func_output(out)
    return bb.get()


def _eager(a: np.ndarray, b: np.ndarray, w: np.ndarray, eps: float) -> np.ndarray:
    """transformers' LlamaRMSNorm (float32) of ``a + b``."""
    s = torch.from_numpy(a) + torch.from_numpy(b)
    variance = s.pow(2).mean(-1, keepdim=True)
    return (torch.from_numpy(w) * (s * torch.rsqrt(variance + eps))).numpy()


def _run(mod: tvm.IRModule, target, *arrays: np.ndarray) -> list[np.ndarray]:
    from slmc.backend.lowering import RelaxProgram, build

    vm = relax.VirtualMachine(build(RelaxProgram(mod, [], [], len(arrays)), target), tvm.cpu())
    return [t.numpy() for t in vm["main"](*[tvm.runtime.tensor(x) for x in arrays])]


def _calls(mod: tvm.IRModule) -> int:
    """Kernel launches of ``main`` after slmc's legalization and fusion (no residency)."""
    from slmc.backend.base import fused_kernel_passes

    fused = tvm.transform.Sequential(fused_kernel_passes())(mod)
    return fused["main"].script().count("R.call_tir(")


def test_each_norm_and_its_residual_add_become_one_kernel_of_the_tiny_llama(tiny):
    spec, program = tiny
    layers = len(spec.module.blocks)
    record = ResidualNorm()
    rewritten = residual_norm(record=record)(program.module)
    # every norm but the first layer's input norm follows a residual add; 2 norms per layer + the final one
    assert record.with_add == {"main": 2 * layers} and record.plain == {"main": 1} and record.declined == []
    script = rewritten.script()
    assert "R.power" not in script and "R.rsqrt" not in script
    assert script.count(f"cls.{FUSED}") == 2 * layers and script.count(f"cls.{PLAIN}") == 1
    # before: per norm a square and a mean kernel, per residual add one (6 per layer + 2); after: one per norm
    assert _calls(program.module) - _calls(rewritten) == 4 * layers + 1


@pytest.mark.parametrize("eps, tokens", [(1e-6, 1), (1e-6, 5), (0.5, 3)])
def test_the_fused_kernel_matches_eager_with_its_own_eps(host_target, eps, tokens):
    record = ResidualNorm()
    rewritten = residual_norm(record=record)(_module(eps))
    assert record.with_add == {"main": 1}
    rng = np.random.default_rng(tokens)
    a, b = (rng.standard_normal((1, tokens, WIDTH)).astype("float32") for _ in range(2))
    w = rng.standard_normal(WIDTH).astype("float32")
    y, later = _run(rewritten, host_target, a, b, w)
    # measured: max |error| 2.4e-6 at |y| up to 7.6, relative 4.2e-7 (only the order of the sum of squares differs)
    np.testing.assert_allclose(y, _eager(a, b, w, eps), rtol=2e-6, atol=1e-6)
    np.testing.assert_array_equal(later, (a + b) * 2)  # the extra consumer reads the kernel's exact sum


def test_a_sum_read_before_the_norm_stays_correct(host_target):
    rewritten = residual_norm()(_module(early_use=True))
    rng = np.random.default_rng(0)
    a, b = (rng.standard_normal((1, 2, WIDTH)).astype("float32") for _ in range(2))
    w = rng.standard_normal(WIDTH).astype("float32")
    y, later, early = _run(rewritten, host_target, a, b, w)
    np.testing.assert_allclose(y, _eager(a, b, w, 1e-6), rtol=2e-6, atol=1e-6)
    np.testing.assert_array_equal(later, (a + b) * 2)
    np.testing.assert_array_equal(early, -(a + b))


def test_a_mean_over_another_axis_is_left_with_the_reason():
    original = _module(axis=1)
    record, notes = ResidualNorm(), []
    tvm.ir.assert_structural_equal(residual_norm(notes, record)(original), original)
    assert record.with_add == {} and record.plain == {}
    assert record.declined == ["a mean not over the last axis of a tensor variable (keepdims)"]
    assert notes == ["RMSNorm not fused: a mean not over the last axis of a tensor variable (keepdims)"]
