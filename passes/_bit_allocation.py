"""Bits where they matter: per-layer quantization settings from a bits-per-weight budget.

``quantize: {target_bits_per_weight: 4.25}`` gives each quantized layer (linears, and the embedding
tables when ``embeddings: true``) one of the ``candidates`` (bits, group size), chosen from a
**measured** sensitivity instead of one global setting (HAWQ-V3, Yao et al. 2021, arXiv:2011.10680,
allocates bits per layer from a sensitivity under a size budget; Olive's mixed precision and
llama.cpp's ``--target-bpw`` do the same for their formats):

1. *Candidates*: those the target does not support (weight dtype, group size, per-channel scales)
   are excluded and reported; per layer, those its shape does not take (a group size not dividing
   ``in_features``) are excluded for that layer and reported.
2. *Sensitivity*: for each layer and candidate, that one layer is replaced by its round-to-nearest
   quantization, every other layer stays float32, and the mean per-token KL divergence
   ``KL(p_float || p_quantized)`` of the final logits over the first ``SENSITIVITY_SAMPLES``
   calibration samples is measured (nats per token).
3. *Allocation*: every layer starts at its cheapest candidate; then, greedily, the upgrade (a layer
   moving to a candidate with more bytes and lower sensitivity) with the largest sensitivity
   reduction per extra byte that still fits the budget is taken, until none fits (the greedy
   solution of the multiple-choice knapsack that HAWQ-V3 solves as an integer program; per-layer
   sensitivities are taken as additive).

Bits per weight are counted over every quantized weight, embeddings and head included: packed
codes, float16 scales and (asymmetric) uint8 zero points, divided by the number of weights; int4
g32 is ``4 + 16/32 = 4.5``, int4 g128 ``4.125`` (``slmc.quantization.formats``). AWQ's float32
per-input-channel scales are not part of the budget (the pass report's ``bits_per_weight`` counts them).

Precondition: the graph runs eagerly on the calibration samples and its first output is the logits.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
from pydantic import Field
from torch import fx

from slmc.errors import BitBudgetError
from slmc.graph.ir import Graph, fetch_attr, set_attr
from slmc.graph.linears import attribute_readers, layer_name
from slmc.quantization.formats import SCALE_DTYPE, QuantFormat, quantize_rtn
from slmc.spec.strict_model import StrictModel
from slmc.spec.target import TargetDescriptor

SENSITIVITY_SAMPLES = 8
FIELD = "quantize.target_bits_per_weight"


class BitCandidate(StrictModel):
    """One setting a layer may get under ``target_bits_per_weight``."""

    bits: Literal[4, 8]
    group_size: int | None = Field(None, ge=8, le=4096, description="input channels per scale; null: per output channel")

    def fmt(self, symmetric: bool) -> QuantFormat:
        return QuantFormat(self.bits, self.group_size, symmetric)

    def nominal_bits_per_weight(self, symmetric: bool = True) -> float:
        """Bits per weight for a wide layer (per-channel scales cost nothing in the limit)."""
        if self.group_size is None:
            return float(self.bits)
        return self.bits + (8 * SCALE_DTYPE.itemsize + (0 if symmetric else 8)) / self.group_size

    def describe(self) -> str:
        return f"int{self.bits} {'per-channel' if self.group_size is None else f'g{self.group_size}'}"


def default_candidates() -> list[BitCandidate]:
    return [BitCandidate(bits=4, group_size=128), BitCandidate(bits=4, group_size=64), BitCandidate(bits=4, group_size=32),
            BitCandidate(bits=8, group_size=128), BitCandidate(bits=8, group_size=None)]


def stored_bytes(candidate: BitCandidate, out_features: int, in_features: int, symmetric: bool) -> int:
    """Bytes of the packed codes, scales and zero points of a ``[out, in]`` weight (as ``QuantizedWeight.stored_bytes``)."""
    groups = out_features * (in_features // candidate.fmt(symmetric).group(in_features))
    return out_features * in_features * candidate.bits // 8 + groups * SCALE_DTYPE.itemsize + (0 if symmetric else groups)


def why_unsupported(candidate: BitCandidate, target: TargetDescriptor) -> str | None:
    """Why ``target`` cannot run ``candidate``, or ``None``."""
    caps = target.quantization
    if not target.supports_weight_dtype(f"int{candidate.bits}"):
        return f"weight dtype int{candidate.bits} is not supported (the target supports {target.dtypes.weights})"
    if candidate.group_size is None and not caps.per_channel:
        return f"per-channel scales are not supported (the target's group sizes are {caps.group_sizes})"
    if candidate.group_size is not None and candidate.group_size not in caps.group_sizes:
        return f"group size {candidate.group_size} is not supported (the target's group sizes are {caps.group_sizes})"
    return None


def supported_candidates(candidates: Sequence[BitCandidate], target: TargetDescriptor
                         ) -> tuple[list[BitCandidate], list[dict[str, str]]]:
    """The candidates ``target`` supports, and each excluded one with the reason."""
    kept, excluded = [], []
    for candidate in candidates:
        why = why_unsupported(candidate, target)
        if why is None:
            kept.append(candidate)
        else:
            excluded.append({"candidate": candidate.describe(), "why": why})
    return kept, excluded


def allocation_problems(candidates: Sequence[BitCandidate], target: TargetDescriptor) -> list[tuple[str, str]]:
    """``(field, message)`` when ``target`` supports none of ``candidates`` (a recipe check)."""
    usable, excluded = supported_candidates(candidates, target)
    if usable:
        return []
    return [("target_bits_per_weight", f"the target supports none of the candidates: "
             + "; ".join(f"{e['candidate']}: {e['why']}" for e in excluded))]


@dataclass(frozen=True)
class WeightSlot:
    """A layer to allocate bits to: its name, the attribute path of its float weight ``[out, in]``, kind, symmetry."""

    name: str
    weight_path: str
    kind: str
    symmetric: bool


@dataclass
class _Options:
    """The candidates one layer takes, with their bytes and measured sensitivities."""

    slot: WeightSlot
    shape: tuple[int, int]
    candidates: list[BitCandidate] = field(default_factory=list)
    nbytes: list[int] = field(default_factory=list)
    sensitivity: list[float] = field(default_factory=list)
    excluded: list[dict[str, str]] = field(default_factory=list)


@dataclass
class Allocation:
    """The chosen candidate of each layer, and the report of how it was chosen."""

    choices: dict[str, BitCandidate]
    report: dict[str, Any]


def _kl_per_token(reference: torch.Tensor, logits: torch.Tensor) -> tuple[float, int]:
    """Summed ``KL(p_ref || p)`` over the positions of ``[..., V]`` log-probabilities/logits, and the position count."""
    logp = torch.log_softmax(logits.to(torch.float64).reshape(-1, logits.shape[-1]), dim=-1)
    ref = reference.reshape(-1, reference.shape[-1])
    return max(float((ref.exp() * (ref - logp)).sum()), 0.0), ref.shape[0]  # float rounding can dip below 0


def _measure(graph: Graph, options: list[_Options], samples: Sequence[tuple[Any, ...]]) -> None:
    """Fill each layer's ``sensitivity`` (see the module docstring); weights are restored afterwards."""
    references = [torch.log_softmax(graph.run(*s)[0].to(torch.float64), dim=-1) for s in samples]
    with torch.no_grad():
        for option in options:
            original = fetch_attr(graph.module, option.slot.weight_path)
            try:
                for candidate in option.candidates:
                    quantized = quantize_rtn(original, candidate.fmt(option.slot.symmetric)).dequantize()
                    set_attr(graph.module, option.slot.weight_path, quantized.to(original.dtype))
                    kl, count = 0.0, 0
                    for sample, reference in zip(samples, references):
                        part, n = _kl_per_token(reference, graph.run(*sample)[0])
                        kl, count = kl + part, count + n
                    option.sensitivity.append(kl / max(count, 1))
            finally:
                set_attr(graph.module, option.slot.weight_path, original)


def _greedy(options: list[_Options], budget: int) -> list[int]:
    """Index of the chosen candidate per layer (see step 3 of the module docstring)."""
    chosen = [min(range(len(o.candidates)), key=lambda i, o=o: (o.nbytes[i], o.sensitivity[i])) for o in options]
    used = sum(o.nbytes[c] for o, c in zip(options, chosen))
    while True:
        best: tuple[float, int, int] | None = None
        for li, o in enumerate(options):
            now = chosen[li]
            for ci in range(len(o.candidates)):
                extra = o.nbytes[ci] - o.nbytes[now]
                gain = o.sensitivity[now] - o.sensitivity[ci]
                if extra > 0 and gain > 0 and used + extra <= budget and (best is None or gain / extra > best[0]):
                    best = (gain / extra, li, ci)
        if best is None:
            return chosen
        _, li, ci = best
        used += options[li].nbytes[ci] - options[li].nbytes[chosen[li]]
        chosen[li] = ci


def allocate_bits(graph: Graph, slots: Sequence[WeightSlot], candidates: Sequence[BitCandidate], target_bpw: float,
                  target: TargetDescriptor, calibration: Sequence[tuple[Any, ...]]) -> Allocation:
    """Choose a candidate per slot so the bits per weight stay ``<= target_bpw`` (module docstring).

    Raises ``BitBudgetError`` when the target supports no candidate, or when even the cheapest
    candidate of every layer exceeds the budget (naming the minimum achievable bits per weight).
    """
    usable, excluded = supported_candidates(candidates, target)
    if not usable:
        raise BitBudgetError(FIELD, allocation_problems(candidates, target)[0][1] + f" (target '{target.name}')")
    options = []
    for slot in slots:
        weight = fetch_attr(graph.module, slot.weight_path)
        out_features, in_features = int(weight.shape[0]), int(weight.shape[1])
        option = _Options(slot, (out_features, in_features))
        for candidate in usable:
            problem = candidate.fmt(slot.symmetric).check_shape(out_features, in_features)
            if problem is not None:
                option.excluded.append({"candidate": candidate.describe(), "why": problem})
                continue
            option.candidates.append(candidate)
            option.nbytes.append(stored_bytes(candidate, out_features, in_features, slot.symmetric))
        options.append(option)
    unfit = [o for o in options if not o.candidates]
    if unfit:
        raise BitBudgetError(FIELD, "no candidate fits layer(s) " + "; ".join(
            f"{o.slot.name} {list(o.shape)}: " + ", ".join(f"{e['candidate']} ({e['why']})" for e in o.excluded) for o in unfit))
    weights = sum(o.shape[0] * o.shape[1] for o in options)
    budget = int(target_bpw * weights // 8)
    minimum = sum(min(o.nbytes) for o in options)
    if minimum > budget:
        raise BitBudgetError(FIELD, f"{target_bpw} bits per weight is below the minimum achievable with the candidates "
                             f"{[c.describe() for c in usable]}: {8 * minimum / weights:.4f} (every layer at its cheapest candidate)",
                             minimum=8 * minimum / weights)
    _measure(graph, options, list(calibration)[:SENSITIVITY_SAMPLES])
    chosen = _greedy(options, budget)
    used = sum(o.nbytes[c] for o, c in zip(options, chosen))
    layers = [{"layer": o.slot.name, "kind": o.slot.kind, "shape": list(o.shape),
               "tried": [{"candidate": c.describe(), "bytes": b, "bits_per_weight": round(8 * b / (o.shape[0] * o.shape[1]), 4),
                          "sensitivity_kl": s} for c, b, s in zip(o.candidates, o.nbytes, o.sensitivity)],
               "excluded": o.excluded, "chosen": o.candidates[i].describe(), "bytes": o.nbytes[i]}
              for o, i in zip(options, chosen)]
    report = {"target_bits_per_weight": target_bpw, "achieved_bits_per_weight": round(8 * used / weights, 4),
              "counted": "every quantized weight (linears, embeddings and output head): packed codes + float16 scales + "
                         "uint8 zero points, over the number of weights",
              "budget_bytes": budget, "allocated_bytes": used, "weights": weights,
              "sensitivity": f"mean per-token KL(float || one layer RTN-quantized) of the final logits, "
                             f"{min(len(calibration), SENSITIVITY_SAMPLES)} calibration samples",
              "candidates": [c.describe() for c in usable], "excluded_candidates": excluded, "layers": layers}
    return Allocation({o.slot.name: o.candidates[i] for o, i in zip(options, chosen)}, report)


def weight_slots(graph: Graph, layers: Sequence[tuple[str, str]], embeddings: bool,
                 symmetric_for: Callable[[str], bool | None]) -> list[WeightSlot]:
    """The slots to allocate: each ``(name, weight path)`` linear and (``embeddings``) each embedding
    table only its gather reads, for which ``symmetric_for(name)`` gives a symmetry (``None``: the
    layer is not quantized weight-only). A linear whose weight is shared (a tied head) is measured by
    quantizing the shared table, so its sensitivity includes the embedding's."""
    slots = [WeightSlot(name, path, "linear", sym) for name, path in layers if (sym := symmetric_for(name)) is not None]
    if not embeddings:
        return slots
    readers = attribute_readers(graph)
    for node in graph.graph.nodes:
        table = node.args[0] if node.op == "call_function" and node.target is torch.ops.aten.embedding.default else None
        if isinstance(table, fx.Node) and table.op == "get_attr" and readers.get(str(table.target), 0) == 1:
            name = layer_name(str(table.target))
            if (sym := symmetric_for(name)) is not None:
                slots.append(WeightSlot(name, str(table.target), "embedding", sym))
    return slots
