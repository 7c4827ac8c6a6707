import pytest

from slmc.errors import RecipeError, TargetError
from slmc.spec.recipe import check_against_target, load_recipe
from slmc.spec.target import load_target


def write(tmp_path, text, name="recipe.yaml"):
    path = tmp_path / name
    path.write_text(text)
    return path


def problems(exc_info):
    return {p.path: p for p in exc_info.value.problems}


def test_default_recipe_compresses_and_gates_perplexity():
    recipe = load_recipe(None)
    assert recipe.source == load_recipe("default").source
    (step,) = recipe.steps
    assert step.name == "quantize" and (step.config.bits, step.config.group_size, step.config.method) == (4, 32, "rtn")
    assert recipe.verify.gates.max_perplexity_increase == 0.02 and recipe.evaluation_text() == "stdlib-heldout"


def test_cleanup_recipe_is_valid_and_normalized():
    recipe = load_recipe("cleanup")
    assert [s.name for s in recipe.steps] == ["constant_folding", "dead_code_elimination"]
    normalized = recipe.normalized()
    assert normalized["passes"][0] == {"constant_folding": {"max_growth_bytes": 65536}}
    assert normalized["verify"]["atol"] == 1e-4


def test_unknown_key_names_key_line_and_valid_keys(tmp_path):
    path = write(tmp_path, "verify:\n  atol: 0.001\n  colour: blue\n")
    with pytest.raises(RecipeError) as err:
        load_recipe(path)
    p = problems(err)["verify.colour"]
    assert p.line == 3
    assert "unknown key" in p.message and "atol" in p.message
    assert str(path) in str(err.value) and err.value.exit_code == 2


def test_negative_ratio_is_out_of_range(tmp_path):
    path = write(tmp_path, "verify:\n  gates:\n    min_top1_agreement: -0.5\n")
    with pytest.raises(RecipeError) as err:
        load_recipe(path)
    p = problems(err)["verify.gates.min_top1_agreement"]
    assert p.found == -0.5 and p.line == 3 and "greater than or equal to 0" in p.message


def test_unknown_pass_lists_valid_passes(tmp_path):
    path = write(tmp_path, "passes:\n  - constant_folding: {}\n  - quantise: {bits: 4}\n")
    with pytest.raises(RecipeError) as err:
        load_recipe(path)
    p = problems(err)["passes.1"]
    assert "unknown pass 'quantise'" in p.message and "dead_code_elimination" in p.message and p.line == 3


def test_pass_settings_are_validated_with_their_path(tmp_path):
    path = write(tmp_path, "passes:\n  - cast_weights:\n      dtype: int3\n      min_elements: 0\n      colour: 1\n")
    with pytest.raises(RecipeError) as err:
        load_recipe(path)
    found = problems(err)
    assert set(found) == {"passes.0.cast_weights.dtype", "passes.0.cast_weights.min_elements", "passes.0.cast_weights.colour"}
    assert found["passes.0.cast_weights.dtype"].line == 3


def test_pass_order_violation(tmp_path):
    path = write(tmp_path, "passes:\n  - cast_weights: {}\n  - constant_folding: {}\n")
    with pytest.raises(RecipeError) as err:
        load_recipe(path)
    p = problems(err)["passes.0"]
    assert "must come after 'constant_folding'" in p.message


def test_every_problem_is_reported_at_once(tmp_path):
    path = write(tmp_path, "passes:\n  - nope: {}\n  - constant_folding: {max_growth_bytes: -1}\nverify: {colour: 1}\n")
    with pytest.raises(RecipeError) as err:
        load_recipe(path)
    assert set(problems(err)) == {"passes.0", "passes.1.constant_folding.max_growth_bytes", "verify.colour"}


@pytest.mark.parametrize(
    "text, path, needle",
    [
        ("- 1\n- 2\n", "", "expected a mapping"),
        ("passes: 3\n", "passes", "valid list"),
        ("passes:\n  - {a: 1, b: 2}\n", "passes.0", "exactly one key"),
        ("passes:\n  - constant_folding: 5\n", "passes.0.constant_folding", "must be a mapping"),
        ("calibration:\n  num_samples: 4\n", "calibration", "exactly one of"),
        ("calibration:\n  text: missing.txt\n", "calibration.text", "file not found"),
        ("calibration:\n  tensors: data.csv\n", "calibration", ".npy or .safetensors"),
        ("verify:\n  num_samples: 0\n", "verify.num_samples", "greater than or equal to 1"),
        ("passes.: null\n", "passes.", "unknown key"),  # found by the fuzz test: was an empty problem list
    ],
)
def test_bad_documents(tmp_path, text, path, needle):
    with pytest.raises(RecipeError) as err:
        load_recipe(write(tmp_path, text))
    assert path in problems(err)
    assert needle in problems(err)[path].message


def test_missing_recipe_file():
    with pytest.raises(RecipeError, match="recipe file not found"):
        load_recipe("/nonexistent/recipe.yaml")


def test_calibration_path_is_relative_to_the_recipe(tmp_path):
    (tmp_path / "cal.txt").write_text("hello world")
    recipe = load_recipe(write(tmp_path, "calibration:\n  text: cal.txt\n"))
    assert recipe.resolve_path(recipe.calibration.text) == tmp_path / "cal.txt"


def test_recipe_checked_against_target_names_both(tmp_path):
    descriptor = load_target("host").model_copy(deep=True)
    fp32_only = descriptor.model_copy(update={"name": "fp32-only", "dtypes": descriptor.dtypes.model_copy(update={"weights": ["float32"]})})
    recipe = load_recipe(write(tmp_path, "passes:\n  - constant_folding: {}\n  - cast_weights: {dtype: float16}\n"))
    with pytest.raises(TargetError) as err:
        check_against_target(recipe, fp32_only)
    message = str(err.value)
    assert "passes.1.cast_weights.dtype" in message and "fp32-only" in message and "float16" in message
    check_against_target(recipe, descriptor)  # host has float16


def test_kv_cache_storage_is_validated_with_extra_keys_refused(tmp_path):
    recipe = load_recipe(write(tmp_path, "kv_cache: {dtype: int8, granularity: per_token_head}\n"))
    assert (recipe.kv_cache.dtype, recipe.kv_cache.granularity) == ("int8", "per_token_head")
    assert load_recipe("cleanup").kv_cache.dtype == "float32"
    assert recipe.normalized()["kv_cache"] == {"dtype": "int8", "granularity": "per_token_head"}  # the cache keys on it
    with pytest.raises(RecipeError) as err:
        load_recipe(write(tmp_path, "kv_cache:\n  dtype: int4\n  group: 32\n", "bad.yaml"))
    found = problems(err)
    assert set(found) == {"kv_cache.dtype", "kv_cache.group"} and found["kv_cache.dtype"].line == 2
