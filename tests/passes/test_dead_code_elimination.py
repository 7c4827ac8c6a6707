import torch

from slmc.graph.ir import ModelSpec, trace
from slmc.spec.pass_registry import PassContext, get_pass

# Removing unused nodes cannot change any output (measured max abs difference: 0.0).
ATOL = 0.0


class WithDeadCode(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.used = torch.nn.Linear(8, 8)
        self.unused = torch.nn.Linear(8, 8)

    def forward(self, x):
        _ = torch.relu(x) * 3  # computed, never used
        y = self.used(x)
        _ = y.sum()  # never used
        return y


def run(graph, host_target, **settings):
    definition = get_pass("dead_code_elimination")
    return definition.run(graph.clone(), definition.config(**settings), PassContext(host_target))


def test_structure_dead_nodes_and_unused_weights_go(host_target):
    graph = trace(ModelSpec(WithDeadCode(), (torch.randn(2, 8),), name="dead"))
    # torch.export already drops some dead nodes; the pass must leave only the linear.
    outcome = run(graph, host_target)
    assert [str(n.target) for n in outcome.graph.op_nodes()] == ["aten.linear.default"]
    assert not any("unused" in name for name in outcome.graph.tensors())
    assert outcome.graph.num_parameters() == 8 * 8 + 8


def test_unused_weights_are_removed_after_a_rewrite(tiny_lm_graph, host_target, lm_inputs):
    graph = tiny_lm_graph.clone()
    head = next(n for n in graph.graph.nodes if n.op == "call_function" and n.args[1:2] and getattr(n.args[1], "target", None) == "lm_head.weight")
    head.replace_all_uses_with(head.args[0])  # output the normed hidden state: lm_head dies
    graph.graph.erase_node(head)
    graph.module.recompile()
    outcome = run(graph, host_target)
    assert outcome.stats["nodes_removed"] == 1  # the get_attr of lm_head.weight
    assert outcome.stats["tensors_removed"] == 1
    assert outcome.stats["bytes_removed"] == 256 * 128 * 4
    x = lm_inputs(9)
    assert torch.equal(graph.run(*x)[0], outcome.graph.run(*x)[0])


def test_numerics_unchanged(host_target):
    graph = trace(ModelSpec(WithDeadCode(), (torch.randn(2, 8),), name="dead"))
    outcome = run(graph, host_target)
    x = torch.randn(2, 8)  # static trace: same shape as the example
    assert torch.max(torch.abs(graph.run(x)[0] - outcome.graph.run(x)[0])).item() <= ATOL


def test_negative_keep_weights_when_asked(tiny_lm_graph, host_target):
    outcome = run(tiny_lm_graph, host_target, remove_unused_weights=False)
    assert outcome.stats["tensors_removed"] == 0
    assert outcome.graph.num_parameters() == tiny_lm_graph.num_parameters()


def test_negative_impure_nodes_are_kept(tiny_lm_graph, host_target):
    outcome = run(tiny_lm_graph, host_target)
    assert any(n.op == "call_module" for n in outcome.graph.graph.nodes)  # export's guard check stays
