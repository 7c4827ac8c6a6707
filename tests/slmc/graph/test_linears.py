import torch
from torch import nn

from slmc.graph.ir import ModelSpec, trace
from slmc.graph.linears import attribute_readers, layer_name, linear_layers, matches, owns_weights


class Mixed(nn.Module):
    """A stored linear with bias, one whose weight is computed, and two sharing one weight."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 3)
        self.w = nn.Parameter(torch.randn(3, 4))

    def forward(self, x):
        computed = nn.functional.linear(x, self.w * 2.0)
        shared = nn.functional.linear(x, self.w) + nn.functional.linear(x + 1, self.w)
        return self.fc(x) + computed + shared


def test_linear_layers_names_and_reasons():
    graph = trace(ModelSpec(Mixed(), (torch.randn(2, 4),), name="mixed"))
    layers, others = linear_layers(graph)
    assert sorted(layer.name for layer in layers) == ["fc", "w", "w"]
    fc = next(layer for layer in layers if layer.name == "fc")
    assert fc.bias_node is not None and tuple(fc.weight(graph).shape) == (3, 4) and fc.bias(graph).shape == (3,)
    (node, reason), = others
    assert "computed at run time" in reason
    readers = attribute_readers(graph)
    assert owns_weights(fc, readers)
    assert not any(owns_weights(layer, readers) for layer in layers if layer.name == "w")


def test_names_and_globs():
    assert layer_name("model.layers.0.q_proj.weight") == "model.layers.0.q_proj"
    assert layer_name("_folded_mul") == "_folded_mul"
    assert matches("model.lm_head", ["*"], [])
    assert not matches("model.lm_head", ["*"], ["*lm_head"])
    assert not matches("model.layers.0.q_proj", ["*mlp*"], [])
