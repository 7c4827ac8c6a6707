"""``rotate``: fold orthogonal (randomized Hadamard) rotations into the weights so that quantization loses less.

QuaRot (Ashkboos et al., 2024, arXiv:2404.00456) and SpinQuant (Liu et al., 2024, arXiv:2405.16406)
rotate a transformer's hidden states by an orthogonal ``Q``: the network function is unchanged
(``W x = (W Q)(Qᵀ x)``), but a rotation spreads the few outlier channels of activations and weights
over all channels, so per-tensor / per-group int8 and int4 grids fit them better. Two rotations are
folded here, both exact up to float rounding (rotations combined in float64, stored in the weights'
dtype):

* ``residual`` (R1): the residual stream, rotated by a randomized Hadamard of the hidden size (a
  Kronecker product with a Paley Hadamard for sizes like 576 = 36 * 16; a random orthogonal matrix
  when no construction is known; ``slmc.quantization.hadamard``). First constant subgraphs are folded
  when that adds no bytes (Gemma's ``1 + w`` norm scale), then every RMSNorm weight is folded into the
  linears it feeds (``passes/_affine_folding.py``), which makes the norm scale-free and so
  rotation-equivariant (``||x Q|| = ||x||``). Then embedding rows ``E Q``, every linear reading
  the stream ``W Q`` (q/k/v, gate/up, the output head), every linear adding into it ``Qᵀ W`` (and
  bias ``b Q``: o_proj, down_proj). A head tied to the embedding is untied first (the head absorbs the
  final norm's weight, the embedding does not): it costs one ``[vocab, hidden]`` tensor, reported as
  ``head_bytes_added``.
* ``values`` (R2): each attention head's values, rotated by a randomized Hadamard of ``head_dim``:
  value rows ``Hᵀ W_v`` per head, output-projection columns ``W_o H`` per head (one ``H`` for every
  head, so grouped-query attention stays consistent). The KV cache then holds rotated values; it is
  only ever written and read by the same graph, so the logits are unchanged.

* ``online_hadamard`` (R4): the input of each MLP down projection (a residual-stream writer that does
  not read merged attention heads), where the largest activation outliers are (max/rms 22 on the
  fixture against 4-8 elsewhere), is rotated at run time: nothing before it is linear in that input
  (SwiGLU's product), so the rotation cannot be folded on both sides as R1/R2 are. The graph gets
  ``x -> (X B)ᵀ A`` on ``x`` viewed as ``[..., m, p]`` (``A``, ``B`` orthonormal Hadamard factors,
  ``A ⊗ B`` the Hadamard of the input width; ``slmc.quantization.hadamard.hadamard_factors``): two
  small ``matmul``s, a ``transpose`` and two ``view``s that every backend lowers, ``n (m + p)``
  multiply-adds per token instead of ``n²``; that map ``M`` (an orthogonal matrix: a Hadamard
  followed by an index permutation, computed by applying the same ops to the identity) is folded into
  the weight, ``W M``, so ``(x M)(W M)ᵀ = x Wᵀ``. A width without a Hadamard construction is listed as
  skipped (a random orthogonal matrix would need a dense ``n x n`` product). Needs ``residual`` (the
  down projections are found as the stream's writers). Preconditions: a causal LM whose
logits come from a linear head, with stored float weights (run before ``quantize``, ``cast_weights``
and ``prune``: a rotation makes sparse weights dense); RMSNorm, not LayerNorm, on the residual stream.
Anything on the stream that a rotation does not commute with is refused with a ``NodeError`` naming
the node; output projections that get no value rotation are listed as skipped with the reason.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from typing import Literal

import torch
from pydantic import Field, model_validator
from torch import fx

from slmc.errors import NodeError
from slmc.graph.edit import drop_unused_weights, fold_constants
from slmc.graph.ir import Graph, fetch_attr, set_attr, unused_attr_path
from slmc.graph.linears import LinearLayer, attribute_readers, linear_layers
from slmc.passes._affine_folding import fold_norm_scales
from slmc.passes._rotation_paths import RESHAPES, SAME_VALUES, merges_heads, residual_stream, value_heads
from slmc.quantization.hadamard import hadamard_factors, rotation
from slmc.spec.pass_registry import PassConfig, PassContext, PassOutcome, Skip, register_pass

aten = torch.ops.aten
_ID_VIEWS = SAME_VALUES | RESHAPES | {aten.unsqueeze.default, aten.squeeze.dim, aten.slice.Tensor}


class RotateConfig(PassConfig):
    residual: bool = Field(True, description="R1: rotate the residual stream (norm weights folded first)")
    values: bool = Field(True, description="R2: rotate each attention head's values and the output projection's inputs")
    kind: Literal["hadamard", "random"] = Field("hadamard", description="randomized Hadamard (falls back to random "
                                                                        "orthogonal for sizes without a construction) "
                                                                        "or always random orthogonal")
    seed: int = Field(0, ge=0, le=2**31 - 1, description="seed of the random signs (or the random orthogonal matrices)")
    online_hadamard: bool = Field(True, description="R4: an online Hadamard rotation of each MLP down projection's "
                                                     "input (graph ops), folded into its weight; needs residual")

    @model_validator(mode="after")
    def _something_to_do(self) -> RotateConfig:
        if not (self.residual or self.values):
            raise ValueError("residual and values are both false: the pass would do nothing; remove it instead")
        if self.online_hadamard and not self.residual:
            raise ValueError("online_hadamard finds the down projections as the residual stream's writers: it needs "
                             "residual: true (or set online_hadamard: false)")
        return self


class _Weights:
    """Pending float64 copies of the weights being rotated; ``store`` writes them back in their dtypes."""

    def __init__(self, graph: Graph):
        self.graph = graph
        self.pending: dict[str, tuple[torch.Tensor, torch.dtype]] = {}

    def get(self, target: str) -> torch.Tensor:
        if target not in self.pending:
            value = fetch_attr(self.graph.module, target)
            self.pending[target] = (value.detach().to(torch.float64), value.dtype)
        return self.pending[target][0]

    def put(self, target: str, value: torch.Tensor) -> None:
        self.pending[target] = (value, self.pending[target][1])

    def store(self) -> None:
        for target, (value, dtype) in self.pending.items():
            set_attr(self.graph.module, target, value.to(dtype).contiguous())


def _own(layer: LinearLayer, readers: dict[str, int]) -> None:
    for node in (layer.weight_node, layer.bias_node):
        if node is not None and readers.get(str(node.target), 0) != 1:
            raise NodeError(layer.node.name, f"{node.target} is read by other nodes too; rotating it would change them")


def _token_embedding(graph: Graph) -> fx.Node:
    """The one embedding lookup of a stored table indexed by a graph input (through views), else ``NodeError``."""
    found = []
    for node in graph.graph.nodes:
        if node.op != "call_function" or node.target is not aten.embedding.default or node.args[0].op != "get_attr":
            continue
        index = node.args[1]
        while isinstance(index, fx.Node) and index.op == "call_function" and index.target in _ID_VIEWS:
            index = index.args[0]  # views and casts of the token ids, not positions computed from their shape
        if isinstance(index, fx.Node) and index.op == "placeholder":
            found.append(node)
    if len(found) != 1:
        raise NodeError(found[1].name if found else "graph", f"the residual stream starts at one token embedding lookup of a "
                                                             f"graph input; found {len(found)}")
    return found[0]


def _untie(graph: Graph, embedding: fx.Node) -> tuple[bool, int]:
    """Give linears that read the embedding table as their weight their own copy (a tied head, which must
    absorb the final norm's scale that the embedding must not); return (tied, bytes added). A head sharing
    only the storage under another attribute path is rotated apart without a copy here (same bytes added)."""
    target = str(embedding.args[0].target)
    table = fetch_attr(graph.module, target)
    layers = linear_layers(graph)[0]
    shared = [layer for layer in layers if str(layer.weight_node.target) == target]
    aliased = [layer for layer in layers if str(layer.weight_node.target) != target
               and layer.weight(graph).data_ptr() == table.data_ptr()]
    for layer in shared:
        copy = unused_attr_path(graph.module, "lm_head.weight")
        set_attr(graph.module, copy, table.detach().clone())
        with graph.graph.inserting_before(layer.node):
            weight = graph.graph.get_attr(copy)
        layer.node.args = (layer.node.args[0], weight, *layer.node.args[2:])
    tied = len(shared) + len(aliased)
    return tied > 0, tied * table.numel() * table.element_size()


def _rotate_residual(graph: Graph, config: RotateConfig, weights: _Weights, stats: dict,
                     skipped: list[Skip]) -> list[LinearLayer]:
    embedding = _token_embedding(graph)
    stats["head_untied"], stats["head_bytes_added"] = _untie(graph, embedding)
    stats["constants_folded"] = fold_constants(graph, max_growth_bytes=0)[0]["nodes_folded"]  # Gemma's (1 + w) norm scale
    stats["norm_scales_folded"], folded_skips = fold_norm_scales(graph)
    skipped += folded_skips
    stream = residual_stream(graph, embedding)
    hidden = int(fetch_attr(graph.module, str(embedding.args[0].target)).shape[1])
    q, stats["residual_rotation"] = rotation(hidden, config.kind, config.seed)
    stats["hidden_size"] = hidden
    readers = attribute_readers(graph)
    for node in dict.fromkeys(stream.embeddings):
        target = str(node.args[0].target)
        if readers.get(target, 0) != 1:
            raise NodeError(node.name, f"embedding table {target} is read by other nodes too")
        table = weights.get(target)
        if table.shape[1] != hidden:
            raise NodeError(node.name, f"embedding width {table.shape[1]} is not the hidden size {hidden}")
        weights.put(target, table @ q)
    for layer in stream.readers:
        _own(layer, readers)
        w = weights.get(str(layer.weight_node.target))
        if w.shape[1] != hidden:
            raise NodeError(layer.node.name, f"reads the residual stream with {w.shape[1]} input features, not {hidden}")
        weights.put(str(layer.weight_node.target), w @ q)
    for layer in stream.writers:
        _own(layer, readers)
        w = weights.get(str(layer.weight_node.target))
        if w.shape[0] != hidden:
            raise NodeError(layer.node.name, f"writes into the residual stream with {w.shape[0]} outputs, not {hidden}")
        weights.put(str(layer.weight_node.target), q.T @ w)
        if layer.bias_node is not None:
            weights.put(str(layer.bias_node.target), weights.get(str(layer.bias_node.target)) @ q)
    stats["embeddings_rotated"] = len(set(stream.embeddings))
    stats["linears_input_rotated"] = len(stream.readers)
    stats["linears_output_rotated"] = len(stream.writers)
    return [layer for layer in stream.writers if not merges_heads(layer.input)]  # the MLP down projections


def _rotate_values(graph: Graph, config: RotateConfig, weights: _Weights, stats: dict, skipped: list[Skip]) -> None:
    blocks, missed = value_heads(graph, linear_layers(graph)[0])
    skipped += [Skip(node, f"no value rotation: {reason}") for node, reason in missed.items()]
    readers = attribute_readers(graph)
    descriptions = set()
    for block in blocks:
        d = block.head_dim
        h, description = rotation(d, config.kind, config.seed + 1)
        descriptions.add(f"head_dim {d}: {description}")
        for layer in block.values:
            _own(layer, readers)
            w = weights.get(str(layer.weight_node.target))
            weights.put(str(layer.weight_node.target), torch.einsum("de,hdi->hei", h, w.reshape(-1, d, w.shape[1])).reshape(w.shape))
            if layer.bias_node is not None:
                b = weights.get(str(layer.bias_node.target))
                weights.put(str(layer.bias_node.target), (b.reshape(-1, d) @ h).reshape(b.shape))
        for layer in block.outputs:
            _own(layer, readers)
            w = weights.get(str(layer.weight_node.target))
            weights.put(str(layer.weight_node.target), (w.reshape(w.shape[0], -1, d) @ h).reshape(w.shape))
    stats["value_rotation"] = sorted(descriptions)
    stats["value_layers_rotated"] = sum(len(b.values) for b in blocks)
    stats["output_projections_rotated"] = sum(len(b.outputs) for b in blocks)


def _online_hadamard_ops(graph: Graph, x: fx.Node, first: str, second: str, m: int, p: int) -> fx.Node:
    """Insert ``view(matmul(transpose(matmul(view(x, [..., m, p]), B)), A), [..., m * p])`` after ``x``
    (``first``/``second``: the attribute paths of ``A`` ``[m, m]`` and ``B`` ``[p, p]``); leading dims
    that are symbolic are read with ``sym_size``."""
    lead: list = []
    anchor = x
    for i, d in enumerate(tuple(x.meta["val"].shape)[:-1]):
        if isinstance(d, int):
            lead.append(d)
        else:
            with graph.graph.inserting_after(anchor):
                anchor = graph.graph.call_function(aten.sym_size.int, (x, i))
            lead.append(anchor)
    ops = [(aten.view.default, lambda v: (v, [*lead, m, p])), ("get_attr", second), (aten.matmul.default, None),
           (aten.transpose.int, lambda v: (v, -2, -1)), ("get_attr", first), (aten.matmul.default, None),
           (aten.view.default, lambda v: (v, [*lead, m * p]))]
    value, factor = x, None
    for op, args in ops:
        with graph.graph.inserting_after(anchor):
            if op == "get_attr":
                anchor = factor = graph.graph.get_attr(args)
                continue
            anchor = graph.graph.call_function(op, (value, factor) if args is None else args(value))
        value = anchor
    return value


@dataclass
class _OnlineHadamard:
    """The online Hadamard of one width: orthonormal factors ``A`` (m x m) and ``B`` (p x p), the map the
    inserted ops apply (as an n x n matrix, folded into the weight), and the stored factors' paths by dtype."""

    a: torch.Tensor
    b: torch.Tensor
    online: torch.Tensor
    description: str
    stored: dict = field(default_factory=dict)


def _online_factors(n: int) -> _OnlineHadamard | None:
    """None when no Hadamard construction of order ``n`` is known (slmc.quantization.hadamard.hadamard_factors)."""
    found = hadamard_factors(n)
    if found is None:
        return None
    a, b, description = found
    m, p = int(a.shape[0]), int(b.shape[0])
    a = a.to(torch.float64) / m ** 0.5
    b = b.to(torch.float64) / p ** 0.5
    online = (torch.eye(n, dtype=torch.float64).reshape(n, m, p) @ b).transpose(-2, -1) @ a  # the ops on I
    return _OnlineHadamard(a, b, online.reshape(n, n), description)


def _rotate_down_inputs(graph: Graph, layers: list[LinearLayer], weights: _Weights, stats: dict,
                        skipped: list[Skip]) -> None:
    """R4 (module docstring): an online Hadamard before each of ``layers``, its map folded into the weight."""
    readers = attribute_readers(graph)
    done, descriptions = 0, set()
    factors: dict[int, _OnlineHadamard | None] = {}  # by width: one construction and one stored pair per dtype
    for layer in layers:
        _own(layer, readers)
        w = weights.get(str(layer.weight_node.target))
        n = int(w.shape[1])
        if n not in factors:
            factors[n] = _online_factors(n)
        if factors[n] is None:
            skipped.append(Skip(layer.node.name, f"no online Hadamard: no Hadamard construction of order {n} is known "
                                                 "here (a random orthogonal one would need a dense n x n product)"))
            continue
        h = factors[n]
        m, p = int(h.a.shape[0]), int(h.b.shape[0])
        weights.put(str(layer.weight_node.target), w @ h.online)
        dtype = fetch_attr(graph.module, str(layer.weight_node.target)).dtype  # the stored weight's (not yet rotated)
        if dtype not in h.stored:  # one pair of factor tensors per width and dtype, read by every such layer
            h.stored[dtype] = [unused_attr_path(graph.module, f"hadamard_{n}_{side}") for side in ("outer", "inner")]
            for path, factor in zip(h.stored[dtype], (h.a, h.b)):
                set_attr(graph.module, path, factor.to(dtype))
        rotated = _online_hadamard_ops(graph, layer.input, *h.stored[dtype], m, p)
        layer.node.args = (rotated, *layer.node.args[1:])
        done += 1
        descriptions.add(f"{n}: Hadamard ({h.description}), {n * (m + p)} multiply-adds per token")
    stats["online_hadamard"] = sorted(descriptions)
    stats["online_hadamard_layers"] = done


@register_pass("rotate", config=RotateConfig, must_precede=("quantize", "cast_weights", "prune"))
def rotate(graph: Graph, config: RotateConfig, context: PassContext) -> PassOutcome:
    """Fold QuaRot/SpinQuant rotations (residual stream R1, value heads R2) into the weights (exact in fp32).

    Precondition: a causal LM with a linear output head, RMSNorm on the residual stream, stored float
    weights; it runs before ``quantize``.
    """
    stats: dict = {}
    skipped: list[Skip] = []
    nodes_before = len(graph.op_nodes())
    weights = _Weights(graph)
    down: list[LinearLayer] = []
    if config.residual:
        down = _rotate_residual(graph, config, weights, stats, skipped)
    if config.values:
        _rotate_values(graph, config, weights, stats, skipped)
    if config.online_hadamard:
        nodes = len(graph.op_nodes())
        _rotate_down_inputs(graph, down, weights, stats, skipped)
        stats["online_hadamard_nodes_added"] = len(graph.op_nodes()) - nodes
        nodes_before += stats["online_hadamard_nodes_added"]
    weights.store()
    stats["tensors_removed"], stats["bytes_removed"] = drop_unused_weights(graph)
    stats["nodes_removed"] = nodes_before - len(graph.op_nodes())  # folded constants and norm-weight multiplications
    return PassOutcome(graph, stats, skipped)
