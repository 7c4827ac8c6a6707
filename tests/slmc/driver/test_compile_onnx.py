"""`slmc compile` on an .onnx file: TVM's ONNX frontend, no fx passes, ONNX Runtime as the reference."""

import json
import shutil
import subprocess

import numpy as np
import pytest

import slmc
from slmc.errors import RecipeError
from slmc.graph.ir import trace
from slmc.models import tiny_lm
from slmc.frontend.onnx_export import export_onnx
from slmc.frontend.onnx_import import run_onnxruntime


@pytest.fixture(scope="module")
def onnx_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("onnx") / "tiny.onnx"
    export_onnx(trace(tiny_lm.build()), path)
    return path


def test_compile_an_onnx_file_verifies_against_onnx_runtime(onnx_file, tmp_path):
    result = slmc.compile(str(onnx_file), out=tmp_path / "out")
    m = result.manifest
    assert m.model.format == "onnx" and m.passes == []
    assert any("do not apply to ONNX models" in note for note in m.lowering_notes)
    v = result.verification
    assert v.executed and v.passed and "ONNX Runtime" in v.how
    assert v.artifact_vs_eager.max_abs_error <= 1e-4  # measured ~1.3e-6
    ids = np.arange(5, dtype=np.int64).reshape(1, 5)
    cache = np.zeros((2, 1, 4, 1, 32), dtype=np.float32)
    ours = slmc.load(result.artifact).run_numpy(ids, cache, cache)
    theirs = run_onnxruntime(onnx_file, [ids, cache, cache])
    assert all(np.max(np.abs(a - b)) <= 1e-4 for a, b in zip(ours, theirs))


def test_explicit_recipe_with_passes_is_rejected(onnx_file, tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text("passes:\n  - cast_weights: {}\n")
    with pytest.raises(RecipeError, match="passes.0.cast_weights") as err:
        slmc.compile(str(onnx_file), recipe=recipe, out=tmp_path / "out")
    assert err.value.exit_code == 2 and not (tmp_path / "out").exists()


def test_cli_compiles_an_onnx_file(onnx_file, tmp_path):
    result = subprocess.run([shutil.which("slmc"), "compile", "-m", str(onnx_file), "-o", "out", "--json"],
                            cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["verification"]["passed"]
