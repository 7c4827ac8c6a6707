"""Exact folding of per-channel affine maps into adjacent linear or convolution weights.

* Norm scale into the following linears: ``linear(g * y, W, b) = linear(y, W diag(g), b)`` for
  RMSNorm's trailing ``weight * normed`` (Zhang & Sennrich, 2019) and ``aten.rms_norm``; for
  LayerNorm (Ba et al., 2016) also the shift: ``linear(g * y + beta, W, b) =
  linear(y, W diag(g), b + W beta)``. Done only when every user of the normalized tensor is such a
  linear (otherwise the unscaled tensor would leak elsewhere) and each linear owns its weights.
* Inference BatchNorm (Ioffe & Szegedy, 2015) into the preceding convolution or linear:
  ``BN(conv(x, W, b)) = conv(x, W s, (b - mean) s + beta)`` with ``s = gamma / sqrt(var + eps)``
  per output channel, when the BN is the conv's only user.

Both are algebraic identities; the only change is float rounding (products formed once ahead of
time instead of at run time). Weights are combined in float64 and stored in their own dtype.
"""

from __future__ import annotations

import operator
from collections.abc import Callable

import torch
from torch import fx

from slmc.graph.ir import Graph, fetch_attr, set_attr, unused_attr_path
from slmc.graph.linears import LinearLayer, as_linear_layer, attribute_readers, is_linear, owns_weights
from slmc.spec.pass_registry import Skip

aten = torch.ops.aten
CONVOLUTIONS = (aten.conv1d.default, aten.conv2d.default, aten.conv3d.default, aten.convolution.default)


def _tensor(graph: Graph, arg: object) -> torch.Tensor | None:
    """The stored tensor a ``get_attr`` argument reads (None for anything else)."""
    if isinstance(arg, fx.Node) and arg.op == "get_attr":
        value = fetch_attr(graph.module, str(arg.target))
        return value if isinstance(value, torch.Tensor) else None
    return None


def _store(graph: Graph, target: str, value: torch.Tensor, dtype: torch.dtype) -> None:
    set_attr(graph.module, target, value.to(dtype).contiguous())


def _keeps_channels(node: fx.Node, source: fx.Node) -> bool:
    """``node`` reads ``source`` and commutes with a per-last-channel scale (no-op views, copies,
    slices along other dimensions)."""
    if node.op != "call_function" or not node.args or node.args[0] is not source:
        return False
    if node.target in (aten.alias.default, aten.clone.default, aten.contiguous.default):
        return True
    if node.target is aten.slice.Tensor:
        val = source.meta.get("val")
        dim = node.args[1] if len(node.args) > 1 else 0
        return isinstance(val, torch.Tensor) and isinstance(dim, int) and dim % val.ndim != val.ndim - 1
    return False


def _consumer_layers(graph: Graph, node: fx.Node, readers: dict[str, int]) -> list[LinearLayer] | str:
    """The linear layers reading ``node`` as their input (directly or through ops that keep its
    channels), or why ``node`` cannot be folded into its users."""
    layers = []
    for user in node.users:
        if _keeps_channels(user, node):
            found = _consumer_layers(graph, user, readers)
            if isinstance(found, str):
                return found
            layers.extend(found)
            continue
        if not is_linear(user) or user.args[0] is not node or node in user.args[1:]:
            return f"its result feeds {user.name} ({user.target}), not only the input of linear layers"
        layer = as_linear_layer(graph, user)
        if isinstance(layer, str):
            return f"user {user.name}: {layer}"
        if not owns_weights(layer, readers):
            return f"user {user.name} shares its weights with other nodes"
        layers.append(layer)
    return layers if layers else "it has no users"


def _fold_into_linears(graph: Graph, layers: list[LinearLayer], scale: torch.Tensor, shift: torch.Tensor | None) -> None:
    """Make each ``linear(scale * y + shift, W, b)`` read ``y``: ``W diag(scale)``, bias ``b + W shift``."""
    for layer in layers:
        weight = layer.weight(graph)
        w64 = weight.to(torch.float64)
        _store(graph, str(layer.weight_node.target), w64 * scale.to(torch.float64), weight.dtype)
        if shift is None:
            continue
        bias = layer.bias(graph)
        added = w64 @ shift.to(torch.float64)
        if bias is not None:
            _store(graph, str(layer.bias_node.target), bias.to(torch.float64) + added, bias.dtype)
            continue
        target = unused_attr_path(graph.module, f"{layer.name}.bias")
        _store(graph, target, added, weight.dtype)
        with graph.graph.inserting_before(layer.node):
            bias_node = graph.graph.get_attr(target)
        layer.node.args = (layer.node.args[0], layer.node.args[1], bias_node)


def _channel_scale(graph: Graph, node: fx.Node) -> tuple[torch.Tensor, fx.Node] | None:
    """``(g, y)`` when ``node`` is ``mul(g, y)``/``mul(y, g)`` with ``g`` a stored per-last-channel vector."""
    if node.op != "call_function" or node.target is not aten.mul.Tensor or len(node.args) != 2:
        return None
    for const_arg, other in (node.args, node.args[::-1]):
        g = _tensor(graph, const_arg)
        if g is None or not isinstance(other, fx.Node) or _tensor(graph, other) is not None or g.ndim == 0:
            continue
        y = other.meta.get("val")
        if not isinstance(y, torch.Tensor) or y.ndim < g.ndim or not g.is_floating_point():
            continue
        if any(int(d) != 1 for d in g.shape[:-1]) or g.shape[-1] < 2 or y.shape[-1] != g.shape[-1]:
            continue
        if y.dtype != g.dtype:
            continue
        return g.reshape(-1), other
    return None


def _norm_affine(graph: Graph, node: fx.Node) -> tuple[torch.Tensor, torch.Tensor | None, Callable[[], None]] | None:
    """``(scale, shift, strip)`` of a LayerNorm / RMSNorm op over the last dimension with stored affine
    parameters; ``strip()`` removes the affine parameters from the op."""
    if node.op != "call_function" or node.target not in (aten.layer_norm.default, aten.rms_norm.default):
        return None
    shape = node.args[1]
    if not isinstance(shape, (list, tuple)) or len(shape) != 1:
        return None
    weight_arg = node.args[2] if len(node.args) > 2 else node.kwargs.get("weight")
    weight = _tensor(graph, weight_arg)
    if weight is None:
        return None
    shift = None
    if node.target is aten.layer_norm.default:
        bias_arg = node.args[3] if len(node.args) > 3 else node.kwargs.get("bias")
        if bias_arg is not None:
            shift = _tensor(graph, bias_arg)
            if shift is None:
                return None

    def strip() -> None:
        args = list(node.args)
        args[2] = None
        if node.target is aten.layer_norm.default and len(args) > 3:
            args[3] = None
        node.args = tuple(args)
        node.kwargs = {k: v for k, v in node.kwargs.items() if k not in ("weight", "bias")}

    return weight, shift, strip


def fold_norm_scales(graph: Graph) -> tuple[int, list[Skip]]:
    """Fold norm scales (and LayerNorm shifts) into the linears they feed; return (count, skipped)."""
    folded, skipped = 0, []
    readers = attribute_readers(graph)
    for node in list(graph.graph.nodes):
        scale_of_mul = _channel_scale(graph, node)
        norm = _norm_affine(graph, node) if scale_of_mul is None else None
        if scale_of_mul is None and norm is None:
            continue
        layers = _consumer_layers(graph, node, readers)
        if isinstance(layers, str):
            skipped.append(Skip(node.name, f"per-channel scale not folded: {layers}"))
            continue
        if scale_of_mul is not None:
            scale, source = scale_of_mul
            _fold_into_linears(graph, layers, scale, None)
            node.replace_all_uses_with(source)
            graph.graph.erase_node(node)
        else:
            scale, shift, strip = norm
            _fold_into_linears(graph, layers, scale, shift)
            strip()
        folded += 1
        readers = attribute_readers(graph)
    return folded, skipped


def _batch_norm_parameters(graph: Graph, node: fx.Node) -> tuple[list[torch.Tensor | None], float] | None:
    """``([gamma, beta, mean, var], eps)`` of an inference BatchNorm node with stored statistics."""
    if node.op != "call_function":
        return None
    if node.target is aten.batch_norm.default:
        _, w, b, mean, var, training, _, eps = node.args[:8]
        if training:
            return None
    elif node.target is aten._native_batch_norm_legit_no_training.default:
        _, w, b, mean, var, _, eps = node.args[:7]
    else:
        return None
    values = [None if a is None else _tensor(graph, a) for a in (w, b)] + [_tensor(graph, mean), _tensor(graph, var)]
    if values[2] is None or values[3] is None or (w is not None and values[0] is None) or (b is not None and values[1] is None):
        return None
    return values, float(eps)


def _bn_output(node: fx.Node) -> fx.Node | str:
    """The node carrying the BN result: itself, or the ``getitem(., 0)`` of the tuple-returning variant."""
    if node.target is aten.batch_norm.default:
        return node
    users = list(node.users)
    if len(users) == 1 and users[0].target is operator.getitem and users[0].args[1] == 0:
        return users[0]
    return "the saved mean/invstd outputs are used"


def _producer(graph: Graph, node: fx.Node, readers: dict[str, int]) -> tuple[fx.Node, torch.Tensor, torch.Tensor | None] | str:
    """The conv/linear producing the BN input, with its weight and bias, or why it cannot absorb the BN."""
    source = node.args[0]
    if not isinstance(source, fx.Node) or source.op != "call_function":
        return "its input is not a convolution or linear"
    if len(source.users) != 1:
        return f"{source.name} has other users besides the BatchNorm"
    if source.target is aten.convolution.default and source.args[6]:
        return f"{source.name} is a transposed convolution"
    if source.target in CONVOLUTIONS:
        weight, bias = _tensor(graph, source.args[1]), source.args[2] if len(source.args) > 2 else None
    elif is_linear(source):
        val = source.meta.get("val")
        if not isinstance(val, torch.Tensor) or val.ndim != 2:
            return f"{source.name} is a linear whose output is not 2-D (BatchNorm channels would not be its features)"
        weight, bias = _tensor(graph, source.args[1]), source.args[2] if len(source.args) > 2 else None
    else:
        return f"its input {source.name} is not a convolution or linear"
    if weight is None or not weight.is_floating_point():
        return f"{source.name} has no stored floating-point weight"
    bias_value = None if bias is None else _tensor(graph, bias)
    if bias is not None and bias_value is None:
        return f"{source.name} has a bias computed at run time"
    targets = [source.args[1]] + ([bias] if bias is not None else [])
    if any(readers.get(str(t.target), 0) != 1 for t in targets):
        return f"{source.name} shares its weights with other nodes"
    return source, weight, bias_value


def fold_batch_norms(graph: Graph) -> tuple[int, list[Skip]]:
    """Fold inference BatchNorms into the convolution or linear before them; return (count, skipped)."""
    folded, skipped = 0, []
    for node in list(graph.graph.nodes):
        params = _batch_norm_parameters(graph, node)
        if params is None:
            continue
        output = _bn_output(node)
        found = _producer(graph, node, attribute_readers(graph))
        if isinstance(output, str) or isinstance(found, str):
            skipped.append(Skip(node.name, f"BatchNorm not folded: {output if isinstance(output, str) else found}"))
            continue
        (gamma, beta, mean, var), eps = params
        source, weight, bias = found
        scale = (gamma.double() if gamma is not None else torch.ones_like(var, dtype=torch.float64)) / (var.double() + eps).sqrt()
        shift = (bias.double() if bias is not None else torch.zeros_like(scale)) - mean.double()
        shift = shift * scale + (beta.double() if beta is not None else 0.0)
        _store(graph, str(source.args[1].target), weight.double() * scale.view(-1, *([1] * (weight.ndim - 1))), weight.dtype)
        bias_arg = source.args[2] if len(source.args) > 2 else None
        if bias_arg is not None:
            _store(graph, str(bias_arg.target), shift, weight.dtype)
        else:
            target = unused_attr_path(graph.module, f"{str(source.args[1].target).removesuffix('.weight')}.bias")
            _store(graph, target, shift, weight.dtype)
            with graph.graph.inserting_before(source):
                bias_node = graph.graph.get_attr(target)
            args = list(source.args) + [None] * max(0, 3 - len(source.args))
            args[2] = bias_node
            source.args = tuple(args)
        output.replace_all_uses_with(source)
        if output is not node:
            graph.graph.erase_node(output)
        graph.graph.erase_node(node)
        folded += 1
    return folded, skipped
