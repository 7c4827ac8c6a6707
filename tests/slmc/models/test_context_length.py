"""The context a causal-LM artifact accepts: recipe, model and target memory (slmc.models.context_length)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import slmc
from slmc.models.context_length import fit_context, kv_bytes_per_token
from slmc.errors import InputError
from slmc.models import tiny_lm
from slmc.spec.recipe import load_recipe
from slmc.spec.target import load_target


def _recipe(tmp_path: Path, body: str):
    path = tmp_path / "recipe.yaml"
    path.write_text(body)
    return load_recipe(path)


def _target_with_kv_bytes(tmp_path: Path, kv_bytes: int):
    text = (Path(slmc.__file__).parent.parent / "targets" / "host.yaml").read_text()
    text = text.replace("memory:\n", f"memory:\n  kv_cache_bytes: {kv_bytes}\n", 1)
    path = tmp_path / "small.yaml"
    path.write_text(text.replace("name: host", "name: small-kv", 1))
    return load_target(path)


def test_model_limit_applies_when_nothing_else_binds(tmp_path):
    spec = tiny_lm.build()
    model_limit = spec.kv_cache.max_context
    report = fit_context(spec, _recipe(tmp_path, "passes: []\n"), load_target("host"))
    assert report["max_context"] == model_limit and report["decided_by"] == ["model"]
    assert spec.kv_cache.max_context == model_limit


def test_recipe_max_context_lowers_bounds(tmp_path):
    spec = tiny_lm.build()
    report = fit_context(spec, _recipe(tmp_path, "max_context: 64\n"), load_target("host"))
    assert report["max_context"] == 64 and report["decided_by"] == ["recipe"]
    assert spec.kv_cache.max_context == 64
    assert all(int(d.max) == 64 for entry in spec.dynamic_shapes for d in entry.values())


def test_target_memory_bounds_the_context(tmp_path):
    spec = tiny_lm.build()
    per_token = kv_bytes_per_token(spec.kv_cache)
    target = _target_with_kv_bytes(tmp_path, per_token * 41)
    report = fit_context(spec, _recipe(tmp_path, "passes: []\n"), target)
    assert report["max_context"] == 40 and report["decided_by"] == ["target_memory"]  # 41 slots, one is the sink


def test_recipe_beyond_target_memory_names_the_numbers(tmp_path):
    spec = tiny_lm.build()
    per_token = kv_bytes_per_token(spec.kv_cache)
    target = _target_with_kv_bytes(tmp_path, per_token * 41)
    with pytest.raises(InputError, match=r"max_context 64 needs .* bytes of KV cache .*allows .* = 40 tokens"):
        fit_context(spec, _recipe(tmp_path, "max_context: 64\n"), target)


def test_recipe_beyond_the_model_is_refused(tmp_path):
    spec = tiny_lm.build()
    too_long = spec.kv_cache.max_context + 1
    with pytest.raises(InputError, match=f"max_context {too_long} exceeds what model 'tiny-lm' supports"):
        fit_context(spec, _recipe(tmp_path, f"max_context: {too_long}\n"), load_target("host"))


def test_recipe_max_context_range_is_checked(tmp_path):
    with pytest.raises(slmc.errors.RecipeError, match="max_context"):
        _recipe(tmp_path, "max_context: 4\n")


def test_artifact_enforces_its_context(tmp_path):
    result = slmc.compile("tiny-lm", _recipe(tmp_path, "max_context: 32\npasses: []\n"), "host", tmp_path / "out")
    assert result.manifest.kv_cache.max_context == 32
    assert result.manifest.context.decided_by == ["recipe"]
    model = slmc.load(result.artifact)
    keys, values = model.kv_cache.empty()
    model.step(np.zeros((1, 32), dtype=np.int64), keys, values)  # exactly the context: accepted
    with pytest.raises(InputError, match=r"dimension tokens = 33 is outside \[1, 32\]"):
        model.step(np.zeros((1, 33), dtype=np.int64), keys, values)
    shape = list(keys.shape)
    shape[3] = 21  # the sink + 20 cached tokens
    keys, values = np.zeros(shape, dtype=np.float32), np.zeros(shape, dtype=np.float32)
    model.step(np.zeros((1, 12), dtype=np.int64), keys, values)
    with pytest.raises(InputError, match="20 cached \\+ 13 new tokens exceed the artifact's max_context 32"):
        model.step(np.zeros((1, 13), dtype=np.int64), keys, values)
