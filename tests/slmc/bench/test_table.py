"""Markdown from `slmc bench` reports (slmc.bench.table): the LLC beside DRAM, the processes' spread, cold decode."""

from __future__ import annotations

from slmc.bench.table import machine_lines, markdown, processes_markdown

MACHINE = {"cpu_model": "AMD EPYC", "cores": 2, "gemm_peak_gflops": 30.0, "memory_bandwidth_gbs": 20.0,
           "read_bandwidth_gbs": 25.0}
LLC = {"llc_bytes": 32 * 2**20, "llc_source": "/sys/devices/system/cpu/cpu0/cache/index3 (L3)", "dram_set_bytes": 2**30,
       "dram_set_capped": False, "llc_set_bytes": 8 * 2**20, "llc_triad_bandwidth_gbs": 90.0, "llc_read_bandwidth_gbs": 70.0,
       "bandwidth_seconds": 4.2}


def _report(machine: dict, cold: bool) -> dict:
    decode = {"ms_median": 4.0, "ms_p90": 4.4, "process_medians": [4.0, 5.0, 4.5], "fraction_of_bandwidth_bound": 0.5,
              **({"fraction_of_llc_bound": 0.1} if "llc_bytes" in machine else {})}
    entry = {"decode": {"128": decode}, "prefill": {"128": {"tokens_per_s": 900.0}}, "peak_rss_mb": 200.0, "threading": {}}
    if cold:
        entry["decode_cold"] = {"128": {"ms_median": 6.5, "ms_p90": 7.0, "cold_minus_warm_ms": 2.5}}
    return {"machine": machine, "load_before": {"load1": 0.1}, "load_after": {"load1": 0.2}, "loaded": False,
            "seconds": 60.0, "settings": {"thread_policy": {"name": "engine-default", "common": False}, "repeats": 3,
                                          "evict_llc_bytes": 64 * 2**20 if cold else 0},
            "models": {"smollm-135m": {"contexts": [128], "prefills": [128], "engines": {"slmc": entry}}}}


def test_the_machine_line_names_the_llc_both_sets_and_which_bandwidth_each_share_divides_by():
    line = machine_lines(_report({**MACHINE, **LLC}, cold=True))
    assert "last level cache 32 MiB (/sys/devices/system/cpu/cpu0/cache/index3 (L3))" in line
    # a session-11 report (the GEMV read, no bound named)
    assert "DRAM bandwidth over a 1024 MiB set: triad (1 thread) 20.0 GB/s, read-only (GEMV) 25.0 GB/s ('% DRAM bw' divides by the largest)" in line
    assert "LLC bandwidth over a 8 MiB set: triad (1 thread) 90.0 GB/s, read-only (GEMV) 70.0 GB/s" in line
    assert "cold-cache decode after writing 64 MiB before each step (--evict-llc)" in line
    assert "50% DRAM bw, 10% LLC bw" in markdown([_report({**MACHINE, **LLC}, cold=False)])


def test_the_machine_line_names_every_bandwidth_figure_and_which_is_the_bound():
    streams = {"memory_bandwidth_gbs": 20.0, "read_1t_bandwidth_gbs": 18.0, "read_nt_bandwidth_gbs": 31.0,
               "llc_triad_bandwidth_gbs": 90.0, "llc_read_1t_bandwidth_gbs": 80.0, "llc_read_nt_bandwidth_gbs": 150.0,
               "read_threads": 2, "bandwidth_bound": "read_nt_bandwidth_gbs", "llc_bandwidth_bound": "llc_read_nt_bandwidth_gbs"}
    machine = {k: v for k, v in {**MACHINE, **LLC, **streams}.items() if k not in ("read_bandwidth_gbs", "llc_read_bandwidth_gbs")}
    line = machine_lines(_report(machine, cold=False))
    assert ("DRAM bandwidth over a 1024 MiB set: triad (1 thread) 20.0 GB/s, read-only (1 thread) 18.0 GB/s, "
            "read-only (2 threads) 31.0 GB/s (the bound) ('% DRAM bw' divides by the largest)") in line
    assert ("LLC bandwidth over a 8 MiB set: triad (1 thread) 90.0 GB/s, read-only (1 thread) 80.0 GB/s, "
            "read-only (2 threads) 150.0 GB/s (the bound)") in line


def test_reports_from_before_the_llc_sets_still_table():
    old = _report(MACHINE, cold=False)
    assert "'% bw' divides by the larger; sets of 384 / 256 MB" in machine_lines(old) and "(50% bw)" in markdown([old])


def test_the_processes_table_shows_min_median_and_spread_of_the_process_medians_and_cold_decode():
    rows = processes_markdown([_report({**MACHINE, **LLC}, cold=True)]).splitlines()
    assert rows[2] == "| smollm-135m | slmc | 128 | 3 | 4.00 / 4.50 | 22.2% | 6.50 / 7.00 | +2.50 |"
    assert processes_markdown([_report(MACHINE, cold=False)]).splitlines()[2].endswith("| not measured |  |")


def test_a_footprint_process_that_failed_is_said_under_the_table():
    report = _report({**MACHINE, **LLC}, cold=False)
    report["models"]["smollm-135m"]["engines"]["slmc"]["footprint"] = [{"unavailable": "no resident cache"}]
    assert "smollm-135m: slmc's footprint process (load + 64 steps) failed: no resident cache" in markdown([report])
