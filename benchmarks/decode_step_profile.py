"""Where one decode step of a resident-KV artifact spends its time: kernels, VM instructions, threads.

Builds (once, under ``--work``) a random-weight Llama of SmolLM-135M's width (hidden 576, 9/3 heads,
intermediate 1536, vocabulary 49152) with ``--layers`` layers, compiled by ``slmc.compile`` with
``slmc bench``'s recipe (int4 g32 RTN) for the host, or profiles the ``--artifact`` directories given.
For each artifact, one decode step at context ``--context`` (``decoder().feed`` of one token after
``truncate``, what ``slmc bench`` times):

- the VM's call instructions of one step (TVM 0.27's VM has no profiler; ``set_instrument`` sees every
  call): kernels and ``vm.builtin.*`` calls, counted;
- each kernel replayed alone, in the step's order, with the arguments it got (fastest of the rounds), summed
  per kernel name: the step's kernel time, and what is left for the VM, the Python call and its
  arguments (``step - kernels``);
- every call timed inside the step (instrument timestamps, fastest of several steps): weight linears,
  attention, other kernels and VM builtins, the split that holds on a loaded machine;
- the parallel regions of one step: each kernel call's fork/joins of TVM's thread pool and workspace
  allocations, counted by wrapping the library's ``__TVMBackend*`` pointers (``count_backend_calls``), and per kernel
  its replayed time on each ``--profile-threads`` count, the launches per call and, for the quantized
  linears, the GB/s of the bytes its arguments hold (codes, scales, input and output: what one
  decode GEMV streams);
- the step's time on 1 and 2 threads (``slmc.artifact.tvm_runtime.set_pool_threads``, switched in the same process).

Several ``--artifact`` directories are timed alternately, round by round, in one process (the machine
may be loaded: compare ratios, not milliseconds).

    python benchmarks/decode_step_profile.py --layers 4 --work /tmp/decode-profile
    python benchmarks/decode_step_profile.py --artifact /tmp/a --artifact /tmp/b --context 128
    python benchmarks/decode_step_profile.py --layers 30 --vm bytecode compiled --context 128  # VM bytecode vs compiled

Not a test: timings depend on the machine and its load (printed before and after).
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import re
import statistics
import time
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

from slmc.bench.models import CONFIGS

SMOLLM_WIDTH = {**CONFIGS["smollm-135m"][2]}  # every field but the layer count, which --layers sets
SMOLLM_WIDTH.pop("num_hidden_layers")


def build_artifact(layers: int, max_context: int, work: Path, recipe: Path | None, vm: str = "bytecode") -> Path:
    """The artifact of a ``layers``-layer Llama of SmolLM-135M's width (compiled once) with ``recipe``
    (default: ``slmc bench``'s, int4 g32 RTN) for the host, its VM functions as ``vm`` (the descriptor's field)."""
    suffix = "" if vm == "bytecode" else f"-vm-{vm}"
    out = work / f"artifact-L{layers}-C{max_context}-{recipe.stem if recipe else 'int4-g32-rtn'}{suffix}"
    if (out / "manifest.json").is_file():
        return out
    import torch
    import transformers

    import slmc
    from slmc.bench.models import NO_SPECIAL_IDS, write_bench_tokenizer
    from slmc.bench.run import DEFAULT_RECIPE
    from slmc.models.huggingface import load_hf_model
    from slmc.spec.target import load_target

    folder = work / f"checkpoint-L{layers}"
    if not (folder / "config.json").is_file():
        torch.manual_seed(0)
        config = transformers.LlamaConfig(**SMOLLM_WIDTH, num_hidden_layers=layers, **NO_SPECIAL_IDS)
        transformers.LlamaForCausalLM(config).save_pretrained(folder)
        write_bench_tokenizer(folder / "tokenizer.json", SMOLLM_WIDTH["vocab_size"])
    if recipe is None:
        recipe = work / "int4-g32-rtn.yaml"
        recipe.write_text(DEFAULT_RECIPE)
    spec = load_hf_model(folder, max_context=max_context)
    slmc.compile(spec, str(recipe), load_target("host").model_copy(update={"vm": vm}), out)
    return out


class Step:
    """One decode step at a fixed context on an artifact's resident cache."""

    def __init__(self, artifact: Path, context: int):
        import slmc
        from slmc.bench.timing import bench_prompt

        self.model = slmc.load(artifact)
        self.decoder = self.model.decoder()
        self.decoder.reset()
        self.decoder.feed(bench_prompt(context))
        self.context = context
        self.token = bench_prompt(1)

    def __call__(self) -> None:
        self.decoder.truncate(self.context)
        self.decoder.feed(self.token)

    def timed(self, calls: int) -> float:
        start = time.perf_counter()
        for _ in range(calls):
            self()
        return (time.perf_counter() - start) / calls


def _part(symbol: str) -> str:
    """The share of the step a call belongs to: VM builtins, weight linears (any scheme), attention or other
    kernels."""
    if symbol.startswith("vm."):
        return "VM builtins"
    if "_linear" in symbol or symbol.startswith("slmc_qlinear"):
        return "linears"
    return "flash_attention" if symbol.startswith("flash_attention") else "other kernels"


def _kernel_name(symbol: str) -> str:
    """A kernel's symbol without its numeric suffix (``fused_rms_norm_3`` -> ``fused_rms_norm``)."""
    return re.sub(r"(_\d+)+$", "", symbol)


class BackendCounter:
    """Counts the calls a loaded model library makes into TVM's runtime while installed: parallel regions
    (``TVMBackendParallelLaunch``, one fork/join of the thread pool each) and workspace allocations
    (``TVMBackendAllocWorkspace``, e.g. a kernel's small local buffers TVM did not put on the stack).

    TVM's LLVM code calls the runtime through the library's function pointers ``__TVMBackend*`` (set when
    the library is loaded); ``install`` points them at counting forwarders, ``remove`` restores them. The
    forwarders are Python callbacks: for counting, not timing, and on one thread (a callback on a pool
    worker would wait for the interpreter lock the calling thread holds)."""

    _LAUNCH = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int)
    _ALLOC = ctypes.CFUNCTYPE(ctypes.c_void_p, ctypes.c_int, ctypes.c_int, ctypes.c_uint64, ctypes.c_int, ctypes.c_int)

    def __init__(self, library: Path):
        handle = ctypes.CDLL(str(library), mode=os.RTLD_NOLOAD)
        self.pointers = [self._pointer(handle, "__TVMBackendParallelLaunch"), self._pointer(handle, "__TVMBackendAllocWorkspace")]
        self.originals = [p.value if p is not None else None for p in self.pointers]
        self.launches = self.allocations = 0

        def counting_launch(flambda: int, cdata: int, tasks: int) -> int:
            self.launches += 1
            return self._LAUNCH(self.originals[0])(flambda, cdata, tasks)

        def counting_alloc(device_type: int, device_id: int, size: int, code: int, bits: int) -> int:
            self.allocations += 1
            return self._ALLOC(self.originals[1])(device_type, device_id, size, code, bits)

        self.callbacks = [self._LAUNCH(counting_launch), self._ALLOC(counting_alloc)]  # alive while installed

    @staticmethod
    def _pointer(handle: ctypes.CDLL, name: str) -> ctypes.c_void_p | None:
        """The library's pointer ``name``; ``None`` when its code never calls that function (no symbol)."""
        try:
            return ctypes.c_void_p.in_dll(handle, name)
        except ValueError:
            return None

    def install(self) -> None:
        for pointer, callback in zip(self.pointers, self.callbacks):
            if pointer is not None:
                pointer.value = ctypes.cast(callback, ctypes.c_void_p).value

    def remove(self) -> None:
        for pointer, original in zip(self.pointers, self.originals):
            if pointer is not None:
                pointer.value = original


def count_backend_calls(step: Step) -> list[tuple[str, int, int]]:
    """Every call instruction of one step (run on one thread) with the parallel regions it opened and the
    workspaces it allocated: (symbol, launches, allocations)."""
    from slmc.artifact.runtime import LIBRARY
    from slmc.artifact.tvm_runtime import tvm_ffi

    counter = BackendCounter(step.model.path / LIBRARY)
    out: list[tuple[str, int, int]] = []
    start = [0, 0]

    def instrument(_func: Any, symbol: str, before: bool, _ret: Any, *_args: Any) -> int:
        if before:
            start[:] = [counter.launches, counter.allocations]
        else:
            out.append((str(symbol), counter.launches - start[0], counter.allocations - start[1]))
        return 0

    vm = step.model._vm  # the profiler looks inside the runtime on purpose
    threads = int(tvm_ffi().get_global_func("runtime.NumThreads")())
    set_threads(1)
    counter.install()
    vm["set_instrument"](tvm_ffi().convert(instrument))
    try:
        step()
    finally:
        vm["set_instrument"](None)
        counter.remove()
        set_threads(threads)
    return out


def _argument_bytes(args: list[Any]) -> int:
    """Bytes of the tensors among a kernel call's arguments (what a GEMV streams: codes, scales, x, out)."""
    import numpy as np

    total = 0
    for arg in args:
        shape, dtype = getattr(arg, "shape", None), getattr(arg, "dtype", None)
        if shape is not None and dtype is not None:
            total += int(np.prod([int(d) for d in shape])) * np.dtype(str(dtype)).itemsize
    return total


def record_calls(step: Step) -> list[tuple[str, Any, list[Any]]]:
    """Every call instruction of one step: (symbol, function, arguments); the instrument is removed after."""
    from slmc.artifact.tvm_runtime import tvm_ffi

    calls: list[tuple[str, Any, list[Any]]] = []

    def instrument(func: Any, symbol: str, before: bool, _ret: Any, *args: Any) -> int:
        if before:
            calls.append((str(symbol), func, list(args)))
        return 0

    vm = step.model._vm  # the profiler looks inside the runtime on purpose
    vm["set_instrument"](tvm_ffi().convert(instrument))
    try:
        step()
    finally:
        vm["set_instrument"](None)  # detached (a no-op instrument would still run per instruction)
    return calls


def replay_kernels(calls: list[tuple[str, Any, list[Any]]], rounds: int) -> list[tuple[str, float]]:
    """Each kernel call of the step (not ``vm.*``) replayed in order, ``rounds`` times: (symbol, fastest s)."""
    kernels = [(symbol, func, args) for symbol, func, args in calls if not symbol.startswith("vm.")]
    times: list[list[float]] = [[] for _ in kernels]
    clock = time.perf_counter
    for _ in range(rounds):
        for index, (_, func, args) in enumerate(kernels):
            start = clock()
            func(*args)
            times[index].append(clock() - start)
    return [(symbol, min(t)) for (symbol, _, _), t in zip(kernels, times)]  # min: the least disturbed by other load


def in_step_minima(step: Step, steps: int) -> list[tuple[str, float]]:
    """Every call instruction of the step timed where it runs (instrument timestamps before and after it),
    fastest over ``steps`` steps: (symbol, s). Builtins included; on a loaded machine the minima are the
    calls that were not preempted (each callback adds about a microsecond around, not inside, the call)."""
    from slmc.artifact.tvm_runtime import tvm_ffi

    clock = time.perf_counter_ns
    stamps: list[int] = []
    names: list[str] = []
    steps_done = 0

    def stamp(_func: Any, symbol: str, before: bool, _ret: Any, *_args: Any) -> int:
        stamps.append(clock())
        if before and not steps_done:
            names.append(str(symbol))
        return 0

    vm = step.model._vm  # the profiler looks inside the runtime on purpose
    vm["set_instrument"](tvm_ffi().convert(stamp))
    try:
        best: list[float] | None = None
        for _ in range(steps):
            stamps.clear()
            step()
            steps_done += 1
            durations = [(b - a) / 1e9 for a, b in zip(stamps[::2], stamps[1::2])]
            best = durations if best is None else [min(x, y) for x, y in zip(best, durations)]
    finally:
        vm["set_instrument"](None)
    return list(zip(names, best or []))


def call_overhead(rounds: int) -> float:
    """Seconds of one Python call of an FFI function doing nothing (what the replay adds to each kernel)."""
    from slmc.artifact.tvm_runtime import tvm_ffi

    noop = tvm_ffi().get_global_func("runtime.NumThreads")
    start = time.perf_counter()
    for _ in range(rounds):
        noop()
    return (time.perf_counter() - start) / rounds


def set_threads(count: int) -> None:
    """This thread's TVM kernels on ``count`` threads (0: the runtime's default, one per physical core). Through
    ``set_pool_threads``: ``config_threadpool(1, count)`` without a CPU list, used here before session 11, left
    every kernel inline on one thread on a 2-core machine while ``runtime.NumThreads`` said 2."""
    from slmc.artifact.tvm_runtime import default_pool_threads, set_pool_threads

    set_pool_threads(count or default_pool_threads())


def profile(name: str, step: Step, rounds: int, top: int, threads: list[int]) -> dict[str, Any]:
    """The breakdown of one step at the current thread count (``set_threads``), each kernel also replayed
    on every count of ``threads`` (the pool is switched and restored)."""
    from slmc.artifact.tvm_runtime import tvm_ffi

    current = int(tvm_ffi().get_global_func("runtime.NumThreads")())
    calls = record_calls(step)
    counted = [(symbol, n, w) for symbol, n, w in count_backend_calls(step) if not symbol.startswith("vm.")]
    builtins = Counter(symbol for symbol, _, _ in calls if symbol.startswith("vm."))
    kernels = [(symbol, args) for symbol, _, args in calls if not symbol.startswith("vm.")]
    if [symbol for symbol, _, _ in counted] != [symbol for symbol, _ in kernels]:  # rows are matched by position
        raise SystemExit(f"{name}: the counted step called other kernels than the recorded one ({len(counted)} calls "
                         f"against {len(kernels)}): its parallel regions cannot be attributed")
    backend = [(n, w) for _, n, w in counted]
    replayed_on: dict[int, list[tuple[str, float]]] = {}
    for count in dict.fromkeys([current, *threads]):
        set_threads(count)
        replayed_on[count] = replay_kernels(calls, rounds)
    set_threads(current)
    replayed = replayed_on[current]
    noop = call_overhead(2000)
    per_kernel: dict[str, dict[str, Any]] = {}
    for index, (symbol, args) in enumerate(kernels):
        row = per_kernel.setdefault(_kernel_name(symbol), {"calls": 0, "launches": 0, "workspaces": 0, "bytes": 0,
                                                           "ms": dict.fromkeys(replayed_on, 0.0)})
        row["calls"] += 1
        row["launches"] += backend[index][0]
        row["workspaces"] += backend[index][1]
        row["bytes"] += _argument_bytes(args)
        for count, times in replayed_on.items():
            row["ms"][count] += (times[index][1] - noop) * 1e3
    step_s = min(step.timed(5) for _ in range(rounds))
    kernel_s = sum(s for _, s in replayed) - noop * len(replayed)
    rows = sorted(per_kernel.items(), key=lambda kv: -kv[1]["ms"][current])
    print(f"\n== {name}: step {step_s * 1e3:.3f} ms, {len(replayed)} kernel calls ({kernel_s * 1e3:.3f} ms replayed, "
          f"call overhead {noop * 1e6:.2f} us each subtracted), {sum(n for n, _ in backend)} parallel regions, "
          f"{sum(w for _, w in backend)} workspace allocations, "
          f"{sum(builtins.values())} VM builtin calls; step - kernels = {(step_s - kernel_s) * 1e3:.3f} ms")
    print("   builtins: " + ", ".join(f"{k} {n}" for k, n in builtins.most_common()))
    counts = list(replayed_on)
    print("   " + " ".join(f"{f'ms @{c} thr':>10}" for c in counts) + "  calls  forks  wkspc   GB/s  kernel")
    for kernel, row in rows[:top]:
        cells = " ".join(f"{row['ms'][c]:10.3f}" for c in counts)
        timed = _part(kernel) == "linears" and row["ms"][current] > 0  # replay minus call overhead can be <= 0
        rate = f"{row['bytes'] / (row['ms'][current] * 1e6):6.1f}" if timed else "      "
        print(f"   {cells} {row['calls']:6d} {row['launches']:6d} {row['workspaces']:6d} {rate}  {kernel}")
    small = [(k, r) for k, r in rows if r["launches"] and r["ms"][current] / max(1, r["launches"]) < 0.005]
    if small:
        print("   parallel regions under 5 us of work each: "
              + ", ".join(f"{k} ({r['launches']} x {r['ms'][current] * 1e3 / r['launches']:.1f} us)" for k, r in small))
    inside = in_step_minima(step, 4 * rounds)
    parts: dict[str, float] = defaultdict(float)
    for symbol, seconds in inside:
        parts[_part(symbol)] += seconds
    print("   inside the step (each call's fastest of " + str(4 * rounds) + " steps): "
          + ", ".join(f"{k} {v * 1e3:.3f} ms" for k, v in sorted(parts.items(), key=lambda kv: -kv[1])))
    return {"threads": current, "step_ms": step_s * 1e3, "kernel_calls": len(replayed), "kernel_ms": kernel_s * 1e3,
            "parallel_regions": sum(n for n, _ in backend),
            "workspace_allocations": sum(w for _, w in backend), "builtin_calls": dict(builtins), "call_overhead_us": noop * 1e6,
            "inside_step_ms": {k: v * 1e3 for k, v in parts.items()},
            "kernels": [{"name": k, "calls": r["calls"], "parallel_regions": r["launches"],
                         "workspace_allocations": r["workspaces"], "bytes": r["bytes"],
                         "ms_by_threads": r["ms"]} for k, r in rows]}


def alternate(steps: dict[str, Step], threads: list[int], rounds: int, calls: int,
              statistic: str = "median") -> dict[str, dict[int, float]]:
    """ms per step (median or min over rounds of ``calls`` steps) of each artifact and thread count, timed
    alternately round by round (on a loaded machine ``min`` with ``calls`` 1 is the least disturbed)."""
    samples: dict[str, dict[int, list[float]]] = {n: {t: [] for t in threads} for n in steps}
    for _ in range(rounds):
        for count in threads:
            set_threads(count)
            # an untimed batch first: the batch right after a thread-count switch ran 1.4x slower, whichever
            # artifact it was (docs/dev-notes.md, "Session 13: VM cost per decode step")
            next(iter(steps.values())).timed(calls)
            for name, step in steps.items():
                step()
                samples[name][count].append(step.timed(calls) * 1e3)
    set_threads(0)
    pick = statistics.median if statistic == "median" else min
    return {n: {t: pick(v) for t, v in by.items()} for n, by in samples.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--artifact", action="append", default=[], help="artifact directory (repeatable)")
    parser.add_argument("--layers", type=int, default=4, help="layers of the model built when no --artifact is given")
    parser.add_argument("--recipe", type=Path, help="recipe of the model built (default: slmc bench's int4 g32 RTN)")
    parser.add_argument("--max-context", type=int, default=512)
    parser.add_argument("--work", default="/tmp/slmc-decode-profile")
    parser.add_argument("--context", type=int, default=128)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--calls", type=int, default=20, help="steps per timed batch")
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--top", type=int, default=15)
    parser.add_argument("--statistic", choices=["median", "min"], default="median", help="of the alternated rounds")
    parser.add_argument("--profile-threads", type=int, nargs="*", default=[2, 1],
                        help="thread counts each kernel is replayed on; the breakdown of the step at the first "
                             "(none: skip it)")
    parser.add_argument("--vm", nargs="+", choices=["bytecode", "compiled"], default=["bytecode"],
                        help="the built model's VM functions (target field vm); both: two artifacts, alternated. "
                             "A compiled-mode step has no VM instrument: its call counts read 0 (benchmarks/vm_call_census.py)")
    parser.add_argument("--json")
    args = parser.parse_args()
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    artifacts = [Path(a) for a in args.artifact] or [build_artifact(args.layers, args.max_context, work, args.recipe, vm)
                                                      for vm in args.vm]
    load_before = os.getloadavg()
    steps = {str(a): Step(a, args.context) for a in artifacts}
    results: dict[str, Any] = {"context": args.context, "load_before": load_before}
    results["profiles"] = {}
    if args.profile_threads:  # the breakdown at the first count, each kernel also replayed on the others
        count = args.profile_threads[0]
        set_threads(count)
        results["profiles"] = {name: profile(f"{name}, {count} thread(s)", step, args.rounds, args.top,
                                             args.profile_threads)
                               for name, step in steps.items()}
    timings = alternate(steps, args.threads, args.rounds, args.calls, args.statistic)
    results["alternated_ms"] = timings
    print(f"\nalternated, context {args.context} ({args.statistic} ms per step):")
    first = next(iter(timings))
    for name, by in timings.items():
        cells = " | ".join(f"{t} thr {ms:7.3f} ms" for t, ms in by.items())
        ratio = " | ".join(f"{t} thr {by[t] / timings[first][t]:.2f}x of first" for t in by)
        spread = f"2/1 threads {by[2] / by[1]:.2f}x" if 1 in by and 2 in by else ""
        print(f"   {cells} | {ratio} | {spread} | {name}")
    results["load_after"] = os.getloadavg()
    print(f"load {load_before[0]:.2f} -> {results['load_after'][0]:.2f}")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1, default=str))


if __name__ == "__main__":
    main()
