"""Bits where they matter: per-layer quantization settings from a bits-per-weight budget.

``quantize: {target_bits_per_weight: 4.25}`` gives each quantized layer (linears, and the embedding
tables when ``embeddings: true``) one of the ``candidates`` (bits, group size), chosen from a
**measured** sensitivity instead of one global setting (HAWQ-V3, Yao et al. 2021, arXiv:2011.10680,
allocates bits per layer from a sensitivity under a size budget; Olive's mixed precision and
llama.cpp's ``--target-bpw`` do the same for their formats):

1. *Candidates* (bits, group size, symmetric or with zero points, min-max or clip-searched ranges;
   ``slmc.quantization.formats``: every one is a stored format the quantized kernels run): those the
   target does not support (weight dtype, group size, per-channel scales, zero points) are excluded
   and reported; per layer, those its shape does not take (a group size not dividing
   ``in_features``) are excluded for that layer and reported.
2. *Sensitivity*: for each layer and candidate, that one layer is replaced by its quantization **with
   the quantizer that will be applied** (the caller's ``LayerQuantizer``: GPTQ on the layer's input
   Hessian when the recipe says gptq, round to nearest for embedding tables), every other layer stays
   float32, and the mean per-token KL divergence ``KL(p_float || p_quantized)`` of the final logits
   over the first ``SENSITIVITY_SAMPLES`` calibration samples is measured (nats per token).
3. *Allocation*: the candidate per layer minimizing the summed sensitivities within the byte budget,
   solved exactly as a multiple-choice knapsack by dynamic programming over bytes (in units of the
   greatest common divisor of all candidates' bytes; HAWQ-V3 solves the same problem as an integer
   program). Per-layer sensitivities are taken as additive.

Bits per weight are counted over every quantized weight, embeddings and head included: packed
codes, float16 scales (or 8- or 6-bit scale codes, the 6-bit ones as packed: ``3 * ceil(G / 4)`` bytes per row,
plus a float16 scale per row) and (asymmetric) uint8 zero points, divided by the number of weights; int4 g32 is
``4 + 16/32 = 4.5``, int4 g128 ``4.125``, int4 g32 with 8-bit scale codes ``4 + 8/32 + 16/K``, with 6-bit ones
``4 + 6/32 + 16/K`` (4.25 at ``K = 256``; ``slmc.quantization.formats``). AWQ's float32
per-input-channel scales are not part of the budget (the pass report's ``bits_per_weight`` counts them).

Precondition: the graph runs eagerly on the calibration samples and its first output is the logits.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import torch
from pydantic import Field, model_validator
from torch import fx

from slmc.errors import BitBudgetError
from slmc.graph.ir import Graph, fetch_attr, set_attr
from slmc.graph.linears import attribute_readers, layer_name
from slmc.quantization.formats import ROW_SCALE_DTYPE, SCALE_DTYPE, QuantFormat, packed_scale_columns
from slmc.spec.strict_model import StrictModel
from slmc.spec.target import TargetDescriptor

SENSITIVITY_SAMPLES = 4  # calibration windows per measurement (fixture-lm: 4 x 256 tokens)
MAX_KNAPSACK_CELLS = 1 << 20  # byte units of the knapsack table; beyond, bytes are rounded up to coarser units
FIELD = "quantize.target_bits_per_weight"


class BitCandidate(StrictModel):
    """One setting a layer may get under ``target_bits_per_weight``."""

    bits: Literal[4, 8]
    group_size: int | None = Field(None, ge=8, le=4096, description="input channels per scale; null: per output channel")
    symmetric: bool | None = Field(None, description="false: per-group uint8 zero points (asymmetric); null: the layer's "
                                   "own `symmetric` setting")
    clip_search: bool = Field(False, description="choose each group's range by a clip search (smallest squared rounding "
                              "error) instead of min-max; same storage")
    scale_codes: bool = Field(False, description="store the group scales as uint8 codes times a float16 scale per output "
                              "row (8 instead of 16 bits per group, plus 16 per row; needs a group_size)")
    scale_code_bits: Literal[6, 8] = Field(8, description="bits per scale code with scale_codes: 8, or 6 (packed four "
                                           "per three bytes)")

    @model_validator(mode="after")
    def _grouped_codes(self) -> BitCandidate:
        if self.scale_codes and self.group_size is None:
            raise ValueError("scale_codes needs a group_size (per-channel scales have one scale per row already)")
        if self.scale_code_bits != 8 and not self.scale_codes:
            raise ValueError(f"scale_code_bits {self.scale_code_bits} takes scale_codes: true")
        return self

    def is_symmetric(self, layer_symmetric: bool) -> bool:
        return layer_symmetric if self.symmetric is None else self.symmetric

    def fmt(self, symmetric: bool) -> QuantFormat:
        return QuantFormat(self.bits, self.group_size, self.is_symmetric(symmetric), self.clip_search, self.scale_codes,
                           self.scale_code_bits)

    def nominal_bits_per_weight(self, symmetric: bool = True) -> float:
        """Bits per weight for a wide layer (per-channel scales and row scales cost nothing in the limit)."""
        if self.group_size is None:
            return float(self.bits)
        scale = self.scale_code_bits if self.scale_codes else 8 * SCALE_DTYPE.itemsize
        return self.bits + (scale + (0 if self.is_symmetric(symmetric) else 8)) / self.group_size

    def describe(self) -> str:
        grouping = "per-channel" if self.group_size is None else f"g{self.group_size}"
        return (f"int{self.bits} {grouping}" + ("" if self.symmetric is not False else " asymmetric")
                + (f" {self.scale_code_bits}-bit scales" if self.scale_codes else "") + (" clip-searched" if self.clip_search else ""))


def default_candidates() -> list[BitCandidate]:
    """Clip-searched int4: g128 (4.125 bits per weight), g128 with zero points (4.1875), g64 (4.25), g64 with
    zero points (4.375), g32 with 6-bit scale codes (``4 + 6/32 + 16/K``: 4.25 at ``K = 256``), g32 (4.5); and
    int8 g128 (8.125) for the most sensitive layers. Each candidate costs one measurement per layer
    (``SENSITIVITY_SAMPLES`` forward passes): min-max int4 (whose error the clip search never exceeds per group),
    int4 g32 with zero points (4.75) and int8 per channel are left out. g32 with 6-bit scale codes lets a 4.25
    budget buy g32 on every layer (session 11); 8-bit scale codes stay opt-in (``BitCandidate.scale_codes``):
    on fixture-lm the allocation over them measured worse (docs/quality.md, session 10). A target without
    6-bit scale codes has that candidate excluded and reported."""
    int4 = [BitCandidate(bits=4, group_size=g, symmetric=sym, clip_search=True)
            for g, sym in ((128, None), (128, False), (64, None), (64, False))]
    codes = BitCandidate(bits=4, group_size=32, clip_search=True, scale_codes=True, scale_code_bits=6)
    return int4 + [codes, BitCandidate(bits=4, group_size=32, clip_search=True), BitCandidate(bits=8, group_size=128)]


def stored_bytes(candidate: BitCandidate, out_features: int, in_features: int, symmetric: bool) -> int:
    """Bytes of the packed codes, scales, zero points and row scales of a ``[out, in]`` weight (as
    ``QuantizedWeight.stored_bytes``)."""
    fmt = candidate.fmt(symmetric)
    per_row = in_features // fmt.group(in_features)
    groups = out_features * per_row
    codes = out_features * packed_scale_columns(per_row, fmt.scale_code_bits)  # one byte per 8-bit code; 6-bit packed
    scales = codes + out_features * ROW_SCALE_DTYPE.itemsize if fmt.scale_codes else groups * SCALE_DTYPE.itemsize
    return out_features * in_features * candidate.bits // 8 + scales + (0 if fmt.symmetric else groups)


def why_unsupported(candidate: BitCandidate, target: TargetDescriptor) -> str | None:
    """Why ``target`` cannot run ``candidate``, or ``None``."""
    caps = target.quantization
    if not target.supports_weight_dtype(f"int{candidate.bits}"):
        return f"weight dtype int{candidate.bits} is not supported (the target supports {target.dtypes.weights})"
    if candidate.group_size is None and not caps.per_channel:
        return f"per-channel scales are not supported (the target's group sizes are {caps.group_sizes})"
    if candidate.group_size is not None and candidate.group_size not in caps.group_sizes:
        return f"group size {candidate.group_size} is not supported (the target's group sizes are {caps.group_sizes})"
    if candidate.symmetric is False and not caps.zero_points:
        return "asymmetric formats (zero points) are not supported (the target takes symmetric formats only)"
    if candidate.scale_codes and not caps.scale_codes:
        return "uint8 scale codes are not supported (quantization.scale_codes is false)"
    if candidate.scale_codes and candidate.scale_code_bits not in caps.scale_code_bits:
        return (f"{candidate.scale_code_bits}-bit scale codes are not supported (quantization.scale_code_bits is "
                f"{caps.scale_code_bits})")
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
    """A layer to allocate bits to: its name, the attribute path of its float weight ``[out, in]``, kind,
    symmetry, and (linears) the name of the node that reads it."""

    name: str
    weight_path: str
    kind: str
    symmetric: bool
    node: str | None = None


LayerQuantizer = Callable[[WeightSlot, torch.Tensor, QuantFormat], torch.Tensor]
"""``(slot, float weight, format) -> the weight as the quantized layer computes it`` (dequantized)."""
SlotMeasure = Callable[[WeightSlot, LayerQuantizer], None]
SlotVisitor = Callable[[Sequence[WeightSlot], SlotMeasure], None]
"""``visit(slots, measure)`` calls ``measure(slot, quantizer)`` once per slot with a quantizer for that slot, so
the statistics a quantizer needs (a linear's input Hessian) can be collected per slot and freed after it,
not held for every layer at once (``slmc.graph.activations.calibrate_sequentially``)."""


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


def _measure(graph: Graph, options: list[_Options], samples: Sequence[tuple[Any, ...]], visit: SlotVisitor) -> None:
    """Fill each layer's ``sensitivity`` (see the module docstring), layer by layer as ``visit`` hands out
    their quantizers; weights are restored after each layer."""
    with torch.no_grad():
        references = [torch.log_softmax(graph.run(*s)[0].to(torch.float64), dim=-1) for s in samples]
    by_name = {o.slot.name: o for o in options}

    def measure(slot: WeightSlot, quantizer: LayerQuantizer) -> None:
        option = by_name[slot.name]
        original = fetch_attr(graph.module, slot.weight_path)
        try:
            with torch.no_grad():
                for candidate in option.candidates:
                    quantized = quantizer(slot, original, candidate.fmt(slot.symmetric))
                    set_attr(graph.module, slot.weight_path, quantized.to(original.dtype))
                    kl, count = 0.0, 0
                    for sample, reference in zip(samples, references):
                        part, n = _kl_per_token(reference, graph.run(*sample)[0])
                        kl, count = kl + part, count + n
                    option.sensitivity.append(kl / max(count, 1))
        finally:
            set_attr(graph.module, slot.weight_path, original)

    visit([o.slot for o in options], measure)
    unmeasured = [o.slot.name for o in options if len(o.sensitivity) != len(o.candidates)]
    if unmeasured:  # a visitor that skips or repeats a slot is a programming error; an allocation without it must not pass
        raise BitBudgetError(FIELD, f"the sensitivity of layer(s) {unmeasured} was not measured exactly once per candidate")


def knapsack(costs: Sequence[Sequence[int]], values: Sequence[Sequence[float]], budget: int) -> tuple[list[int], int]:
    """The item per group minimizing the summed ``values`` with summed ``costs <= budget`` (the
    multiple-choice knapsack, one item per group), by dynamic programming over cost units; and the unit.

    The unit is the greatest common divisor of all costs (exact), or coarser when the table would exceed
    ``MAX_KNAPSACK_CELLS`` cells (costs rounded up to it: the solution still fits, it may miss the optimum).
    Precondition: the groups' cheapest items fit together (``sum(min(c)) <= budget`` in rounded units).
    """
    unit = int(np.gcd.reduce([int(c) for group in costs for c in group]))
    unit = max(unit, -(-budget // MAX_KNAPSACK_CELLS))
    cells = budget // unit
    best = np.zeros(cells + 1)  # best[b]: the smallest summed value of the groups so far within b units
    picks = []
    for group_costs, group_values in zip(costs, values):
        table = np.full((len(group_costs), cells + 1), np.inf)
        for i, (cost, value) in enumerate(zip(group_costs, group_values)):
            width = -(-int(cost) // unit)
            if width <= cells:
                table[i, width:] = best[:cells + 1 - width] + value
        picks.append(np.argmin(table, axis=0).astype(np.uint16))  # ~2 MB per group at the cell limit
        best = table.min(axis=0)
    if not np.isfinite(best[cells]):
        raise BitBudgetError(FIELD, f"the cheapest candidates fit the budget of {budget} B, but not once their byte "
                             f"counts are rounded up to the allocation's unit of {unit} B; raise the target a little")
    chosen, left = [], cells
    for group_costs, pick in zip(reversed(costs), reversed(picks)):
        i = int(pick[left])
        chosen.append(i)
        left -= -(-int(group_costs[i]) // unit)
    return chosen[::-1], unit


def allocate_bits(graph: Graph, slots: Sequence[WeightSlot], candidates: Sequence[BitCandidate], target_bpw: float,
                  target: TargetDescriptor, calibration: Sequence[tuple[Any, ...]], visit: SlotVisitor,
                  quantizer_name: str) -> Allocation:
    """Choose a candidate per slot so the bits per weight stay ``<= target_bpw`` (module docstring);
    ``visit`` hands out, slot by slot, a quantizer for one layer as the pass will quantize it
    (``quantizer_name`` says how, for the report).

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
    _measure(graph, options, list(calibration)[:SENSITIVITY_SAMPLES], visit)
    chosen, unit = knapsack([o.nbytes for o in options], [o.sensitivity for o in options], budget)
    used = sum(o.nbytes[c] for o, c in zip(options, chosen))
    if used > budget:  # knapsack rounds costs up, so this cannot happen; a wrong allocation must not pass silently
        raise BitBudgetError(FIELD, f"allocated {used} B over the budget of {budget} B")
    layers = [{"layer": o.slot.name, "kind": o.slot.kind, "shape": list(o.shape),
               "tried": [{"candidate": c.describe(), "bytes": b, "bits_per_weight": round(8 * b / (o.shape[0] * o.shape[1]), 4),
                          "sensitivity_kl": s} for c, b, s in zip(o.candidates, o.nbytes, o.sensitivity)],
               "excluded": o.excluded, "chosen": o.candidates[i].describe(),
               "format": o.candidates[i].fmt(o.slot.symmetric).describe(), "bytes": o.nbytes[i]}
              for o, i in zip(options, chosen)]
    report = {"target_bits_per_weight": target_bpw, "achieved_bits_per_weight": round(8 * used / weights, 4),
              "counted": "every quantized weight (linears, embeddings and output head): packed codes + float16 scales (or "
                         "8- or 6-bit scale codes as stored + float16 row scales) + uint8 zero points, over the number "
                         "of weights",
              "budget_bytes": budget, "allocated_bytes": used, "weights": weights,
              "sensitivity": f"mean per-token KL(float || one layer quantized by {quantizer_name}) of the final logits, "
                             f"{min(len(calibration), SENSITIVITY_SAMPLES)} calibration samples",
              "allocation": f"exact multiple-choice knapsack over (bytes, sensitivity), dynamic programming in units of "
                            f"{unit} B" + ("" if unit == int(np.gcd.reduce([b for o in options for b in o.nbytes]))
                                          else " (bytes rounded up to it: may miss the optimum)"),
              "summed_sensitivity": sum(o.sensitivity[i] for o, i in zip(options, chosen)),
              "candidates": [c.describe() for c in usable], "excluded_candidates": excluded, "layers": layers}
    return Allocation({o.slot.name: o.candidates[i] for o, i in zip(options, chosen)}, report)


def weight_slots(graph: Graph, layers: Sequence[tuple[str, str, str]], embeddings: bool,
                 symmetric_for: Callable[[str], bool | None]) -> list[WeightSlot]:
    """The slots to allocate: each ``(name, weight path, node name)`` linear and (``embeddings``) each embedding
    table only its gather reads, for which ``symmetric_for(name)`` gives a symmetry (``None``: the
    layer is not quantized weight-only). A linear whose weight is shared (a tied head) is measured by
    quantizing the shared table, so its sensitivity includes the embedding's."""
    slots = [WeightSlot(name, path, "linear", sym, node) for name, path, node in layers
             if (sym := symmetric_for(name)) is not None]
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
