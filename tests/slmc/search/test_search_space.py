"""The search grid: pruning by target capabilities, the baseline, recipe documents the loader accepts."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from slmc.cli.main import cli
from slmc.errors import InputError, TargetNotFoundError
from slmc.search import Budget, EvalSettings, SearchSpace, search
from slmc.search.space import BASELINE_ID, candidates
from slmc.spec.target import load_target

BUDGET = Budget(max_ppl_increase=0.05)


def _target(tmp_path: Path, **changes) -> object:
    data = load_target("host").model_dump(mode="json")
    for key, value in changes.items():
        section, field = key.split("__")
        data[section][field] = value
    data["name"] = "restricted"
    path = tmp_path / "restricted.yaml"
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    return load_target(path)


def test_group_sizes_and_dtypes_the_target_lacks_are_excluded_with_reasons(tmp_path):
    target = _target(tmp_path, quantization__group_sizes=[32], quantization__per_channel=False,
                     dtypes__weights=["float32", "int4"])
    space = SearchSpace(sparsities=(0.0,), bits=(32, 8, 4), group_sizes=(None, 32, 64), lowrank_ratios=(0.0,))
    kept, excluded = candidates("fixture-lm", space, target, BUDGET, EvalSettings())
    assert [c.id for c in kept] == ["s0.000-b04-g0032-r0.000", BASELINE_ID]
    reasons = {e["id"]: e["reason"] for e in excluded}
    assert "group size 64" in reasons["s0.000-b04-g0064-r0.000"]
    assert "per-channel" in reasons["s0.000-b04-pc-r0.000"]
    assert "no int8 weights" in reasons["s0.000-b08-g0032-r0.000"]


def test_float_weights_ignore_group_sizes_and_the_baseline_is_always_there(host_target):
    space = SearchSpace(sparsities=(0.5,), bits=(32,), group_sizes=(32, 64), lowrank_ratios=(0.0, 0.1))
    kept, excluded = candidates("fixture-lm", space, host_target, BUDGET, EvalSettings())
    assert [c.id for c in kept] == ["s0.000-b32-r0.000", "s0.500-b32-r0.000", "s0.500-b32-r0.100"]
    assert excluded == []
    assert kept[0].document["passes"] == []
    assert kept[2].document["passes"] == [{"prune": {"method": "magnitude", "sparsity": 0.5}},
                                          {"lowrank": {"method": "svd", "ratio": 0.1}}]


def test_candidate_recipes_pass_recipe_check_and_carry_the_budget_as_gates(tmp_path, host_target):
    space = SearchSpace(sparsities=(0.25,), bits=(4,), group_sizes=(32,), lowrank_ratios=(0.1,), prune_method="wanda")
    kept, _ = candidates("fixture-lm", space, host_target, Budget(max_ppl_increase=0.05, min_cosine=0.99),
                         EvalSettings(max_tokens=3000))
    doc = kept[-1].document
    assert doc["calibration"]["text"] == "stdlib-train"  # wanda needs calibration activations
    assert doc["verify"]["gates"] == {"max_perplexity_increase": 0.05, "min_cosine": 0.99}
    assert doc["verify"]["max_eval_tokens"] == 3000
    path = tmp_path / "candidate.yaml"
    path.write_text(kept[-1].recipe_yaml(), encoding="utf-8")
    result = CliRunner().invoke(cli, ["recipe", "check", str(path)])
    assert result.exit_code == 0, result.output


def test_a_space_with_nothing_the_target_runs_is_an_input_error(tmp_path):
    target = _target(tmp_path, dtypes__weights=["float32"])
    with pytest.raises(InputError, match="no candidate target 'restricted' can run"):
        candidates("fixture-lm", SearchSpace(sparsities=(0.0,), bits=(4,)), target, BUDGET, EvalSettings())


def test_unknown_target_fails_before_any_trial(tmp_path):
    with pytest.raises(TargetNotFoundError):
        search("fixture-lm", "no-such-target", BUDGET, tmp_path)
    result = CliRunner().invoke(cli, ["search", "fixture-lm", "-t", "no-such-target", "--max-ppl-increase", "0.05",
                                      "-o", str(tmp_path / "out")])
    assert result.exit_code == 2
    assert "no-such-target" in result.output


def test_latency_budget_without_latency_is_an_input_error(tmp_path):
    with pytest.raises(InputError, match="--max-latency-ms needs latency"):
        search("fixture-lm", "host", Budget(max_latency_ms=1.0), tmp_path, latency="none")


def test_bit_widths_outside_4_8_32_are_a_usage_error(tmp_path):
    result = CliRunner().invoke(cli, ["search", "--bits", "16", "-o", str(tmp_path / "out")])
    assert result.exit_code == 2
    assert "4, 8, 32" in result.output


def test_recipes_name_a_descriptor_file_by_its_absolute_path(tmp_path, host_target, monkeypatch):
    from slmc.search.run import _target_reference

    target = _target(tmp_path)
    monkeypatch.chdir(tmp_path)
    assert _target_reference("restricted.yaml", target) == str(tmp_path / "restricted.yaml")
    assert _target_reference("host", host_target) == "host"
    kept, _ = candidates("fixture-lm", SearchSpace(sparsities=(0.0,), bits=(8,), group_sizes=(32,), lowrank_ratios=(0.0,)),
                         target, BUDGET, EvalSettings(), str(tmp_path / "restricted.yaml"))
    assert kept[0].document["target"] == str(tmp_path / "restricted.yaml")
