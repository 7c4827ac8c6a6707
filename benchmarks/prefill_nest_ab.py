"""A/B of the tiled int4 prefill nest's variants (``slmc.schedules.quantized_matmul.PrefillNest``).

Builds the SmolLM-135M MLP linears (576->1536, 1536->576) as ``benchmarks/quantized_kernel_speed.py``
does (int4 g32 sym, 64-wide tiles of uint32 words, dynamic row count as in a model), scheduled by
``schedule_tiled`` with each nest given as ``ROW_BLOCK:TILE_ROWS`` (``32:0``: row blocks of 32 without
a register tile, the nest of session 8; ``32:4``: whole blocks through a 4-row register tile, the rest
by ``32:0``; ``0:0``: all rows in one block, before session 8), checks each against numpy, then times
them interleaved round by round in one process (so machine load hits all alike) and prints median
time ratios against the first.

    python benchmarks/prefill_nest_ab.py --threads 1 --rows 128 1024 --clock cpu
    python benchmarks/prefill_nest_ab.py --nests 32:0 32:4 64:4 32:2

Not a test: timings depend on the machine and its load (printed per line).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

for _blas in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_blas, "1")
import numpy as np

sys.path.insert(0, os.path.dirname(__file__))
import quantized_kernel_speed as speed

SHAPES = [(576, 1536), (1536, 576)]


def nest(text: str):
    """``ROW_BLOCK:TILE_ROWS`` -> ``PrefillNest``."""
    from slmc.schedules.quantized_matmul import PrefillNest

    row_block, tile_rows = (int(part) for part in text.split(":"))
    return PrefillNest(row_block=row_block, tile_rows=tile_rows)


def build(in_features: int, out_features: int, text: str):
    """The compiled tiled kernel with the prefill nest ``text``."""
    import tvm

    from slmc.quantization.tvm_kernels import linear_tile_width

    func, target = speed.kernel(in_features, out_features, 4, 32, False, linear_tile_width(out_features), nest(text))
    return tvm.compile(tvm.IRModule({"main": func}), target=target)["main"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--rows", type=int, nargs="+", default=[128, 1024])
    parser.add_argument("--nests", nargs="+", default=["32:0", "32:4"], help="ROW_BLOCK:TILE_ROWS; the first is the baseline")
    parser.add_argument("--shapes", nargs="+", default=[f"{k}x{n}" for k, n in SHAPES], help="KxN")
    parser.add_argument("--rounds", type=int, default=11)
    parser.add_argument("--seconds", type=float, default=0.02, help="about this long per timed batch of calls")
    parser.add_argument("--clock", choices=["wall", "cpu"], default="wall",
                        help="cpu: this process's CPU time (one thread on a shared machine: other work's time slices "
                             "are not counted; with more threads it counts the pool's waiting too)")
    args = parser.parse_args()
    os.environ["TVM_NUM_THREADS"] = str(args.threads)
    import tvm

    from slmc.quantization.tvm_kernels import linear_tile_width, word_layout

    for in_features, out_features in (tuple(int(v) for v in s.split("x")) for s in args.shapes):
        width = linear_tile_width(out_features)
        kernels = {text: build(in_features, out_features, text) for text in args.nests}
        rng = np.random.default_rng(0)
        codes = rng.integers(0, 256, (out_features, in_features // 2)).astype(np.uint8)
        scales = (rng.random((out_features, in_features // 32)) * 0.02 + 0.001).astype(np.float16)
        tables = [speed.layout(codes, width, word_layout(in_features, 4, 32)), speed.layout(scales, width)]
        for rows in args.rows:
            x = rng.standard_normal((rows, in_features)).astype(np.float32)
            want = speed.reference(x, codes, scales, None, 4, 32)
            inputs = {}
            for text, function in kernels.items():
                arrays = [tvm.runtime.tensor(x), *(tvm.runtime.tensor(t) for t in tables),
                          tvm.runtime.tensor(np.full((rows, out_features), np.nan, np.float32))]
                function(*arrays)
                error = float(np.abs(arrays[-1].numpy() - want).max() / np.abs(want).max())
                if not error <= 1e-5:
                    raise SystemExit(f"nest {text} {in_features}->{out_features} rows={rows}: relative error {error:.2e}")
                inputs[text] = [arrays]
            flops = 2 * rows * in_features * out_features
            calls = max(1, int(args.seconds / (flops / 30e9)))
            clock = time.process_time if args.clock == "cpu" else time.perf_counter
            times = speed.interleaved_seconds(kernels, inputs, args.rounds, calls, clock)
            base = statistics.median(times[args.nests[0]])
            print(f"{in_features}->{out_features} rows {rows} threads {args.threads} {args.clock} load {os.getloadavg()[0]:.1f} | " + " | ".join(
                f"{text}: {statistics.median(t) * 1e3:.3f} ms {flops / statistics.median(t) / 1e9:.0f} GFLOP/s "
                f"{statistics.median(t) / base:.2f}x" for text, t in times.items()), flush=True)


if __name__ == "__main__":
    main()
