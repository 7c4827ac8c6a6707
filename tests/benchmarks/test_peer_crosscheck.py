"""benchmarks/peer_crosscheck.py: slmc's side without the peer (checkpoint round trip, evaluator, recipes,
calibration tokens, activation fake quantization), and the cross-check itself when the peer's venv exists."""

from __future__ import annotations

import importlib.util
import json
import os
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

REPO = Path(__file__).resolve().parents[2]
PEER_PYTHON = Path(os.environ.get("SLMC_PEER_PYTHON", "/work/venvs/peer/bin/python"))


def _load_script():
    spec = importlib.util.spec_from_file_location("peer_crosscheck", REPO / "benchmarks" / "peer_crosscheck.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


crosscheck = _load_script()


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    folder = tmp_path_factory.mktemp("peer")
    crosscheck.prepare(folder, samples=4, length=64)
    return folder


def test_calibration_tokens_are_those_of_the_quality_recipes():
    from slmc.frontend.calibration import load_calibration
    from slmc.models import fixture_lm
    from slmc.spec.recipe import load_recipe

    docs = load_calibration(load_recipe(REPO / "examples" / "recipes" / "int4-g32-gptq.yaml"), fixture_lm())
    tokens = crosscheck.calibration_tokens(64, 256)
    assert tokens.shape == (64, 1, 256) and tokens.dtype == np.int64
    assert np.array_equal(tokens, np.stack([sample[0].numpy() for sample in docs]))


def test_recipes_load_and_fit_host_with_the_saved_tokens(work, host_target):
    from slmc.frontend.calibration import load_calibration
    from slmc.models import fixture_lm
    from slmc.spec.recipe import check_against_target, load_recipe

    saved = np.load(work / crosscheck.CALIBRATION)
    for name in crosscheck.METHODS:
        recipe = load_recipe(work / "recipes" / f"{name}.yaml")
        check_against_target(recipe, host_target)
        samples = load_calibration(recipe, fixture_lm())
        assert np.array_equal(np.stack([s[0].numpy() for s in samples]), saved)


def test_peer_checkpoint_keeps_weights_and_reads_in_both_config_formats(work):
    config = json.loads((work / "model" / "config.json").read_text())
    assert config["rope_theta"] == config["rope_parameters"]["rope_theta"] == 10000.0
    assert (work / "model" / "model.safetensors").read_bytes() == (crosscheck.fixture_folder() / "model.safetensors").read_bytes()


def test_substituted_checkpoint_round_trip_evaluates_as_the_eager_fixture(work, tmp_path):
    from safetensors.torch import load_file

    from slmc.models import fixture_lm
    from slmc.models.huggingface import load_hf_model

    base = fixture_lm()
    documents = crosscheck.heldout_documents(base.tokenizer, 400)
    weights = load_file(str(work / "model" / "model.safetensors"))
    crosscheck.substituted_checkpoint(weights, tmp_path / "checkpoint")
    loaded = load_hf_model(tmp_path / "checkpoint")
    ours, theirs = crosscheck.evaluate(base.module, base.kv_cache, documents), crosscheck.evaluate(loaded.module, loaded.kv_cache, documents)
    assert ours == theirs and 5.0 < ours < 100.0


def test_substituted_checkpoint_refuses_other_tensors(tmp_path):
    from safetensors.torch import load_file

    from slmc.errors import InputError

    weights = load_file(str(crosscheck.fixture_folder() / "model.safetensors"))
    weights.pop("lm_head.weight")
    with pytest.raises(InputError, match="lm_head.weight"):
        crosscheck.substituted_checkpoint(weights, tmp_path / "a")
    weights = load_file(str(crosscheck.fixture_folder() / "model.safetensors"))
    weights["model.norm.weight"] = torch.ones(3)
    with pytest.raises(InputError, match="model.norm.weight"):
        crosscheck.substituted_checkpoint(weights, tmp_path / "b")


def test_fake_quantized_inputs_sit_on_the_int8_grid():
    from slmc.errors import InputError
    from slmc.models import fixture_lm

    spec = fixture_lm()
    layer = "model.layers.1.mlp.down_proj"
    scale = 0.01
    assert crosscheck.fake_quantize_inputs(spec.module, {layer: scale}) == [layer]
    seen = []
    dict(spec.module.model.named_modules())[layer].register_forward_pre_hook(lambda _, args: seen.append(args[0]))
    with torch.no_grad():
        spec.module(*spec.example_inputs)
    codes = seen[0] / np.float32(scale)
    assert torch.allclose(codes, torch.round(codes), atol=1e-3)
    assert codes.min() >= -128.001 and codes.max() <= 127.001
    with pytest.raises(InputError, match="lacks"):
        crosscheck.fake_quantize_inputs(spec.module, {"model.layers.9.mlp.down_proj": scale})


@pytest.mark.slow
def test_slmc_no_worse_than_llmcompressor(tmp_path):
    """The cross-check on a subset (GPTQ and SparseGPT, 32 calibration windows, 3,000 held-out tokens)."""
    if not PEER_PYTHON.is_file():
        pytest.skip(f"the peer's virtual environment is not installed: no {PEER_PYTHON} (see benchmarks/peer_crosscheck.py's "
                    "docstring; SLMC_PEER_PYTHON names another)")
    code = crosscheck.main(["--work", str(tmp_path), "--peer-python", str(PEER_PYTHON), "--methods", "gptq", "sparsegpt-50",
                            "--samples", "32", "--max-tokens", "3000"])
    rows = json.loads((tmp_path / "result.json").read_text())["rows"]
    assert [r["method"] for r in rows] == ["gptq", "sparsegpt-50"]
    assert code == 0, rows
