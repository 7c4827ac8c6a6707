"""The offloadable layers of an slmc graph (``w8a8_linear`` nodes) with their integer parameters.

For every ``torch.ops.slmc.w8a8_linear`` node the graph's own tensors give the int8 weights, the
per-channel weight scales, the bias and the static activation scale; the output scale of the NPU's
int8 result is calibrated here: ``max |y| / 127`` over the float outputs the node produced while the
graph ran eagerly on the calibration samples (min/max observer, symmetric, zero point 0). The same
run records each node's int8 input codes (``slmc.quantization.ops.quantize_activations``: exactly
the codes the compiled kernel computes), which are the inputs of the integer cross-check.

Precondition: ``graph`` went through the quantize pass with ``scheme: w8a8``; ``samples`` are inputs
of the graph (calibration samples, or the example input when the recipe has none).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import fx

from slmc.graph.ir import Graph
from slmc.npu.fixed_point import INT8_MAX, quantize_multiplier
from slmc.quantization.ops import W8A8_LINEAR, quantize_activations


@dataclass
class NpuLayer:
    """One offloadable linear: integer parameters plus the int8 codes it saw during calibration."""

    node: str
    weight: str                      # the qweight attribute path, e.g. blocks.0.attn.q_proj.qweight
    qweight: np.ndarray              # int8 [N, K]
    weight_scales: np.ndarray        # float32 [N]
    bias: np.ndarray | None          # float32 [N]
    activation_scale: float
    output_scale: float
    codes: np.ndarray = field(repr=False)  # int8 [M, K] calibration inputs

    @property
    def in_features(self) -> int:
        return int(self.qweight.shape[1])

    @property
    def out_features(self) -> int:
        return int(self.qweight.shape[0])

    @property
    def accumulator_scales(self) -> np.ndarray:
        """Scale of the int32 accumulator per output channel: ``activation_scale * weight_scales``."""
        return (np.float64(self.activation_scale) * self.weight_scales.astype(np.float64))

    @property
    def bias_codes(self) -> np.ndarray:
        """int32 bias in accumulator units (zeros when the layer has none)."""
        if self.bias is None:
            return np.zeros(self.out_features, dtype=np.int32)
        return np.round(self.bias.astype(np.float64) / self.accumulator_scales).astype(np.int32)

    @property
    def multiplier(self) -> np.ndarray:
        return quantize_multiplier(self.accumulator_scales / self.output_scale)[0]

    @property
    def shift(self) -> np.ndarray:
        return quantize_multiplier(self.accumulator_scales / self.output_scale)[1]


class _Recorder(fx.Interpreter):
    """Runs the graph and records each ``w8a8_linear`` node's int8 input codes and float output."""

    def __init__(self, module: fx.GraphModule):
        super().__init__(module)
        self.codes: dict[str, list[np.ndarray]] = {}
        self.peaks: dict[str, float] = {}

    def run_node(self, n: fx.Node):  # noqa: ANN201 - fx's signature
        result = super().run_node(n)
        if n.op == "call_function" and n.target is W8A8_LINEAR:
            args, _ = self.fetch_args_kwargs_from_env(n)
            x, _, _, _, input_scale, activation_scale = args
            codes = quantize_activations(x, input_scale, activation_scale).reshape(-1, x.shape[-1])
            self.codes.setdefault(n.name, []).append(codes.to(torch.int8).numpy())
            self.peaks[n.name] = max(self.peaks.get(n.name, 0.0), float(result.detach().abs().max()))
        return result


def _tensor(graph: Graph, node: fx.Node | None) -> torch.Tensor | None:
    if node is None:
        return None
    if node.op != "get_attr":
        raise ValueError(f"w8a8_linear argument '{node.name}' is computed at run time, not a stored tensor")
    value = graph.module
    for part in str(node.target).split("."):
        value = getattr(value, part)
    return value


def offloadable_layers(graph: Graph, samples: Sequence[tuple[torch.Tensor, ...]]) -> list[NpuLayer]:
    """Every ``w8a8_linear`` node of ``graph``, in graph order, calibrated on ``samples``."""
    recorder = _Recorder(graph.module)
    with torch.no_grad():
        for sample in samples:
            recorder.run(*sample)
    layers = []
    for node in graph.op_nodes():
        if node.target is not W8A8_LINEAR:
            continue
        _, qweight, weight_scales, bias, _, activation_scale = node.args
        peak = recorder.peaks[node.name]
        layers.append(NpuLayer(
            node=node.name,
            weight=str(qweight.target),
            qweight=_tensor(graph, qweight).detach().numpy().astype(np.int8),
            weight_scales=_tensor(graph, weight_scales).detach().numpy().astype(np.float32),
            bias=None if bias is None else _tensor(graph, bias).detach().numpy().astype(np.float32),
            activation_scale=float(activation_scale),
            output_scale=peak / INT8_MAX if peak > 0 else 1.0,
            codes=np.concatenate(recorder.codes[node.name], axis=0),
        ))
    return layers
