"""Speed of slmc's untuned CPU schedules: compiled artifact against PyTorch eager fp32, side by side.

For each model (``fixture-lm``; ``smollm135``, a SmolLM-135M-shaped Llama with random weights, see
``benchmarks/quantize_memory.py``) and each recipe (``fp32``: no passes; ``int4``: weight-only int4,
groups of 32, RTN), compiles the model for ``host`` twice: with dlight's CPU rules only (what slmc
did before ``slmc.schedules``: ``--before``) and with slmc's pipeline (slmc rules, then dlight,
then the fallback). Times, interleaved round by round so that load hits every variant alike, a
prefill of ``--prompt`` tokens from the empty cache and one decode step after a ``--prompt``-token
cache, against ``torch`` eager fp32 of the original module with the same thread count. Reports
medians, the untuned compile time of each variant, and with ``--profile`` the kernels that
dominate the slmc-scheduled decode and prefill (``relax.VirtualMachine`` profiler).

    python benchmarks/schedule_speed.py --models fixture smollm135 --recipes fp32 int4 --before --profile 8
    python benchmarks/schedule_speed.py --models smollm135 --threads 1   # robust on a shared machine

Also prints the measured triad bandwidth (slmc.bench.machine) and, per variant, weight bytes / decode time. Not a test:
timings depend on the machine and its load (``load_before``/``load_after`` are in the output). With
more runnable processes than cores, every parallel kernel (TVM's and torch's alike) waits for a
descheduled thread at its barrier: compare ``--threads 1`` runs then.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from slmc.bench.machine import memory_bandwidth
from slmc.bench.models import BENCH_MODELS, bench_model
from slmc.bench.timing import timed

RECIPES = {
    "fp32": "passes: []\n",
    "int4": "passes:\n  - quantize: {bits: 4, group_size: 32, method: rtn}\n",
    # static int8 activations need calibration; the bench models have random weights and no tokenizer:
    # the prompts are random token ids, written next to the recipe (CALIBRATION_IDS)
    "w8a8": "passes:\n  - quantize: {scheme: w8a8, smoothquant: {alpha: 0.5}, observer: minmax}\n"
            "calibration: {tensors: calibration-ids.npy, num_samples: 16}\n",
    "w4a8": "passes:\n  - quantize: {scheme: w4a8, group_size: 32, method: rtn}\n",  # dynamic activations: no calibration
}
CALIBRATION_IDS = "calibration-ids.npy"  # [16, 1, 128] int64 token ids below 256 (every bench model's vocabulary)


def load_spec(model: str, work: Path, max_context: int):
    """The ``ModelSpec`` of ``fixture``, ``smollm135`` (untied head, random weights, written into ``work``)
    or one of ``slmc bench``'s models (``slmc.bench.models``)."""
    if model == "fixture":
        from slmc.frontend.model_source import load_model

        return load_model("fixture-lm")
    if model in BENCH_MODELS:
        return bench_model(model, max_context)
    sys.path.insert(0, str(Path(__file__).parent))
    from quantize_memory import write_checkpoint

    from slmc.models.huggingface import load_hf_model

    folder = work / "smollm-135m-shaped"
    if not folder.exists():
        write_checkpoint(folder)
    return load_hf_model(folder, max_context=max_context)


def compile_variant(spec, recipe_text: str, slmc_rules: bool, work: Path):
    """(VirtualMachine factory, weights, compile seconds) for ``spec`` under the recipe."""
    import tvm
    from tvm import relax

    from slmc.driver.compress import compress
    from slmc.backend.lowering import to_relax
    from slmc.spec.recipe import load_recipe
    from slmc.backend.relax_pipeline import build_pipeline
    from slmc.spec.target import load_target

    path = work / f"recipe-{abs(hash(recipe_text))}.yaml"
    path.write_text(recipe_text)
    if CALIBRATION_IDS in recipe_text:
        np.save(work / CALIBRATION_IDS, np.random.default_rng(0).integers(0, 256, (16, 1, 128), dtype=np.int64))
    target = load_target("host")
    final = compress(spec, load_recipe(path), target).final
    program = to_relax(final)
    tvm_target = target.tvm_target()
    start = time.perf_counter()
    executable = tvm.compile(program.module, target=tvm_target,
                             relax_pipeline=build_pipeline(target, tvm_target, slmc_rules=slmc_rules))
    seconds = time.perf_counter() - start
    device = tvm.cpu()
    weights = [tvm.runtime.tensor(w, device) for w in program.weights]

    def machine():
        return relax.VirtualMachine(executable, device)

    return machine, weights, seconds


def step_inputs(spec, prompt: int):
    """(prefill inputs, decode inputs) as numpy: ``prompt`` tokens from the empty cache; one token after them."""
    import torch

    cache = spec.kv_cache
    ids = np.random.default_rng(0).integers(0, 256, (1, prompt), dtype=np.int64)
    keys, values = cache.empty()
    with torch.no_grad():
        _, k, v = spec.module(torch.from_numpy(ids), torch.from_numpy(keys), torch.from_numpy(values))
    return (ids, keys, values), (ids[:, :1], k.numpy(), v.numpy())




def profile_top(machine, weights, inputs, top: int) -> list[dict]:
    """The ``top`` kernels by total time in one call (wall time around each VM call instruction)."""
    import tvm

    vm = machine()
    args = [tvm.runtime.tensor(a) for a in inputs]
    vm["main"](*args, *weights)  # warm up
    totals: dict[str, float] = {}
    started: list[float] = []

    def instrument(_func, symbol, before_run, _ret, *_args):
        if before_run:
            started.append(time.perf_counter())
        else:
            totals[str(symbol)] = totals.get(str(symbol), 0.0) + time.perf_counter() - started.pop()
        return 0

    vm.set_instrument(instrument)
    vm["main"](*args, *weights)
    whole = sum(totals.values())
    ranked = sorted(totals.items(), key=lambda kv: -kv[1])[:top]
    return [{"kernel": k, "ms": round(v * 1e3, 3), "share": round(v / whole, 3)} for k, v in ranked]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["fixture"], choices=["fixture", "smollm135", *BENCH_MODELS])
    parser.add_argument("--recipes", nargs="+", default=["fp32", "int4"], choices=sorted(RECIPES))
    parser.add_argument("--before", action="store_true", help="also build with dlight's rules only")
    parser.add_argument("--prompt", type=int, default=128, help="prompt tokens (prefill) and cache length (decode)")
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--profile", type=int, default=0, metavar="N", help="show the N slowest kernels")
    parser.add_argument("--threads", type=int, default=0,
                        help="threads for TVM and torch alike (default: the host descriptor's cores); 1 is robust to load")
    args = parser.parse_args()

    import torch
    import tvm

    from slmc.spec.target import load_target

    threads = args.threads or int(load_target("host").tvm.num_cores)
    torch.set_num_threads(threads)
    os.environ["TVM_NUM_THREADS"] = str(threads)  # read when TVM's thread pool starts (first parallel kernel)
    report: dict = {"threads": threads, "prompt": args.prompt, "load_before": os.getloadavg(), "models": {}}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        for model in args.models:
            spec = load_spec(model, work, max(2 * args.prompt, 256))
            prefill, decode = step_inputs(spec, args.prompt)
            variants = {}
            for recipe in args.recipes:
                for rules in ([False, True] if args.before else [True]):
                    name = f"{recipe}-{'slmc' if rules else 'dlight'}"
                    variants[name] = compile_variant(spec, RECIPES[recipe], rules, work)
            compiled = {name: (machine(), weights) for name, (machine, weights, _) in variants.items()}
            calls = {kind: [tvm.runtime.tensor(a) for a in inputs] for kind, inputs in (("prefill", prefill), ("decode", decode))}
            torch_calls = {kind: [torch.from_numpy(a) for a in inputs] for kind, inputs in (("prefill", prefill), ("decode", decode))}
            times: dict[str, dict[str, list[float]]] = {name: {"prefill": [], "decode": []} for name in [*compiled, "torch-fp32"]}
            for _ in range(args.rounds + 1):  # the first round warms up and is dropped
                for kind in ("prefill", "decode"):
                    for name, (vm, weights) in compiled.items():
                        times[name][kind].append(timed(lambda: vm["main"](*calls[kind], *weights)))
                    with torch.no_grad():
                        times["torch-fp32"][kind].append(timed(lambda: spec.module(*torch_calls[kind])))
            rows = {}
            for name, t in times.items():
                rows[name] = {f"{kind}_ms": round(1e3 * statistics.median(v[1:]), 3) for kind, v in t.items()}
                if name in variants:
                    rows[name]["compile_s"] = round(variants[name][2], 1)
                    weight_bytes = sum(w.numpy().nbytes for w in variants[name][1])
                    rows[name]["weights_mb"] = round(weight_bytes / 2**20, 1)
                    rows[name]["decode_weight_gbps"] = round(weight_bytes / (rows[name]["decode_ms"] / 1e3) / 1e9, 2)
            entry = {"variants": rows}
            if args.profile:
                entry["profile"] = {name: {kind: profile_top(variants[name][0], variants[name][1], inputs, args.profile)
                                           for kind, inputs in (("decode", decode), ("prefill", prefill))}
                                    for name in variants if name.endswith("-slmc")}
            report["models"][model] = entry
    report["triad_bandwidth_gbps"] = round(memory_bandwidth(), 2)  # the roofline slmc bench uses
    report["load_after"] = os.getloadavg()
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
