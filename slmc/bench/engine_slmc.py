"""The slmc bench engines: the artifact ``slmc.compile`` writes for the run's recipe, run two ways.

``slmc``: the Python runtime (``slmc.load``, TVM's Relax VM): an artifact of the resident contract as a
generation runs it (``ResidentTimer``: the context prefilled, then single-token steps), else under the
causal-LM copy contract (``StepTimer``).
``slmc-native``: the same artifact packaged for the host (``slmc.driver.package``: the bundle with the
C++ runner ``slmc-run`` of slmc/native) and run by ``slmc-run --json --bench-prompt-tokens N
--ignore-eos``, no Python in the process. The runner reports per run: prefill tokens/s of the
N-token prompt, the time of each decode step (``token_ms``, from context N on; the bench takes them as
samples after one warm-up step, as it does for the Python runtime, rather than the run's mean, which
included the first, cold step), and its peak RSS (``VmHWM``: its own, where ``ru_maxrss`` would also
hold the Python parent's high-water mark, carried across fork and exec).
Both use TVM's thread pool: its defaults, or the common policy's environment.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

import numpy as np

from slmc.artifact.layout import WEIGHTS
from slmc.artifact.tvm_runtime import default_pool_threads, tvm_threads
from slmc.bench.decode_bytes import slmc_decode_bytes
from slmc.bench.prepare import EngineUnavailable, Preparation
from slmc.bench.thread_policy import ThreadPolicy
from slmc.bench.timing import PROMPT_ID_RANGE, StepTimer, bench_prompt, peak_rss_mb, rss_bytes, step_samples, timed
from slmc.errors import InputError, SlmcError
from slmc.graph.kv_cache import KVCacheSpec


def _tvm_threading(policy: ThreadPolicy) -> dict[str, Any]:
    """The thread settings the report records. slmc's default is the pool size ``use_physical_cores`` gives every
    thread (``default_pool_threads``, counted once per process): ``physical_cores()`` read here, after TVM pinned
    this thread to its pool's first CPUs, could count fewer than the pool runs (one after a one-thread pool)."""
    return {"tvm_num_threads": policy.env.get("TVM_NUM_THREADS", f"slmc default: {default_pool_threads()} (one per physical core)"),
            "spinning": policy.env.get("TVM_THREAD_POOL_SPIN_COUNT") != "0"}


def prepare(prep: Preparation) -> dict[str, Any]:
    manifest = prep.compiled.manifest
    read = slmc_decode_bytes(prep.artifact() / WEIGHTS, manifest.weights.order, manifest.weights.aliases,
                             prep.spec.module)
    # the weights file's size (header and alignment included), as the footprint rows and slmc-run count it; the
    # manifest's ``weights.bytes`` is its tensors only (SmolLM-135M w4a8: 50,048 B less)
    return {**prep.common(), "artifact": str(prep.artifact()), "weights_file_bytes": (prep.artifact() / WEIGHTS).stat().st_size,
            "weight_bytes": read.weight_bytes, "decode_bytes": read.to_json(),
            "verification_passed": manifest.verification.passed,
            "tuning": manifest.tuning, "kv_cache": manifest.kv_cache.mode if manifest.kv_cache else None,
            "kv_cache_dtype": manifest.kv_cache.dtype if manifest.kv_cache else None,
            "kv_cache_bytes_per_token": manifest.kv_cache.bytes_per_token if manifest.kv_cache else None}


def open_timer(info: dict[str, Any], policy: ThreadPolicy) -> StepTimer | ResidentTimer:
    import slmc

    model = slmc.load(info["artifact"])
    threading = {**_tvm_threading(policy), "tvm_pool_threads": tvm_threads()}  # the pool this process runs with
    if model.resident:
        return ResidentTimer(model.decoder(), threading)
    return StepTimer(lambda i, k, v: model.step(i, k, v)[0], KVCacheSpec(**info["kv"]), threading)


class ResidentTimer:
    """Times the resident decoder (``slmc.artifact.resident_cache``) as generation runs it, and as the
    llama.cpp engine is timed: a decode sample is one token after a ``context``-token prompt prefilled
    once (the cache truncated back to ``context`` before each sample), a prefill sample the prompt from
    the empty cache with only the last position's logits (``last_only``) and their argmax. Nothing of
    the copy contract is allocated: the process holds what a generation at that context holds (the
    process's peak RSS is the runtime's, issue 22)."""

    def __init__(self, decoder: Any, threading: dict[str, Any]):
        self.decoder, self.threading = decoder, threading

    def decode_ms(self, context: int, steps: int, evict_bytes: int = 0) -> list[float]:
        decoder, one = self.decoder, bench_prompt(1)
        decoder.reset()
        decoder.feed(bench_prompt(context), last_only=True)

        def sample() -> None:
            decoder.truncate(context)
            decoder.feed(one, last_only=True)

        return step_samples(sample, steps, evict_bytes)

    def prefill_s(self, tokens: int, repeats: int) -> list[float]:
        ids, decoder = bench_prompt(tokens), self.decoder

        def first() -> int:
            decoder.reset()
            return int(np.argmax(decoder.feed(ids, last_only=True)[0, -1]))

        first()
        return [timed(first) for _ in range(repeats)]

    def peak_rss_mb(self) -> float:
        return peak_rss_mb()

    def rss_growth(self, first: int, last: int) -> dict[str, int]:
        """A generation from a one-token prompt, one token per step (``last_only``, as ``generate`` runs it):
        the process's RSS after ``first`` and after ``last`` tokens, and the KV bytes written in between
        (``slmc.bench.timing.GrowthProbe``). Precondition: ``1 <= first <= last`` (``InputError`` otherwise)."""
        if not 1 <= first <= last:
            raise InputError(f"rss_growth: first ({first}) and last ({last}) must be token counts with 1 <= first <= last")
        decoder, token = self.decoder, bench_prompt(1)
        decoder.reset()
        seen = {}
        for count in range(1, last + 1):  # ``count`` tokens in the cache after this step
            if count > 1:
                token[0, 0] = (count * 7 + 1) % PROMPT_ID_RANGE
            decoder.feed(token, last_only=True)
            if count in (first, last):
                seen[count] = rss_bytes()
        per_token = self.decoder.cache.bytes_per_token()
        return {"first": first, "last": last, "rss_first_bytes": seen[first], "rss_last_bytes": seen[last],
                "kv_written_bytes": per_token * (last - first)}


def prepare_native(prep: Preparation) -> dict[str, Any]:
    from slmc.driver.package import package_artifact

    base = prepare(prep)
    try:
        result = package_artifact(prep.artifact(), prep.recipe_work / "bundle")
    except SlmcError as exc:  # no tokenizer, no compiler, ...: the engine cannot run; the reason is reported
        raise EngineUnavailable(f"slmc package failed: {exc}") from exc
    return {**base, "bundle": str(result.bundle), "runner": str(result.bundle / "slmc-run")}


class NativeTimer:
    """Times ``slmc-run`` runs; each call starts the runner (its own process)."""

    def __init__(self, info: dict[str, Any], policy: ThreadPolicy):
        self.info, self.threading = info, _tvm_threading(policy)
        self.peak_bytes = 0
        self.runs: list[dict[str, Any]] = []  # each run's memory terms (memory_runs)
        self.max_context = info["kv"]["max_context"]

    def _run(self, prompt: int, new_tokens: int, evict_bytes: int = 0) -> dict[str, Any]:
        """One runner process; its memory terms are recorded (``memory_runs``) unless it evicted (its peak RSS
        then holds the eviction buffer)."""
        cmd = [self.info["runner"], self.info["bundle"], "--json", "--bench-prompt-tokens", str(prompt),
               "--max-new-tokens", str(new_tokens), "--ignore-eos", *(["--evict-bytes", str(evict_bytes)] if evict_bytes else [])]
        done = subprocess.run(cmd, capture_output=True, text=True, check=False, env=dict(os.environ))
        try:
            report = json.loads(done.stdout.strip().splitlines()[-1])
        except (IndexError, json.JSONDecodeError) as exc:
            raise SlmcError(f"{' '.join(cmd)} exited {done.returncode} without a JSON report: {done.stderr[-500:]}") from exc
        if not report.get("ok"):
            raise SlmcError(f"{' '.join(cmd)} failed: {report.get('error')}")
        if evict_bytes:
            return report
        self.peak_bytes = max(self.peak_bytes, int(report["peak_rss_bytes"]))
        self.runs.append({"context": report["prompt_tokens"] + report["generated_tokens"] - 1,
                          **{k: report[k] for k in ("peak_rss_bytes", "weights_file_bytes", "kv_cache_bytes",
                                                    "kv_cache_huge_pages")}})
        return report

    def decode_ms(self, context: int, steps: int, evict_bytes: int = 0) -> list[float]:
        """``steps`` samples, as the Python runtime's timer takes them: the ms of each decode step after
        a ``context``-token prompt (the runner's ``token_ms``, the time between consecutive tokens, or with
        ``evict_bytes`` from the end of the runner's eviction write to the next token), the first step left out
        as the warm-up (the prompt shortened so prompt + tokens fit ``max_context``)."""
        prompt = max(1, min(context, self.max_context - steps - 3))
        report = self._run(prompt, steps + 2, evict_bytes)
        return [float(ms) for ms in report["token_ms"][1:]]

    def prefill_s(self, tokens: int, repeats: int) -> list[float]:
        return [tokens / self._run(tokens, 1)["prefill_tokens_per_s"] for _ in range(repeats)]

    def peak_rss_mb(self) -> float:
        return round(self.peak_bytes / 2**20, 1)

    def memory_runs(self) -> list[dict[str, Any]]:
        """Each run's peak RSS beside the terms of its bound (``slmc.bench.timing.MemoryRuns``)."""
        return list(self.runs)


def footprint_native(info: dict[str, Any], policy: ThreadPolicy, prompt: int, steps: int) -> dict[str, Any]:
    """One ``slmc-run`` process: ``prompt`` bench ids, then ``steps`` decode steps (``steps + 1`` tokens: the first
    ends the prefill); its own peak RSS and the terms it reports (``slmc.bench.footprint``)."""
    report = open_native(info, policy)._run(prompt, steps + 1)
    return {"prompt_tokens": prompt, "decode_steps": steps,
            **{k: int(report[k]) for k in ("peak_rss_bytes", "weights_file_bytes", "kv_cache_bytes")}}


def open_native(info: dict[str, Any], policy: ThreadPolicy) -> NativeTimer:
    if not Path(info["runner"]).is_file():
        raise SlmcError(f"the packaged runner {info['runner']} is missing")
    return NativeTimer(info, policy)
