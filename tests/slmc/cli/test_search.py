"""``slmc search`` through the console script with stderr captured (not a terminal): candidate progress
lines, and a time budget that stops the search and says so."""

import json
import os
import re
import shutil
import subprocess

import pytest


def test_time_budget_stops_the_search_and_says_so(tmp_path):
    exe = shutil.which("slmc") or pytest.fail("the slmc console script is not installed (pip install -e .)")
    # 0.001 min: spent before the baseline (which always runs) ends, so the second candidate never starts.
    args = ["search", "fixture-lm", "-t", "host", "--budget-minutes", "0.001", "--sparsity", "0,0.5", "--bits", "32",
            "--group-sizes", "pc", "--lowrank-ratios", "0", "--max-tokens", "200", "--latency", "none", "-o", "out"]
    result = subprocess.run([exe, *args], cwd=tmp_path, capture_output=True, text=True, env=dict(os.environ), timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "time budget of 0.001 min spent: 1 candidate(s) not run (s0.500-b32-r0.000)" in result.stdout, result.stdout
    assert "searched 1 candidates" in result.stdout
    lines = result.stderr.splitlines()
    assert "\r" not in result.stderr
    assert any(re.match(r"^\[ *\d+\.\ds\] search: 1/2 candidates, ETA ", line) for line in lines), lines
    assert any("search: time budget of 0.001 min spent: 1 of 2 candidates evaluated, 1 not run" in line for line in lines)
    front = json.loads((tmp_path / "out" / "front.json").read_text())
    assert front["settings"]["time_budget"] == {"minutes": 0.001, "candidates": 2, "evaluated": 1, "not_run": ["s0.500-b32-r0.000"]}
