"""The same inputs give the same weights, library, verification data and manifest in separate processes."""

import json
import os
import shutil
import subprocess

import pytest

GPTQ_RECIPE = """\
calibration:
  text: stdlib-train
  num_samples: 4
  sequence_length: 64
  seed: 7
passes:
  - quantize: {bits: 8, method: gptq, group_size: 32}
verify:
  atol: 1.0
  rtol: 0.1
"""


# Wall-clock measurements: the passes' times and the decode speed (verification.speed).
TIMINGS = {"seconds", "original_tokens_per_s", "artifact_tokens_per_s"}


def without_durations(value):
    """The manifest with every wall-clock measurement (``TIMINGS``) removed."""
    if isinstance(value, dict):
        return {k: without_durations(v) for k, v in value.items() if k not in TIMINGS}
    if isinstance(value, list):
        return [without_durations(v) for v in value]
    return value


def compile_in_a_new_process(cwd, out, recipe):
    exe = shutil.which("slmc") or pytest.fail("the slmc console script is not installed (pip install -e .)")
    args = [exe, "compile", "-m", "tiny-lm", "-o", out, "--no-cache"] + (["-r", recipe] if recipe else [])  # really compile
    result = subprocess.run(args, cwd=cwd, capture_output=True, text=True, env=dict(os.environ), timeout=900)
    assert result.returncode == 0, result.stderr[-2000:]
    return cwd / out


@pytest.mark.slow
@pytest.mark.parametrize("recipe", [None, GPTQ_RECIPE], ids=["default-recipe", "gptq-calibrated"])
def test_two_processes_write_identical_artifacts(tmp_path, recipe):
    recipe_file = None
    if recipe is not None:
        (tmp_path / "recipe.yaml").write_text(recipe)
        recipe_file = "recipe.yaml"
    first = compile_in_a_new_process(tmp_path, "first", recipe_file)
    second = compile_in_a_new_process(tmp_path, "second", recipe_file)
    names = sorted(p.name for p in first.iterdir())
    assert names == sorted(p.name for p in second.iterdir())
    assert {"weights.safetensors", "model.so", "manifest.json", "verification.safetensors"} <= set(names)
    for name in names:
        if name != "manifest.json":
            assert (first / name).read_bytes() == (second / name).read_bytes(), f"{name} differs between processes"
    one = json.loads((first / "manifest.json").read_text())
    two = json.loads((second / "manifest.json").read_text())
    assert one["files"] == two["files"]  # every file's sha256, the library's included
    assert without_durations(one) == without_durations(two)
    assert one != two or all(p["seconds"] == q["seconds"] for p, q in zip(one["passes"], two["passes"]))
