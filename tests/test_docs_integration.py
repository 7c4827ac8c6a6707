"""docs/integration.md works as written in a user's own repository: every slmc command it shows
names options the CLI has, every file it uses is one it shows, its recipe is valid, its Python
versions and pins are slmc's, and the wheel it tells users to build installs and runs from outside
the repository."""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
import tomllib
import venv
from pathlib import Path

import click
import pytest
from packaging.specifiers import SpecifierSet

from markdown_blocks import REPO, blocks, shell_lines

DOC = "integration.md"
PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["project"]


def doc_text() -> str:
    return (REPO / "docs" / DOC).read_text(encoding="utf-8")


def slmc_commands() -> list[list[str]]:
    """Every ``slmc ...`` command of the doc's shell, YAML (``run:``) and Makefile blocks, as words."""
    commands = []
    for block in blocks(DOC):
        text = block.text.replace("$(", "(").replace("${{", "{{")
        lines = "\n".join(line for line in re.sub(r"\\\n\s*", " ", text).splitlines() if re.search(r"(^|[\s:])slmc\s", line))
        for line in shell_lines(lines):
            words: list[str] = []
            for word in [*shlex.split(line), "&&"]:
                if word not in ("&&", "||", ";", ">"):
                    words.append(word)
                    continue
                while words and words[0] in ("-", "run:"):
                    words = words[1:]
                if words and words[0] == "slmc":
                    commands.append(words)
                words = []
    return commands


def shown_files() -> dict[str, str]:
    return {b.file_name: b.text for b in blocks(DOC) if b.file_name}


def test_every_slmc_command_uses_options_the_cli_defines():
    from slmc.cli.main import cli

    commands = slmc_commands()
    assert len(commands) >= 15
    for words in commands:
        command: click.Command = cli
        rest = words[1:]
        while isinstance(command, click.Group) and rest and rest[0] in command.commands:
            command, rest = command.commands[rest[0]], rest[1:]
        assert command is not cli or all(w.startswith("-") for w in rest), f"{shlex.join(words)}: no such slmc command"
        options = {opt for p in command.params for opt in (*p.opts, *p.secondary_opts)}
        used = [w.split("=", 1)[0] for w in rest if w.startswith("-") and w != "-"]
        assert not set(used) - options, f"{shlex.join(words)}: {sorted(set(used) - options)} not options of it"


def test_every_recipe_and_file_the_commands_read_exists():
    """A ``-r`` recipe is a built-in name or a file the doc shows (and slmc accepts it); the models are built-in."""
    from slmc.spec.recipe import BUILTIN_RECIPES, recipe_from_document
    from slmc.spec.yaml_source import parse_yaml

    files = shown_files()
    for words in slmc_commands():
        for flag, value in zip(words, words[1:]):
            if flag in ("-r", "--recipe") and not value.startswith(("(", "$")):
                assert value in BUILTIN_RECIPES or value in files, f"{shlex.join(words)}: recipe {value} is neither built in nor shown"
            if flag in ("-m", "--model"):
                assert value in ("tiny-lm", "fixture-lm") or value.startswith("("), shlex.join(words)
    for name, text in files.items():
        if name.endswith(".yaml") and name.startswith("recipes/"):
            recipe_from_document(parse_yaml(text, name), REPO)
    for link in re.findall(r"\]\(([^)#:]+)\)", doc_text()):
        assert (REPO / "docs" / link).exists(), f"{DOC} links to missing {link}"


def test_python_versions_and_pins_are_slmcs():
    allowed = SpecifierSet(PYPROJECT["requires-python"])
    text = doc_text()
    assert PYPROJECT["requires-python"] in text
    mentioned = set(re.findall(r"(?:[Pp]ython|python-version: \"|python)(3\.\d+)", text))
    assert mentioned and all(v in allowed for v in mentioned), mentioned
    for pin in PYPROJECT["dependencies"]:
        if "==" in pin:
            assert f"`{pin}`" in text, f"{DOC} does not state the pin {pin}"
    wheel = f"slmc-{PYPROJECT['version']}-py3-none-any.whl"
    assert re.findall(r"slmc-[\w.]+-py3-none-any\.whl", text) and set(re.findall(r"slmc-[\w.]+-py3-none-any\.whl", text)) == {wheel}


@pytest.mark.slow
def test_wheel_installs_and_runs_outside_the_repository(tmp_path):
    """The doc's ``pip wheel`` line, then the wheel in a fresh venv (system site packages give the
    pinned dependencies, ``--no-deps`` keeps pip offline) and its commands from the user's repository."""
    build = next(line for b in blocks(DOC) for line in shell_lines(b.text) if line.startswith("pip wheel"))
    words = shlex.split(build)
    words[words.index("-w") + 1] = str(tmp_path / "dist")
    subprocess.run([sys.executable, "-m", *words], cwd=REPO, check=True, capture_output=True, text=True, timeout=300)
    wheel = next((tmp_path / "dist").glob("slmc-*.whl"))
    assert wheel.name == f"slmc-{PYPROJECT['version']}-py3-none-any.whl"
    env_dir = tmp_path / "venv"
    venv.create(env_dir, system_site_packages=True, with_pip=False)
    python = env_dir / "bin" / "python"
    subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps", "--no-index", str(wheel)],
                   check=True, capture_output=True, text=True, timeout=300)
    user_repo = tmp_path / "user-repo"
    for name, text in shown_files().items():
        (user_repo / name).parent.mkdir(parents=True, exist_ok=True)
        (user_repo / name).write_text(text)
    where = subprocess.run([str(python), "-c", "import slmc; print(slmc.__file__)"], cwd=user_repo, check=True,
                           capture_output=True, text=True).stdout
    assert str(env_dir) in where, f"slmc imported from {where} instead of the installed wheel"
    checks = [line for b in blocks(DOC) for line in shell_lines(b.text)
              if line.startswith(("slmc --version", "slmc recipe check"))]
    assert len(checks) == 2
    for line in checks:
        result = subprocess.run([str(env_dir / "bin" / "slmc"), *shlex.split(line)[1:]], cwd=user_repo, capture_output=True,
                                text=True, timeout=300)
        assert result.returncode == 0, f"{line}: {result.stdout}{result.stderr}"
