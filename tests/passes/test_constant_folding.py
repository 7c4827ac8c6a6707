import torch

from slmc.graph.ir import ModelSpec, check_graph, trace
from slmc.spec.pass_registry import PassContext, get_pass

# Tolerances of this pass against eager execution of the unfolded graph.
# Folding evaluates the same ATen ops ahead of time, so the result is bit-identical (measured: 0.0).
ATOL = 0.0


def run(graph, host_target, **settings):
    definition = get_pass("constant_folding")
    return definition.run(graph.clone(), definition.config(**settings), PassContext(host_target))


def test_structure_constant_subgraphs_become_weights(constants_graph, host_target):
    outcome = run(constants_graph, host_target)
    ops = [str(n.target) for n in outcome.graph.op_nodes()]
    assert ops == ["aten.linear.default"]  # mul and add were precomputed
    assert outcome.stats["nodes_folded"] == 2
    assert outcome.stats["tensors_removed"] == 2  # the original weight and bias are no longer read
    assert set(outcome.graph.tensors()) == {"_folded_mul", "_folded_add"}
    check_graph(outcome.graph)


def test_numerics_match_eager_exactly(constants_graph, host_target):
    outcome = run(constants_graph, host_target)
    x = torch.randn(4, 16)  # the trace is static: same shape as the example
    (before,) = constants_graph.run(x)
    (after,) = outcome.graph.run(x)
    assert torch.max(torch.abs(before - after)).item() <= ATOL


def test_tiny_lm_has_nothing_to_fold(tiny_lm_graph, host_target):
    outcome = run(tiny_lm_graph, host_target)
    assert outcome.stats["nodes_folded"] == 0
    assert outcome.graph.module.code == tiny_lm_graph.module.code


class Expanding(torch.nn.Module):
    """A small constant broadcast to a large one: folding would store 64 KiB for 256 bytes."""

    def __init__(self):
        super().__init__()
        self.row = torch.nn.Parameter(torch.randn(1, 64))

    def forward(self, x):
        return x + self.row.expand(256, 64).contiguous()


def test_negative_growth_limit_skips_and_reports(host_target):
    graph = trace(ModelSpec(Expanding(), (torch.randn(256, 64),), name="expanding"))
    outcome = run(graph, host_target, max_growth_bytes=1024)
    assert outcome.stats["nodes_folded"] == 0
    assert outcome.skipped and "max_growth_bytes" in outcome.skipped[0].reason
    folded = run(graph, host_target, max_growth_bytes=1 << 20)
    assert folded.stats["nodes_folded"] >= 1


class RandomNoise(torch.nn.Module):
    def forward(self, x):
        return x + torch.rand(4)


def test_negative_random_ops_are_never_folded(host_target):
    graph = trace(ModelSpec(RandomNoise(), (torch.randn(4),), name="noise"))
    outcome = run(graph, host_target)
    assert outcome.stats["nodes_folded"] == 0
    assert any("rand" in str(n.target) for n in outcome.graph.op_nodes())
