"""Merging sibling linear layers: ops that read the same input become one op and a split.

``linear(x, W1, b1), linear(x, W2, b2), ...`` -> ``split(linear(x, [W1; W2; ...], [b1; b2; ...]))``:
the Q/K/V projections of attention and the gate/up projections of a gated MLP. Exact (the same
dot products), one larger matmul instead of several small ones.

Which ops can merge is a table of ``RowStackable`` rules: an op whose every per-output tensor
argument has the output features on dim 0 can be stacked along dim 0, provided its other
arguments are equal among the siblings. ``aten.linear`` is built in; a quantized linear whose
``qweight``/``scales``/``zeros``/``bias`` are per output row and whose ``bits``/``group_size``/
``in_features`` must agree is registered below, and so is ``w4a8_linear`` (siblings with an AWQ ``input_scale`` each read their
own tensor and stay apart).
"""

from __future__ import annotations

import operator
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import fx

import slmc.quantization.ops  # noqa: F401  (defines torch.ops.slmc.quantized_linear)
from slmc.graph.ir import Graph, fetch_attr, set_attr, unused_attr_path
from slmc.graph.linears import attribute_readers
from slmc.spec.pass_registry import Skip

aten = torch.ops.aten


@dataclass(frozen=True)
class RowStackable:
    """An op that siblings can share: ``row_args`` are stored tensors (or None) with output rows on
    dim 0, concatenated; ``equal_args`` must be equal; every other argument except the input (arg 0)
    must be absent. ``row_args[0]`` is the weight (its dim 0 is the op's output features)."""

    op: torch._ops.OpOverload
    row_args: tuple[int, ...]
    equal_args: tuple[int, ...] = ()


_RULES: dict[torch._ops.OpOverload, RowStackable] = {}


def register_row_stackable(rule: RowStackable) -> None:
    """Let ``fuse`` merge siblings of ``rule.op`` (the op's output features are its last dim)."""
    _RULES[rule.op] = rule


register_row_stackable(RowStackable(aten.linear.default, row_args=(1, 2)))
# quantized_linear(x, qweight, scales, zeros?, bias?, input_scale?, bits, group_size, scale_code_bits?): rows first (slmc.quantization.formats)
register_row_stackable(RowStackable(torch.ops.slmc.quantized_linear.default, row_args=(1, 2, 3, 4), equal_args=(5, 6, 7, 8)))
# w4a8_linear(x, qweight, scales, bias?, group_size, activation_group_size?, scale_code_bits?, row_scales?): activation
# codes (per token or per block) depend on x only, so siblings share them; scale codes' row scales stack as rows
register_row_stackable(RowStackable(torch.ops.slmc.w4a8_linear.default, row_args=(1, 2, 3, 7), equal_args=(4, 5, 6)))


def _arg(node: fx.Node, index: int) -> object:
    return node.args[index] if index < len(node.args) else None


def _signature(graph: Graph, node: fx.Node, rule: RowStackable, readers: dict[str, int]) -> tuple | str:
    """What siblings must share to merge (dtype, trailing shapes, None-ness, equal args), or why not."""
    if node.kwargs:
        return "has keyword arguments"
    known = {0, *rule.row_args, *rule.equal_args}
    if any(i not in known and node.args[i] is not None for i in range(len(node.args))):
        return "has arguments the merge rule does not cover"
    shapes = []
    for i in rule.row_args:
        arg = _arg(node, i)
        if arg is None:
            shapes.append(None)
            continue
        if not isinstance(arg, fx.Node) or arg.op != "get_attr":
            return f"argument {i} is computed at run time, not a stored tensor"
        if readers.get(str(arg.target), 0) != 1:
            return f"argument {i} ({arg.target}) is shared with other nodes"
        value = fetch_attr(graph.module, str(arg.target))
        if not isinstance(value, torch.Tensor) or value.ndim == 0:
            return f"argument {i} is not a stored tensor with output rows"
        shapes.append((value.dtype, tuple(value.shape[1:])))
    if shapes[0] is None:
        return "has no weight"
    return rule.op, tuple(shapes), tuple(repr(_arg(node, i)) for i in rule.equal_args)


def _merged_target(graph: Graph, targets: Sequence[str]) -> str:
    """``p.q_proj.weight, p.k_proj.weight`` -> ``p.q_proj_k_proj.weight`` (unique in the module)."""
    parts = [t.split(".") for t in targets]
    prefix = []
    for column in zip(*parts):
        if len(set(column)) != 1:
            break
        prefix.append(column[0])
    suffix = []
    for column in zip(*(p[len(prefix):][::-1] for p in parts)):
        if len(set(column)) != 1:
            break
        suffix.insert(0, column[0])
    middles = ["_".join(p[len(prefix): len(p) - len(suffix)]) or "x" for p in parts]
    base = ".".join(prefix + ["_".join(middles)] + suffix)
    return unused_attr_path(graph.module, base)


def _out_features(graph: Graph, node: fx.Node, rule: RowStackable) -> int:
    return int(fetch_attr(graph.module, str(node.args[rule.row_args[0]].target)).shape[0])


def _merge(graph: Graph, siblings: list[fx.Node], rule: RowStackable) -> None:
    first = siblings[0]
    args = list(first.args)
    for i in rule.row_args:
        if _arg(first, i) is None:
            continue
        targets = [str(s.args[i].target) for s in siblings]
        stacked = torch.cat([fetch_attr(graph.module, t) for t in targets], dim=0)
        target = _merged_target(graph, targets)
        set_attr(graph.module, target, stacked.contiguous())
        with graph.graph.inserting_before(first):
            args[i] = graph.graph.get_attr(target)
    sizes = [_out_features(graph, s, rule) for s in siblings]
    with graph.graph.inserting_before(first):
        merged = graph.graph.call_function(rule.op, tuple(args))
        split = graph.graph.call_function(aten.split_with_sizes.default, (merged, sizes, -1))
        parts = [graph.graph.call_function(operator.getitem, (split, i)) for i in range(len(siblings))]
    for sibling, part in zip(siblings, parts):
        for user in list(sibling.users):
            if user.target is aten.view.default:  # split results are strided views; reshape copies if needed
                user.target = aten.reshape.default
        sibling.replace_all_uses_with(part)
        graph.graph.erase_node(sibling)


def merge_siblings(graph: Graph) -> tuple[int, int, list[Skip]]:
    """Merge every group of mergeable ops sharing an input; return (groups, ops merged, skipped)."""
    readers = attribute_readers(graph)
    groups: dict[tuple, list[fx.Node]] = {}
    skipped = []
    for node in graph.graph.nodes:
        rule = _RULES.get(node.target) if node.op == "call_function" else None
        if rule is None or not node.args or not isinstance(node.args[0], fx.Node):
            continue
        siblings = [u for u in node.args[0].users if u is not node and _RULES.get(u.target) is rule]
        if not siblings:
            continue
        signature = _signature(graph, node, rule, readers)
        if isinstance(signature, str):
            skipped.append(Skip(node.name, f"not merged with its siblings: {signature}"))
            continue
        groups.setdefault((node.args[0], signature), []).append(node)
    merged_groups = merged_ops = 0
    for (_, signature), members in groups.items():
        if len(members) < 2:
            skipped.append(Skip(members[0].name, "not merged: its siblings differ in dtype, shape, bias or settings"))
            continue
        _merge(graph, members, _RULES[signature[0]])
        merged_groups += 1
        merged_ops += len(members)
    return merged_groups, merged_ops, skipped
