"""The slmc bench engine's timer of a resident artifact (slmc.bench.engine_slmc.ResidentTimer): it runs the
decoder as generation does and leaves the cache at the context it timed. No timing assertions."""

from __future__ import annotations

from slmc.bench.engine_slmc import ResidentTimer, open_timer
from slmc.bench.thread_policy import engine_default


def test_a_resident_artifact_is_timed_on_its_own_cache_at_the_asked_context(cached_compile):
    timer = open_timer({"artifact": str(cached_compile.artifact), "kv": {}}, engine_default())
    assert isinstance(timer, ResidentTimer)
    samples = timer.decode_ms(40, 3)
    assert len(samples) == 3 and min(samples) > 0
    assert timer.decoder.tokens == 41  # the 40-token context and the last timed step
    assert [s > 0 for s in timer.prefill_s(20, 2)] == [True, True]
    assert timer.decoder.tokens == 20 and timer.peak_rss_mb() > 0


def test_rss_growth_generates_token_after_token_and_counts_the_kv_bytes_written_in_between(cached_compile):
    timer = open_timer({"artifact": str(cached_compile.artifact), "kv": {}}, engine_default())
    grown = timer.rss_growth(4, 40)
    assert timer.decoder.tokens == 40  # one token per step from a one-token prompt
    assert (grown["first"], grown["last"]) == (4, 40) and grown["rss_first_bytes"] > 0 and grown["rss_last_bytes"] > 0
    assert grown["kv_written_bytes"] == 36 * timer.decoder.cache.bytes_per_token()


def test_rss_growth_from_the_first_token_and_refuses_counts_out_of_order(cached_compile):
    """``first=1`` is the one-token prompt (its loop recorded from token 2 and raised KeyError); counts that are not
    ``1 <= first <= last`` are an InputError naming both."""
    import pytest

    from slmc.errors import InputError

    timer = open_timer({"artifact": str(cached_compile.artifact), "kv": {}}, engine_default())
    grown = timer.rss_growth(1, 3)
    assert (grown["first"], grown["last"], timer.decoder.tokens) == (1, 3, 3) and grown["rss_first_bytes"] > 0
    assert grown["kv_written_bytes"] == 2 * timer.decoder.cache.bytes_per_token()
    for first, last in ((0, 3), (5, 3)):
        with pytest.raises(InputError, match=rf"first \({first}\) and last \({last}\) must be token counts"):
            timer.rss_growth(first, last)

def test_cold_samples_evict_between_steps_in_the_engines_process(cached_compile):
    timer = open_timer({"artifact": str(cached_compile.artifact), "kv": {}}, engine_default())
    cold = timer.decode_ms(40, 2, evict_bytes=2**20)  # slmc.bench.evict; a small buffer, no timing asserted
    assert len(cold) == 2 and min(cold) > 0 and timer.decoder.tokens == 41


def test_the_footprint_process_loads_prompts_and_decodes_64_steps(cached_compile):
    """Issue 22's "load + 64 decode steps" row (slmc.bench.footprint) in a fresh process: its peak holds the weights
    file, and the KV term is the context reached (8 + 64 tokens and the sink slot)."""
    import slmc
    from slmc.bench.child import run_child

    manifest = cached_compile.result.manifest
    info = {"artifact": str(cached_compile.artifact), "weights_file_bytes": manifest.weights.bytes}
    got = run_child("footprint", dict(engine_name="slmc", info=info, policy=engine_default().to_json()),
                    env=engine_default().child_env(), quiet=True)
    per_token = slmc.load(cached_compile.artifact).decoder().cache.bytes_per_token()
    assert (got["prompt_tokens"], got["decode_steps"], got["kv_cache_bytes"]) == (8, 64, per_token * 73)
    weights_file = (cached_compile.artifact / "weights.safetensors").stat().st_size  # header and alignment included
    assert got["peak_rss_bytes"] > got["weights_file_bytes"] == weights_file >= manifest.weights.bytes


def test_the_default_thread_count_reported_is_the_pools_not_this_threads_cpus():
    """TVM pins the thread whose pool it starts to the pool's CPUs: counted there, ``physical_cores()`` can be fewer
    than the pool runs. The report gives the count the process's pools were given (``default_pool_threads``)."""
    import os

    from slmc.artifact.tvm_runtime import default_pool_threads
    from slmc.bench.engine_slmc import _tvm_threading

    pool = default_pool_threads()  # counted (or already counted) before the pin
    usable = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {min(usable)})  # this thread only (Linux: 0 is the calling thread), as TVM pins it
    try:
        reported = _tvm_threading(engine_default())["tvm_num_threads"]
    finally:
        os.sched_setaffinity(0, usable)
    assert reported == f"slmc default: {pool} (one per physical core)"


def test_the_memory_goals_weights_term_is_the_weights_files_size(cached_compile):
    """Issue 22's bound names the weights file: ``prepare`` records its size on disk (header and alignment included,
    as the footprint rows and slmc-run count it), not the manifest's tensor bytes."""
    from slmc.bench.engine_slmc import prepare
    from slmc.bench.prepare import Preparation
    from slmc.frontend.model_source import load_model

    prep = Preparation("tiny-lm", 64, cached_compile.recipe, cached_compile.workdir)
    prep.__dict__.update(compiled=cached_compile.result, spec=load_model("tiny-lm"))  # the session's compile, reused
    info = prepare(prep)
    weights_file = (cached_compile.artifact / "weights.safetensors").stat().st_size
    assert info["weights_file_bytes"] == weights_file > cached_compile.result.manifest.weights.bytes
