"""`slmc bench`: every engine in its own process on the fixture model with tiny settings, and bad input. No timing assertions."""

from __future__ import annotations

import importlib.util
import json

import numpy as np

import pytest
from click.testing import CliRunner

from slmc.bench import machine
from slmc.bench.engines import ENGINES
from slmc.bench.timing import aligned
from slmc.cli.main import cli


def test_roofline_measurements_are_positive():
    assert machine.memory_bandwidth(elements=2**16, repeats=1) > 0
    assert machine.gemm_peak(threads=1, n=64, repeats=1) > 0


def test_the_decode_roofline_takes_the_largest_bandwidth_measured_and_names_it():
    bounds = {"memory_bandwidth_gbs": 20.0, "read_1t_bandwidth_gbs": 18.0, "read_nt_bandwidth_gbs": 31.0}
    assert machine.bandwidth_gbs(bounds) == 31.0 and machine.bound_figure(bounds) == "read_nt_bandwidth_gbs"
    bounds["memory_bandwidth_gbs"] = 40.0
    assert machine.bandwidth_gbs(bounds) == 40.0 and machine.bound_figure(bounds) == "memory_bandwidth_gbs"
    assert machine.bandwidth_gbs({"memory_bandwidth_gbs": 20.0, "read_bandwidth_gbs": 25.0}) == 25.0  # session 11: GEMV
    assert machine.bandwidth_gbs({"memory_bandwidth_gbs": 20.0}) == 20.0  # a report from before the read-only stream


def test_bandwidth_arrays_fill_the_working_set_asked_and_the_llc_figure_is_reported_beside_the_dram_one():
    assert machine.triad_elements(12 * 2**20) == 2**20  # three float32 arrays of 4 MiB
    bounds = {"memory_bandwidth_gbs": 20.0, "read_bandwidth_gbs": 25.0, "llc_triad_bandwidth_gbs": 90.0,
              "llc_read_bandwidth_gbs": 70.0}
    assert machine.bandwidth_gbs(bounds) == 25.0 and machine.llc_bandwidth_gbs(bounds) == 90.0
    assert machine.llc_bandwidth_gbs({"memory_bandwidth_gbs": 20.0}) is None  # a report from before the LLC sets
    llc = {"llc_triad_bandwidth_gbs": 90.0, "llc_read_1t_bandwidth_gbs": 80.0, "llc_read_nt_bandwidth_gbs": 150.0}
    assert machine.llc_bandwidth_gbs(llc) == 150.0 and machine.bound_figure(llc, machine.LLC_FIGURES) == "llc_read_nt_bandwidth_gbs"


def test_load_flag():
    n = machine.cores()
    idle = {"load1": 0.0}
    assert not machine.loaded(idle, {"load1": 1.0}, threads=1)
    assert machine.loaded({"load1": n}, idle, threads=1)
    assert machine.loaded(idle, {"load1": 1 + n}, threads=1)


@pytest.mark.parametrize("args, message", [
    (["no-such-model"], "unknown benchmark model"),
    (["fixture-lm", "--engines", "torch"], "--engines must include slmc"),
    (["fixture-lm", "--engines", "slmc,tflite"], "unknown engine 'tflite'"),
    (["fixture-lm", "--contexts", "a,b"], "--contexts must be comma-separated integers"),
    (["fixture-lm", "--repeats", "0"], "at least 1"),
    (["fixture-lm", "--thread-policy", "spin"], "unknown --thread-policy"),
    (["fixture-lm", "--threads", "2"], "common thread policy only"),
])
def test_bad_settings_exit_2_before_anything_runs(args, message):
    result = CliRunner().invoke(cli, ["bench", *args])
    assert result.exit_code == 2, result.output
    assert message in result.output


@pytest.mark.slow
def test_every_engine_runs_in_its_own_process_and_reports_time_and_peak_rss(tmp_path):
    """Smoke setting: fixture-lm, contexts 4 and 600 (clipped to 511), 4-token prompts, one process per engine, cold
    decode samples too (--evict-llc), the footprint processes of slmc and slmc-run."""
    out, md = tmp_path / "bench.json", tmp_path / "bench.md"
    result = CliRunner().invoke(cli, ["bench", "fixture-lm", "--engines", ",".join(ENGINES), "--contexts", "4,600",
                                      "--prefill", "4", "--repeats", "1", "--steps", "2", "--prefill-repeats", "1",
                                      "--evict-llc", "-o", str(out), "--markdown", str(md)])
    assert result.exit_code == 0, result.output
    report = json.loads(out.read_text())
    assert set(report) >= {"machine", "load_before", "load_after", "loaded", "settings", "models", "seconds"}
    assert report["settings"]["thread_policy"]["name"] == "engine-default" and report["settings"]["process_per_measurement"]
    assert report["settings"]["evict_llc_bytes"] == report["machine"]["eviction_bytes"] == 2 * report["machine"]["llc_bytes"]
    assert report["machine"]["dram_set_bytes"] >= 4 * report["machine"]["llc_bytes"] or report["machine"]["dram_set_capped"]
    # every bandwidth figure named, the bound the largest DRAM one, the N-thread read on the engines' default threads
    assert report["machine"][report["machine"]["bandwidth_bound"]] == max(
        report["machine"][k] for k in ("memory_bandwidth_gbs", "read_1t_bandwidth_gbs", "read_nt_bandwidth_gbs"))
    assert report["machine"]["read_threads"] >= 1 and report["machine"]["llc_bandwidth_bound"].startswith("llc_")
    model = report["models"]["fixture-lm"]
    assert model["contexts"] == [4, 511] and "511" in model["clipped_note"]  # fixture-lm's max_context is 512
    missing = {e: model["unavailable"].get(e) for e in ENGINES if e not in model["engines"]}
    if importlib.util.find_spec("llama_cpp") is None:  # reported, not hidden: the bench extra is not installed
        assert set(missing) == {"llama-cpp-q4_0", "llama-cpp-q8_0"} and "llama-cpp-python" in missing["llama-cpp-q4_0"]
    else:
        assert not missing
    for name, engine in model["engines"].items():
        assert engine["processes"] == 1 and engine["peak_rss_mb"] > 0 and engine["threading"], name
        assert engine["prefill"]["4"]["tokens_per_s"] > 0
        for context in ("4", "511"):
            assert engine["decode"][context]["ms_median"] > 0 and engine["decode_cold"][context]["ms_median"] > 0, name
            assert {"fraction_of_llc_bound", "process_spread"} <= set(engine["decode"][context])  # fixture-lm: 0.0 at 4 digits
    assert model["engines"]["slmc"]["details"]["verification_passed"]
    if "llama-cpp-q4_0" in model["engines"]:
        assert model["engines"]["llama-cpp-q8_0"]["details"]["top1_agreement_with_eager"] == 1.0
        assert {g["goal"] for g in model["goals"]} >= {"decode_time_vs_llama_cpp_q4_0", "peak_rss_vs_llama_cpp_q4_0"}
    assert {"native_decode_time_vs_python", "native_peak_rss_vs_budget"} <= {g["goal"] for g in model["goals"]}
    # issue 18's RSS bound counts each run's KV cache at the context it used: a row per context (decode runs of
    # 4 and 507 prompt tokens + 4 new, the 4-token prefill run + 1)
    rss_rows = {g["at"] for g in model["goals"] if g["goal"] == "native_peak_rss_vs_budget"}
    assert rss_rows == {4, 7, 510}, model["goals"]
    assert sorted(model["process_order"]) == sorted(model["engines"])  # one round: every engine once
    footprints = {g["goal"]: g["at"] for g in model["goals"] if g["goal"].endswith("load_64_steps_peak_rss_vs_budget")}
    assert footprints == {"load_64_steps_peak_rss_vs_budget": 72, "native_load_64_steps_peak_rss_vs_budget": 72}, model["goals"]
    text = md.read_text()
    assert "engine-default" in text and "cold-cache decode ms" in text and "% LLC bw" in text


def test_decode_caches_are_64_byte_aligned_copies():
    array = np.arange(1001, dtype=np.float32)[1:].reshape(10, 100)
    copy = aligned(array)
    assert copy.ctypes.data % 64 == 0 and np.array_equal(copy, array) and copy.flags.c_contiguous


def test_the_bench_w8a8_recipe_parses_and_its_ids_fit_every_bench_vocabulary():
    from pathlib import Path

    from slmc.bench.models import CONFIGS
    from slmc.spec.recipe import load_recipe

    folder = Path(__file__).resolve().parents[3] / "examples" / "recipes" / "bench"
    recipe = load_recipe(folder / "w8a8-smoothquant-random-ids.yaml")
    assert recipe.calibration is not None
    ids = np.load(folder / "random-ids-16x128.npy")
    assert ids.shape == (16, 1, 128) and ids.min() >= 0
    vocab = [fields.get("vocab_size") for _, _, fields in CONFIGS.values()]
    assert ids.max() < min(vocab)
