"""`slmc bench` recipes: each recipe's slmc artifact measured as its own engine instances in one run."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from slmc.bench.run import process_order, process_spread, recipe_labels
from slmc.cli.main import cli
from slmc.errors import InputError

REPO = Path(__file__).resolve().parents[3]
INT4, INT8 = REPO / "examples/recipes/int4-g32-rtn.yaml", REPO / "examples/recipes/int8-rtn.yaml"


def test_one_or_no_recipe_keeps_the_plain_label_several_are_labelled_by_stem():
    assert recipe_labels([]) == [("", None)]
    assert recipe_labels([INT8]) == [("", INT8)]
    assert recipe_labels([INT4, str(INT8)]) == [("int4-g32-rtn", INT4), ("int8-rtn", INT8)]


def test_two_recipes_with_one_stem_are_an_input_error_naming_both(tmp_path):
    other = tmp_path / "int4-g32-rtn.yaml"
    with pytest.raises(InputError, match=f"{INT4} and {other} have the same file name stem 'int4-g32-rtn'"):
        recipe_labels([INT4, INT8, other])
    result = CliRunner().invoke(cli, ["bench", "fixture-lm", "--engines", "slmc", "-r", str(INT4), "-r", str(other)])
    assert result.exit_code == 2 and "same file name stem" in result.output, result.output


@pytest.mark.slow
def test_two_recipes_measured_as_two_slmc_engines_in_one_run(tmp_path):
    out, md = tmp_path / "bench.json", tmp_path / "bench.md"
    result = CliRunner().invoke(cli, ["bench", "fixture-lm", "--engines", "slmc", "-r", str(INT4), "-r", str(INT8),
                                      "--contexts", "16", "--prefill", "16", "--repeats", "1", "--steps", "2",
                                      "--prefill-repeats", "1", "-o", str(out), "--markdown", str(md)])
    assert result.exit_code == 0, result.output
    report = json.loads(out.read_text())
    assert report["settings"]["recipe"] == str(INT4)  # the goals' recipe
    assert report["settings"]["recipes"] == [{"recipe": str(INT4), "slmc_engines": ["slmc[int4-g32-rtn]"]},
                                             {"recipe": str(INT8), "slmc_engines": ["slmc[int8-rtn]"]}]
    model = report["models"]["fixture-lm"]
    assert list(model["engines"]) == ["slmc[int4-g32-rtn]", "slmc[int8-rtn]"]
    int4, int8 = (model["engines"][e]["details"] for e in model["engines"])
    assert int4["artifact"] != int8["artifact"] and int4["weights_file_bytes"] < int8["weights_file_bytes"]
    assert all(e["processes"] == 1 and e["decode"]["16"]["ms_median"] > 0 for e in model["engines"].values())
    assert {g["slmc"] for g in model["goals"]} == {"slmc[int4-g32-rtn]"}
    rows = md.read_text()
    assert "| fixture-lm | slmc[int4-g32-rtn] |" in rows and "| fixture-lm | slmc[int8-rtn] |" in rows


def test_the_prefill_bound_counts_the_head_at_the_last_position_only():
    from slmc.bench.run import _summary

    runs = [{"threading": {}, "peak_rss_mb": 1.0, "open_seconds": 0.1, "decode_ms": {"16": [1.0]}, "prefill_s": {"100": [0.5]}}]
    bounds = {"memory_bandwidth_gbs": 1.0, "read_bandwidth_gbs": 1.0, "gemm_peak_gflops": 1e-3}
    cache = {"layers": 1, "kv_heads": 1, "head_dim": 4, "max_context": 64}
    # 1,000 body + 500 head weights (fp32 bytes / 4): 2 x (1,000 x 100 + 500) flops in 0.5 s at a 1 MFLOP/s peak: 0.402
    # (every weight at every position, the bound before, would be 0.6)
    entry = _summary("e", {"weight_bytes": 0}, runs, cache, bounds, linear_bytes=4 * 1500, head_bytes=4 * 500)
    assert entry["prefill"]["100"]["fraction_of_gemm_peak"] == 0.402

def test_repeats_alternate_the_engines_one_process_each_per_round():
    assert process_order(["slmc", "llama-cpp-q4_0"], 3) == ["slmc", "llama-cpp-q4_0"] * 3  # A, B, A, B, A, B
    assert process_order(["a", "b", "c"], 2) == ["a", "b", "c", "a", "b", "c"]
    assert process_spread([4.0, 5.0, 4.5]) == {"process_min_ms": 4.0, "process_median_ms": 4.5, "process_spread": 0.2222}


def test_a_decode_row_divides_by_the_dram_bandwidth_shows_the_llc_share_and_the_cold_samples():
    from slmc.bench.run import _summary

    run = {"threading": {}, "peak_rss_mb": 100.0, "open_seconds": 1.0, "decode_ms": {"128": [4.0, 4.0]},
           "decode_cold_ms": {"128": [6.0, 6.0]}, "prefill_s": {"16": [0.01]}}
    bounds = {"memory_bandwidth_gbs": 20.0, "read_bandwidth_gbs": 25.0, "llc_triad_bandwidth_gbs": 100.0,
              "llc_read_bandwidth_gbs": 80.0, "gemm_peak_gflops": 50.0}
    info = {"weight_bytes": 100_000_000, "kv_cache_bytes_per_token": 1}
    entry = _summary("slmc", info, [run, {**run, "decode_ms": {"128": [5.0, 5.0]}}], {}, bounds, 4_000_000, 0)
    decode = entry["decode"]["128"]  # 100 MB in 4.5 ms: 22.2 GB/s, of 25 (DRAM, the larger) and of 100 (LLC)
    assert (decode["fraction_of_bandwidth_bound"], decode["fraction_of_llc_bound"]) == (0.8889, 0.2222)
    assert (decode["process_min_ms"], decode["process_median_ms"], decode["process_spread"]) == (4.0, 4.5, 0.2222)
    assert entry["decode_cold"]["128"]["cold_minus_warm_ms"] == 1.5
