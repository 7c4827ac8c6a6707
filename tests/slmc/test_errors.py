"""Error messages that help (issue 16, point 9): "did you mean" for every mistyped name (one shared
helper), a recipe that does not fit a target headlined as a recipe problem, a missing model path
"not found". Through the CLI (click's CliRunner): each fails before a model is loaded or compiled."""

import pytest
from click.testing import CliRunner

from slmc.cli.main import cli
from slmc.errors import RecipeError, RecipeTargetMismatchError, TargetError, did_you_mean


def test_did_you_mean_names_the_closest_choices_or_nothing():
    assert did_you_mean("hots", ["host", "mali-g710"]) == " (did you mean 'host'?)"
    assert did_you_mean("quantise", ["quantize", "prune"]) == " (did you mean 'quantize'?)"
    assert did_you_mean("zzzz", ["host", "mali-g710"]) == ""


def run(tmp_path, *args):
    result = CliRunner().invoke(cli, list(args), catch_exceptions=False)
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output and not (tmp_path / "out").exists()
    return result.output


@pytest.mark.parametrize("args, expected", [
    (["-t", "hots"], "target 'hots' is neither a built-in target nor an existing descriptor file (did you mean 'host'?)"),
    (["-m", "tiny-llm"], "(did you mean 'tiny-lm'?)"),
    (["-m", "./no/such/dir"], "model path './no/such/dir' not found"),
    (["-t", "./no/such/board.yaml"], "target descriptor file './no/such/board.yaml' not found"),
    (["-r", "defualt"], "recipe file not found (did you mean 'default'?)"),
])
def test_mistyped_names_and_missing_paths(tmp_path, args, expected):
    assert expected in run(tmp_path, "compile", *args, "-o", str(tmp_path / "out"))


def test_mistyped_recipe_keys_and_pass_names(tmp_path):
    recipe = tmp_path / "typos.yaml"
    recipe.write_text("pases: []\nverify: {num_sample: 3}\npasses: [{constant_folding: {max_growth_byte: 3}}, {quantise: {}}]\n")
    output = run(tmp_path, "recipe", "check", str(recipe))
    assert "pases: unknown key (did you mean 'passes'?)" in output
    assert "verify.num_sample: unknown key (did you mean 'num_samples'?)" in output
    assert "passes.0.constant_folding.max_growth_byte: unknown key (did you mean 'max_growth_bytes'?)" in output
    assert "passes.1: unknown pass 'quantise' (did you mean 'quantize'?)" in output


def test_a_recipe_that_does_not_fit_the_target_is_a_recipe_problem(tmp_path):
    recipe = tmp_path / "int4.yaml"
    recipe.write_text("passes: [{quantize: {bits: 4, group_size: 32}}]\n")
    output = run(tmp_path, "compile", "-r", str(recipe), "-t", "ethos-u65", "-o", str(tmp_path / "out"))
    assert f"error: recipe {recipe} does not fit target 'ethos-u65':" in output
    assert "invalid target descriptor" not in output
    assert f"{recipe}: passes.0.quantize.bits: weight dtype 'int4' is not supported; the target supports ['int8']" in output
    assert "built-in recipes that fit target 'ethos-u65': cleanup" in output


def test_the_mismatch_is_both_a_recipe_and_a_target_error(tmp_path):
    from slmc.spec.recipe import check_against_target, load_recipe
    from slmc.spec.target import load_target

    recipe = tmp_path / "int4.yaml"
    recipe.write_text("passes: [{quantize: {bits: 4, group_size: 32}}]\n")
    with pytest.raises(RecipeTargetMismatchError) as err:
        check_against_target(load_recipe(recipe), load_target("ethos-u65"))
    assert isinstance(err.value, RecipeError) and isinstance(err.value, TargetError) and err.value.exit_code == 2
    data = err.value.to_json()
    assert data["target"] == "ethos-u65" and data["fitting_recipes"] == ["cleanup"] and data["file"] == str(recipe)
