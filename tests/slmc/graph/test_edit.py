"""Graph edits passes share (slmc/graph/edit.py); the passes built on them are tested in tests/passes."""

from __future__ import annotations

import torch

from slmc.graph.edit import drop_unused_weights, fold_constants, referenced_attributes, remove_unused_tensors


def test_an_unread_get_attr_and_its_tensor_are_dropped(constants_graph):
    graph = constants_graph.clone()
    graph.module.register_buffer("stray", torch.zeros(8, dtype=torch.float32))
    output = next(n for n in graph.graph.nodes if n.op == "output")
    with graph.graph.inserting_before(output):
        orphan = graph.graph.get_attr("stray")  # read by no node
    assert "stray" in referenced_attributes(graph)
    assert drop_unused_weights(graph) == (1, 32)
    assert orphan not in graph.graph.nodes and "stray" not in dict(graph.module.named_buffers())


def test_tensors_no_node_reads_are_removed_with_their_bytes(constants_graph):
    graph = constants_graph.clone()
    graph.module.register_buffer("stray", torch.zeros(8, dtype=torch.float32))
    assert remove_unused_tensors(graph) == (1, 32)
    assert "stray" not in dict(graph.module.named_buffers())


def test_folding_replaces_constant_subgraphs_by_weights_and_drops_the_inputs(constants_graph):
    graph = constants_graph.clone()
    stats, skipped = fold_constants(graph, max_growth_bytes=0)  # each folded input is read only by its node: no growth
    assert stats == {"nodes_folded": 2, "tensors_removed": 2, "bytes_removed": stats["bytes_removed"]} and skipped == []
    assert set(graph.tensors()) == {"_folded_mul", "_folded_add"}
