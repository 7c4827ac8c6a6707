"""`slmc bench`: the report's fields on the fixture model with tiny settings, and bad input. No timing assertions."""

from __future__ import annotations

import json

import numpy as np

import pytest
from click.testing import CliRunner

from slmc.bench import machine
from slmc.bench.goals import GOALS, goals
from slmc.bench.run import _aligned
from slmc.cli.main import cli


def test_roofline_measurements_are_positive():
    assert machine.memory_bandwidth(elements=2**16, repeats=1) > 0
    assert machine.gemm_peak(threads=1, n=64, repeats=1) > 0


def test_load_flag():
    n = machine.cores()
    idle = {"load1": 0.0}
    assert not machine.loaded(idle, {"load1": 1.0}, threads=1)
    assert machine.loaded({"load1": n}, idle, threads=1)
    assert machine.loaded(idle, {"load1": 1 + n}, threads=1)


@pytest.mark.parametrize("args, message", [
    (["no-such-model"], "unknown benchmark model"),
    (["fixture-lm", "--engines", "torch"], "--engines must include slmc"),
    (["fixture-lm", "--engines", "slmc,tflite"], "--engines must include slmc"),
    (["fixture-lm", "--contexts", "a,b"], "--contexts must be comma-separated integers"),
    (["fixture-lm", "--rounds", "0"], "at least 1"),
])
def test_bad_settings_exit_2_before_anything_runs(args, message):
    result = CliRunner().invoke(cli, ["bench", *args])
    assert result.exit_code == 2, result.output
    assert message in result.output


@pytest.mark.slow
def test_bench_report_has_every_field(tmp_path):
    out = tmp_path / "bench.json"
    result = CliRunner().invoke(cli, ["bench", "fixture-lm", "--rounds", "1", "--contexts", "4,600", "--prefill", "4",
                                      "-o", str(out)])
    assert result.exit_code == 0, result.output
    report = json.loads(out.read_text())
    assert set(report) >= {"machine", "load_before", "load_after", "loaded", "peak_rss_mb", "settings", "models"}
    assert report["machine"]["memory_bandwidth_gbs"] > 0 and report["machine"]["gemm_peak_gflops"] > 0
    model = report["models"]["fixture-lm"]
    assert model["contexts"] == [4, 511]  # 600 is beyond fixture-lm's max_context 512: clipped, and said so
    assert set(model["engines"]) == {"slmc", "torch", "ort-fp32", "ort-int8"}
    for engine in model["engines"].values():
        assert {"prefill_tokens_per_s", "ttft_ms", "prefill_fraction_of_gemm_peak", "rss_growth_mb"} <= set(engine)
        for context in ("4", "511"):
            assert {"ms_median", "ms_p90", "fraction_of_bandwidth_bound"} <= set(engine["decode"][context])
    assert set(model["time_ratio_other_over_slmc"]) == {"torch", "ort-fp32", "ort-int8"}
    assert model["engines"]["slmc"]["verification_passed"]
    assert [g["goal"] for g in model["goals"]] == [g[0] for g in GOALS]


def _engine(decode_ms: float, tokens_per_s: float, bandwidth: float = 0.1) -> dict:
    return {"decode": {"128": {"ms_median": decode_ms, "fraction_of_bandwidth_bound": bandwidth}},
            "prefill_tokens_per_s": tokens_per_s}


def test_goals_are_ratios_against_the_baselines_of_the_same_run():
    result = {"contexts": [128], "engines": {"slmc": _engine(10.0, 900.0, 0.6), "torch": _engine(30.0, 500.0),
                                             "ort-int8": _engine(12.0, 1000.0)}}
    got = {g["goal"]: (g["measured"], g["met"]) for g in goals(result)}
    assert got == {"decode_time_vs_torch_fp32": (0.333, True), "decode_time_vs_ort_int8": (0.833, True),
                   "decode_fraction_of_bandwidth": (0.6, True), "prefill_throughput_vs_ort_int8": (0.9, True)}
    del result["engines"]["ort-int8"]  # a goal whose baseline did not run is left out, not guessed
    result["engines"]["slmc"] = _engine(20.0, 900.0, 0.2)
    assert {g["goal"]: g["met"] for g in goals(result)} == {"decode_time_vs_torch_fp32": False,
                                                            "decode_fraction_of_bandwidth": False}


def test_decode_caches_are_64_byte_aligned_copies():
    array = np.arange(1001, dtype=np.float32)[1:].reshape(10, 100)
    copy = _aligned(array)
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
