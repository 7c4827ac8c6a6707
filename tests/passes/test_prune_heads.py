"""``prune_channels`` with ``heads``: KV-group head pruning (passes/_head_pruning.py, _attention_heads.py)."""

import pytest
import torch
from pass_helpers import calibration_samples, lm_samples, run_pass
from torch import nn

from slmc.graph.kv_cache_fit import graph_kv_cache
from slmc.errors import NodeError
from slmc.graph.ir import ModelSpec, check_graph, set_attr, trace
from slmc.passes._attention_heads import attention_heads


@pytest.fixture(scope="module")
def small_calibration(fixture_lm_spec):
    return calibration_samples(fixture_lm_spec, num_samples=4, sequence_length=64)


def _cache_heads(graph):
    return [tuple(n.meta["val"].shape)[2] for n in graph.graph.nodes if n.op == "placeholder" and n.name != "input_ids"]


def test_fixture_blocks(fixture_lm_graph):
    blocks = attention_heads(fixture_lm_graph).blocks
    assert [(b.kv_heads, b.n_rep, b.head_dim, b.cache_layer) for b in blocks] == [(4, 2, 32, i) for i in range(4)]
    assert [layer.name.rsplit(".", 1)[1] for layer in blocks[0].q_linears + blocks[0].kv_linears] == ["q_proj", "k_proj", "v_proj"]


def test_fixture_kv_groups_shrink_with_the_cache(fixture_lm_spec, fixture_lm_graph, host_target, small_calibration):
    """25% of the heads of a GQA model (8 query heads on 4 KV heads): one KV group per layer."""
    outcome = run_pass("prune_channels", fixture_lm_graph, host_target, small_calibration, mlp_channels=0.0, heads=0.25)
    stats = outcome.stats
    assert stats["heads_pruned"] == 4 * 2 and stats["kv_heads_kept"] == "3/4" and stats["groups_pruned"] == 0
    tensors = outcome.graph.tensors()
    prefix = "model.model.layers.0.self_attn"
    assert tensors[f"{prefix}.q_proj.weight"].shape == (192, 256) and tensors[f"{prefix}.k_proj.weight"].shape == (96, 256)
    assert tensors[f"{prefix}.o_proj.weight"].shape == (256, 192) and tensors[f"{prefix}.o_proj.bias"].shape == (256,)
    per_layer = 64 * 256 + 2 * 32 * 256 + 256 * 64  # q rows, k and v rows, o columns of one KV group
    assert stats["parameters_removed"] == 4 * per_layer
    assert fixture_lm_graph.num_parameters() - outcome.graph.num_parameters() == 4 * per_layer - 4 * 256 + 16  # + o_proj
    # compensation biases, - the unused rotary buffer original_inv_freq (16) dropped with the unused weights
    assert _cache_heads(outcome.graph) == [3, 3] and graph_kv_cache(outcome.graph, fixture_lm_spec.kv_cache).kv_heads == 3
    samples = lm_samples(fixture_lm_spec, lengths=(1, 5), past=3)
    for ids, keys, values in samples:
        logits, new_keys, _ = outcome.graph.run(ids, keys[:, :, :3], values[:, :, :3])
        assert logits.shape == (1, ids.shape[1], 4096) and new_keys.shape == (4, 1, 3, 3 + ids.shape[1], 32)
    check_graph(outcome.graph)


def test_zero_importance_heads_are_removed_exactly(fixture_lm_spec, fixture_lm_graph, host_target, small_calibration):
    """A KV group whose query heads' output-projection columns are zero contributes nothing: it is the
    one removed, and the pruned model computes exactly what the zeroed model computes."""
    graph = fixture_lm_graph.clone()
    zeroed = {}
    for layer in range(4):
        target = f"model.model.layers.{layer}.self_attn.o_proj.weight"
        weight = graph.tensors()[target].clone()
        group = (layer + 1) % 4
        weight[:, group * 64:(group + 1) * 64] = 0.0  # query heads 2g, 2g+1 (head_dim 32)
        set_attr(graph.module, target, weight)
        zeroed[f"model.model.layers.{layer}.self_attn.o_proj"] = group
    outcome = run_pass("prune_channels", graph, host_target, small_calibration, mlp_channels=0.0, heads=0.25)
    kept = outcome.stats["head_groups_kept"]
    assert all(group not in kept[name] and len(kept[name]) == 3 for name, group in zeroed.items())
    for ids, keys, values in lm_samples(fixture_lm_spec, lengths=(1, 6), past=4):
        index = [torch.tensor(kept[f"model.model.layers.{layer}.self_attn.o_proj"]) for layer in range(4)]
        small_k = torch.stack([keys[layer, :, index[layer]] for layer in range(4)])
        small_v = torch.stack([values[layer, :, index[layer]] for layer in range(4)])
        logits, new_k, new_v = graph.run(ids, keys, values)
        p_logits, p_k, p_v = outcome.graph.run(ids, small_k, small_v)
        torch.testing.assert_close(p_logits, logits, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(p_k, torch.stack([new_k[layer, :, index[layer]] for layer in range(4)]))


def test_multi_head_tiny_lm(tiny_lm_graph, host_target):
    from slmc.models import tiny_lm

    spec = tiny_lm.build()
    calibration = calibration_samples(spec, num_samples=2, sequence_length=32)
    outcome = run_pass("prune_channels", tiny_lm_graph, host_target, calibration, mlp_channels=0.25, heads=0.25)
    assert outcome.stats["heads_pruned"] == 2 and outcome.stats["kv_heads_kept"] == "3/4"
    assert outcome.graph.tensors()["blocks.1.attn.v_proj.weight"].shape == (96, 128)
    reshapes = [n.args[1] for n in outcome.graph.graph.nodes if n.target is torch.ops.aten.view.default]
    assert all(3 in sizes for sizes in reshapes if len(sizes) == 4)  # literal head counts rewritten
    ids = torch.randint(0, 256, (1, 5))
    empty = torch.zeros(2, 1, 3, 1, 32)
    assert outcome.graph.run(ids, empty, empty)[1].shape == (2, 1, 3, 6, 32)


def test_a_share_leaving_no_heads_is_rejected(fixture_lm_graph, host_target, small_calibration):
    with pytest.raises(NodeError, match="leaves none") as info:
        run_pass("prune_channels", fixture_lm_graph, host_target, small_calibration, heads=0.9)
    assert info.value.node.endswith("linear_3")  # layer 0's output projection


class _HeadMixer(nn.Module):
    """Attention-like, but it reverses the order of the heads: no head can be removed on its own."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.qkv = nn.ModuleList(nn.Linear(16, 16, bias=False) for _ in range(3))
        self.o = nn.Linear(16, 16, bias=False)

    def forward(self, x):
        q, k, v = (lin(x).view(1, -1, 4, 4).transpose(1, 2) for lin in self.qkv)
        attn = torch.softmax(q @ k.transpose(-1, -2), dim=-1) @ v
        return self.o(attn.flip(1).transpose(1, 2).reshape(1, -1, 16))


class _MLP(nn.Module):
    def __init__(self):
        super().__init__()
        self.up, self.down = nn.Linear(8, 16), nn.Linear(16, 8)

    def forward(self, x):
        return self.down(torch.relu(self.up(x)))


def test_unrecognized_attention_names_the_node(host_target):
    x = torch.randn(1, 6, 16)
    graph = trace(ModelSpec(_HeadMixer().eval(), (x,), name="mixer"))
    with pytest.raises(NodeError, match="flip on a tensor with a head axis") as info:
        run_pass("prune_channels", graph, host_target, [(x,)], heads=0.25)
    assert info.value.node == "flip"
    mlp = trace(ModelSpec(_MLP().eval(), (torch.randn(4, 8),), name="mlp"))
    with pytest.raises(NodeError, match="found no attention") as info:
        run_pass("prune_channels", mlp, host_target, [(torch.randn(4, 8),)], heads=0.25)
    assert info.value.node == "output"
