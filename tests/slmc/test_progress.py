"""Progress: bars on stderr when it is a terminal, plain timed lines when it is not, nothing when quiet."""

import io
import re
import sys
from contextlib import nullcontext

import pytest

from slmc import progress


class Terminal(io.StringIO):
    def isatty(self):
        return True


def run_two_passes(graph, target):
    from slmc.graph.pass_manager import run_passes
    from slmc.spec.pass_registry import PassContext, PassStep, get_pass

    steps = [PassStep(name, get_pass(name).config()) for name in ("constant_folding", "dead_code_elimination")]
    run_passes(graph, steps, PassContext(target))


@pytest.mark.parametrize("stderr, quiet, shown", [(Terminal(), False, True), (Terminal(), True, False),
                                                  (io.StringIO(), True, False)], ids=["terminal", "quiet", "quiet-not-a-terminal"])
def test_pass_bar(monkeypatch, constants_graph, host_target, stderr, quiet, shown):
    monkeypatch.setattr(sys, "stderr", stderr)
    with progress.quiet() if quiet else progress.compile_stages():
        run_two_passes(constants_graph, host_target)
    text = stderr.getvalue()
    assert ("passes" in text and "dead_code_elimination" in text) is shown
    assert bool(text) is shown


TIMED = r"^\[ *\d+\.\ds\] "


def test_plain_lines_when_stderr_is_not_a_terminal(monkeypatch, constants_graph, host_target):
    stderr = io.StringIO()
    monkeypatch.setattr(sys, "stderr", stderr)
    with progress.compile_stages():
        progress.stage("passes")
        run_two_passes(constants_graph, host_target)
        progress.stage("build")
    lines = stderr.getvalue().splitlines()
    assert "\r" not in stderr.getvalue()
    assert all(re.match(TIMED, line) for line in lines), lines
    texts = [re.sub(TIMED, "", line) for line in lines]
    done = [re.sub(r" done in \d+\.\d s$", "", t) for t in texts]
    # One line as each step ends (a stage ends where the next one starts, the last with the compile).
    assert done == ["stage load", "pass constant_folding", "pass dead_code_elimination", "stage passes", "stage build"], texts


def test_plain_counts_are_throttled_and_end_with_the_total(monkeypatch):
    stderr = io.StringIO()
    monkeypatch.setattr(sys, "stderr", stderr)
    with progress.bar("perplexity", total=1000, unit="token") as bar:
        for _ in range(10):
            bar.update(100)
    lines = stderr.getvalue().splitlines()
    assert len(lines) == 1 and lines[0].endswith("perplexity: 1000/1000 tokens, done in 0.0 s"), lines
    stderr.truncate(0)
    stderr.seek(0)
    with progress.bar("search", total=3, unit="candidate", mininterval=0) as bar:
        bar.update()
    assert re.sub(TIMED, "", stderr.getvalue()).startswith("search: 1/3 candidates, ETA ")


def test_stage_bar_follows_the_compile(monkeypatch):
    stderr = Terminal()
    monkeypatch.setattr(sys, "stderr", stderr)
    with progress.compile_stages() as bar:
        progress.stage("build")
        assert bar.n == progress.COMPILE_STAGES.index("build")
    progress.stage("verify")  # outside a compile: nothing to move, no error
    assert "compile" in stderr.getvalue() and "build" in stderr.getvalue()


def test_calibration_bar(monkeypatch, tiny_lm_graph, lm_inputs):
    from slmc.graph.activations import linear_input_statistics
    from slmc.graph.linears import linear_layers

    stderr = Terminal()
    monkeypatch.setattr(sys, "stderr", stderr)
    names = [layer.node.name for layer in linear_layers(tiny_lm_graph)[0]][:3]
    linear_input_statistics(tiny_lm_graph, [lm_inputs(8)], names)
    assert "calibration" in stderr.getvalue()



@pytest.mark.parametrize("quiet", [False, True], ids=["shown", "quiet"])
def test_current_stage_follows_the_compile(monkeypatch, quiet):
    """Followed in quiet mode too (a memory sampler reads it: benchmarks/compile_memory.py)."""
    monkeypatch.setattr(sys, "stderr", io.StringIO())
    assert progress.current_stage() is None
    with progress.quiet() if quiet else nullcontext(), progress.compile_stages():
        assert progress.current_stage() == "load"
        progress.stage("verify")
        assert progress.current_stage() == "verify"
    assert progress.current_stage() is None
