"""Progress bars: drawn on stderr only when it is a terminal and quiet mode is off."""

import io
import sys

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
                                                  (io.StringIO(), False, False)], ids=["terminal", "quiet", "not-a-terminal"])
def test_pass_bar(monkeypatch, constants_graph, host_target, stderr, quiet, shown):
    monkeypatch.setattr(sys, "stderr", stderr)
    with progress.quiet() if quiet else progress.compile_stages():
        run_two_passes(constants_graph, host_target)
    text = stderr.getvalue()
    assert ("passes" in text and "dead_code_elimination" in text) is shown
    assert bool(text) is shown


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
