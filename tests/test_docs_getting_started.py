"""docs/getting-started.md's new-user path, end to end through the real CLI: every ``slmc`` and
``export`` line of its shell blocks, exactly as written, in order, in a fresh directory holding
the files the doc shows (``# int4.yaml``); the install line is the one this environment ran."""

from __future__ import annotations

import os
import re
import shlex
import subprocess

import pytest

from markdown_blocks import blocks, shell_lines

DOC = "getting-started.md"


def doc_steps() -> list[str]:
    return [line for b in blocks(DOC) if b.language == "bash" for line in shell_lines(b.text)
            if line.startswith(("slmc", "export "))]


def test_the_path_has_the_steps_a_new_user_takes():
    steps = doc_steps()
    assert steps[0] == "slmc --version" and any(s.startswith("slmc compile") for s in steps)
    assert any("--report" in s for s in steps) and any(s.startswith("slmc eval") for s in steps)


@pytest.mark.slow
def test_new_user_path_runs_end_to_end(tmp_path):
    for block in blocks(DOC):
        if block.file_name:
            (tmp_path / block.file_name).write_text(block.text)
    env = {**os.environ, "HOME": str(tmp_path / "home")}  # the doc's ~ is the new user's home, not this machine's
    for step in doc_steps():
        if step.startswith("export "):
            name, _, value = shlex.split(step)[1].partition("=")
            env[name] = env["HOME"] + value[1:] if value.startswith("~") else value
            continue
        result = subprocess.run(shlex.split(step), cwd=tmp_path, env=env, capture_output=True, text=True, timeout=1800)
        assert result.returncode == 0, f"{step}\n{result.stdout}\n{result.stderr}"
        if "--report" in step:
            report_dir = shlex.split(step)[shlex.split(step).index("--report") + 1]
            assert (tmp_path / report_dir / "report.html").is_file()
    assert re.search(r"\S", subprocess.run(["slmc", "cache", "ls"], cwd=tmp_path, env=env, capture_output=True,
                                           text=True, check=True).stdout)
