import pytest
import torch

from slmc.errors import TraceError
from slmc.graph.ir import ModelSpec, check_graph, export, trace


def test_trace_keeps_symbolic_sequence_length(tiny_lm_graph):
    ids, keys, _ = [n for n in tiny_lm_graph.graph.nodes if n.op == "placeholder"]
    batch, seq = ids.meta["val"].shape
    assert batch == 1 and not isinstance(seq, int)  # symbolic
    assert not isinstance(keys.meta["val"].shape[3], int) and keys.meta["val"].shape[4] == 32
    linears = [n for n in tiny_lm_graph.op_nodes() if "linear" in str(n.target)]
    assert len(linears) == 2 * 6 + 1
    assert all(n.meta["val"].dtype == torch.float32 for n in linears)


def test_networkx_view_has_every_node_and_edge(tiny_lm_graph):
    g = tiny_lm_graph.nx()
    assert g.number_of_nodes() == len(tiny_lm_graph.graph.nodes)
    assert g.nodes["embedding"]["target"] == "embedding"
    assert ("input_ids", "embedding") in g.edges


def test_eager_run_accepts_other_lengths(tiny_lm_graph, lm_inputs):
    logits, keys, values = tiny_lm_graph.run(*lm_inputs(40, past=3))
    assert logits.shape == (1, 40, 256) and keys.shape == values.shape == (2, 1, 4, 43, 32)


def test_fingerprint_tracks_weights_and_graph(tiny_lm_graph):
    first = tiny_lm_graph.fingerprint()
    clone = tiny_lm_graph.clone()
    assert clone.fingerprint() == first
    from slmc.graph.ir import set_attr

    set_attr(clone.module, "norm.weight", torch.full((128,), 2.0))
    assert clone.fingerprint() != first
    assert tiny_lm_graph.fingerprint() == first  # the clone shares nothing it changed


def test_reexport_of_the_graph(tiny_lm_graph):
    program = export(tiny_lm_graph)
    assert len(program.graph_signature.input_specs) == 3 + 19  # ids, keys, values + embed, 2 x 8 block weights, final norm, lm_head


class DataDependent(torch.nn.Module):
    def forward(self, x):
        if x.sum() > 0:  # data-dependent control flow: not traceable
            return x + 1
        return x - 1


def test_untraceable_model_raises_trace_error():
    with pytest.raises(TraceError, match="could not trace model 'dd'"):
        trace(ModelSpec(DataDependent(), (torch.randn(3),), name="dd"))


def test_check_graph_passes_on_a_fresh_trace(tiny_lm_graph):
    check_graph(tiny_lm_graph)
