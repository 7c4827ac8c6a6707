"""Speed of slmc's quantized linear kernel alone: the transposed ``[K', N]`` layout against the tiled one.

One ``quantized_linear`` of each SmolLM-135M shape (576->576 q/o, 576->192 k/v, 576->1536 gate/up,
1536->576 down, 576->49152 the LM head) at ``--rows`` rows (1: decode GEMV; 128: prefill GEMM),
built by ``slmc.quantization.tvm_kernels.quantized_linear_te`` and scheduled by slmc's
``QuantizedMatmul`` rule for ``host``, in both weight layouts the converter can emit:

- ``old``: codes ``[K', N]``, scales ``[G, N]`` (what every linear used before tiling; now only
  when no tile width divides ``N``), each weight dequantized inside the reduction;
- ``new``: tiles ``[N/nb, K', nb]`` (``linear_tile_width``), group-factored sum.

Both are checked against numpy first, then timed interleaved round by round in one process (so
load hits both alike); reports median ms, GB/s of weight bytes read (codes + scales + zero
points), that as a share of the triad bandwidth (``slmc.bench.machine.memory_bandwidth``), and
GFLOP/s. The int4 weights of every shape fit in the last-level cache (32 MiB here), so repeated calls
read them from cache; ``--cold-mb 128`` cycles through copies of them instead (DRAM, as in a decode
step of a whole model).

    python benchmarks/quantized_kernel_speed.py --threads 2
    python benchmarks/quantized_kernel_speed.py --threads 1 --bits 8 --zeros --group 64
    python benchmarks/quantized_kernel_speed.py --threads 2 --rows 1 --cold-mb 128

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

SHAPES = [(576, 576), (576, 192), (576, 1536), (1536, 576), (576, 49152)]  # (K, N) of SmolLM-135M's linears


def kernel(in_features: int, out_features: int, bits: int, group: int, zeros: bool, width: int | None, nest=None):
    """The scheduled PrimFunc of ``quantized_linear_te`` (tiled by ``width``, or transposed if None);
    ``nest``: the tiled form's prefill nest (``quantized_matmul.PrefillNest``; default the rule's)."""
    from tvm import te, tirx

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
    s = table(groups, "float16", "s")
    z = table(groups, "uint8", "z") if zeros else None
    out = quantized_linear_te(x, q, s, z, None, None, bits, group)
    func = te.create_prim_func([t for t in (x, q, s, z, out) if t is not None]).with_attr(KERNEL_ATTR, "quantized_linear")
    target = load_target("host")
    if nest is not None and width is not None:
        sch = schedule_tiled(func, cpu_params(target), nest)
    else:
        sch = QuantizedMatmul(cpu_params(target)).apply(func, target.tvm_target(), False)
    if sch is None:
        raise SystemExit(f"QuantizedMatmul declined the {'tiled' if width else 'transposed'} {in_features}x{out_features} kernel")
    return sch.mod["main"], target.tvm_target()


def layout(table: np.ndarray, width: int | None, words: bool = False) -> np.ndarray:
    """``[N, C]`` -> ``[C, N]`` or ``[N/width, C, width]`` (``words``: int4 codes as little-endian uint32
    words first, ``slmc.quantization.tvm_kernels._code_layout``): what slmc.schedules.prepack stores."""
    if width is None:
        return np.ascontiguousarray(table.T)
    if words:
        table = np.ascontiguousarray(table).view("<u4")
    return np.ascontiguousarray(table.reshape(table.shape[0] // width, width, table.shape[1]).transpose(0, 2, 1))


def reference(x: np.ndarray, codes: np.ndarray, scales: np.ndarray, zeros: np.ndarray | None, bits: int, group: int) -> np.ndarray:
    """``x @ dequantized(W)^T`` from ``[N, K']`` codes (int4: channel 2j in the low nibble)."""
    if bits == 4:
        unpacked = np.empty((codes.shape[0], codes.shape[1] * 2), np.float32)
        unpacked[:, 0::2], unpacked[:, 1::2] = codes & 15, codes >> 4
    else:
        unpacked = codes.astype(np.float32)
    zero = np.repeat(zeros.astype(np.float32), group, 1) if zeros is not None else 2.0 ** (bits - 1)
    return x @ ((unpacked - zero) * np.repeat(scales.astype(np.float32), group, 1)).T


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
    import tvm

    from slmc.quantization.tvm_kernels import linear_tile_width, word_layout

    in_features, out_features = shape
    rng = np.random.default_rng(0)
    groups = in_features // args.group
    codes = rng.integers(0, 256, (out_features, in_features * args.bits // 8)).astype(np.uint8)
    scales = (rng.random((out_features, groups)) * 0.02 + 0.001).astype(np.float16)
    zeros = rng.integers(0, 2**args.bits, (out_features, groups)).astype(np.uint8) if args.zeros else None
    weight_bytes = codes.nbytes + scales.nbytes + (zeros.nbytes if zeros is not None else 0)
    variants = {"old": None, "new": linear_tile_width(out_features)}
    libraries = {}
    for name, width in variants.items():
        func, target = kernel(in_features, out_features, args.bits, args.group, args.zeros, width)
        libraries[name] = tvm.compile(tvm.IRModule({"main": func}), target=target)["main"]
    rows_results = []
    for rows in args.rows:
        x = rng.standard_normal((rows, in_features)).astype(np.float32)
        want = reference(x, codes, scales, zeros, args.bits, args.group)
        inputs = {}
        copies = max(1, -(-args.cold_mb * 2**20 // weight_bytes)) if args.cold_mb else 1
        for name, width in variants.items():
            words = width is not None and word_layout(in_features, args.bits, args.group)
            tables = [layout(codes, width, words)] + [layout(t, width) for t in (scales, zeros) if t is not None]
            out = tvm.runtime.tensor(np.zeros((rows, out_features), np.float32))
            activations = tvm.runtime.tensor(x)
            sets = [[activations, *(tvm.runtime.tensor(t) for t in tables), out] for _ in range(copies)]
            libraries[name](*sets[0])
            error = float(np.abs(out.numpy() - want).max() / np.abs(want).max())
            if error > 1e-5:
                raise SystemExit(f"{name} {shape} rows={rows}: relative error {error:.2e} against numpy")
            inputs[name] = sets
        flops = 2 * rows * in_features * out_features
        calls = max(copies, int(args.seconds / (flops / 50e9 + 5e-6)))
        times = interleaved_seconds(libraries, inputs, args.rounds, calls)
        result = {"K": in_features, "N": out_features, "rows": rows, "tile": variants["new"]}
        for name in variants:
            seconds = statistics.median(times[name])
            result[name] = {"ms": round(seconds * 1e3, 4), "weight_gbs": round(weight_bytes / seconds / 1e9, 1),
                            "of_triad": round(weight_bytes / seconds / 1e9 / bandwidth, 2),
                            "gflops": round(flops / seconds / 1e9, 1)}
        rows_results.append(result)
        print(f"{in_features:5d}->{out_features:<5d} rows {rows:3d} | " + " | ".join(
            f"{name} {r['ms']:8.3f} ms {r['weight_gbs']:6.1f} GB/s ({r['of_triad']:.0%} triad) {r['gflops']:6.1f} GFLOP/s"
            for name, r in ((n, result[n]) for n in variants)) + f" | new/old {result['new']['ms'] / result['old']['ms']:.2f}x",
            flush=True)
    return rows_results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=0, help="TVM threads (default: the host descriptor's cores)")
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
    results = [r for shape in SHAPES for r in measure(shape, args, bandwidth)]
    load_after = os.getloadavg()
    print(f"load after {load_after[0]:.2f}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"threads": threads, "bits": args.bits, "group": args.group, "zeros": args.zeros,
                       "triad_gbs": round(bandwidth, 2), "load_before": load_before, "load_after": load_after,
                       "results": results}, f, indent=1)


if __name__ == "__main__":
    main()
