"""README.md's Python snippet runs as written: compile the built-in model, load it, generate, tokenize."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

README = Path(__file__).resolve().parents[3] / "README.md"


def readme_snippet(name: str) -> str:
    """The fenced block between ``<!-- NAME -->`` and ``<!-- end -->`` (as .ci/run extracts the commands)."""
    match = re.search(rf"<!-- {re.escape(name)} -->\n```\w*\n(.*?)```\n<!-- end -->", README.read_text(encoding="utf-8"), re.S)
    assert match, f"README.md has no '{name}' block"
    return match.group(1)


def test_readme_python_snippet_runs_as_written(tmp_path):
    snippet = readme_snippet("python snippet")
    assert "slmc.load" in snippet and ".generate(" in snippet
    result = subprocess.run([sys.executable, "-c", snippet], cwd=tmp_path, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    assert (tmp_path / "out" / "manifest.json").is_file()
    assert "def main():" in result.stdout and len(result.stdout.strip().splitlines()) >= 3
