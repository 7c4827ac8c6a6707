"""Calibration statistics of the inputs of linear layers, memory-bounded, for data-aware passes.

What compression methods need from calibration data is the distribution of each linear layer's
input rows ``x`` (``in_features`` wide): the Gram matrix ``X^T X`` (the layer-wise Hessian of
SparseGPT and GPTQ, Frantar & Alistarh 2023 / Frantar et al. 2022; the whitening matrix of
SVD-LLM, Wang et al. 2024), per-channel norms ``||X_j||_2`` (Wanda, Sun et al. 2023) and
per-channel mean and max ``|x_j|`` (AWQ, Lin et al. 2023; SmoothQuant, Xiao et al. 2023).
They are accumulated sample by sample, so memory is ``O(in_features^2)`` per layer, never
``O(tokens)``.

Two ways to collect them:

* ``linear_input_statistics``: one run of the graph as it is, statistics of chosen nodes.
* ``calibrate_sequentially``: all samples advance through the graph node by node together;
  before a chosen node executes, its statistics over all samples are handed to a callback that
  may replace that node's weights, and every later node then sees activations computed with the
  replaced weights ("sequential" calibration, as SparseGPT and GPTQ do block by block).

Precondition: the graph runs eagerly on each sample (``Graph.run``); samples are input tuples.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

import torch
from torch import fx

from slmc import progress
from slmc.graph.ir import Graph, fetch_attr


@dataclass
class InputStatistics:
    """Running statistics of the rows ``x`` (last dimension ``in_features``) fed to one node.

    ``hessian``: float64 ``[in, in]`` sum of ``x^T x`` over all rows (``None`` if not collected);
    ``count``: rows seen; ``abs_sum``/``abs_max``: float64 ``[in]`` per-channel sum/max of ``|x|``;
    ``sum``/``sq_sum``: float64 ``[in]`` per-channel sum of ``x`` and of ``x^2``.
    """

    in_features: int
    with_hessian: bool = True
    count: int = 0
    hessian: torch.Tensor | None = None
    abs_sum: torch.Tensor = field(init=False)
    abs_max: torch.Tensor = field(init=False)
    sq_sum: torch.Tensor = field(init=False)
    sum: torch.Tensor = field(init=False)

    def __post_init__(self) -> None:
        n = self.in_features
        self.sum = torch.zeros(n, dtype=torch.float64)
        self.abs_sum = torch.zeros(n, dtype=torch.float64)
        self.abs_max = torch.zeros(n, dtype=torch.float64)
        self.sq_sum = torch.zeros(n, dtype=torch.float64)
        if self.with_hessian:
            self.hessian = torch.zeros(n, n, dtype=torch.float64)

    def update(self, x: torch.Tensor) -> None:
        """Add the rows of ``x`` (``[..., in_features]``): float32 arithmetic, float64 accumulation."""
        rows = x.detach().reshape(-1, self.in_features).to(torch.float32)
        if rows.shape[0] == 0:
            return
        self.count += rows.shape[0]
        magnitude = rows.abs()
        self.sum += rows.sum(0).to(torch.float64)
        self.abs_sum += magnitude.sum(0).to(torch.float64)
        self.abs_max = torch.maximum(self.abs_max, magnitude.amax(0).to(torch.float64))
        if self.hessian is not None:
            gram = (rows.T @ rows).to(torch.float64)
            self.hessian += gram
            self.sq_sum += gram.diagonal()
        else:
            self.sq_sum += rows.square().sum(0).to(torch.float64)

    def update_all(self, values: Sequence[torch.Tensor], chunk_rows: int = 16384) -> None:
        """Add the rows of every tensor in ``values``, batching up to ``chunk_rows`` rows per update."""
        pending: list[torch.Tensor] = []
        rows = 0
        for value in values:
            flat = value.detach().reshape(-1, self.in_features)
            pending.append(flat)
            rows += flat.shape[0]
            if rows >= chunk_rows:
                self.update(torch.cat(pending))
                pending, rows = [], 0
        if pending:
            self.update(torch.cat(pending))

    @property
    def abs_mean(self) -> torch.Tensor:
        """Per-channel mean ``|x_j|`` (float64 ``[in]``)."""
        return self.abs_sum / max(self.count, 1)

    @property
    def mean(self) -> torch.Tensor:
        """Per-channel mean of ``x`` (float64 ``[in]``)."""
        return self.sum / max(self.count, 1)

    @property
    def variance(self) -> torch.Tensor:
        """Per-channel (population) variance of ``x`` (float64 ``[in]``)."""
        return (self.sq_sum / max(self.count, 1) - self.mean.square()).clamp_min(0.0)

    @property
    def channel_norm(self) -> torch.Tensor:
        """Per-channel ``||X_j||_2`` over all rows (float64 ``[in]``)."""
        return self.sq_sum.sqrt()


UpdateFunction = Callable[[fx.Node, InputStatistics], None]


def _first_input(node: fx.Node) -> fx.Node:
    arg = node.args[0] if node.args else None
    if not isinstance(arg, fx.Node):
        raise ValueError(f"node '{node.name}' has no tensor input to collect statistics of")
    return arg


class _Lockstep:
    """Runs one ``fx.Interpreter`` per sample, all advancing node by node; frees dead values."""

    def __init__(self, graph: Graph, samples: Sequence[tuple[torch.Tensor, ...]]):
        self.module = graph.module
        self.nodes = list(graph.graph.nodes)
        self.interpreters = []
        for sample in samples:
            interpreter = fx.Interpreter(self.module, garbage_collect_values=False)
            interpreter.env = {}
            interpreter.args_iter = iter(sample)
            self.interpreters.append(interpreter)
        last_use: dict[fx.Node, fx.Node] = {}
        for node in reversed(self.nodes):
            for arg in node.all_input_nodes:
                last_use.setdefault(arg, node)
        self.dies_at: dict[fx.Node, list[fx.Node]] = {}
        for value, user in last_use.items():
            self.dies_at.setdefault(user, []).append(value)

    def inputs_of(self, node: fx.Node) -> list[torch.Tensor]:
        source = _first_input(node)
        return [interpreter.env[source] for interpreter in self.interpreters]

    def refresh_attributes(self, node: fx.Node) -> None:
        """Re-read the stored tensors ``node`` reads (after a callback replaced them)."""
        for arg in node.all_input_nodes:
            if arg.op == "get_attr":
                value = fetch_attr(self.module, str(arg.target))
                for interpreter in self.interpreters:
                    interpreter.env[arg] = value

    def run(self, hooks: set[fx.Node], before: Callable[[fx.Node], None]) -> None:
        """Execute every node (up to the last hooked one), calling ``before(node)`` for hooked nodes."""
        last = max((self.nodes.index(n) for n in hooks), default=-1)
        with torch.no_grad(), progress.bar("calibration", total=len(hooks), unit="layer") as bar:
            for index, node in enumerate(self.nodes):
                if index > last or node.op == "output":
                    break
                if node in hooks:
                    before(node)
                    bar.update()
                for interpreter in self.interpreters:
                    interpreter.env[node] = interpreter.run_node(node)
                for dead in self.dies_at.get(node, ()):
                    for interpreter in self.interpreters:
                        interpreter.env.pop(dead, None)


def _in_features(values: Sequence[torch.Tensor], node: fx.Node) -> int:
    if not values or not isinstance(values[0], torch.Tensor):
        raise ValueError(f"the input of node '{node.name}' is not a tensor")
    return int(values[0].shape[-1])


def _resolve(graph: Graph, names: Iterable[str]) -> list[fx.Node]:
    by_name = {n.name: n for n in graph.graph.nodes}
    missing = [name for name in names if name not in by_name]
    if missing:
        raise KeyError(f"no nodes named {missing} in the graph")
    return [by_name[name] for name in names]


def _shared_statistics(runner: _Lockstep, by_input: dict[fx.Node, InputStatistics], node: fx.Node,
                       hessian: bool) -> InputStatistics:
    """The statistics of ``node``'s first input, collected from the runner once per input node."""
    source = _first_input(node)
    if source not in by_input:
        values = runner.inputs_of(node)
        stats = InputStatistics(_in_features(values, node), with_hessian=hessian)
        stats.update_all(values)
        by_input[source] = stats
    return by_input[source]


def linear_input_statistics(graph: Graph, samples: Sequence[tuple[torch.Tensor, ...]], nodes: Iterable[str],
                            hessian: bool = True) -> dict[str, InputStatistics]:
    """Statistics of the first input of each named node over ``samples``, keyed by node name.

    Nodes that share an input share one statistics object. ``hessian=False`` skips ``X^T X``.
    Raises ``ValueError`` when there are no samples, ``KeyError`` for an unknown node name.
    """
    if not samples:
        raise ValueError("no calibration samples")
    targets = _resolve(graph, nodes)
    runner = _Lockstep(graph, samples)
    by_input: dict[fx.Node, InputStatistics] = {}
    result: dict[str, InputStatistics] = {}

    def collect(node: fx.Node) -> None:
        result[node.name] = _shared_statistics(runner, by_input, node, hessian)

    runner.run(set(targets), collect)
    return result


def calibrate_sequentially(graph: Graph, samples: Sequence[tuple[torch.Tensor, ...]], nodes: Iterable[str],
                           update: UpdateFunction, hessian: bool = True) -> None:
    """Call ``update(node, statistics)`` for each named node in graph order, just before it runs.

    ``update`` may replace the tensors the node reads (``slmc.graph.ir.set_attr``); the node and every
    later node then run with the replaced tensors, so later statistics reflect earlier updates.
    Nodes sharing an input share one statistics object (collected once, before the first of them,
    and released after the last of them, so at most one input's statistics are alive at a time).
    Raises ``ValueError`` when there are no samples, ``KeyError`` for an unknown node name.
    """
    if not samples:
        raise ValueError("no calibration samples")
    targets = list(dict.fromkeys(_resolve(graph, nodes)))
    runner = _Lockstep(graph, samples)
    by_input: dict[fx.Node, InputStatistics] = {}
    pending: dict[fx.Node, int] = {}
    for target in targets:
        pending[_first_input(target)] = pending.get(_first_input(target), 0) + 1

    def call(node: fx.Node) -> None:
        source = _first_input(node)
        update(node, _shared_statistics(runner, by_input, node, hessian))
        runner.refresh_attributes(node)
        pending[source] -= 1
        if pending[source] == 0:
            del by_input[source]

    runner.run(set(targets), call)
