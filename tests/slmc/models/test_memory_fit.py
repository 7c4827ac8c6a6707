"""A model too large for the target's memory is rejected before tracing, with the numbers."""

import json
import os
import shutil
import subprocess
from importlib import resources

import pytest
import torch
import yaml

import slmc
import slmc.driver.compress
from slmc.errors import ModelTooLargeError
from slmc.models.memory_fit import check_compiled_weights, check_loaded_model, narrowest_weight_bytes
from slmc.models import tiny_lm
from slmc.spec.target import load_target


def small_target(tmp_path, ram_bytes, weights=None):
    """The built-in host descriptor with ``ram_bytes`` (and optionally other weight dtypes), as a file."""
    data = yaml.safe_load((resources.files("slmc.targets") / "host.yaml").read_text())
    data["name"] = "small"
    data["memory"]["ram_bytes"] = ram_bytes
    if weights is not None:
        data["dtypes"]["weights"] = weights
    path = tmp_path / "small.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def test_tiny_lm_in_100_kb_is_rejected_before_tracing_with_the_numbers(tmp_path, monkeypatch):
    traced = []
    real_trace = slmc.driver.compress.trace
    monkeypatch.setattr(slmc.driver.compress, "trace", lambda spec: traced.append(spec) or real_trace(spec))
    with pytest.raises(ModelTooLargeError) as err:
        slmc.compile("tiny-lm", target=small_target(tmp_path, 100_000), out=tmp_path / "out")
    message = str(err.value)
    # 459,392 float32 parameters; KV cache 2 (keys, values) x 2 layers x 4 heads x 32 x 4 bytes = 2,048 bytes per token.
    assert "model 'tiny-lm' does not fit target 'small'" in message
    assert "1,837,568 bytes of parameters as loaded, at least 229,696 at int4" in message
    assert "34,816 bytes of KV cache at the shortest context (16 tokens; 2,048 bytes per token, 526,336 at its max context of 256)" in message
    assert "= 264,512 bytes, more than the target's 100,000 bytes of RAM (memory.ram_bytes)" in message
    assert (err.value.parameter_bytes, err.value.kv_cache_bytes, err.value.ram_bytes) == (1_837_568, 526_336, 100_000)
    assert err.value.exit_code == 2 and not traced
    assert not (tmp_path / "out").exists()


def test_the_cli_exits_2_with_the_numbers_in_json(tmp_path):
    exe = shutil.which("slmc") or pytest.fail("the slmc console script is not installed (pip install -e .)")
    small_target(tmp_path, 100_000)
    result = subprocess.run([exe, "compile", "-m", "tiny-lm", "-t", "small.yaml", "-o", "out", "--json"], cwd=tmp_path,
                            capture_output=True, text=True, env=dict(os.environ), timeout=600)
    assert result.returncode == 2 and "does not fit target 'small'" in result.stderr and "Traceback" not in result.stderr
    error = json.loads(result.stdout)["error"]
    assert error["type"] == "ModelTooLargeError" and error["ram_bytes"] == 100_000 and error["parameter_bytes"] == 1_837_568


def test_the_floor_is_the_narrowest_weight_dtype_the_target_executes(tmp_path):
    spec = tiny_lm.build()
    assert narrowest_weight_bytes(spec, load_target(small_target(tmp_path, 10**9))) == (229_696, "int4")
    assert narrowest_weight_bytes(spec, load_target(small_target(tmp_path, 10**9, ["float32", "float16"]))) == (918_784, "float16")
    fp32_only = load_target(small_target(tmp_path, 1_870_000, ["float32"]))
    with pytest.raises(ModelTooLargeError, match=r"1,837,568 bytes of parameters as loaded \+ 34,816"):
        check_loaded_model(spec, fp32_only)  # no narrower dtype: the weights as loaded are the floor
    check_loaded_model(spec, load_target(small_target(tmp_path, 1_880_000, ["float32"])))  # 1,872,384 fit


class Wide(torch.nn.Module):
    """A 2.1 MB float32 MLP (no KV cache)."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.up = torch.nn.Linear(256, 1024)
        self.down = torch.nn.Linear(1024, 256)

    def forward(self, x):
        return self.down(torch.relu(self.up(x)))


def test_weights_too_large_after_the_passes_are_rejected_before_lowering(tmp_path):
    target = small_target(tmp_path, 1_200_000)
    with pytest.raises(ModelTooLargeError, match=r"2,102,272 bytes of weights after the recipe's passes, "
                                                 r"more than the target's 1,200,000 bytes of RAM") as err:
        slmc.compile(Wide(), target=target, out=tmp_path / "fp32", example_inputs=(torch.randn(2, 256),))
    assert "cast_weights" in str(err.value)
    recipe = tmp_path / "fp16.yaml"
    recipe.write_text("passes:\n  - cast_weights: {dtype: float16}\nverify:\n  atol: 1.0e-2\n")
    result = slmc.compile(Wide(), recipe=recipe, target=target, out=tmp_path / "fp16", example_inputs=(torch.randn(2, 256),))
    assert result.verification.passed and result.manifest.weights.bytes < 1_200_000


def test_check_compiled_weights_without_a_cache():
    host = load_target("host")
    check_compiled_weights("m", 1000, None, host)
    with pytest.raises(ModelTooLargeError, match="as imported"):
        check_compiled_weights("m", int(host.memory.ram_bytes) + 1, None, host, after_passes=False)
