"""`slmc bench` goals: ratios against engines of the same run; a goal whose engine did not run is left out."""

from __future__ import annotations

from slmc.bench.goals import GOALS, goals


def _engine(decode_ms: float, tokens_per_s: float, rss_mb: float, bandwidth: float = 0.1, memory_runs=(), **details) -> dict:
    return {"decode": {c: {"ms_median": decode_ms, "fraction_of_bandwidth_bound": bandwidth} for c in ("128", "1024")},
            "prefill": {"128": {"tokens_per_s": tokens_per_s}}, "peak_rss_mb": rss_mb, "memory_runs": list(memory_runs),
            "details": details}


def _run(context: int, peak_mb: float, kv_mb: float) -> dict:
    return {"context": context, "peak_rss_bytes": int(peak_mb * 2**20), "weights_file_bytes": 10 * 2**20,
            "kv_cache_bytes": int(kv_mb * 2**20), "kv_cache_huge_pages": False}


def _result(**engines) -> dict:
    return {"contexts": [128, 1024], "prefills": [128],
            "kv_cache": {"layers": 2, "kv_heads": 1, "head_dim": 4, "max_context": 2**17}, "engines": engines}


def test_issue_22_and_18_goals():
    result = _result(slmc=_engine(2.0, 1200.0, 110.0, 0.65), **{"llama-cpp-q4_0": _engine(4.0, 1000.0, 100.0)},
                     **{"slmc-native": _engine(2.2, 1100.0, 29.0, memory_runs=[_run(128, 25.0, 0.0), _run(128, 29.0, 0.0),
                                                                                  _run(1024, 52.0, 2.0)])})
    got = {(g["goal"], g["at"]): (g["measured"], g["met"]) for g in goals(result)}
    assert got == {
        ("decode_time_vs_llama_cpp_q4_0", 128): (0.5, True), ("decode_time_vs_llama_cpp_q4_0", 1024): (0.5, True),
        ("prefill_throughput_vs_llama_cpp_q4_0", 128): (1.2, True),
        ("peak_rss_vs_llama_cpp_q4_0", 0): (1.1, True),
        ("decode_fraction_of_bandwidth", 128): (0.65, True),
        ("native_decode_time_vs_python", 128): (1.1, False), ("native_decode_time_vs_python", 1024): (1.1, False),
        # per context used, the worst run: 29 MB of 10 + 0 (KV) + 40; 52 MB of 10 + 2 + 40
        ("native_peak_rss_vs_budget", 128): (0.58, True), ("native_peak_rss_vs_budget", 1024): (1.0, True),
    }


def test_goals_without_their_engine_are_left_out():
    rows = goals(_result(slmc=_engine(2.0, 1200.0, 110.0, 0.5)))
    assert [g["goal"] for g in rows] == ["decode_fraction_of_bandwidth"]
    assert not rows[0]["met"]
    assert len({g.key for g in GOALS}) == len(GOALS)


def test_several_recipes_the_goals_judge_the_first_recipes_instance():
    result = _result(**{"slmc[a]": _engine(2.0, 1200.0, 110.0, 0.65), "slmc[b]": _engine(9.0, 100.0, 500.0, 0.01),
                        "llama-cpp-q4_0": _engine(4.0, 1000.0, 100.0)})
    rows = goals(result, "a")
    assert {g["slmc"] for g in rows} == {"slmc[a]"} and all(g["met"] for g in rows)
    assert {(g["goal"], g["at"]): g["measured"] for g in rows}[("decode_time_vs_llama_cpp_q4_0", 128)] == 0.5
    assert goals(result) == []  # label "": the plain "slmc", which this run does not have


def test_two_threads_must_beat_one_in_the_same_run():
    result = _result(slmc=_engine(2.0, 1200.0, 110.0, 0.65), **{"slmc@1t": _engine(2.5, 900.0, 100.0)})
    rows = [g for g in goals(result) if g["goal"] == "decode_two_threads_vs_one"]
    assert [(g["at"], g["measured"], g["limit"], g["met"]) for g in rows] == [(128, 0.8, "< 1.0", True), (1024, 0.8, "< 1.0", True)]
    even = _result(**{"slmc[a]": _engine(2.0, 1.0, 1.0), "slmc[a]@1t": _engine(2.0, 1.0, 1.0)})
    rows = [g for g in goals(even, "a") if g["goal"] == "decode_two_threads_vs_one"]
    assert rows and not any(g["met"] for g in rows) and {g["slmc"] for g in rows} == {"slmc[a]"}  # equal is not faster


def test_the_thread_goal_has_no_figure_when_slmcs_own_run_used_one_thread():
    """A one-core machine or ``--thread-policy common-passive --threads 1``: slmc and slmc@1t both run one thread; the
    ratio (~1.0) would read "not met". The row says why there is no figure instead, and the table shows it."""
    from slmc.bench.table import goals_markdown

    one = _engine(2.0, 1200.0, 110.0, 0.65)
    one["threading"] = {"tvm_num_threads": "1", "tvm_pool_threads": 1}
    rows = [g for g in goals(_result(slmc=one, **{"slmc@1t": _engine(2.01, 1.0, 1.0)})) if g["goal"] == "decode_two_threads_vs_one"]
    assert [(g["at"], g["measured"], g["met"]) for g in rows] == [(0, None, None)]
    assert "tvm_pool_threads 1" in rows[0]["no_figure"]
    table = goals_markdown([{"settings": {"recipe": "r"}, "models": {"m": {"goals": rows}}}])
    assert table.splitlines()[-1].endswith("| no figure | < 1.0 | " + rows[0]["no_figure"] + " |")
    two = _engine(2.0, 1200.0, 110.0, 0.65)
    two["threading"] = {"tvm_num_threads": "slmc default: 2 (one per physical core)", "tvm_pool_threads": 2}
    rows = [g for g in goals(_result(slmc=two, **{"slmc@1t": _engine(2.5, 1.0, 1.0)})) if g["goal"] == "decode_two_threads_vs_one"]
    assert [(g["at"], g["measured"], g["met"]) for g in rows] == [(128, 0.8, True), (1024, 0.8, True)]


def test_issue_22_memory_goals_peak_over_weights_and_kv_and_growth_beyond_the_kv_written():
    slmc = _engine(2.0, 1200.0, 100.0, weights_file_bytes=30 * 2**20)
    slmc["kv_cache_bytes_per_token"] = 2**10
    slmc["rss_growth"] = [{"first": 100, "last": 2000, "rss_first_bytes": 200 * 2**20, "kv_written_bytes": 1900 * 2**10,
                           "rss_last_bytes": 200 * 2**20 + 1900 * 2**10 + 3 * 2**20},
                          {"first": 100, "last": 2000, "rss_first_bytes": 200 * 2**20, "kv_written_bytes": 1900 * 2**10,
                           "rss_last_bytes": 200 * 2**20 + 1900 * 2**10 + 6 * 2**20}]
    got = {g["goal"]: (g["at"], g["measured"], g["met"]) for g in goals(_result(slmc=slmc))}
    # the largest context held: 1,024 + the timed token (+ the sink slot): 30 + 1 + 60 MB
    assert got["peak_rss_vs_weights_kv_budget"] == (1025, round(100 / (30 + 1026 / 1024 + 60), 3), False)
    assert got["rss_growth_over_generation"] == (2000, 6.0, False)  # the worst process: 6 MB beyond the KV written


def test_the_growth_row_names_the_runs_own_tokens_and_says_why_a_copy_artifact_has_none():
    """The first token is min(100, max_context - 2): the row's description gives the run's numbers, not "100". An
    artifact of the copy contract (no resident cache, no growth probe) gets a row without a figure saying so."""
    slmc = _engine(2.0, 1200.0, 100.0, kv_cache="resident")
    slmc["rss_growth"] = [{"first": 62, "last": 63, "rss_first_bytes": 2**20, "rss_last_bytes": 2**20, "kv_written_bytes": 0}]
    row, = [g for g in goals(_result(slmc=slmc)) if g["goal"] == "rss_growth_over_generation"]
    assert (row["at"], row["measured"], row["met"]) == (63, 0.0, True)
    assert row["what"] == "slmc RSS growth from token 62 to token 63 of a generation, less the KV written, MB"
    copy = _engine(2.0, 1200.0, 100.0, kv_cache="copy")
    row, = [g for g in goals(_result(slmc=copy)) if g["goal"] == "rss_growth_over_generation"]
    assert (row["measured"], row["met"]) == (None, None) and "no resident KV cache (kv_cache: copy)" in row["no_figure"]
    assert not [g for g in goals(_result(slmc=_engine(2.0, 1.0, 1.0, kv_cache="resident")))
                if g["goal"] == "rss_growth_over_generation"]  # resident, growth not asked: no row


def _footprint(peak_mb: float, kv_mb: float) -> dict:
    return {"prompt_tokens": 8, "decode_steps": 64, "peak_rss_bytes": int(peak_mb * 2**20), "weights_file_bytes": 30 * 2**20,
            "kv_cache_bytes": int(kv_mb * 2**20)}


def test_issue_22_load_and_64_steps_rows_for_the_python_runtime_and_slmc_run():
    slmc, native = _engine(2.0, 1200.0, 300.0), _engine(2.0, 1200.0, 40.0)
    slmc["footprint"] = [_footprint(80.0, 2.0), _footprint(100.0, 2.0)]  # the worst process: 100 of 30 + 2 + 60 MB
    native["footprint"] = [_footprint(40.0, 2.0), {"unavailable": "slmc package failed"}]  # reported, not a row
    got = {g["goal"]: (g["at"], g["measured"], g["met"]) for g in goals(_result(slmc=slmc, **{"slmc-native": native}))}
    assert got["load_64_steps_peak_rss_vs_budget"] == (72, round(100 / 92, 3), False)
    assert got["native_load_64_steps_peak_rss_vs_budget"] == (72, round(40 / 92, 3), True)
    assert "load_64_steps_peak_rss_vs_budget" not in {g["goal"] for g in goals(_result(slmc=_engine(2.0, 1.0, 1.0)))}
