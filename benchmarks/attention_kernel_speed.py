"""Decode attention on the resident cache: the decode kernels alone, one step of every layer, per cache dtype.

Builds the decode form of ``slmc.schedules.flash_attention`` for the SmolLM-135M shape (9 query heads, 3 KV
heads, head size 64, 30 layers) with a float32, a float16 and an int8 cache, each twice: ``serial`` (one thread over the
KV heads, session 9's kernel) and ``split`` (flash-decoding: (KV head, key range) items on TVM's thread pool,
then a merge), as the CPU pipeline does (``fast_exp_pass``); checks each against numpy, then times one decode
step's attention (one query row, ``--context`` cached keys, one call per layer, each layer its own cache so
the step streams every layer's bytes as a real step does), interleaved round by round in one process, and
prints the median against the bytes the step reads:

    python benchmarks/attention_kernel_speed.py --context 2000 --rounds 9 --threads 2

``--cold MB`` times each call alone after reading an ``MB`` megabyte buffer (larger than the last-level cache), as in a
real step, where the weights streamed between two layers' attention evict the cache's keys and values: SmolLM-135M at
context 128 costs ~4 us per layer from cache and ~15-17 us from DRAM (docs/dev-notes.md, "Session 13").

Not a test: timings depend on the machine and its load.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(__file__))
from quantized_kernel_speed import interleaved_seconds  # noqa: E402

HEADS, KV_HEADS, DEPTH, LAYERS = 9, 3, 64, 30
DTYPES = {"fp32": "float32", "fp16": "float16", "int8": "int8"}  # name -> FlashShape.cache_dtype
FORMS = {"serial": False, "split": True}  # name -> decode_attention_func's split


def build(cache_dtype: str, split: bool, slots: int):
    import tvm

    from slmc.schedules import cpu_params
    from slmc.schedules.fast_exp import fast_exp_pass
    from slmc.schedules.flash_attention import FlashShape, decode_attention_func
    from slmc.spec.target import load_target

    target = load_target("host")
    shape = FlashShape(heads=HEADS, kv_heads=KV_HEADS, depth=DEPTH, slots=slots, layers=1, layer=0,
                       scale=DEPTH ** -0.5, mask_rank=4, cache_dtype=cache_dtype)
    func = decode_attention_func(shape, cpu_params(target).lanes, split).with_attr("global_symbol", "main")
    return tvm.compile(fast_exp_pass(tvm.IRModule({"main": func})), target=target.tvm_target())


def reference(q, keys, values, mask):
    group = HEADS // KV_HEADS
    k = np.repeat(keys[0, 0, :, :mask.shape[-1]].astype(np.float64), group, axis=0)
    v = np.repeat(values[0, 0, :, :mask.shape[-1]].astype(np.float64), group, axis=0)
    scores = np.einsum("hmd,hnd->hmn", q, k) * DEPTH ** -0.5 + mask.reshape(mask.shape[-2:])
    probs = np.exp(scores - scores.max(-1, keepdims=True))
    return np.einsum("hmn,hnd->hmd", probs / probs.sum(-1, keepdims=True), v)


def operand_sets(cache_dtype: str, cache_shape: tuple[int, ...], q, mask, rng) -> list[list]:
    """One argument list per layer, each with its own cache (as a real step reads every layer's bytes)."""
    import tvm

    sets = []
    for _ in range(LAYERS):
        if cache_dtype == "int8":
            k8, v8 = (rng.integers(-127, 128, cache_shape).astype(np.int8) for _ in range(2))
            ks, vs = (rng.uniform(0.005, 0.02, cache_shape[:-1]).astype(np.float32) for _ in range(2))
            operands = (q, k8, v8, ks, vs, mask)
        else:
            operands = (q, *(rng.standard_normal(cache_shape).astype(cache_dtype) for _ in range(2)), mask)
        out = tvm.runtime.tensor(np.zeros((HEADS, 1, DEPTH), np.float32))
        sets.append([*(tvm.runtime.tensor(a) for a in operands), out])
    return sets


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--context", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--calls", type=int, default=5, help="decode steps per timed batch")
    parser.add_argument("--threads", type=int, default=2, help="TVM thread pool size (TVM_NUM_THREADS)")
    parser.add_argument("--cold", type=int, default=0, metavar="MB",
                        help="time each call alone after reading a buffer of this many MB (the cache evicted)")
    parser.add_argument("--asm", help="write each kernel's assembly to this prefix (.fp32-split.s, ...)")
    args = parser.parse_args()
    os.environ["TVM_NUM_THREADS"] = str(args.threads)  # before TVM's thread pool starts
    from slmc.graph.kv_cache import sink_causal_mask

    slots = args.context + 1
    rng = np.random.default_rng(0)
    cache_shape = (1, 1, KV_HEADS, slots, DEPTH)
    q = rng.standard_normal((HEADS, 1, DEPTH)).astype(np.float32)
    mask = sink_causal_mask(1, args.context - 1).numpy()[None, None].astype(np.float32)
    kernels, arguments, stored = {}, {}, {}
    for dtype, cache_dtype in DTYPES.items():
        sets = operand_sets(cache_dtype, cache_shape, q, mask, rng)
        want = reference(q, *_dequantized(sets[0], cache_dtype), mask)
        for form, split in FORMS.items():
            name = f"{dtype}-{form}"
            lib = build(cache_dtype, split, slots)
            if args.asm:
                with open(f"{args.asm}.{name}.s", "w") as out:
                    out.write(lib.mod.imports[0].inspect_source("asm") if lib.mod.imports else lib.mod.inspect_source("asm"))
            run = lib["main"]
            run(*sets[0])
            print(f"{name}: max abs error against numpy {float(np.abs(sets[0][-1].numpy() - want).max()):.2e}")
            kernels[name] = lambda layers, run=run: [run(*s) for s in layers]  # one decode step: every layer
            arguments[name] = [[sets]]
            stored[name] = DEPTH + 4 if cache_dtype == "int8" else DEPTH * np.dtype(cache_dtype).itemsize
    if args.cold:
        _time_cold(kernels, arguments, args)
        return
    times = interleaved_seconds(kernels, arguments, args.rounds, args.calls)
    for name, samples in times.items():
        bytes_read = LAYERS * KV_HEADS * args.context * 2 * stored[name]
        median = statistics.median(samples) * 1e3
        print(f"{name}: {median:.3f} ms per step ({LAYERS} layers, context {args.context}, {args.threads} threads), "
              f"{bytes_read / 1e6:.1f} MB of cache, {bytes_read / median / 1e6:.1f} GB/s; "
              f"min {min(samples) * 1e3:.3f} max {max(samples) * 1e3:.3f}")


def _time_cold(kernels: dict, arguments: dict, args) -> None:
    """Median and minimum time of one layer's call, the cache evicted before each (a read of ``args.cold`` MB,
    clean lines: no write-backs), the kernels interleaved call by call; includes one Python call's overhead."""
    import time

    evict = np.ones(args.cold << 18, np.float32)
    samples: dict[str, list[float]] = {name: [] for name in kernels}
    for _ in range(args.rounds * args.calls):
        for layer in range(LAYERS):
            for name, step in kernels.items():
                evict.max()
                start = time.perf_counter()
                step(arguments[name][0][0][layer:layer + 1])
                samples[name].append(time.perf_counter() - start)
    for name, times in samples.items():
        print(f"{name}: cold {statistics.median(times) * 1e6:.2f} us per layer (context {args.context}, "
              f"{args.threads} threads, {args.cold} MB read before each call); min {min(times) * 1e6:.2f}")


def _dequantized(operands, cache_dtype: str):
    if cache_dtype != "int8":
        return operands[1].numpy().astype(np.float64), operands[2].numpy().astype(np.float64)
    k8, v8, ks, vs = (a.numpy() for a in operands[1:5])
    return k8 * ks[..., None], v8 * vs[..., None]


if __name__ == "__main__":
    main()
