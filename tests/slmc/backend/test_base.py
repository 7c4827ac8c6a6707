"""A new target kind is one backend class (slmc/backend/base.py's interface): registered here, in the
test suite, it compiles tiny-lm through ``slmc.compile`` with its own phases, recipe rule, post-build
step and kernel check, and the manifest records what it did."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, ClassVar

import pytest
import yaml

import slmc
from slmc.artifact.manifest import Verification
from slmc.backend.base import Backend, PhaseInputs, backend_for, check_recipe
from slmc.backend.kinds.cpu import CpuBackend
from slmc.errors import FieldProblem, RecipeError
from slmc.spec.backend_registry import register_backend, unregister_backend
from slmc.spec.recipe import load_recipe
from slmc.spec.target import load_target

KIND = "cpu-debug"
RECIPE = """\
passes: [{dead_code_elimination: {}}]
verify:
  num_samples: 1
  gates: {min_cosine: 0.99}
"""


class GraphCensus:
    """The cpu-debug backend's post-build step: the compiled graph's op count, as a file, a manifest
    entry and a verification check."""

    def __init__(self, ops: int):
        self.ops = ops

    def write(self, directory: Path) -> None:
        (directory / "census.json").write_text(json.dumps({"ops": self.ops}), encoding="utf-8")

    def manifest_entries(self) -> dict[str, Any]:
        return {"backend": {"cpu_debug": {"ops": self.ops}}}

    def record(self, verification: Verification) -> Verification:
        check = {"executed": True, "passed": self.ops > 0}
        return verification.model_copy(update={"backend": {**verification.backend, "cpu_debug": check},
                                               "passed": verification.passed and check["passed"]})


class CpuDebugBackend(CpuBackend):
    """CPU code built by the cpu backend's phases; refuses recipes that switch verification off, counts
    the graph's ops after the build, and records which of its hooks ran."""

    calls: ClassVar[list[str]] = []

    def recipe_problems(self, recipe, target) -> list[FieldProblem]:
        self.calls.append("recipe_problems")
        if not recipe.verify.enabled:
            return [FieldProblem("verify.enabled", f"target kind '{self.kind}' always verifies its artifacts")]
        return []

    def legalize_passes(self, phase: PhaseInputs) -> list:
        self.calls.append("legalize_passes")
        return super().legalize_passes(phase)

    def schedule_passes(self, phase: PhaseInputs) -> list:
        self.calls.append("schedule_passes")
        phase.notes.append(f"{self.kind}: CPU schedules")
        return super().schedule_passes(phase)

    def after_build(self, graph, module, target, calibration, gates=None) -> GraphCensus:
        self.calls.append("after_build")
        return GraphCensus(len(list(graph.op_nodes())))

    def check_kernels(self, verification, executable, program, target, verify_enabled) -> Verification:
        self.calls.append("check_kernels")
        return verification.model_copy(update={"backend": {**verification.backend, "kernels_checked_by": self.kind}})


@pytest.fixture(scope="module")
def debug_target(tmp_path_factory):
    register_backend(KIND)(CpuDebugBackend)
    data = yaml.safe_load((Path(__file__).parents[3] / "targets" / "host.yaml").read_text())
    data.update(name="host-debug", kind=KIND)
    path = tmp_path_factory.mktemp("cpu-debug") / "host-debug.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    yield path
    unregister_backend(KIND)


def test_a_kind_registered_in_the_tests_compiles_through_its_hooks(debug_target, tmp_path):
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(RECIPE)
    CpuDebugBackend.calls.clear()
    result = slmc.compile("tiny-lm", recipe, debug_target, tmp_path / "out", use_cache=False)
    assert CpuDebugBackend.calls == ["recipe_problems", "legalize_passes", "schedule_passes", "after_build", "check_kernels"]
    manifest = json.loads((result.artifact / "manifest.json").read_text())
    assert manifest["target"]["kind"] == KIND and manifest["tvm_target"]["kind"] == "llvm"
    assert manifest["backend"]["cpu_debug"]["ops"] > 0 and "census.json" in manifest["files"]
    assert manifest["verification"]["executed"] and manifest["verification"]["passed"]
    assert manifest["verification"]["backend"]["cpu_debug"] == {"executed": True, "passed": True}
    assert manifest["verification"]["backend"]["kernels_checked_by"] == KIND
    assert f"{KIND}: CPU schedules" in manifest["lowering_notes"]
    assert any(note.startswith("CPU schedules: ") for note in manifest["lowering_notes"])  # the cpu phases ran


def test_the_kinds_recipe_rule_refuses_before_the_model_loads(debug_target, tmp_path):
    recipe = tmp_path / "off.yaml"
    recipe.write_text("passes: []\nverify: {enabled: false}\n")
    with pytest.raises(RecipeError) as err:
        slmc.compile("no_such_module:build", recipe, debug_target, tmp_path / "out", use_cache=False)
    assert [p.path for p in err.value.problems] == ["verify.enabled"] and err.value.exit_code == 2
    assert not (tmp_path / "out").exists()
    check_recipe(load_recipe(recipe), load_target("host"))  # the cpu backend has no such rule


def test_backend_for_returns_each_kinds_backend():
    assert [type(backend_for(load_target(n))).__name__ for n in ("arm-cortex-a76", "mali-g710", "ethos-u65")] == [
        "CpuBackend", "GpuBackend", "NpuBackend"]
    assert all(isinstance(backend_for(load_target(n)), Backend) for n in ("arm-cortex-a76", "mali-g710"))
    assert backend_for(load_target("arm-cortex-a76")).supports_tuning and not backend_for(load_target("mali-g710")).supports_tuning


def test_an_int8_kv_cache_is_refused_by_a_kind_whose_attention_does_not_read_the_resident_cache(tmp_path):
    recipe_path = tmp_path / "kv-int8.yaml"
    recipe_path.write_text("kv_cache: {dtype: int8}\n")
    recipe = load_recipe(recipe_path)
    check_recipe(recipe, load_target("host"))  # cpu: the resident attention kernels dequantize
    for target in ("mali-g710", "ethos-u65"):
        with pytest.raises(RecipeError) as err:
            check_recipe(recipe, load_target(target))
        (problem,) = [p for p in err.value.problems if p.path.startswith("kv_cache")]  # (the NPU also wants w8a8)
        assert problem.path == "kv_cache.dtype" and problem.found == "int8" and err.value.exit_code == 2
        assert f"target '{target}'" in problem.message and "kinds that can: cpu" in problem.message
