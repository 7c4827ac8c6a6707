"""Speed of one linear under slmc's three CPU quantized kernels: w4a8, w8a8 and int4 weight-only, side by side.

One linear of ``--shape`` (default 576->1536, SmolLM-135M's gate/up projection) at ``--rows`` rows
(1: decode; 128: a prefill chunk), each kernel built from its tensor expression and scheduled by its
slmc rule for ``host`` as a compile would (``slmc.schedules``: ``Int4Int8Matmul`` for w4a8 g``--group``
on the descriptor's int8 dot products, ``Int8Matmul`` for w8a8 per channel, ``QuantizedMatmul`` for
int4 g``--group`` weight-only), on the layouts ``slmc.schedules.prepack`` stores. Each is checked
against numpy first, then the three are timed interleaved round by round in one process (so load hits
them alike); reports the median and the best ms per call over the rounds.

    python benchmarks/int8_dot_kernel_speed.py --threads 1
    python benchmarks/int8_dot_kernel_speed.py --threads 2 --shape 1536 576 --rows 1 128
    python benchmarks/int8_dot_kernel_speed.py --threads 2 --activation-group 32   # + w4a8 with per-block activations

``--activation-group A`` adds ``w4a8_a{A}``: the same w4a8 kernel with one activation scale per block of ``A``
inputs (``activation_group_size``; 32 with g32 is llama.cpp's Q4_0 x Q8_0 granularity) beside per token.

Not a test: timings depend on the machine and its load (printed before and after).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

for _blas in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_blas, "1")  # numpy's reference matmuls: no BLAS threads spinning beside TVM's
import numpy as np  # noqa: E402

sys.path.insert(0, os.path.dirname(__file__))
import quantized_kernel_speed as speed  # noqa: E402


def _scheduled(rule, func, target):
    sch = rule.apply(func, target.tvm_target(), False)
    if sch is None:
        raise SystemExit(f"{type(rule).__name__} declined the kernel: {rule.notes}")
    return sch.mod["main"]


def kernels(in_features: int, out_features: int, group: int, activation_group: int | None = None) -> dict:
    """Scheduled PrimFuncs by name: ``w4a8``, ``w8a8``, ``int4`` (and ``w4a8_a{activation_group}``)."""
    from tvm import te, tirx

    from slmc.quantization.tvm_kernels import KERNEL_ATTR, linear_tile_width, w8a8_linear_te
    from slmc.schedules import cpu_params
    from slmc.schedules.int8_matmul import Int8Matmul
    from slmc.spec.target import load_target

    target = load_target("host")
    params, dot = cpu_params(target), list(target.compute.int8_dot or [])
    n, k = out_features, in_features

    def x() -> te.Tensor:
        return te.placeholder((tirx.Var("m", "int64"), k), "float32", "x")

    xs, q, s = x(), te.placeholder((n // 16, k // 4, 16, 4), "int8", "q"), te.placeholder((n,), "float32", "s")
    out = w8a8_linear_te(xs, q, s, None, None, 0.05)
    w8a8 = te.create_prim_func([xs, q, s, out]).with_attr(KERNEL_ATTR, "w8a8_linear")
    built = {"w4a8": speed.w4a8_kernel(k, n, group),  # as quantized_kernel_speed builds it (Int4Int8Matmul)
             "w8a8": (_scheduled(Int8Matmul(params, dot), w8a8, target), target.tvm_target())}
    # int4 weight-only exactly as quantized_kernel_speed builds it (the stored layout: uint32 words where they fit)
    built["int4"] = speed.kernel(k, n, 4, group, False, linear_tile_width(n))
    if activation_group is not None:
        built[f"w4a8_a{activation_group}"] = speed.w4a8_kernel(k, n, group, activation_group=activation_group)
    return built


def weights(in_features: int, out_features: int, group: int, seed: int = 0) -> dict:
    """Each kernel's stored arrays (as prepack lays them out) and its float32 reference weight ``[N, K]``."""
    from slmc.quantization.tvm_kernels import linear_tile_width, word_layout

    rng = np.random.default_rng(seed)
    n, k, groups = out_features, in_features, in_features // group
    codes = rng.integers(1, 16, (n, k)).astype(np.uint8)
    scales = (rng.random((n, groups)) * 0.02 + 0.001).astype(np.float16)
    dequantized = (codes.astype(np.float32) - 8) * np.repeat(scales.astype(np.float32), group, 1)
    w4a8 = speed.w4a8_tables(codes, scales)
    int8 = rng.integers(-127, 128, (n, k)).astype(np.int8)
    int8_scales = (rng.random(n) * 0.01 + 0.001).astype(np.float32)
    w8a8 = [np.ascontiguousarray(int8.reshape(n // 16, 16, k // 4, 4).transpose(0, 2, 1, 3)), int8_scales]
    width = linear_tile_width(n)
    plain = codes[:, 0::2] | (codes[:, 1::2] << 4)
    words = word_layout(k, 4, group)
    return {"w4a8": (w4a8, dequantized), "w8a8": (w8a8, int8.astype(np.float32) * int8_scales[:, None]),
            "int4": ([speed.layout(plain, width, words), speed.layout(scales, width)], dequantized)}


def reference(name: str, x: np.ndarray, weight: np.ndarray) -> np.ndarray:
    """numpy: per-token int8 codes (w4a8; ``w4a8_aA``: per block of A inputs), per-tensor codes of scale 0.05 (w8a8)
    or float32 x (int4), times ``weight^T``."""
    if name.startswith("w4a8"):  # w4a8_aA: per block of A inputs
        return speed.w4a8_reference(x, weight, int(name.split("_a")[1]) if "_a" in name else None)
    if name == "w8a8":
        return (np.clip(np.round(x * np.float32(1 / 0.05)), -127, 127) @ weight.T) * np.float32(0.05)
    return x @ weight.T


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1, help="TVM threads")
    parser.add_argument("--shape", type=int, nargs=2, default=[576, 1536], metavar=("K", "N"))
    parser.add_argument("--group", type=int, default=32)
    parser.add_argument("--rows", type=int, nargs="+", default=[1, 128])
    parser.add_argument("--activation-group", type=int, help="also time w4a8 with this activation_group_size")
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--seconds", type=float, default=0.02, help="about this long per timed batch of calls")
    args = parser.parse_args()
    os.environ["TVM_NUM_THREADS"] = str(args.threads)  # read when TVM's thread pool starts (first parallel kernel)
    import tvm

    in_features, out_features = args.shape
    built = {name: tvm.compile(tvm.IRModule({"main": func}), target=target)["main"]
             for name, (func, target) in kernels(in_features, out_features, args.group, args.activation_group).items()}
    stored = weights(in_features, out_features, args.group)
    print(f"{in_features}->{out_features}, g{args.group}, threads {args.threads}, load {os.getloadavg()[0]:.2f}", flush=True)
    rng = np.random.default_rng(1)
    for rows in args.rows:
        x = (rng.standard_normal((rows, in_features)) * 2).astype(np.float32)
        inputs = {}
        for name, function in built.items():
            arrays, weight = stored[name.split("_")[0]]  # w4a8_aA: the w4a8 arrays
            out = tvm.runtime.tensor(np.zeros((rows, out_features), np.float32))
            call = [tvm.runtime.tensor(x), *(tvm.runtime.tensor(a) for a in arrays), out]
            function(*call)
            want = reference(name, x, weight)
            error = float(np.abs(out.numpy() - want).max() / np.abs(want).max())
            if error > 1e-4:
                raise SystemExit(f"{name} rows={rows}: relative error {error:.2e} against numpy")
            inputs[name] = call
        start = time.perf_counter()
        built["w8a8"](*inputs["w8a8"])
        calls = max(1, int(args.seconds / max(time.perf_counter() - start, 1e-6)))
        times = speed.interleaved_seconds(built, {name: [call] for name, call in inputs.items()}, args.rounds, calls)
        for label, pick in (("median", statistics.median), ("best", min)):
            chosen = {name: pick(t) for name, t in times.items()}
            print(f"rows {rows:4d} {label:6s} | " + " | ".join(f"{name} {seconds * 1e3:8.4f} ms" for name, seconds in chosen.items())
                  + f" | w4a8/w8a8 {chosen['w4a8'] / chosen['w8a8']:.2f}x, w4a8/int4 {chosen['w4a8'] / chosen['int4']:.2f}x"
                  + "".join(f", {name}/w4a8 {chosen[name] / chosen['w4a8']:.2f}x" for name in chosen if "_a" in name),
                  flush=True)
    print(f"load after {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
