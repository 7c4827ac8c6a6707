"""Int4Int8Matmul: w4a8 linears (packed int4 weights x per-token or per-block int8 activations) on the int8
dot-product tiles (slmc.schedules.int4_int8_matmul).

Bit-exactness: with every row's (every activation block's) max |x| equal to 127 (its scale is then 127 / 127 = 1
and its codes are x),
weight scales 1 and integer inputs, the kernel's output is the sum over groups of exact int32 group sums,
each below 2^24 in float32 (|sum| <= 64 * 127 * 7), so the output equals numpy's int64 sum exactly.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import tvm
from schedule_helpers import AVX512_2CORES, workspace_allocation_bytes
from test_int8_matmul_rule import X86_DOT, x86_asm
from tvm import te

from slmc.quantization.tvm_kernels import KERNEL_ATTR
from slmc.quantization.w4a8_kernel import w4a8_linear_te
from slmc.quantization.w4a8_layout import pack_paired
from slmc.schedules.int4_int8_matmul import Int4Int8Matmul
from slmc.schedules.int8_dot_intrinsics import INTRINSICS, NONNEGATIVE_INTRINSICS
from slmc.spec.target import load_target

K, N, GROUP = 64, 48, 32


def w4a8_kernel(tile: bool = True, bias: bool = False, block: int | None = None) -> tvm.tirx.PrimFunc:
    x = te.placeholder((tvm.tirx.Var("m", "int64"), K), "float32", "x")
    q = te.placeholder((N // 16, K // 8, 16, 4) if tile else (N, K // 2), "uint8", "q")
    s = te.placeholder((K // GROUP, N), "float16", "s")
    b = te.placeholder((N,), "float32", "b") if bias else None
    out = w4a8_linear_te(x, q, s, b, GROUP, 2 if tile else 1, block)
    return te.create_prim_func([t for t in (x, q, s, b, out) if t is not None]).with_attr(KERNEL_ATTR, "w4a8_linear")


def schedule(func, features, target) -> tuple[Int4Int8Matmul, tvm.tirx.PrimFunc | None]:
    rule = Int4Int8Matmul(AVX512_2CORES, features)
    sch = rule.apply(func, target, False)
    return rule, None if sch is None else sch.mod["main"]


def tiled_packed(codes: np.ndarray) -> np.ndarray:
    """Unsigned codes ``[N, K]`` -> paired ``[N/16, K/8, 16, 4]`` bytes, what prepack stores for the converter's relayout."""
    packed = pack_paired(torch.from_numpy(codes)).numpy()
    return np.ascontiguousarray(packed.reshape(N // 16, 16, K // 8, 4).transpose(0, 2, 1, 3))


def run_exact(func, target, rows: int) -> None:
    rng = np.random.default_rng(rows)
    x = rng.integers(-127, 128, (rows, K)).astype(np.float32)
    x[:, 5] = x[:, GROUP + 5] = 127  # every row's (and block of GROUP's) max |x| is 127: codes = x
    codes = rng.integers(1, 16, (N, K)).astype(np.uint8)
    codes[:4, :4] = 1  # the extreme -7 meets 127
    lib = tvm.compile(tvm.IRModule({"main": func}), target=target)
    out = tvm.runtime.tensor(np.zeros((rows, N), np.float32))
    lib["main"](tvm.runtime.tensor(x), tvm.runtime.tensor(tiled_packed(codes)),
                tvm.runtime.tensor(np.ones((K // GROUP, N), np.float16)), out)
    want = x.astype(np.int64) @ (codes.astype(np.int64) - 8).T
    np.testing.assert_array_equal(out.numpy(), want.astype(np.float32))


@pytest.mark.parametrize("feature", X86_DOT)
def test_x86_dot_tiles_use_vpdpbusd_and_are_bit_exact(feature, host_target):
    target = host_target.tvm_target()
    rule, func = schedule(w4a8_kernel(), [feature], target)
    assert rule.applied == ["Int4Int8Matmul"] and rule.intrinsic == NONNEGATIVE_INTRINSICS[feature]
    text = func.script()
    assert "llvm.x86.avx512.vpdpbusd" in text and "T.parallel(" in text
    assert "vpdpbusd" in x86_asm(func, target)
    for rows in (1, 3, 128):
        run_exact(func, target, rows)


@pytest.mark.parametrize("feature", X86_DOT)
def test_the_dot_tile_allocates_no_runtime_workspace(feature, host_target):
    """The tile's broadcast activation codes are an expression (``T.meta_var``), not a variable: TVM 0.27 made
    the variable a 64-byte "local" buffer, one ``TVMBackendAllocWorkspace`` per chunk of every w4a8 GEMV (770
    per call of SmolLM's head; 8 -> 5 sites here). What is left are the per-call stages whose size depends on the
    row count (a one-row call of SmolLM's shapes: the 2 serial activation stages, 1,152 bytes and more)."""
    target = host_target.tvm_target()
    sizes = workspace_allocation_bytes(schedule(w4a8_kernel(), [feature], target)[1], target)
    assert len(sizes) == 5 and all(size is None for size in sizes)  # was also three 64-byte "codes"


def test_activation_blocks_of_the_group_size_stay_scheduled_and_bit_exact(host_target):
    """activation_group_size = GROUP (llama.cpp's Q8_0 granularity): each group's int32 sum gets its block's scale."""
    target = host_target.tvm_target()
    rule, func = schedule(w4a8_kernel(block=GROUP), X86_DOT[:1], target)
    assert rule.applied == ["Int4Int8Matmul"] and "T.parallel(" in func.script()
    for rows in (1, 3, 128):
        run_exact(func, target, rows)


def test_target_without_int8_dot_gets_int32_vectors(host_target):
    target = host_target.tvm_target()
    rule, func = schedule(w4a8_kernel(), [], target)
    assert rule.applied == ["Int4Int8Matmul"] and rule.intrinsic is None
    assert "vpdpbusd" not in func.script() and "vpdpbusd" not in x86_asm(func, target)
    for rows in (1, 3):
        run_exact(func, target, rows)


def test_arm_dotprod_tiles_compile_to_sdot():
    arm = load_target("arm-cortex-a76")
    rule, func = schedule(w4a8_kernel(), arm.compute.int8_dot, arm.tvm_target())
    assert rule.intrinsic == INTRINSICS["dotprod"]
    asm = tvm.compile(tvm.IRModule({"main": func}), target=arm.tvm_target()).mod.inspect_source("asm")
    assert "sdot\tv" in asm


def test_declines_untiled_weights_and_other_kernels(host_target):
    target = host_target.tvm_target()
    assert schedule(w4a8_kernel(tile=False), X86_DOT, target)[1] is None
    assert schedule(w4a8_kernel().with_attr(KERNEL_ATTR, "w8a8_linear"), X86_DOT, target)[1] is None
