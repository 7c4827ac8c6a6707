"""Speed of slmc's quantized linear kernels alone: weight-only int4/int8 in both layouts, and W4A8 beside them.

One linear of each shape of ``--model`` (``SHAPES``: SmolLM-135M 576->576 q/o, 576->192 k/v,
576->1536 gate/up, 1536->576 down, 576->49152 the tied head; Qwen2.5-0.5B 896->896 q/o, 896->128 k/v,
896->4864 gate/up, 4864->896 down, 896->151936 the tied head) at ``--rows`` rows (1: decode GEMV;
128: prefill GEMM), each kernel built from its tensor expression and scheduled by its slmc rule for
``host`` as a compile would, on the layout ``slmc.schedules.prepack`` stores (``--variants``):

- ``old``: weight-only, codes ``[K', N]``, scales ``[G, N]`` (what every linear used before tiling; now
  only when no tile width divides ``N``), each weight dequantized inside the reduction;
- ``new``: weight-only, tiles ``[N/nb, K', nb]`` (``linear_tile_width``), group-factored sum
  (``slmc.schedules.quantized_matmul``);
- ``hwpf``: ``new`` without the decode nest's software prefetch (``quantized_matmul.PREFETCH_LINES = 0``:
  hardware prefetch only, what it was before session 10), for an A/B in one process;
- ``codes6``: ``new`` with 6-bit scale codes packed four per three bytes (``formats.pack_scale_codes``, unpacked
  per group in the kernel; the float16 row scale is a separate multiply after the op, not timed here), for the
  unpacking's cost against ``new``'s float16 scales in one process;
- ``w4a8``: int8 activations x the same int4 codes (paired, ``[N/16, K/8, 16, 4]``), VNNI dots
  (``slmc.schedules.int4_int8_matmul``; int4 symmetric only): the weight-only kernel's yardstick, since
  it reads the same bytes per weight; per token, or per ``--activation-group`` inputs;
- ``w4a8codes`` / ``w4a8codes6``: ``w4a8`` with uint8 / packed 6-bit scale codes instead of float16 scales (built
  without the op's row scales, whose one multiply per output in the epilogue is not timed here), against ``w4a8`` in
  one process.

Each is checked against numpy first, then all are timed interleaved round by round in one process (so
load hits them alike); reports median ms, GB/s of weight bytes read (codes + scales + zero points: the
same bytes for ``new`` and ``w4a8``), that as a share of the triad bandwidth
(``slmc.bench.machine.memory_bandwidth``: one numpy thread, the bound ``slmc bench``'s decode share is
measured against), and GFLOP/s. Small shapes fit in the caches, so repeated calls read them from cache;
``--cold-mb 600`` cycles through copies of the weights instead (DRAM, as in a decode step of a whole
model; the last-level cache of this VM reports 480 MiB).

    python benchmarks/quantized_kernel_speed.py --model qwen --rows 1 --cold-mb 600 --variants new w4a8
    python benchmarks/quantized_kernel_speed.py --threads 1 --bits 8 --zeros --group 64
    python benchmarks/quantized_kernel_speed.py --threads 2 --rows 1 --cold-mb 128
    python benchmarks/quantized_kernel_speed.py --rows 1 128 --variants new codes6
    python benchmarks/quantized_kernel_speed.py --model qwen --rows 1 --cold-mb 600 --activation-group 32 \
        --variants w4a8 w4a8codes w4a8codes6

Not a test: timings depend on the machine and its load (printed before and after).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time

for _blas in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_blas, "1")  # numpy's reference matmuls: no BLAS threads spinning beside TVM's
import numpy as np  # noqa: E402

SHAPES = {  # (K, N) of each model's linears: q/o, k/v, gate/up, down, the tied head
    "smollm": [(576, 576), (576, 192), (576, 1536), (1536, 576), (576, 49152)],
    "qwen": [(896, 896), (896, 128), (896, 4864), (4864, 896), (896, 151936)],
}


def kernel(in_features: int, out_features: int, bits: int, group: int, zeros: bool, width: int | None, nest=None,
           prefetch: bool = True, scale_code_bits: int | None = None):
    """The scheduled PrimFunc of ``quantized_linear_te`` (tiled by ``width``, or transposed if None);
    ``nest``: the tiled form's prefill nest (``quantized_matmul.PrefillNest``; default the rule's);
    ``prefetch`` False: the decode nest without its software prefetch; ``scale_code_bits`` 6: packed 6-bit
    scale codes instead of float16 scales."""
    from slmc.schedules import quantized_matmul

    lines = quantized_matmul.PREFETCH_LINES
    quantized_matmul.PREFETCH_LINES = lines if prefetch else 0
    try:
        return _kernel(in_features, out_features, bits, group, zeros, width, nest, scale_code_bits)
    finally:
        quantized_matmul.PREFETCH_LINES = lines


def _kernel(in_features: int, out_features: int, bits: int, group: int, zeros: bool, width: int | None, nest=None,
            scale_code_bits: int | None = None):
    from tvm import te, tirx

    from slmc.quantization.formats import packed_scale_columns
    from slmc.quantization.tvm_kernels import KERNEL_ATTR, quantized_linear_te, word_layout
    from slmc.schedules import cpu_params
    from slmc.schedules.quantized_matmul import QuantizedMatmul, schedule_tiled
    from slmc.spec.target import load_target

    packed, groups = in_features * bits // 8, in_features // group

    def table(columns: int, dtype: str, name: str) -> te.Tensor:
        shape = (columns, out_features) if width is None else (out_features // width, columns, width)
        return te.placeholder(shape, dtype, name)

    x = te.placeholder((tirx.Var("m", "int64"), in_features), "float32", "x")
    words = width is not None and word_layout(in_features, bits, group)  # int4 tiles: uint32 words of 8 nibbles
    q = table(packed // 4, "uint32", "q") if words else table(packed, "uint8", "q")
    s = table(groups, "float16", "s") if scale_code_bits is None else table(packed_scale_columns(groups, 6), "uint8", "s")
    z = table(groups, "uint8", "z") if zeros else None
    out = quantized_linear_te(x, q, s, z, None, None, bits, group, scale_code_bits)
    func = te.create_prim_func([t for t in (x, q, s, z, out) if t is not None]).with_attr(KERNEL_ATTR, "quantized_linear")
    target = load_target("host")
    if nest is not None and width is not None:
        sch = schedule_tiled(func, cpu_params(target), nest)
    else:
        sch = QuantizedMatmul(cpu_params(target)).apply(func, target.tvm_target(), False)
    if sch is None:
        raise SystemExit(f"QuantizedMatmul declined the {'tiled' if width else 'transposed'} {in_features}x{out_features} kernel")
    return sch.mod["main"], target.tvm_target()


W4A8_SCALE_CODES = {"w4a8": None, "w4a8codes": 8, "w4a8codes6": 6}  # w4a8 variant -> scale code bits (None: float16)


def w4a8_kernel(in_features: int, out_features: int, group: int, rows: int | None = None,
                activation_group: int | None = None, scale_code_bits: int | None = None):
    """The scheduled PrimFunc of ``w4a8_linear_te`` on the tiled paired layout (``Int4Int8Matmul`` on the
    host's int8 dot products, as a compile would) and its TVM target; ``rows`` ``None``: a dynamic row count;
    ``activation_group``: int8 activations per block of that many inputs (``None``: per token);
    ``scale_code_bits`` 8 / 6: uint8 / packed 6-bit scale codes instead of float16 scales."""
    from tvm import te, tirx

    from slmc.quantization.tvm_kernels import DOT_ROWS, KERNEL_ATTR
    from slmc.quantization.w4a8_kernel import w4a8_linear_te
    from slmc.schedules import cpu_params
    from slmc.schedules.int4_int8_matmul import Int4Int8Matmul
    from slmc.spec.target import load_target

    target = load_target("host")
    n, k = out_features, in_features
    x = te.placeholder((rows or tirx.Var("m", "int64"), k), "float32", "x")
    q = te.placeholder((n // 16, k // 8, 16, 4), "uint8", "q")
    from slmc.quantization.formats import packed_scale_columns

    columns = packed_scale_columns(k // group, 6 if scale_code_bits == 6 else None)
    s = te.placeholder((columns, n), "float16" if scale_code_bits is None else "uint8", "s")
    out = w4a8_linear_te(x, q, s, None, group, DOT_ROWS, activation_group, 6 if scale_code_bits == 6 else None)
    func = te.create_prim_func([x, q, s, out]).with_attr(KERNEL_ATTR, "w4a8_linear")
    sch = Int4Int8Matmul(cpu_params(target), list(target.compute.int8_dot or [])).apply(func, target.tvm_target(), False)
    if sch is None:
        raise SystemExit(f"Int4Int8Matmul declined the {in_features}x{out_features} kernel")
    return sch.mod["main"], target.tvm_target()


def w4a8_tables(codes: np.ndarray, scales: np.ndarray) -> list[np.ndarray]:
    """The stored w4a8 arrays of int4 codes ``[N, K]`` (each below 16) and float16 scales ``[N, G]``:
    paired bytes tiled ``[N/16, K/8, 16, 4]`` (``slmc.quantization.w4a8_layout``) and scales ``[G, N]``."""
    import torch

    from slmc.quantization.w4a8_layout import pack_paired

    n, k = codes.shape
    paired = pack_paired(torch.from_numpy(codes)).numpy()
    return [np.ascontiguousarray(paired.reshape(n // 16, 16, k // 8, 4).transpose(0, 2, 1, 3)), np.ascontiguousarray(scales.T)]


def w4a8_reference(x: np.ndarray, weight: np.ndarray, block: int | None = None) -> np.ndarray:
    """numpy: int8 codes of ``x`` per token (range ``max |x_row|``) or, with ``block``, per block of that many
    inputs of a row (``activation_group_size``), times the dequantized ``weight [N, K]``."""
    width = x.shape[1] if block is None else block
    blocks = x.reshape(x.shape[0], -1, width)
    peak = np.abs(blocks).max(2, keepdims=True).astype(np.float32)
    codes = np.clip(np.round(blocks * (np.float32(127) / peak)), -127, 127)
    if block is None:  # the row's scale after the matmul
        return (codes.reshape(x.shape) @ weight.T) * (peak[:, 0] / np.float32(127))
    return (codes * (peak / np.float32(127))).reshape(x.shape) @ weight.T


def unpacked(codes: np.ndarray, bits: int) -> np.ndarray:
    """Codes ``[N, K]`` as float32 from packed ``[N, K']`` (int4: input 2j in the low nibble)."""
    if bits == 4:
        values = np.empty((codes.shape[0], codes.shape[1] * 2), np.float32)
        values[:, 0::2], values[:, 1::2] = codes & 15, codes >> 4
        return values
    return codes.astype(np.float32)


def layout(table: np.ndarray, width: int | None, words: bool = False) -> np.ndarray:
    """``[N, C]`` -> ``[C, N]`` or ``[N/width, C, width]`` (``words``: int4 codes as little-endian uint32
    words first, ``slmc.quantization.tvm_kernels._code_layout``): what slmc.schedules.prepack stores."""
    if width is None:
        return np.ascontiguousarray(table.T)
    if words:
        table = np.ascontiguousarray(table).view("<u4")
    return np.ascontiguousarray(table.reshape(table.shape[0] // width, width, table.shape[1]).transpose(0, 2, 1))


def reference(x: np.ndarray, codes: np.ndarray, scales: np.ndarray, zeros: np.ndarray | None, bits: int, group: int) -> np.ndarray:
    """``x @ dequantized(W)^T`` from ``[N, K']`` codes (int4: input 2j in the low nibble)."""
    return x @ dequantized_weight(codes, scales, zeros, bits, group).T


def dequantized_weight(codes: np.ndarray, scales: np.ndarray, zeros: np.ndarray | None, bits: int, group: int) -> np.ndarray:
    """float32 ``[N, K]``: ``(code - zero) * scale`` per group."""
    zero = np.repeat(zeros.astype(np.float32), group, 1) if zeros is not None else 2.0 ** (bits - 1)
    return (unpacked(codes, bits) - zero) * np.repeat(scales.astype(np.float32), group, 1)


def interleaved_seconds(kernels: dict, arguments: dict, rounds: int, calls: int,
                        clock=time.perf_counter) -> dict[str, list[float]]:
    """Seconds per call of each named kernel, one sample per round: every round times each kernel in turn
    for ``calls`` calls (cycling through that kernel's argument sets), so a change in machine load hits all
    kernels alike. ``arguments[name]`` is a list of argument lists. ``clock``: wall time by default;
    ``time.process_time`` (this process's CPU time) for one thread on a machine shared with other work."""
    times: dict[str, list[float]] = {name: [] for name in kernels}
    for _ in range(rounds):
        for name, function in kernels.items():
            sets = arguments[name]
            start = clock()
            for call in range(calls):
                function(*sets[call % len(sets)])
            times[name].append((clock() - start) / calls)
    return times


def measure(shape: tuple[int, int], args: argparse.Namespace, bandwidth: float) -> list[dict]:
    """Build, check and time ``args.variants`` of one ``(K, N)`` linear at each of ``args.rows``."""
    import tvm

    import torch

    from slmc.quantization.formats import pack_scale_codes
    from slmc.quantization.tvm_kernels import linear_tile_width, word_layout

    in_features, out_features = shape
    rng = np.random.default_rng(0)
    groups = in_features // args.group
    codes = rng.integers(0, 256, (out_features, in_features * args.bits // 8)).astype(np.uint8)
    scales = (rng.random((out_features, groups)) * 0.02 + 0.001).astype(np.float16)
    zeros = rng.integers(0, 2**args.bits, (out_features, groups)).astype(np.uint8) if args.zeros else None
    scale_codes = rng.integers(1, 64, (out_features, groups)).astype(np.uint8)  # codes6: the row scale is not in the kernel
    packed_codes = pack_scale_codes(torch.from_numpy(scale_codes), 6).numpy()
    byte_codes = rng.integers(1, 256, (out_features, groups)).astype(np.uint8)  # w4a8codes: uint8 codes
    zero_bytes = zeros.nbytes if zeros is not None else 0
    weight_bytes = {name: codes.nbytes + scales.nbytes + zero_bytes for name in ("old", "new", "hwpf", "w4a8")}
    weight_bytes["codes6"] = weight_bytes["w4a8codes6"] = codes.nbytes + packed_codes.nbytes + zero_bytes
    weight_bytes["w4a8codes"] = codes.nbytes + byte_codes.nbytes
    weights = {name: dequantized_weight(codes, scales, zeros, args.bits, args.group) for name in ("old", "new", "hwpf", "w4a8")}
    weights["codes6"] = weights["w4a8codes6"] = dequantized_weight(codes, scale_codes, zeros, args.bits, args.group)
    weights["w4a8codes"] = dequantized_weight(codes, byte_codes, zeros, args.bits, args.group)
    w4a8_scales = {"w4a8": scales, "w4a8codes": byte_codes, "w4a8codes6": packed_codes}
    widths = {"old": None, "new": linear_tile_width(out_features), "hwpf": linear_tile_width(out_features),
              "codes6": linear_tile_width(out_features)}
    variants = [v for v in args.variants
                if v not in W4A8_SCALE_CODES or (args.bits == 4 and not args.zeros and out_features % 16 == 0)]
    if len(variants) < len(args.variants):
        print(f"{in_features}->{out_features}: no w4a8 variant (it is int4, symmetric, 16 | N only)", flush=True)
    libraries, tables = {}, {}
    for name in variants:
        if name in W4A8_SCALE_CODES:
            func, target = w4a8_kernel(in_features, out_features, args.group, activation_group=args.activation_group,
                                       scale_code_bits=W4A8_SCALE_CODES[name])
            tables[name] = w4a8_tables(unpacked(codes, args.bits).astype(np.uint8), w4a8_scales[name])
        else:
            width = widths[name]
            func, target = kernel(in_features, out_features, args.bits, args.group, args.zeros, width, prefetch=name != "hwpf",
                                  scale_code_bits=6 if name == "codes6" else None)
            words = width is not None and word_layout(in_features, args.bits, args.group)
            scale_table = packed_codes if name == "codes6" else scales
            tables[name] = [layout(codes, width, words)] + [layout(t, width) for t in (scale_table, zeros) if t is not None]
        libraries[name] = tvm.compile(tvm.IRModule({"main": func}), target=target)["main"]
    rows_results = []
    for rows in args.rows:
        x = rng.standard_normal((rows, in_features)).astype(np.float32)
        inputs = {}
        copies = max(1, -(-args.cold_mb * 2**20 // weight_bytes["new"])) if args.cold_mb else 1
        for name in variants:
            weight = weights[name]
            want, tolerance = ((w4a8_reference(x, weight, args.activation_group), 1e-4) if name in W4A8_SCALE_CODES
                               else (x @ weight.T, 1e-5))
            out = tvm.runtime.tensor(np.zeros((rows, out_features), np.float32))
            activations = tvm.runtime.tensor(x)
            sets = [[activations, *(tvm.runtime.tensor(t) for t in tables[name]), out] for _ in range(copies)]
            libraries[name](*sets[0])
            error = float(np.abs(out.numpy() - want).max() / np.abs(want).max())
            if error > tolerance:
                raise SystemExit(f"{name} {shape} rows={rows}: relative error {error:.2e} against numpy")
            inputs[name] = sets
        flops = 2 * rows * in_features * out_features
        calls = max(copies, int(args.seconds / (flops / 50e9 + 5e-6)))
        times = interleaved_seconds(libraries, inputs, args.rounds, calls)
        result = {"K": in_features, "N": out_features, "rows": rows, "tile": widths["new"]}
        for name in variants:
            seconds = statistics.median(times[name])
            result[name] = {"ms": round(seconds * 1e3, 4), "weight_gbs": round(weight_bytes[name] / seconds / 1e9, 1),
                            "of_triad": round(weight_bytes[name] / seconds / 1e9 / bandwidth, 2),
                            "gflops": round(flops / seconds / 1e9, 1)}
        rows_results.append(result)
        ratios = [f"{a}/{b} {result[a]['ms'] / result[b]['ms']:.2f}x" for a, b in (("new", "old"), ("new", "hwpf"), ("new", "w4a8"), ("codes6", "new"),
                                                                                   ("w4a8codes", "w4a8"), ("w4a8codes6", "w4a8"))
                  if a in result and b in result]
        print(f"{in_features:5d}->{out_features:<6d} rows {rows:3d} | " + " | ".join(
            f"{name} {r['ms']:8.3f} ms {r['weight_gbs']:6.1f} GB/s ({r['of_triad']:.0%} triad) {r['gflops']:6.1f} GFLOP/s"
            for name, r in ((n, result[n]) for n in variants)) + (" | " + ", ".join(ratios) if ratios else ""), flush=True)
    return rows_results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=0, help="TVM threads (default: the host descriptor's cores)")
    parser.add_argument("--model", choices=sorted(SHAPES), default="smollm", help="whose linear shapes (SHAPES)")
    parser.add_argument("--shape", type=int, nargs=2, action="append", metavar=("K", "N"),
                        help="one (K, N) linear instead of the model's (repeatable)")
    parser.add_argument("--variants", nargs="+", choices=["old", "new", "hwpf", "codes6", *W4A8_SCALE_CODES],
                        default=["old", "new"])
    parser.add_argument("--activation-group", type=int, default=None,
                        help="w4a8 variants: int8 activations per block of this many inputs (default: per token)")
    parser.add_argument("--bits", type=int, choices=[4, 8], default=4)
    parser.add_argument("--group", type=int, default=32)
    parser.add_argument("--zeros", action="store_true", help="asymmetric: uint8 zero points")
    parser.add_argument("--rows", type=int, nargs="+", default=[1, 128])
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--seconds", type=float, default=0.003, help="about this long per timed batch of calls")
    parser.add_argument("--cold-mb", type=int, default=0, metavar="MB",
                        help="cycle through enough copies of the weights to fill this many MiB (more than the "
                             "last-level cache: weights then come from DRAM, as in a decode step of a whole model)")
    parser.add_argument("--json", help="also write the results here")
    args = parser.parse_args()
    from slmc.bench.machine import memory_bandwidth
    from slmc.spec.target import load_target

    threads = args.threads or int(load_target("host").tvm.num_cores)
    os.environ["TVM_NUM_THREADS"] = str(threads)  # read when TVM's thread pool starts (first parallel kernel)
    bandwidth = memory_bandwidth()
    load_before = os.getloadavg()
    print(f"threads {threads}, int{args.bits} g{args.group} {'asym' if args.zeros else 'sym'}, "
          f"{'weights from DRAM (' + str(args.cold_mb) + ' MiB of copies)' if args.cold_mb else 'weights cached'}, "
          f"triad {bandwidth:.1f} GB/s, load {load_before[0]:.2f}", flush=True)
    shapes = [tuple(s) for s in args.shape] if args.shape else SHAPES[args.model]
    results = [r for shape in shapes for r in measure(shape, args, bandwidth)]
    load_after = os.getloadavg()
    print(f"load after {load_after[0]:.2f}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"threads": threads, "model": args.model, "bits": args.bits, "group": args.group, "zeros": args.zeros,
                       "cold_mb": args.cold_mb, "triad_gbs": round(bandwidth, 2), "load_before": load_before,
                       "load_after": load_after, "results": results}, f, indent=1)


if __name__ == "__main__":
    main()
