"""Helpers for schedule-rule tests: build TE kernels, inspect scheduled PrimFuncs, run them."""

from __future__ import annotations

import re

import numpy as np
import tvm
from tvm import te, tirx

from slmc.quantization.tvm_kernels import KERNEL_ATTR, quantized_linear_te, word_layout
from slmc.schedules.row_matmul import CpuParams

AVX512_2CORES = CpuParams(vector_bits=512, cores=2)


def rows_var() -> tirx.Var:
    return tirx.Var("m", "int64")


def dense_kernel(k: int, n: int, weight_k_by_n: bool = True) -> tirx.PrimFunc:
    """``x[M, K] @ W`` with ``W`` stored ``[K, N]`` (or ``[N, K]`` when not ``weight_k_by_n``)."""
    x = te.placeholder((rows_var(), k), "float32", "x")
    w = te.placeholder((k, n) if weight_k_by_n else (n, k), "float32", "w")
    r = te.reduce_axis((0, k), "k")
    out = te.compute((x.shape[0], n), lambda i, j: te.sum(x[i, r] * (w[r, j] if weight_k_by_n else w[j, r]), axis=r),
                     name="matmul")
    return te.create_prim_func([x, w, out])


def quantized_kernel(k: int, n: int, bits: int = 4, group: int = 32, zeros: bool = False, bias: bool = False,
                     input_scale: bool = False, tile: int | None = None) -> tirx.PrimFunc:
    """slmc's quantized linear kernel on prepacked ``[K', N]`` codes (or ``[N/tile, K', tile]`` tiles),
    marked with ``slmc.kernel``."""
    def table(rows: int, dtype: str, name: str) -> te.Tensor:
        return te.placeholder((rows, n) if tile is None else (n // tile, rows, tile), dtype, name)

    x = te.placeholder((rows_var(), k), "float32", "x")
    words = tile is not None and word_layout(k, bits, group)  # int4 tiles: uint32 words of 8 nibbles
    q = table(k // 8, "uint32", "q") if words else table(k * bits // 8, "uint8", "q")
    s = table(k // group, "float16", "s")
    z = table(k // group, "uint8", "z") if zeros else None
    b = te.placeholder((n,), "float32", "b") if bias else None
    a = te.placeholder((k,), "float32", "a") if input_scale else None
    out = quantized_linear_te(x, q, s, z, b, a, bits, group)
    args = [t for t in (x, q, s, z, b, a) if t is not None] + [out]
    return te.create_prim_func(args).with_attr(KERNEL_ATTR, "quantized_linear")


def word_codes(codes: np.ndarray) -> np.ndarray:
    """int4 codes ``[K/2, N]`` (bytes) -> ``[K/8, N]`` little-endian uint32 words, what the converter's
    ``memory.view`` reads (slmc.quantization.tvm_kernels._code_layout)."""
    return np.ascontiguousarray(np.ascontiguousarray(codes.T).view("<u4").astype(np.uint32).T)


def run(func: tirx.PrimFunc, target, *arrays: np.ndarray, out_shape: tuple) -> np.ndarray:
    lib = tvm.compile(tvm.IRModule({"main": func}), target=target)
    out = tvm.runtime.tensor(np.zeros(out_shape, "float32"))
    lib["main"](*[tvm.runtime.tensor(a) for a in arrays], out)
    return out.numpy()


def dequantize(codes: np.ndarray, scales: np.ndarray, zeros: np.ndarray | None, bits: int, group: int) -> np.ndarray:
    """float ``[K, N]`` weights from prepacked codes (int4: low nibble first), the reference."""
    if bits == 4:
        unpacked = np.empty((codes.shape[0] * 2, codes.shape[1]), np.float32)
        unpacked[0::2], unpacked[1::2] = codes & 15, codes >> 4
    else:
        unpacked = codes.astype(np.float32)
    zero = np.repeat(zeros.astype(np.float32), group, 0) if zeros is not None else 2.0 ** (bits - 1)
    return (unpacked - zero) * np.repeat(scales.astype(np.float32), group, 0)


def _llvm_ir(func: tirx.PrimFunc, target) -> str:
    library = tvm.compile(tvm.IRModule({"main": func.with_attr("global_symbol", "main")}), target=target)
    return library.mod.inspect_source("ll")


def workspace_allocation_sites(func: tirx.PrimFunc, target) -> int:
    """How many ``TVMBackendAllocWorkspace`` calls the compiled kernel's code makes (sites in its LLVM IR, each
    one load of the runtime's function pointer): a ``"local"`` buffer lowers to one per entry of its loop
    (TVM 0.27's LowerTVMBuiltin), a ``STACK_SCOPE`` one under 1 KB to none."""
    return sum(1 for line in _llvm_ir(func, target).splitlines() if "load ptr, ptr @__TVMBackendAllocWorkspace" in line)


def workspace_allocation_bytes(func: tirx.PrimFunc, target) -> list[int | None]:
    """The size argument of each ``TVMBackendAllocWorkspace`` call site in the kernel's LLVM IR (``None``: a
    size computed at run time)."""
    sizes = re.findall(r"call ptr %[\w.]+\(i32 1, i32 %dev_id, i64 ([^,]+),", _llvm_ir(func, target))
    return [int(size) if size.isdigit() else None for size in sizes]


def greedy_with_and_without_step(vm, weights: list, cache) -> list[tuple[list[int], np.ndarray]]:
    """A prompt then eight greedy tokens through ``ResidentCache``, first without the library's one-token step
    (``resident_last`` for every token), then with it: each run's tokens and last-position logits."""
    from slmc.artifact.resident_cache import ResidentCache
    from slmc.graph.kv_cache import RESIDENT_ALL, RESIDENT_LAST, RESIDENT_STEP

    runs = []
    for step in (None, vm[RESIDENT_STEP]):
        resident = ResidentCache(vm[RESIDENT_ALL], vm[RESIDENT_LAST], weights, cache, step)
        logits = resident.feed(np.array([[5, 9, 2, 7]], dtype=np.int64), last_only=True)
        tokens, last = [], []
        for _ in range(8):
            tokens.append(int(np.argmax(logits[0, -1])))
            last.append(np.array(logits[0, -1]))
            logits = resident.feed(np.array([[tokens[-1]]], dtype=np.int64), last_only=True)
        runs.append((tokens, np.stack(last)))
    return runs
