import pytest
import torch

from slmc.errors import PassError
from slmc.graph.pass_manager import run_passes
from slmc.spec.pass_registry import PassStep
from slmc.spec.pass_registry import PassConfig, PassContext, PassOutcome, register_pass, unregister_pass


@pytest.fixture()
def context(host_target):
    return PassContext(target=host_target)


@pytest.fixture()
def temp_pass():
    names = []

    def add(name, fn):
        register_pass(name, config=PassConfig)(fn)
        names.append(name)

    yield add
    for name in names:
        unregister_pass(name)


def test_reports_time_stats_and_sizes(tiny_lm_graph, context):
    steps = [PassStep("constant_folding", _cfg("constant_folding")),
             PassStep("dead_code_elimination", _cfg("dead_code_elimination"))]
    final, reports = run_passes(tiny_lm_graph, steps, context)
    assert [r["name"] for r in reports] == ["constant_folding", "dead_code_elimination"]
    for r in reports:
        assert r["seconds"] >= 0 and r["before"]["parameters"] == r["after"]["parameters"] == 459392
        assert "nodes_removed" in r["stats"] or "nodes_folded" in r["stats"]


def _cfg(name):
    from slmc.spec.pass_registry import get_pass

    return get_pass(name).config()


def test_failure_names_pass_and_passes_before(tiny_lm_graph, context, temp_pass):
    def explode(graph, config, ctx):
        raise ValueError("bad things")

    temp_pass("t_explode", explode)
    steps = [PassStep("dead_code_elimination", _cfg("dead_code_elimination")), PassStep("t_explode", PassConfig())]
    with pytest.raises(PassError) as err:
        run_passes(tiny_lm_graph, steps, context)
    assert err.value.pass_name == "t_explode"
    assert err.value.passes_before == ["dead_code_elimination"]
    assert "bad things" in str(err.value) and err.value.exit_code == 1


def test_graph_broken_by_a_pass_names_the_node(tiny_lm_graph, context, temp_pass):
    def break_shapes(graph, config, ctx):
        """Feed the LM head a tensor of the wrong width: shape propagation must fail there."""
        head = next(n for n in graph.graph.nodes if n.op == "call_function" and n.args[1:2] and getattr(n.args[1], "target", None) == "lm_head.weight")
        with graph.graph.inserting_before(head):
            narrow = graph.graph.call_function(torch.ops.aten.slice.Tensor, (head.args[0], -1, 0, 7))
        head.replace_input_with(head.args[0], narrow)
        graph.module.recompile()
        return PassOutcome(graph)

    temp_pass("t_break", break_shapes)
    with pytest.raises(PassError) as err:
        run_passes(tiny_lm_graph, [PassStep("t_break", PassConfig())], context)
    assert err.value.node is not None and "linear" in err.value.node
    assert "shape propagation failed" in str(err.value)


def test_failing_pass_leaves_the_input_graph_untouched(tiny_lm_graph, context, temp_pass):
    def mutate_then_fail(graph, config, ctx):
        for node in list(graph.graph.nodes):
            if node.op == "call_function" and not node.users:
                graph.graph.erase_node(node)
        raise RuntimeError("failed late")

    before = tiny_lm_graph.module.code
    temp_pass("t_late", mutate_then_fail)
    with pytest.raises(PassError):
        run_passes(tiny_lm_graph, [PassStep("t_late", PassConfig())], context)
    assert tiny_lm_graph.module.code == before


def test_a_pass_must_return_an_outcome(tiny_lm_graph, context, temp_pass):
    temp_pass("t_none", lambda graph, config, ctx: graph)
    with pytest.raises(PassError, match="expected PassOutcome"):
        run_passes(tiny_lm_graph, [PassStep("t_none", PassConfig())], context)
