"""Int8Matmul: w8a8 linears on tiled weights through the int8 dot-product instructions (slmc.schedules.int8_matmul).

Bit-exactness: with activation scale 1, weight scales 1, no bias and integer inputs in [-127, 127],
the kernel's output is its int32 sum converted to float32, exact below 2^24 (here |sum| <= 64 * 127^2).
"""

from __future__ import annotations

import numpy as np
import pytest
import tvm
from schedule_helpers import AVX512_2CORES
from tvm import te
from tvm.target.codegen import target_has_features

from slmc.quantization.tvm_kernels import KERNEL_ATTR, w8a8_linear_te
from slmc.schedules.int8_dot_intrinsics import INTRINSICS, LLVM_FEATURES, tile_choice
from slmc.schedules.int8_matmul import Int8Matmul, tiles_per_chunk
from slmc.spec.target import load_target

K, N = 64, 48
HOST_FEATURES = load_target("host").compute.int8_dot
# Listed by the descriptor (the CPU's flags) and enabled by LLVM for the host's mcpu: a virtual CPU can report
# avx_vnni in /proc/cpuinfo while LLVM's CPU model for it (e.g. rocketlake) lacks it; the rule then falls back.
X86_DOT = [f for f in ("avx512_vnni", "avx_vnni") if f in HOST_FEATURES
           and target_has_features(LLVM_FEATURES[f], load_target("host").tvm_target())]


def tiled(weight: np.ndarray) -> np.ndarray:
    """``[N, K]`` -> ``[N/16, K/4, 16, 4]``, what prepack stores for the converter's reshape/permute_dims."""
    n, k = weight.shape
    return np.ascontiguousarray(weight.reshape(n // 16, 16, k // 4, 4).transpose(0, 2, 1, 3))


def w8a8_kernel(k: int = K, n: int = N, tile: bool = True, extras: bool = False, scale: float = 1.0) -> tvm.tirx.PrimFunc:
    x = te.placeholder((tvm.tirx.Var("m", "int64"), k), "float32", "x")
    q = te.placeholder((n // 16, k // 4, 16, 4) if tile else (n, k), "int8", "q")
    s = te.placeholder((n,), "float32", "s")
    b = te.placeholder((n,), "float32", "b") if extras else None
    a = te.placeholder((k,), "float32", "a") if extras else None
    out = w8a8_linear_te(x, q, s, b, a, scale)
    return te.create_prim_func([t for t in (x, q, s, b, a, out) if t is not None]).with_attr(KERNEL_ATTR, "w8a8_linear")


def schedule(func, features, target) -> tuple[Int8Matmul, tvm.tirx.PrimFunc | None]:
    rule = Int8Matmul(AVX512_2CORES, features)
    sch = rule.apply(func, target, False)
    return rule, None if sch is None else sch.mod["main"]


def x86_asm(func, target) -> str:
    return tvm.compile(tvm.IRModule({"main": func}), target=target).mod.inspect_source("asm")


def int_inputs(rows: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.integers(-127, 128, (rows, K)).astype(np.float32)
    w = rng.integers(-127, 128, (N, K)).astype(np.int8)
    x[0, :4], w[:4, :4] = 127, -127  # the extremes: 0x81 flipped to 0x01 meets code 127
    return x, w


def run_exact(func, target, rows: int) -> None:
    x, w = int_inputs(rows, rows)
    lib = tvm.compile(tvm.IRModule({"main": func}), target=target)
    out = tvm.runtime.tensor(np.zeros((rows, N), np.float32))
    lib["main"](tvm.runtime.tensor(x), tvm.runtime.tensor(tiled(w)), tvm.runtime.tensor(np.ones(N, np.float32)), out)
    want = x.astype(np.int64) @ w.astype(np.int64).T  # numpy int64: the exact integer sums
    np.testing.assert_array_equal(out.numpy(), want.astype(np.float32))


@pytest.mark.parametrize("feature", X86_DOT)
def test_x86_dot_tiles_use_vpdpbusd_and_are_bit_exact(feature, host_target):
    target = host_target.tvm_target()
    rule, func = schedule(w8a8_kernel(), [feature], target)
    assert rule.applied == ["Int8Matmul"] and rule.intrinsic == INTRINSICS[feature]
    text = func.script()
    assert "llvm.x86.avx512.vpdpbusd" in text and "T.parallel(" in text
    asm = x86_asm(func, target)
    assert "vpdpbusd" in asm and (feature != "avx_vnni" or "ymm" in asm)
    for rows in (1, 3, 128):
        run_exact(func, target, rows)


def test_target_without_int8_dot_gets_the_plain_vectorized_schedule(host_target):
    target = host_target.tvm_target()
    rule, func = schedule(w8a8_kernel(), [], target)
    assert rule.applied == ["Int8Matmul"] and rule.intrinsic is None
    text = func.script()
    assert "vpdpbusd" not in text and "T.vectorized(16)" in text and "T.unroll(4)" in text
    assert "vpdpbusd" not in x86_asm(func, target)
    for rows in (1, 3, 128):
        run_exact(func, target, rows)


def test_bias_input_scale_and_rescale_match_numpy(host_target):
    target = host_target.tvm_target()
    _, func = schedule(w8a8_kernel(extras=True, scale=0.05), X86_DOT[:1], target)
    rng = np.random.default_rng(3)
    x = rng.standard_normal((5, K)).astype(np.float32) * 3
    w = rng.integers(-127, 128, (N, K)).astype(np.int8)
    s, b = (rng.random(N) * 0.01).astype(np.float32), rng.standard_normal(N).astype(np.float32)
    a = (rng.random(K) + 0.5).astype(np.float32)
    lib = tvm.compile(tvm.IRModule({"main": func}), target=target)
    out = tvm.runtime.tensor(np.zeros((5, N), np.float32))
    lib["main"](*[tvm.runtime.tensor(v) for v in (x, tiled(w), s, b, a)], out)
    codes = np.clip(np.rint(x * a * np.float32(1 / 0.05)), -127, 127).astype(np.int64)
    want = (codes @ w.astype(np.int64).T).astype(np.float32) * (np.float32(0.05) * s) + b
    np.testing.assert_allclose(out.numpy(), want, rtol=1e-6, atol=1e-6)


def test_arm_dotprod_tiles_compile_to_sdot(host_target):
    """Cross-compiled for the Cortex-A76 descriptor (its ``int8_dot`` lists dotprod); run in test_int8_matmul_arm."""
    arm = load_target("arm-cortex-a76")
    assert arm.compute.int8_dot == ["dotprod"]
    rule, func = schedule(w8a8_kernel(), arm.compute.int8_dot, arm.tvm_target())
    assert rule.intrinsic == INTRINSICS["dotprod"]
    asm = tvm.compile(tvm.IRModule({"main": func}), target=arm.tvm_target()).mod.inspect_source("asm")
    assert "sdot\tv" in asm


def test_declines_untiled_weights_and_other_kernels(host_target):
    target = host_target.tvm_target()
    assert schedule(w8a8_kernel(tile=False), X86_DOT, target)[1] is None  # [N, K]: 16 does not divide N, say
    assert schedule(w8a8_kernel().with_attr(KERNEL_ATTR, "quantized_linear"), X86_DOT, target)[1] is None
    assert schedule(w8a8_kernel().without_attr(KERNEL_ATTR), X86_DOT, target)[1] is None


def test_intrinsic_choice_follows_the_descriptor_and_the_llvm_target():
    zen5 = tvm.target.Target({"kind": "llvm", "mcpu": "znver5"})
    assert tile_choice(["avx_vnni", "avx512_vnni"], zen5).feature == "avx512_vnni"  # the widest first
    assert tile_choice(["avx_vnni"], zen5).intrinsic == INTRINSICS["avx_vnni"]
    assert tile_choice([], zen5).intrinsic is None and tile_choice(["i8mm"], zen5).intrinsic is None
    alderlake = tvm.target.Target({"kind": "llvm", "mcpu": "alderlake"})  # AVX-VNNI, no AVX-512
    choice = tile_choice(["avx512_vnni", "avx_vnni"], alderlake)
    assert choice.feature == "avx_vnni" and choice.missing == "avx512_vnni"
    a76 = load_target("arm-cortex-a76").tvm_target()
    assert tile_choice(["i8mm", "dotprod"], a76).feature == "dotprod"  # no i8mm tile: dotprod serves


def test_descriptor_feature_the_llvm_target_lacks_is_reported_not_used():
    generic = tvm.target.Target({"kind": "llvm", "mcpu": "x86-64"})  # LLVM would abort on vpdpbusd
    rule, func = schedule(w8a8_kernel(), ["avx512_vnni"], generic)
    assert rule.intrinsic is None and "vpdpbusd" not in func.script()
    assert any("lists int8_dot avx512_vnni but the LLVM target" in note for note in rule.notes)
    assert "vpdpbusd" not in x86_asm(func, generic)


def test_chunking():
    assert tiles_per_chunk(96, 2, 8) == 6 and tiles_per_chunk(12, 2, 8) == 6 and tiles_per_chunk(12, 8, 8) == 1
    assert tiles_per_chunk(96, 2, 2) == 2 and tiles_per_chunk(5, 2, 0) == 1
    assert tiles_per_chunk(3, 2, 8) == 1 and tiles_per_chunk(3, 1, 8) == 3  # a chunk for every core first
