import pytest
import torch
from torch import nn

from slmc.graph.activations import InputStatistics, calibrate_sequentially, linear_input_statistics
from slmc.graph.ir import ModelSpec, set_attr, trace
from slmc.graph.linears import linear_layers


class TwoLayers(nn.Module):
    """x -> a (and its sibling b) -> relu -> c: a and b share an input, c reads a's activations."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.a = nn.Linear(6, 5, bias=False)
        self.b = nn.Linear(6, 3, bias=False)
        self.c = nn.Linear(5, 4)

    def forward(self, x):
        return self.c(torch.relu(self.a(x))) + self.b(x).sum(-1, keepdim=True)


@pytest.fixture()
def graph_and_samples():
    graph = trace(ModelSpec(TwoLayers().eval(), (torch.randn(2, 3, 6),), name="two"))
    gen = torch.Generator().manual_seed(1)
    samples = [(torch.randn(2, 3, 6, generator=gen),) for _ in range(3)]
    return graph, samples


def _nodes(graph):
    layers, _ = linear_layers(graph)
    return {layer.name: layer for layer in layers}


def test_statistics_match_a_direct_computation(graph_and_samples):
    graph, samples = graph_and_samples
    layers = _nodes(graph)
    stats = linear_input_statistics(graph, samples, [layers[n].node.name for n in ("a", "b", "c")])
    x = torch.cat([s[0].reshape(-1, 6) for s in samples]).double()
    a = stats[layers["a"].node.name]
    assert a is stats[layers["b"].node.name]  # siblings share one object
    assert a.count == 18
    assert torch.allclose(a.hessian, x.T @ x, atol=1e-5)
    assert torch.allclose(a.abs_mean, x.abs().mean(0), atol=1e-6)
    assert torch.allclose(a.abs_max, x.abs().amax(0))
    assert torch.allclose(a.channel_norm, x.norm(dim=0), atol=1e-6)
    h = torch.relu(x.float() @ layers["a"].weight(graph).T).double()
    c = stats[layers["c"].node.name]
    assert torch.allclose(c.hessian, h.T @ h, atol=1e-5)


def test_sequential_updates_reach_later_layers(graph_and_samples):
    graph, samples = graph_and_samples
    layers = _nodes(graph)
    seen = {}

    def update(node, stats):
        seen[node.name] = stats.hessian.clone()
        if node is layers["a"].node:  # halve a: c's inputs halve, its Hessian drops to a quarter
            set_attr(graph.module, str(layers["a"].weight_node.target), layers["a"].weight(graph) * 0.5)

    before = linear_input_statistics(graph, samples, [layers["c"].node.name])[layers["c"].node.name].hessian
    calibrate_sequentially(graph, samples, [layers[n].node.name for n in ("a", "c")], update)
    assert torch.allclose(seen[layers["c"].node.name], before / 4, atol=1e-6)


def test_update_all_batches_rows_like_update():
    gen = torch.Generator().manual_seed(0)
    values = [torch.randn(1, 7, 4, generator=gen) for _ in range(5)]
    one, batched = InputStatistics(4), InputStatistics(4)
    for v in values:
        one.update(v)
    batched.update_all(values, chunk_rows=10)
    assert one.count == batched.count == 35
    assert torch.allclose(one.hessian, batched.hessian) and torch.allclose(one.abs_max, batched.abs_max)
    no_hessian = InputStatistics(4, with_hessian=False)
    no_hessian.update_all(values)
    assert no_hessian.hessian is None and torch.allclose(no_hessian.channel_norm, one.channel_norm)


def test_negative_no_samples_or_unknown_node(graph_and_samples):
    graph, samples = graph_and_samples
    with pytest.raises(ValueError, match="no calibration samples"):
        linear_input_statistics(graph, [], ["linear"])
    with pytest.raises(KeyError, match="nope"):
        linear_input_statistics(graph, samples, ["nope"])
    with pytest.raises(ValueError, match="no calibration samples"):
        calibrate_sequentially(graph, [], ["linear"], lambda node, stats: None)


def test_sequential_statistics_are_released_after_their_last_reader(graph_and_samples):
    import weakref

    graph, samples = graph_and_samples
    layers = _nodes(graph)
    order = [n.name for n in graph.graph.nodes if n in {layers[k].node for k in "abc"}]
    assert order == [layers[k].node.name for k in "acb"]  # export runs c before b
    refs = {}

    def update(node, stats):
        refs[node.name] = weakref.ref(stats)
        if node is layers["b"].node:  # c, the only reader of its input, is done: its statistics are gone
            assert refs[layers["c"].node.name]() is None
            assert refs[layers["a"].node.name]() is stats  # a's are b's: still alive

    calibrate_sequentially(graph, samples, [layers[n].node.name for n in ("a", "b", "c")], update)
    assert len(refs) == 3
