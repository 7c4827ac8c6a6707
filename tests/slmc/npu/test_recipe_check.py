import subprocess
import sys

import pytest

from slmc.errors import RecipeError
from slmc.backend.base import check_recipe
from slmc.npu.recipe_check import npu_recipe_problems
from slmc.spec.recipe import load_recipe
from slmc.spec.target import load_target


def _recipe(tmp_path, text):
    path = tmp_path / "recipe.yaml"
    path.write_text(text)
    return path


def test_float_recipe_on_an_npu_target_names_the_passes_field(tmp_path):
    recipe = load_recipe(_recipe(tmp_path, "passes:\n  - fuse: {}\n"))
    with pytest.raises(RecipeError) as info:
        check_recipe(recipe, load_target("generic-int8-npu"))
    assert info.value.exit_code == 2
    assert "passes" in str(info.value) and "scheme: w8a8" in str(info.value)


def test_w8a8_recipe_is_accepted_and_other_kinds_are_not_checked(tmp_path):
    from pathlib import Path

    example = Path(__file__).parents[3] / "examples" / "recipes" / "npu-int8.yaml"
    assert npu_recipe_problems(load_recipe(example), load_target("generic-int8-npu")) == []
    check_recipe(load_recipe(example), load_target("generic-int8-npu"))
    check_recipe(load_recipe(_recipe(tmp_path, "passes:\n  - fuse: {}\n")), load_target("host"))  # the cpu backend: no rule


def test_cli_exits_2_before_loading_the_model(tmp_path):
    recipe = _recipe(tmp_path, "passes:\n  - fuse: {}\n")
    done = subprocess.run([sys.executable, "-m", "slmc", "compile", "-m", "no_such_module:build", "-r", str(recipe),
                           "-t", "generic-int8-npu", "-o", str(tmp_path / "out")], capture_output=True, text=True)
    assert done.returncode == 2, done.stderr
    assert "scheme: w8a8" in done.stderr + done.stdout
    assert not (tmp_path / "out").exists()


def test_weight_only_int4_recipe_is_rejected_by_the_npu_descriptor(tmp_path):
    from slmc.errors import TargetError
    from slmc.spec.recipe import check_against_target

    recipe = load_recipe(_recipe(tmp_path, "passes:\n  - quantize: {bits: 4, group_size: 32}\n"))
    with pytest.raises(TargetError, match="int4"):
        check_against_target(recipe, load_target("ethos-u65"))
