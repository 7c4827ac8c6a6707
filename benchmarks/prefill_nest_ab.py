"""A/B of the tiled int4 prefill nest: rows in one block (before session 8) against row blocks of ``ROW_BLOCK``.

Builds the SmolLM-135M MLP linears (576->1536, 1536->576) as ``benchmarks/quantized_kernel_speed.py``
does (int4 g32 sym, 64-wide tiles of uint32 words), scheduled by ``QuantizedMatmul`` with the prefill
nest's ``row_block`` argument varied, checks each against numpy, then times them interleaved round by
round in one process (so machine load hits all alike) and prints median time ratios against ``row_block=0``.

    python benchmarks/prefill_nest_ab.py --threads 1 --rows 128 1024
    python benchmarks/prefill_nest_ab.py --row-blocks 0 16 32 64

Not a test: timings depend on the machine and its load (printed per line).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys

for _blas in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_blas, "1")
import numpy as np

sys.path.insert(0, os.path.dirname(__file__))
import quantized_kernel_speed as speed

SHAPES = [(576, 1536), (1536, 576)]


def build(in_features: int, out_features: int, row_block: int):
    """The compiled tiled kernel with the prefill nest's rows in blocks of ``row_block`` (0: one block)."""
    import tvm

    from slmc.quantization.tvm_kernels import linear_tile_width
    from slmc.schedules import quantized_matmul

    scheduled = quantized_matmul._schedule_shared
    quantized_matmul._schedule_shared = lambda sch, shape, params: scheduled(sch, shape, params, row_block=row_block)
    try:
        func, target = speed.kernel(in_features, out_features, 4, 32, False, linear_tile_width(out_features))
    finally:
        quantized_matmul._schedule_shared = scheduled
    return tvm.compile(tvm.IRModule({"main": func}), target=target)["main"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--rows", type=int, nargs="+", default=[128, 1024])
    parser.add_argument("--row-blocks", type=int, nargs="+", default=[0, 32], help="the first is the baseline")
    parser.add_argument("--rounds", type=int, default=11)
    parser.add_argument("--seconds", type=float, default=0.02, help="about this long per timed batch of calls")
    args = parser.parse_args()
    os.environ["TVM_NUM_THREADS"] = str(args.threads)
    import tvm

    from slmc.quantization.tvm_kernels import linear_tile_width, word_layout

    for in_features, out_features in SHAPES:
        width = linear_tile_width(out_features)
        kernels = {block: build(in_features, out_features, block) for block in args.row_blocks}
        rng = np.random.default_rng(0)
        codes = rng.integers(0, 256, (out_features, in_features // 2)).astype(np.uint8)
        scales = (rng.random((out_features, in_features // 32)) * 0.02 + 0.001).astype(np.float16)
        tables = [speed.layout(codes, width, word_layout(in_features, 4, 32)), speed.layout(scales, width)]
        for rows in args.rows:
            x = rng.standard_normal((rows, in_features)).astype(np.float32)
            want = speed.reference(x, codes, scales, None, 4, 32)
            inputs = {}
            for block, function in kernels.items():
                arrays = [tvm.runtime.tensor(x), *(tvm.runtime.tensor(t) for t in tables),
                          tvm.runtime.tensor(np.zeros((rows, out_features), np.float32))]
                function(*arrays)
                error = float(np.abs(arrays[-1].numpy() - want).max() / np.abs(want).max())
                if error > 1e-5:
                    raise SystemExit(f"row block {block} {in_features}->{out_features} rows={rows}: relative error {error:.2e}")
                inputs[block] = arrays
            flops = 2 * rows * in_features * out_features
            calls = max(1, int(args.seconds / (flops / 30e9)))
            times = speed.interleaved_seconds(kernels, {block: [arrays] for block, arrays in inputs.items()}, args.rounds, calls)
            base = statistics.median(times[args.row_blocks[0]])
            print(f"{in_features}->{out_features} rows {rows} load {os.getloadavg()[0]:.1f} | " + " | ".join(
                f"block {block}: {statistics.median(t) * 1e3:.2f} ms {flops / statistics.median(t) / 1e9:.0f} GFLOP/s "
                f"{statistics.median(t) / base:.2f}x" for block, t in times.items()), flush=True)


if __name__ == "__main__":
    main()
