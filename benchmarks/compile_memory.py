"""Peak memory of ``slmc.compile`` against 3x the model's float32 weights (issue 22), phase by phase.

In a fresh child process: build ``slmc bench``'s random-weight model (``slmc.bench.models.bench_model``,
default the Qwen2.5-0.5B shape), compile it with a recipe (default int4 g32 RTN,
examples/recipes/int4-g32-rtn.yaml) for the host into a temporary directory (no compile cache), and
report the child's peak RSS (``VmHWM``; ``ru_maxrss`` too) against the bound, 3x the float32 bytes of the model's
parameters (a tied table counted once). A sampling thread reads ``/proc/self/status`` (VmRSS, RssAnon,
RssFile) every ``--interval`` seconds and the compile's stage (``slmc.progress.current_stage``): the
timeline shows which stage peaks and whether the memory is the process's own (anon) or mapped file
pages (the checkpoint, the artifact's weights file).

    python benchmarks/compile_memory.py [--model qwen2.5-0.5b] [--max-context 2008]
                                        [--recipe examples/recipes/int4-g32-rtn.yaml] [--json out.json]

The 0.5B compile takes minutes and several GB: run one at a time, on a machine with the memory free
(MemAvailable is printed first). Not a test: no smaller shape guards the ratio (a SmolLM-135M compile's peak
is mostly the fixed torch/TVM/LLVM base; docs/dev-notes.md, "Session 10: compile memory").
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
DEFAULT_RECIPE = REPO / "examples" / "recipes" / "int4-g32-rtn.yaml"
BOUND = 3.0  # issue 22: peak RSS below 3x the float32 weight bytes
STATUS_FIELDS = ("VmRSS", "RssAnon", "RssFile")


def memory_status(path: str = "/proc/self/status") -> dict[str, int]:
    """VmRSS, RssAnon and RssFile of a process in bytes (Linux ``/proc/<pid>/status``)."""
    found = {}
    with open(path) as status:
        for row in status:
            key, _, value = row.partition(":")
            if key in (*STATUS_FIELDS, "MemAvailable", "VmHWM"):
                found[key] = int(value.split()[0]) * 1024
    return found


class StageSampler(threading.Thread):
    """Samples this process's memory and the compile's stage every ``interval`` seconds until ``stop``."""

    def __init__(self, interval: float):
        super().__init__(daemon=True)
        self.interval, self.samples, self._done = interval, [], threading.Event()
        self.started_at = time.monotonic()

    def run(self) -> None:
        from slmc import progress

        while not self._done.is_set():
            self.record(progress.current_stage() or "other")
            self._done.wait(self.interval)

    def record(self, stage: str) -> None:
        self.samples.append({"t": round(time.monotonic() - self.started_at, 2), "stage": stage, **memory_status(),
                             "where": self.main_thread_calls()})

    @staticmethod
    def main_thread_calls(depth: int = 4) -> str:
        """The innermost ``depth`` calls of slmc's own code on the main thread (``module.function``, outer first)."""
        frame = sys._current_frames().get(threading.main_thread().ident)
        calls = []
        while frame is not None and len(calls) < depth:
            module = frame.f_globals.get("__name__", "")
            if module.startswith(("slmc", "passes")):
                calls.append(f"{module.rsplit('.', 1)[-1]}.{frame.f_code.co_name}")
            frame = frame.f_back
        return " > ".join(reversed(calls))

    def stop(self) -> None:
        self._done.set()
        self.join()


def stage_timeline(samples: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Consecutive samples of one stage merged: its time span, RSS at its start and end, and its
    largest sample with the anon/file split at that moment."""
    rows: list[dict[str, Any]] = []
    for s in samples:
        if not rows or rows[-1]["stage"] != s["stage"]:
            rows.append({"stage": s["stage"], "from_s": s["t"], "start_rss": s["VmRSS"], "peak": s})
        row = rows[-1]
        row["to_s"], row["end_rss"] = s["t"], s["VmRSS"]
        if s["VmRSS"] > row["peak"]["VmRSS"]:
            row["peak"] = s
    return rows


def measure(model: str, max_context: int, recipe: Path, interval: float) -> dict[str, Any]:
    """In this (fresh) process: build the bench model, compile it, return the memory report."""
    import resource

    from slmc import progress

    sampler = StageSampler(interval)
    sampler.start()
    import slmc
    from slmc.bench.models import bench_model

    with progress.compile_stages():
        spec = bench_model(model, max_context)
        fp32_bytes = 4 * sum(p.numel() for p in spec.module.parameters())  # parameters() yields a tied table once
        with tempfile.TemporaryDirectory() as work:
            result = slmc.compile(spec, recipe=recipe, target="host", out=Path(work) / "artifact", use_cache=False)
            weights_file = result.manifest.weights.bytes
        spec = None
    sampler.stop()
    peak = memory_status()["VmHWM"]  # ru_maxrss may carry the parent's high-water mark across fork+exec
    return {"model": model, "max_context": max_context, "recipe": str(recipe), "fp32_weight_bytes": fp32_bytes,
            "bound_bytes": int(BOUND * fp32_bytes), "peak_rss_bytes": peak,
            "ru_maxrss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024, "peak_over_fp32": round(peak / fp32_bytes, 3),
            "weights_file_bytes": weights_file, "verified": result.verification.passed,
            "timings": result.timings, "timeline": stage_timeline(sampler.samples), "samples": sampler.samples}


def mib(n: int) -> str:
    return f"{n / 2**20:8,.0f}"


def print_report(report: dict[str, Any]) -> None:
    fp32, peak, bound = report["fp32_weight_bytes"], report["peak_rss_bytes"], report["bound_bytes"]
    print(f"{report['model']} (max_context {report['max_context']}), recipe {Path(report['recipe']).name}: "
          f"float32 weights {fp32 / 2**20:,.0f} MiB, weights file {report['weights_file_bytes'] / 2**20:,.0f} MiB, "
          f"verified {report['verified']}")
    print(f"peak RSS (VmHWM) {peak / 2**20:,.0f} MiB = {peak / fp32:.2f}x the float32 weights; bound {BOUND:g}x = "
          f"{bound / 2**20:,.0f} MiB: {'met' if peak < bound else 'NOT met'}")
    print(f"{'stage':<8} {'from s':>7} {'to s':>7} {'start MiB':>9} {'peak MiB':>9} {'anon':>8} {'file':>8} {'end MiB':>9}  at the peak")
    for row in report["timeline"]:
        p = row["peak"]
        print(f"{row['stage']:<8} {row['from_s']:7.1f} {row['to_s']:7.1f} {mib(row['start_rss']):>9} {mib(p['VmRSS']):>9} "
              f"{mib(p['RssAnon']):>8} {mib(p['RssFile']):>8} {mib(row['end_rss']):>9}  {p['where']}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="qwen2.5-0.5b", help="a slmc bench model (slmc.bench.models)")
    parser.add_argument("--max-context", type=int, default=2008, help="the context slmc bench compiles for by default")
    parser.add_argument("--recipe", type=Path, default=DEFAULT_RECIPE)
    parser.add_argument("--interval", type=float, default=0.1, help="seconds between two memory samples")
    parser.add_argument("--json", type=Path, help="also write the report (with every stage's peak sample) here")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(measure(args.model, args.max_context, args.recipe.resolve(), args.interval)))
        return
    print(f"MemAvailable before: {memory_status('/proc/meminfo')['MemAvailable'] / 2**30:.1f} GiB")
    out = subprocess.run([sys.executable, __file__, "--child", "--model", args.model, "--max-context", str(args.max_context),
                          "--recipe", str(args.recipe), "--interval", str(args.interval)],
                         stdout=subprocess.PIPE, text=True, check=True)
    report = json.loads(out.stdout.strip().splitlines()[-1])
    print_report(report)
    if args.json is not None:  # with every sample
        args.json.write_text(json.dumps(report, indent=1) + "\n")


if __name__ == "__main__":
    main()
