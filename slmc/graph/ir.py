"""slmc's graph IR: an ATen-level ``torch.fx.GraphModule`` traced with ``torch.export``.

Parameters and constants are ``get_attr`` nodes on the module, so a pass replaces a weight by
assigning a new tensor to the attribute; every node carries ``meta["val"]`` (a FakeTensor with
shape and dtype, symbolic where the sequence length is dynamic). ``Graph.nx()`` gives a networkx
view for analyses (dependency groups, partitions).
"""

from __future__ import annotations

import copy
import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any, Literal

import networkx as nx
import torch
from torch import fx

from slmc.errors import NodeError, TraceError, exception_summary

# What torch.export raises for a model it cannot trace (UserError and friends derive from these).
EXPORT_FAILURES = (RuntimeError, ValueError, TypeError, NotImplementedError, AssertionError, KeyError, IndexError)


@dataclass
class ModelSpec:
    """A model with what tracing needs.

    ``example_inputs`` are positional tensors; ``dynamic_shapes`` follows ``torch.export``'s
    positional form (one entry per input: ``None`` or ``{dim: torch.export.Dim}``).
    ``tokenizer`` (``slmc.data.tokenizer``) turns text into token ids for models that take them; it
    feeds text calibration and evaluation and is saved into the artifact. ``task`` is
    ``causal-lm`` for models under the KV-cache contract of ``slmc.graph.kv_cache`` (then
    ``kv_cache`` describes the cache), ``embedding`` for sentence encoders, else ``generic``.
    """

    module: torch.nn.Module
    example_inputs: tuple[torch.Tensor, ...]
    dynamic_shapes: tuple[Any, ...] | None = None
    name: str = "model"
    input_names: tuple[str, ...] | None = None
    output_names: tuple[str, ...] | None = None
    description: str = ""
    task: Literal["generic", "causal-lm", "embedding"] = "generic"
    kv_cache: Any = None
    tokenizer: Any = None

    @property
    def encode_text(self) -> Callable[[str], list[int]] | None:
        return None if self.tokenizer is None else self.tokenizer.encode

    def names(self) -> tuple[str, ...]:
        return self.input_names or tuple(f"input_{i}" for i in range(len(self.example_inputs)))


@dataclass
class Graph:
    """A traced model: the fx module plus how to re-trace it (example inputs, dynamic shapes)."""

    module: fx.GraphModule
    example_inputs: tuple[torch.Tensor, ...]
    dynamic_shapes: tuple[Any, ...] | None
    input_names: tuple[str, ...]
    output_names: tuple[str, ...] | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def graph(self) -> fx.Graph:
        return self.module.graph

    def clone(self) -> Graph:
        """A copy with its own fx graph; tensors are shared (passes replace, never mutate, them)."""
        module = fx.GraphModule(self.module, copy.deepcopy(self.module.graph))
        module.meta.update(self.module.meta)
        return replace(self, module=module, meta=dict(self.meta))

    def run(self, *inputs: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """Eager execution of the graph; always returns a tuple of tensors."""
        with torch.no_grad():
            out = self.module(*inputs)
        return tuple(out) if isinstance(out, (tuple, list)) else (out,)

    def tensors(self) -> dict[str, torch.Tensor]:
        """Every tensor a ``get_attr`` node reads, by attribute path."""
        found = {}
        for node in self.graph.nodes:
            if node.op == "get_attr":
                value = fetch_attr(self.module, node.target)
                if isinstance(value, torch.Tensor):
                    found[node.target] = value
        return found

    def weight_bytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in self.tensors().values())

    def num_parameters(self) -> int:
        return sum(t.numel() for t in self.tensors().values())

    def op_nodes(self) -> list[fx.Node]:
        return [n for n in self.graph.nodes if n.op == "call_function"]

    def nx(self) -> nx.DiGraph:
        """Directed data-flow graph: one vertex per fx node (attributes op, target, shape, dtype)."""
        g = nx.DiGraph()
        for node in self.graph.nodes:
            val = node.meta.get("val")
            g.add_node(
                node.name,
                op=node.op,
                target=op_name(node),
                shape=tuple(val.shape) if isinstance(val, torch.Tensor) else None,
                dtype=str(val.dtype) if isinstance(val, torch.Tensor) else None,
            )
            for dep in node.all_input_nodes:
                g.add_edge(dep.name, node.name)
        return g

    def fingerprint(self) -> str:
        """sha256 over the graph's code and every tensor's name, dtype, shape and bytes."""
        h = hashlib.sha256(self.module.code.encode())
        for name, tensor in sorted(self.tensors().items()):
            t = tensor.detach().contiguous().cpu()
            h.update(f"{name}|{t.dtype}|{tuple(t.shape)}".encode())
            # the tensor's own bytes, not a copy (a 151,936 x 896 table is 545 MB); 0-d too (Gemma's embed scale)
            h.update(t.reshape(-1).view(torch.uint8).numpy() if t.numel() else b"")
        return h.hexdigest()


def fetch_attr(module: torch.nn.Module, target: str) -> Any:
    """The attribute at dotted path ``target`` (as ``get_attr`` nodes name it)."""
    obj: Any = module
    for part in target.split("."):
        obj = getattr(obj, part)
    return obj


def set_attr(module: torch.nn.Module, target: str, value: torch.Tensor) -> None:
    """Assign ``value`` at dotted path ``target`` as a frozen parameter (creating parents as needed).

    Always a parameter, never a buffer: ``torch.export`` lists parameters as weights, which the
    lowering keeps as inputs of the compiled program (stored in the weights file), whereas TVM's
    frontend embeds buffers as constants and would fold their dtype casts away.
    """
    *parents, leaf = target.split(".")
    obj: torch.nn.Module = module
    for part in parents:
        if not hasattr(obj, part):
            obj.add_module(part, torch.nn.Module())
        obj = getattr(obj, part)
    if hasattr(obj, leaf):
        delattr(obj, leaf)
    obj.register_parameter(leaf, torch.nn.Parameter(value.detach(), requires_grad=False))


def has_attr(module: torch.nn.Module, target: str) -> bool:
    """Whether dotted path ``target`` names an attribute of ``module``."""
    obj: Any = module
    for part in target.split("."):
        if not hasattr(obj, part):
            return False
        obj = getattr(obj, part)
    return True


def unused_attr_path(module: torch.nn.Module, base: str) -> str:
    """``base``, or ``base_1``, ``base_2``, ... : the first dotted path not yet taken in ``module``."""
    candidate, i = base, 1
    while has_attr(module, candidate):
        candidate, i = f"{base}_{i}", i + 1
    return candidate


def del_attr(module: torch.nn.Module, target: str) -> None:
    *parents, leaf = target.split(".")
    obj: Any = module
    for part in parents:
        obj = getattr(obj, part)
    delattr(obj, leaf)


def op_name(node: fx.Node) -> str:
    """Short op name of a node: ``linear`` for ``aten.linear.default``, else the node's op kind."""
    if node.op == "call_function":
        name = getattr(node.target, "__name__", str(node.target))
        overload = getattr(node.target, "_overloadpacket", None)
        return getattr(overload, "__name__", name).split(".")[-1]
    return node.op


def trace(spec: ModelSpec) -> Graph:
    """Trace ``spec.module`` with ``torch.export`` into an slmc ``Graph``.

    Precondition: the module runs on ``spec.example_inputs``. The module is put in eval mode.
    """
    spec.module.eval()
    try:
        with torch.no_grad():
            program = torch.export.export(spec.module, spec.example_inputs, dynamic_shapes=spec.dynamic_shapes)
    except EXPORT_FAILURES as exc:
        raise TraceError(f"torch.export could not trace model '{spec.name}': {exception_summary(exc)}") from exc
    module = program.module()
    return Graph(
        module=module,
        example_inputs=tuple(spec.example_inputs),
        dynamic_shapes=spec.dynamic_shapes,
        input_names=spec.names(),
        output_names=spec.output_names,
        meta={"model_name": spec.name},
    )


def export(graph: Graph) -> torch.export.ExportedProgram:
    """Re-trace the (transformed) graph into an ``ExportedProgram`` for lowering."""
    try:
        with torch.no_grad():
            return torch.export.export(graph.module, graph.example_inputs, dynamic_shapes=graph.dynamic_shapes)
    except EXPORT_FAILURES as exc:
        raise TraceError(f"torch.export could not re-trace the transformed graph: {exception_summary(exc)}") from exc


class _NodeTrackingFakeProp(fx.Interpreter):
    """Shape propagation with FakeTensors (symbolic where inputs are) that names a failing node."""

    def __init__(self, module: fx.GraphModule, mode: Any):
        super().__init__(module)
        self._mode = mode

    def get_attr(self, target: Any, args: Any, kwargs: Any) -> Any:
        value = super().get_attr(target, args, kwargs)
        return self._mode.from_tensor(value, static_shapes=True) if isinstance(value, torch.Tensor) else value

    def run_node(self, n: fx.Node) -> Any:
        try:
            result = super().run_node(n)
        except EXPORT_FAILURES as exc:
            raise NodeError(n.name, f"shape propagation failed for {op_name(n)}: {exception_summary(exc)}") from exc
        if isinstance(result, torch.Tensor) or (isinstance(result, (tuple, list)) and result):
            n.meta["val"] = result
        return result


def _fake_inputs(graph: Graph) -> tuple[Any, list[Any]]:
    """The fake mode and fake input values of the graph's placeholders (symbolic if traced so)."""
    from torch._guards import detect_fake_mode
    from torch._subclasses.fake_tensor import FakeTensorMode

    vals = [n.meta.get("val") for n in graph.graph.nodes if n.op == "placeholder"]
    mode = detect_fake_mode(vals) if all(isinstance(v, torch.Tensor) for v in vals) else None
    if mode is None:
        mode = FakeTensorMode(allow_non_fake_inputs=True)
        vals = [mode.from_tensor(t) for t in graph.example_inputs]
    return mode, vals


def check_graph(graph: Graph) -> None:
    """Verify a graph: fx lint, then shape propagation with FakeTensors.

    Placeholders keep the (possibly symbolic) shapes the trace gave them, so a dynamic sequence
    length stays symbolic on every node, including nodes a pass inserted.
    Raises ``NodeError`` naming the first node that is malformed or fails to propagate.
    """
    try:
        graph.graph.lint()
    except (RuntimeError, ValueError) as exc:
        raise NodeError(_node_in_message(graph, str(exc)), f"fx lint failed: {exc}") from exc
    mode, fake_inputs = _fake_inputs(graph)
    with mode:
        _NodeTrackingFakeProp(graph.module, mode).run(*fake_inputs)


def _node_in_message(graph: Graph, message: str) -> str:
    for node in graph.graph.nodes:
        if f"'{node.name}'" in message or f" {node.name} " in message:
            return node.name
    return "<graph>"
