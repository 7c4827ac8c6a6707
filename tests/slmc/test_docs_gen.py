"""The generated references in docs/reference/ match the code (regenerate: python -m slmc.docs_gen)."""

from slmc import docs_gen


def test_committed_references_are_current():
    stale = docs_gen.stale()
    assert stale == [], f"stale generated docs {stale}: run `python -m slmc.docs_gen` and commit docs/reference/"


def test_a_stale_or_missing_page_is_detected(tmp_path):
    docs_gen.generate(tmp_path)
    assert docs_gen.stale(tmp_path) == []
    (tmp_path / "passes.md").write_text((tmp_path / "passes.md").read_text().replace("`quantize`", "`quantise`"))
    (tmp_path / "cli.md").unlink()
    assert docs_gen.stale(tmp_path) == ["passes.md", "cli.md"]


def test_references_cover_every_pass_recipe_key_and_command():
    from slmc.cli.main import cli
    from slmc.spec.pass_registry import registered_passes
    from slmc.spec.recipe import Gates, RecipeDocument

    passes, recipe, commands = docs_gen.passes_page(), docs_gen.recipe_page(), docs_gen.cli_page()
    assert all(f"## `{name}`" in passes for name in registered_passes())
    assert all(f"`{key}`" in recipe for key in [*RecipeDocument.model_fields, *Gates.model_fields])
    assert all(f"## `slmc {name}`" in commands for name in cli.commands)
    assert "`--cache-dir`" in commands and "## `slmc cache prune`" in commands


def test_check_mode_exit_code(capsys):
    assert docs_gen.main(["--check"]) == 0
    assert docs_gen.main(["--bogus"]) == 2
