"""A causal LM's vocabulary tensors in its fx graph: the input embedding and the output head.

``restrict_vocabulary`` keeps only some token rows of both (a gather; a tied head shares its
embedding's tensor, so one gather serves both and they stay tied) and translates the graph's
example token ids. It is what the ``vocab_trim`` pass does to the graph, and what the driver
does to the original graph to compare the trimmed model with it on the same token ids.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import fx

from slmc.errors import NodeError
from slmc.graph.ir import Graph, fetch_attr, set_attr
from slmc.spec.vocabulary import VOCABULARY_META, VocabularyMap

_PASS_THROUGH = {"aten._to_copy.default", "aten.tanh.default", "aten.mul.Tensor", "aten.div.Tensor", "aten.contiguous.default",
                 "aten.clone.default"}  # ops between the head's matmul and the logits output (soft-capping, casts)


@dataclass(frozen=True)
class VocabularyTensors:
    """Attribute paths of the embedding table ``[vocab, hidden]``, the head weight ``[vocab, hidden]``
    and the head bias (or None); ``input_index``: the graph input holding the token ids."""

    embedding: str
    head: str
    head_bias: str | None
    input_index: int
    size: int
    tied: bool  # the head reads the embedding's tensor (one attribute, or two sharing storage)


def _logits_node(graph: Graph) -> fx.Node:
    output = next(n for n in graph.graph.nodes if n.op == "output")
    values = output.args[0] if isinstance(output.args[0], (tuple, list)) else (output.args[0],)
    names = list(graph.output_names or ())
    return values[names.index("logits")] if "logits" in names else values[0]


def _head(graph: Graph) -> tuple[fx.Node, fx.Node | None]:
    node = _logits_node(graph)
    while node.op == "call_function" and str(node.target) in _PASS_THROUGH:
        node = node.args[0]
    if node.op != "call_function" or str(node.target) != "aten.linear.default" or node.args[1].op != "get_attr":
        raise NodeError(node.name, f"the logits are not computed by a linear layer with a stored weight "
                                   f"(found {node.op} {node.target}); vocab_trim needs the output head")
    bias = node.args[2] if len(node.args) > 2 and isinstance(node.args[2], fx.Node) else None
    return node.args[1], bias


def find_vocabulary_tensors(graph: Graph) -> VocabularyTensors:
    """The embedding and head of a causal LM; ``NodeError`` naming the node when either is missing."""
    placeholders = [n for n in graph.graph.nodes if n.op == "placeholder"]
    embeddings = [n for n in graph.graph.nodes if n.op == "call_function" and str(n.target) == "aten.embedding.default"
                  and n.args[0].op == "get_attr" and n.args[1] in placeholders]
    if len(embeddings) != 1:
        raise NodeError(placeholders[0].name if placeholders else "graph",
                        f"expected one embedding lookup of a graph input, found {len(embeddings)}")
    embedding = embeddings[0]
    head, bias = _head(graph)
    table, weight = fetch_attr(graph.module, str(embedding.args[0].target)), fetch_attr(graph.module, str(head.target))
    if weight.shape[0] != table.shape[0]:
        raise NodeError(head.name, f"the head has {weight.shape[0]} rows and the embedding {table.shape[0]}: not one vocabulary")
    for node, tensor in ((embedding.args[0], table), (head, weight)):
        if tensor.dtype not in (torch.float32, torch.float16, torch.bfloat16):
            raise NodeError(node.name, f"{node.target} is stored as {tensor.dtype}; trim the vocabulary before quantizing")
    tied = head.target == embedding.args[0].target or weight.data_ptr() == table.data_ptr()
    return VocabularyTensors(str(embedding.args[0].target), str(head.target), str(bias.target) if bias is not None else None,
                             placeholders.index(embedding.args[1]), int(table.shape[0]), tied)


def restrict_vocabulary(graph: Graph, vocabulary: VocabularyMap) -> tuple[VocabularyTensors, int]:
    """Keep rows ``vocabulary.kept`` of the embedding and head of ``graph`` (in place; tied: one
    gather) and translate its example token ids; returns the tensors and the bytes saved."""
    found = find_vocabulary_tensors(graph)
    index = torch.tensor(vocabulary.kept, dtype=torch.long)
    saved = 0
    names = [found.embedding] + ([] if found.tied else [found.head]) + ([found.head_bias] if found.head_bias else [])
    for name in names:
        tensor = fetch_attr(graph.module, name)
        kept = tensor.detach().index_select(0, index).contiguous()
        saved += (tensor.numel() - kept.numel()) * tensor.element_size()
        set_attr(graph.module, name, kept)
    if found.tied and found.head != found.embedding:
        set_attr(graph.module, found.head, fetch_attr(graph.module, found.embedding))
    graph.example_inputs = vocabulary.translate_sample(tuple(graph.example_inputs))
    graph.module.recompile()
    return found, saved


def restricted_copy(graph: Graph, vocabulary: VocabularyMap) -> Graph:
    """A copy of ``graph`` with only the vocabulary rows ``vocabulary.kept`` (the original model on
    the trimmed model's token ids: its logits are the original's restricted to the kept tokens)."""
    copy = graph.clone()
    restrict_vocabulary(copy, vocabulary)
    copy.meta[VOCABULARY_META] = vocabulary
    return copy
