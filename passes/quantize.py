"""``quantize``: weight-only int8/int4 (RTN, GPTQ, AWQ), static w8a8 (with SmoothQuant) and w4a8.

Every linear layer (``slmc.graph.linears``) and, with ``embeddings: true``, every embedding table is
replaced by a quantized op of ``slmc.quantization.ops`` whose weights stay packed down to the
compiled kernel (``slmc.quantization.tvm_kernels``). Methods:

- ``rtn``: round to nearest with per-group min-max ranges;
- ``gptq``: Frantar et al., 2022 (arXiv:2210.17323), layer by layer in graph order, each layer
  calibrated on the activations of the already-quantized layers before it;
- ``awq``: Lin et al., 2023 (arXiv:2306.00978), activation-aware channel scaling + clip search;
- scheme ``w8a8``: int8 weights (per output channel, symmetric) and static int8 activations
  (per tensor; ``minmax`` or ``percentile`` observer), optionally after SmoothQuant migration
  (Xiao et al., 2022, arXiv:2211.10438) with strength ``smoothquant.alpha``;
- scheme ``w4a8``: symmetric int4 weights (``bits: 4`` is implied; a group size that is a multiple of 8,
  e.g. 32/64/128, or per channel) chosen by ``method`` ``rtn`` or ``gptq``, and *dynamic* per-token
  int8 activations (each token's row scaled by its own ``max|x| / 127`` at run time: no calibration
  of activation ranges; with ``activation_group_size`` each block of that many inputs of a row has its own
  scale instead, a whole number of weight groups: 32 with ``group_size: 32`` is llama.cpp's Q4_0 x Q8_0
  granularity). Each group's int8 x int4 dot product is summed in int32 on the target's int8
  dot-product instructions (``vpdpbusd``, ``sdot``), scaled and accumulated in float32 for decode and
  prefill alike (``slmc.quantization.ops.w4a8_linear``; ExecuTorch's 8da4w, llama.cpp's Q4_0 x Q8_0,
  llm-compressor's W4AINT8). The target must list ``compute.int8_dot`` (else the recipe is refused
  naming it), ``int8`` activations and the ``w4a8`` scheme. Embedding tables stay weight-only int4, except a
  table tied to a w4a8 head, which gathers the head's codes (``w4a8_embedding``: stored once). The
  codes are stored nibble-paired in blocks of 8 inputs (``slmc.quantization.w4a8_layout``): a layer whose
  ``in_features`` is not a multiple of 8 (per channel) stays float32, reported with the reason.

``overrides`` (applied in order; later matches win) change the settings of layers whose name
matches a glob: mixed precision (``bits: 8`` for ``*lm_head``), other group sizes, or ``skip``.
Layer names are weight paths without ``.weight`` (``model.model.layers.0.mlp.down_proj``).
A layer whose ``in_features`` the group size does not divide (a Llama with intermediate 688 under
g32) falls back per ``group_fallback``: by default to the largest group size the target supports that
divides it, else per channel; each fallback is in the report (``stats.group_fallbacks``). A w4a8
layer whose ``activation_group_size`` does not divide its ``in_features`` (or is no multiple of the group
size it got) takes one activation scale per token instead, reported the same way.
A tied embedding table and output head are stored once: the embedding gathers rows of the head's
packed codes and scales (the head's quantization; both layers' reports say so).
Norms, biases and other small tensors are never quantized; every layer left in float32 is
listed in the report with the reason. The target must list the weight dtype (``int4``/``int8``),
the group size (or per-channel), zero points for asymmetric formats, and ``int8`` activations
and the ``w8a8`` scheme for ``w8a8``; ``w4a8`` as above.

``target_bits_per_weight`` (with ``candidates``) chooses each weight-only layer's format (bits, group
size, zero points, clip search) from its sensitivity, measured with the layer's own method, under a
bits-per-weight budget (``passes/_bit_allocation.py``); the choice is applied as one more override per
layer, and the allocation is in ``stats.bit_allocation``. ``clip_search`` chooses each group's range by
the smallest squared rounding error instead of min-max (``slmc.quantization.formats``). ``scale_codes`` stores
each group's scale as a uint8 code under a float16 scale per output row (double-quantized scales, Dettmers et
al. 2023): the kernels run the codes as their scales, and the row scale multiplies the op's output (a gather's
rows) once per output feature, before the bias (weight-only and ``w4a8`` layers alike: the int4 x int8 kernel
multiplies each group's int32 sum by its code where it would by its float16 scale). ``scale_code_bits: 6`` stores those codes in 6 bits, packed
four per three bytes (int4 g32 at ``4 + 6/32 + 16/K`` bits per weight, 4.25 at ``K = 256``); the kernels unpack them.
"""

from __future__ import annotations

import fnmatch
import glob
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal, get_args

import numpy as np
import torch
from pydantic import Field, model_validator
from torch import fx

aten = torch.ops.aten

from slmc.errors import NodeError
from slmc.graph.activations import InputStatistics, calibrate_sequentially, linear_input_statistics
from slmc.graph.ir import Graph, del_attr, fetch_attr, has_attr, set_attr
from slmc.graph.linears import LinearLayer, attribute_readers, layer_name, selected_layers
from slmc.spec.pass_registry import PassConfig, PassContext, PassOutcome, Skip, register_pass
from slmc.passes._bit_allocation import (BitCandidate, LayerQuantizer, SlotMeasure, SlotVisitor, WeightSlot, allocate_bits,
                                         allocation_problems, default_candidates, weight_slots)
from slmc.passes._quantize_handlers import METHODS, SCHEMES, HandlerRegistry, calibrated_methods, register_scheme
from slmc.quantization.awq import output_error
from slmc.quantization.formats import QuantFormat, QuantizedWeight, quantize_rtn
from slmc.quantization.ops import (QUANTIZED_EMBEDDING, QUANTIZED_LINEAR, W4A8_EMBEDDING, W4A8_LINEAR, W8A8_LINEAR,
                                   activation_group_problem)
from slmc.quantization.w4a8_layout import layout_problem, pack_paired
from slmc.quantization.stored_names import own_copy_name
from slmc.quantization.smoothquant import activation_scale, sample_input_rows, smoothing_factors
from slmc.spec.strict_model import StrictModel
from slmc.spec.target import TargetDescriptor

Scheme = Literal["weight_only", "w8a8", "w4a8"]
W4A8_METHODS = ("rtn", "gptq")  # methods whose codes need no input scaling (AWQ's would need the activations rescaled)
W4A8_GROUP_MULTIPLE = 8  # int4 codes pack in pairs and int8 dot-product tiles take 4 inputs: 8 keeps both whole
Method = Literal["rtn", "gptq", "awq"]
SCALE_CODE_SCHEMES = ("weight_only", "w4a8")  # schemes whose kernels read scale codes (w8a8's scales are per channel)


class GptqOptions(StrictModel):
    damp: float = Field(0.01, gt=0.0, le=1.0, description="fraction of mean(diag H) added to H's diagonal")
    block_size: int = Field(128, ge=1, le=65536, description="columns per lazy batch update")
    act_order: bool = Field(False, description="quantize columns in order of decreasing activation energy")


class AwqOptions(StrictModel):
    grid: int = Field(20, ge=1, le=1000, description="alpha values tried in [0, 1)")
    clip_search: bool = Field(True, description="also search each group's clipping range")
    max_shrink: float = Field(0.5, gt=0.0, lt=1.0)


class SmoothQuantOptions(StrictModel):
    alpha: float = Field(0.5, ge=0.0, le=1.0, description="migration strength")


class LayerSettings(StrictModel):
    """Settings one layer may take (the pass's own, or an override's)."""

    scheme: Scheme = "weight_only"
    bits: Literal[4, 8] = 8
    group_size: int | None = Field(None, ge=8, le=4096, description="input channels per scale; null: per output channel")
    symmetric: bool = True
    method: Method = "rtn"
    clip_search: bool = Field(False, description="choose each group's range (scale, zero point) by a clip search: the "
                              "shrink factor with the smallest squared rounding error of the group instead of min-max "
                              "(same stored format; with gptq, searched when GPTQ reaches the group); not for awq "
                              "(awq.clip_search) or w8a8")
    activation_group_size: int | None = Field(
        None, ge=8, le=65536, description="scheme w4a8: inputs per dynamic activation scale within a row (a multiple of "
        "group_size that divides each layer's in_features, e.g. 32 with group_size 32 as llama.cpp's Q8_0 blocks); "
        "null: one scale per token (row)")
    scale_codes: bool = Field(False, description="store each group's scale as a uint8 code times a float16 scale per "
                              "output row (double-quantized scales: 8 instead of 16 bits per group, plus 16 per row); "
                              "scheme weight_only or w4a8, with a group_size")
    scale_code_bits: Literal[6, 8] = Field(8, description="bits per scale code with scale_codes: 8 (uint8, one byte per "
                                           "group) or 6 (codes 1..63 packed four per three bytes: int4 g32 at 4 + 6/32 + "
                                           "16/in_features bits per weight)")

    @model_validator(mode="before")
    @classmethod
    def _w4a8_bits(cls, data: Any) -> Any:
        """``scheme: w4a8`` without ``bits`` means ``bits: 4`` (the pass's default is 8)."""
        if isinstance(data, dict) and data.get("scheme") == "w4a8" and "bits" not in data:
            return {**data, "bits": 4}
        return data


class Override(StrictModel):
    """Settings for the layers whose name matches ``match`` (a glob), as every layer-selecting pass names it."""

    match: str = Field(min_length=1, description="glob over layer names")
    skip: bool = False
    scheme: Scheme | None = None
    bits: Literal[4, 8] | None = None
    group_size: int | None = Field(None, ge=8, le=4096)
    per_channel: bool = Field(False, description="set group_size to per output channel")
    symmetric: bool | None = None
    method: Method | None = None
    clip_search: bool | None = None
    activation_group_size: int | None = Field(None, ge=8, le=65536)
    scale_codes: bool | None = None
    scale_code_bits: Literal[6, 8] | None = None

    @model_validator(mode="before")
    @classmethod
    def _renamed_keys(cls, data: Any) -> Any:
        if isinstance(data, dict) and "pattern" in data:
            raise ValueError("'pattern' was renamed to 'match' (a glob over layer names, as in prune's overrides)")
        return data

    @model_validator(mode="after")
    def _group(self) -> Override:
        if self.per_channel and self.group_size is not None:
            raise ValueError("give either group_size or per_channel: true, not both")
        return self


def _activation_group_setting(settings: LayerSettings) -> str | None:
    """Why ``settings.activation_group_size`` cannot go with the rest of ``settings``, or ``None`` (the layer's own
    ``in_features`` is checked when it is planned: ``slmc.quantization.ops.activation_group_problem``)."""
    size = settings.activation_group_size
    if size is None:
        return None
    if settings.scheme != "w4a8":
        return f"activation_group_size is for scheme w4a8 (dynamic int8 activations), not {settings.scheme}"
    if settings.group_size is None:
        return ("activation_group_size needs grouped weights (group_size): a per-channel weight's dot product spans the "
                "row, so its activations take one scale per token")
    if size % settings.group_size:
        return (f"activation_group_size {size} is not a multiple of group_size {settings.group_size} (each weight group's "
                "int32 dot product must lie in one activation group)")
    return None


class QuantizeConfig(LayerSettings, PassConfig):
    embeddings: bool = Field(True, description="also quantize embedding tables (round to nearest)")
    include: list[str] = Field(default_factory=lambda: ["*"], min_length=1, description="glob patterns of layer names")
    exclude: list[str] = Field(default_factory=list, description="glob patterns of layer names to leave in float32")
    overrides: list[Override] = Field(default_factory=list)
    gptq: GptqOptions = GptqOptions()
    awq: AwqOptions = AwqOptions()
    observer: Literal["minmax", "percentile"] = Field("minmax", description="w8a8 activation range")
    percentile: float = Field(99.99, gt=50.0, le=100.0)
    smoothquant: SmoothQuantOptions | None = None
    group_fallback: Literal["nearest", "per_channel", "error"] = Field(
        "nearest", description="a layer whose in_features the group size does not divide: nearest = the largest group size "
        "the target supports that divides it, else per-channel; per_channel; error = refuse (each fallback is reported "
        "in stats.group_fallbacks). A w4a8 layer whose activation_group_size does not fit falls back to one activation "
        "scale per token (error: refuse)")
    target_bits_per_weight: float | None = Field(
        None, ge=4.0, le=16.0, description="choose each layer's format among `candidates` from its measured "
        "sensitivity (with the layer's own method) so that all quantized weights (embeddings and head included; codes + scales + zero points) average at "
        "most this many bits; null: one setting for all (bits, group_size, overrides)")
    candidates: list[BitCandidate] = Field(default_factory=default_candidates, min_length=1,
                                           description="settings target_bits_per_weight chooses from")

    @model_validator(mode="after")
    def _consistent(self) -> QuantizeConfig:
        if self.target_bits_per_weight is not None:
            cheapest = min(self.candidates, key=lambda c: c.nominal_bits_per_weight(self.symmetric))
            if self.target_bits_per_weight < cheapest.nominal_bits_per_weight(self.symmetric):
                raise ValueError(f"quantize.target_bits_per_weight {self.target_bits_per_weight} is below the smallest "
                                 f"candidate's {cheapest.nominal_bits_per_weight(self.symmetric)} bits per weight "
                                 f"({cheapest.describe()}), the minimum achievable")
            if self.scheme != "weight_only":
                raise ValueError("target_bits_per_weight allocates weight-only settings; it takes scheme weight_only")
        for i, settings in enumerate(self.all_settings()):
            where = "" if i == 0 else f"overrides.{i - 1}: "
            if settings.scheme == "w8a8" and (settings.bits != 8 or settings.group_size is not None or not settings.symmetric
                                              or settings.method != "rtn" or settings.clip_search):
                raise ValueError(f"{where}scheme w8a8 takes bits 8, per-channel, symmetric weights, method rtn and no "
                                 "clip_search")
            if settings.scale_codes and (settings.scheme not in SCALE_CODE_SCHEMES or settings.group_size is None):
                raise ValueError(f"{where}scale_codes takes scheme {' or '.join(SCALE_CODE_SCHEMES)} and a group_size "
                                 f"(got scheme {settings.scheme}, group_size {settings.group_size})")
            if settings.scale_code_bits != 8 and not settings.scale_codes:
                raise ValueError(f"{where}scale_code_bits {settings.scale_code_bits} takes scale_codes: true")
            if settings.clip_search and settings.method == "awq":
                raise ValueError(f"{where}clip_search is for rtn and gptq; awq searches its own clipping (awq.clip_search)")
            if settings.scheme == "w4a8":
                if settings.bits != 4 or not settings.symmetric or settings.method not in W4A8_METHODS:
                    raise ValueError(f"{where}scheme w4a8 takes bits 4, symmetric weights and method "
                                     f"{' or '.join(W4A8_METHODS)} (got bits {settings.bits}, symmetric {settings.symmetric}, "
                                     f"method {settings.method})")
                if settings.group_size is not None and settings.group_size % W4A8_GROUP_MULTIPLE:
                    raise ValueError(f"{where}scheme w4a8 takes a group size that is a multiple of {W4A8_GROUP_MULTIPLE} "
                                     f"(an int8 dot-product tile's inputs lie in one group), got {settings.group_size}")
            problem = _activation_group_setting(settings)
            if problem is not None:
                raise ValueError(f"{where}{problem}")
        return self

    def resolve(self, override: Override, base: LayerSettings) -> LayerSettings:
        data = base.model_dump()
        for key in ("scheme", "bits", "group_size", "symmetric", "method", "clip_search", "activation_group_size",
                    "scale_codes", "scale_code_bits"):
            value = getattr(override, key)
            if value is not None:
                data[key] = value
        if override.per_channel:
            data["group_size"] = None
        if override.scheme == "w8a8":
            data.update(bits=8, group_size=None, symmetric=True, method="rtn", clip_search=False)
        if override.scheme == "w4a8" and override.bits is None:
            data["bits"] = 4
        # an inherited setting the override's layers cannot take is dropped; one the override gives is kept, so that
        # the validator refuses it by name
        if override.activation_group_size is None and (data["scheme"] != "w4a8" or data["group_size"] is None):
            data["activation_group_size"] = None
        if override.scale_codes is None and (data["scheme"] not in SCALE_CODE_SCHEMES or data["group_size"] is None):
            data["scale_codes"] = False
        if override.scale_code_bits is None and not data["scale_codes"]:  # a layer without scale codes keeps no width
            data["scale_code_bits"] = 8
        return LayerSettings(**data)

    def all_settings(self) -> list[LayerSettings]:
        """The pass's own settings, then each override applied to them alone."""
        base = LayerSettings(**{k: getattr(self, k) for k in LayerSettings.model_fields})
        return [base] + [self.resolve(o, base) for o in self.overrides]

    def settings_for(self, name: str) -> LayerSettings | str:
        """A layer's settings after every matching override, or why it stays float32."""
        if not any(fnmatch.fnmatchcase(name, p) for p in self.include):
            return "not matched by include"
        if any(fnmatch.fnmatchcase(name, p) for p in self.exclude):
            return "matched by exclude"
        settings = self.all_settings()[0]
        for override in self.overrides:
            if fnmatch.fnmatchcase(name, override.match):
                if override.skip:
                    return f"skipped by override '{override.match}'"
                settings = self.resolve(override, settings)
        return settings

    def needs_calibration(self) -> str | None:
        calibrated = calibrated_methods({s.method for s in self.all_settings()})
        if calibrated:
            return f"method {'/'.join(calibrated)} needs calibration data"
        if self.target_bits_per_weight is not None:
            return "target_bits_per_weight measures each layer's sensitivity on calibration data"
        if any(s.scheme == "w8a8" for s in self.all_settings()):
            return "scheme w8a8 needs calibration data for its activation ranges"
        return None

    def target_problems(self, target: TargetDescriptor) -> list[tuple[str, str]]:
        problems: list[tuple[str, str]] = []
        caps = target.quantization
        for i, settings in enumerate(self.all_settings()):
            prefix = "" if i == 0 else f"overrides.{i - 1}."
            dtype = f"int{settings.bits}"
            if not target.supports_weight_dtype(dtype):
                problems.append((prefix + "bits", f"weight dtype '{dtype}' is not supported; the target supports {target.dtypes.weights}"))
            if settings.scheme not in caps.schemes:
                problems.append((prefix + "scheme", f"scheme '{settings.scheme}' is not supported; the target supports {caps.schemes}"))
            if settings.scheme in ("w8a8", "w4a8") and "int8" not in target.dtypes.activations:
                problems.append((prefix + "scheme", f"{settings.scheme} needs int8 activations; the target supports "
                                 f"{target.dtypes.activations}"))
            if settings.scheme == "w4a8" and not target.compute.int8_dot:
                problems.append((prefix + "scheme", "w4a8 runs on int8 dot-product instructions and the target lists none "
                                 "(compute.int8_dot is empty; e.g. avx512_vnni, avx_vnni, dotprod); use scheme weight_only"))
            if settings.group_size is None and not caps.per_channel:
                problems.append((prefix + "group_size", f"per-channel scales are not supported; the target's group sizes are {caps.group_sizes}"))
            if settings.group_size is not None and settings.group_size not in caps.group_sizes:
                problems.append((prefix + "group_size", f"group size {settings.group_size} is not supported; the target's group sizes are "
                                 f"{caps.group_sizes}" + (" (and per-channel)" if caps.per_channel else "")))
            if not settings.symmetric and not caps.zero_points:
                problems.append((prefix + "symmetric", "asymmetric quantization (zero points) is not supported; the target takes symmetric formats only"))
            if settings.scale_codes and not caps.scale_codes:
                problems.append((prefix + "scale_codes", "uint8 scale codes are not supported (the target's "
                                 "quantization.scale_codes is false)"))
            elif settings.scale_codes and settings.scale_code_bits not in caps.scale_code_bits:
                problems.append((prefix + "scale_code_bits", f"{settings.scale_code_bits}-bit scale codes are not "
                                 f"supported (the target's quantization.scale_code_bits is {caps.scale_code_bits})"))
        if self.target_bits_per_weight is not None:
            problems += allocation_problems(self.candidates, target)
        return problems

    def with_allocation(self, choices: dict[str, BitCandidate]) -> QuantizeConfig:
        """These settings with one more override per allocated layer (its chosen format)."""
        # awq searches its own clipping (the validator refuses clip_search with it): a candidate's clip search
        # applies to rtn and gptq layers only
        chosen = [Override(match=glob.escape(name), bits=c.bits, group_size=c.group_size, per_channel=c.group_size is None,
                           symmetric=c.symmetric, clip_search=c.clip_search and self.method != "awq",
                           scale_codes=c.scale_codes, scale_code_bits=c.scale_code_bits if c.scale_codes else None)
                  for name, c in choices.items()]
        return self.model_copy(update={"overrides": [*self.overrides, *chosen]})


@dataclass
class _Planned:
    """A layer to quantize and how."""

    layer: LinearLayer
    settings: LayerSettings
    fmt: QuantFormat


def _tied_layers(graph: Graph, plans: list[_Planned]) -> dict[str, str]:
    """For each planned layer whose weight other nodes also read (a tied embedding / output head),
    what happens to it: the layer gets its own quantized copy; the shared table stays for the
    other readers. A quantized embedding then gathers rows of this copy (``_embeddings``: a tied
    table is stored once, in the head's quantization), which rewrites this entry."""
    readers = attribute_readers(graph)
    return {p.layer.name: f"weight '{p.layer.weight_node.target}' is shared with {readers[str(p.layer.weight_node.target)] - 1} "
            "other node(s) (tied); this layer is quantized into its own packed copy"
            for p in plans if readers.get(str(p.layer.weight_node.target), 0) > 1}


def _fallback_group(requested: int, in_features: int, config: QuantizeConfig, target: TargetDescriptor) -> int | None | str:
    """The group size ``config.group_fallback`` picks for a layer ``requested`` does not divide: the
    largest the target supports that divides ``in_features`` (``nearest``), ``None`` (per channel), or
    why there is none (a ``str``). ``error`` is handled by the caller."""
    caps = target.quantization
    if config.group_fallback == "nearest":
        dividing = [g for g in caps.group_sizes if in_features % g == 0]
        if dividing:
            return max(dividing)
    if caps.per_channel:
        return None
    return (f"in_features {in_features} is not a multiple of group_size {requested}, and target '{target.name}' has no "
            f"group size dividing it (group sizes {caps.group_sizes}, no per-channel scales)")


def _format(settings: LayerSettings, group_size: int | None) -> QuantFormat:
    return QuantFormat(settings.bits, group_size, settings.symmetric, settings.clip_search, settings.scale_codes,
                       settings.scale_code_bits)


def _fit_group(name: str, settings: LayerSettings, shape: tuple[int, ...], config: QuantizeConfig, target: TargetDescriptor,
               fallbacks: list[dict[str, Any]]) -> tuple[LayerSettings, QuantFormat] | str:
    """``settings`` and their format for a ``[out, in]`` weight, with the group size fallen back (and
    recorded in ``fallbacks``) when the requested one does not divide ``in``; or why it stays float32.
    ``NodeError`` when ``group_fallback`` is ``error`` and the group size does not divide."""
    fmt = _format(settings, settings.group_size)
    problem = fmt.check_shape(*shape)
    in_features = shape[1]
    if problem is None or settings.group_size is None or in_features % settings.group_size == 0:
        return problem or (settings, fmt)
    if config.group_fallback == "error":
        raise NodeError(name, f"{problem} (group_fallback: error; 'nearest' or 'per_channel' quantize it with another "
                              "grouping, or exclude the layer)")
    requested = settings.group_size
    used = _fallback_group(requested, in_features, config, target)
    if isinstance(used, str):
        return used
    codes = settings.scale_codes and used is not None
    settings = settings.model_copy(update={"group_size": used, "scale_codes": codes,
                                           "scale_code_bits": settings.scale_code_bits if codes else 8})
    fmt = _format(settings, used)
    problem = fmt.check_shape(*shape)
    if problem is not None:
        return problem
    fallbacks.append({"layer": name, "requested_group_size": requested, "used_group_size": used,
                      "why": f"in_features {in_features} is not a multiple of group_size {requested}",
                      "rule": config.group_fallback})
    return settings, fmt


def _fit_activation_group(name: str, in_features: int, settings: LayerSettings, fmt: QuantFormat, config: QuantizeConfig,
                          fallbacks: list[dict[str, Any]]) -> tuple[LayerSettings, QuantFormat]:
    """A w4a8 layer's settings with its activation groups checked against its ``in_features`` and the weight group it
    uses (after ``_fit_group``'s fallback). Groups that do not fit fall back to one scale per token, recorded in
    ``fallbacks`` (beside the layer's weight-group fallback, if any); ``NodeError`` when ``group_fallback`` is ``error``."""
    requested = settings.activation_group_size
    problem = activation_group_problem(in_features, fmt.group(in_features), requested)
    if problem is None:
        return settings, fmt
    if config.group_fallback == "error":
        raise NodeError(name, f"{problem} (group_fallback: error; 'nearest' or 'per_channel' take one activation scale per "
                              "token for it, or exclude the layer)")
    entry = next((f for f in fallbacks if f["layer"] == name), None)
    if entry is None:
        entry = {"layer": name, "why": problem, "rule": config.group_fallback}
        fallbacks.append(entry)
    else:
        entry["why"] += f"; {problem}"
    entry.update(requested_activation_group_size=requested, used_activation_group_size=None)
    return settings.model_copy(update={"activation_group_size": None}), fmt


def _plan(graph: Graph, config: QuantizeConfig, target: TargetDescriptor,
          fallbacks: list[dict[str, Any]]) -> tuple[list[_Planned], list[Skip]]:
    _, candidates, skipped = selected_layers(graph, config.include, config.exclude, "quantized", allow_shared=True)
    plans = []
    for layer in candidates:
        settings = config.settings_for(layer.name)
        if isinstance(settings, str):
            skipped.append(Skip(layer.name, settings))
            continue
        fitted = _fit_group(layer.name, settings, tuple(layer.weight(graph).shape), config, target, fallbacks)
        if not isinstance(fitted, str) and settings.scheme == "w4a8":  # its own layout (slmc.quantization.w4a8_layout)
            in_features = int(layer.weight(graph).shape[1])
            fitted = layout_problem(in_features) or _fit_activation_group(layer.name, in_features, *fitted, config, fallbacks)
        if isinstance(fitted, str):
            skipped.append(Skip(layer.name, fitted))
            continue
        plans.append(_Planned(layer, *fitted))
    return plans, skipped


def _attr(graph: Graph, node: fx.Node, path: str, value: torch.Tensor) -> fx.Node:
    set_attr(graph.module, path, value)
    with graph.graph.inserting_before(node):
        return graph.graph.get_attr(path)


def _drop_weight(graph: Graph, weight_node: fx.Node) -> None:
    if not weight_node.users:
        target = str(weight_node.target)
        graph.graph.erase_node(weight_node)
        if not any(n.op == "get_attr" and n.target == target for n in graph.graph.nodes):
            del_attr(graph.module, target)


def _row_scaled(graph: Graph, out: fx.Node, rows: fx.Node | None, ids: fx.Node | None = None) -> fx.Node:
    """``out`` times the float16 row scales ``rows [N]`` of scale codes (``formats.QuantFormat.scale_codes``), widened
    to float32: per output feature of a quantized linear, or (``ids``) per gathered row of a quantized embedding.
    The row scale factors out of each row's dot product, so the kernel runs the codes as its scales and this is
    one multiply per output (inserted at the current insertion point; ``out`` itself when ``rows`` is None)."""
    if rows is None:
        return out
    call = graph.graph.call_function
    scale = rows if ids is None else call(aten.embedding.default, (call(aten.unsqueeze.default, (rows, 1)), ids))
    return call(aten.mul.Tensor, (out, call(aten._to_copy.default, (scale,), {"dtype": torch.float32})))


def _swap(graph: Graph, node: fx.Node, op: Any, args: tuple[Any, ...], weight_node: fx.Node,
          rows: fx.Node | None = None, bias: fx.Node | None = None, ids: fx.Node | None = None) -> None:
    """Replace ``node`` by a call of ``op`` on ``args`` (times the row scales ``rows`` of scale codes, gathered at
    ``ids`` for an embedding, plus ``bias`` after them: ``_row_scaled``) and drop the float weight it read."""
    with graph.graph.inserting_before(node):
        new = graph.graph.call_function(op, args)
        out = _row_scaled(graph, new, rows, ids)
        if bias is not None:
            out = graph.graph.call_function(aten.add.Tensor, (out, bias))
    new.meta.update(node.meta)
    out.meta.update(node.meta)
    node.replace_all_uses_with(out)
    graph.graph.erase_node(node)
    _drop_weight(graph, weight_node)


def _packed_attrs(graph: Graph, node: fx.Node, name: str,
                  quantized: QuantizedWeight) -> tuple[fx.Node, fx.Node, fx.Node | None, fx.Node | None]:
    """``get_attr`` nodes of the stored ``qweight``, ``scales``, (asymmetric) ``zeros`` and (scale codes) ``row_scales``."""
    qweight = _attr(graph, node, f"{name}.qweight", quantized.packed())
    scales = _attr(graph, node, f"{name}.scales", quantized.stored_scales())
    zeros = _attr(graph, node, f"{name}.zeros", quantized.zeros) if quantized.zeros is not None else None
    rows = _attr(graph, node, f"{name}.row_scales", quantized.row_scales) if quantized.row_scales is not None else None
    return qweight, scales, zeros, rows


def _optional_attr(graph: Graph, node: fx.Node, path: str, value: torch.Tensor | None) -> fx.Node | None:
    return _attr(graph, node, path, value.to(torch.float32)) if value is not None else None


def _scale_code_arg(fmt: QuantFormat) -> tuple[int, ...]:
    """The quantized ops' trailing ``scale_code_bits`` argument: ``(6,)`` for packed 6-bit scale codes, else
    nothing (the op's default: one stored element per group), so graphs without them are unchanged."""
    bits = fmt.packed_scale_bits
    return () if bits is None else (bits,)


def _replace_linear(graph: Graph, plan: _Planned, quantized: QuantizedWeight, input_scale: torch.Tensor | None) -> None:
    layer = plan.layer
    qweight, scales, zeros, rows = _packed_attrs(graph, layer.node, layer.name, quantized)
    inv = _optional_attr(graph, layer.node, f"{layer.name}.input_scale", input_scale)
    bias = layer.bias_node if rows is None else None  # with row scales the bias is added after them
    _swap(graph, layer.node, QUANTIZED_LINEAR, (layer.input, qweight, scales, zeros, bias, inv, plan.fmt.bits,
                                                plan.fmt.group(quantized.shape[1]), *_scale_code_arg(plan.fmt)),
          layer.weight_node,
          rows, layer.bias_node if rows is not None else None)


def _replace_w8a8(graph: Graph, plan: _Planned, codes: torch.Tensor, weight_scales: torch.Tensor,
                  input_scale: torch.Tensor | None, act_scale: float) -> None:
    layer = plan.layer
    qweight = _attr(graph, layer.node, f"{layer.name}.qweight", codes.to(torch.int8).contiguous())
    scales = _attr(graph, layer.node, f"{layer.name}.weight_scales", weight_scales.to(torch.float32).contiguous())
    inv = _optional_attr(graph, layer.node, f"{layer.name}.input_scale", input_scale)
    _swap(graph, layer.node, W8A8_LINEAR, (layer.input, qweight, scales, layer.bias_node, inv, act_scale), layer.weight_node)


def _replace_w4a8(graph: Graph, plan: _Planned, quantized: QuantizedWeight) -> None:
    """``w4a8_linear`` on the codes stored in its own nibble-paired layout (``slmc.quantization.w4a8_layout``); with
    scale codes, its scales are the codes (6-bit ones packed) and the row scales are its last argument: the kernel
    multiplies them before the bias in its epilogue (a separate multiply, ``_row_scaled``, was one more kernel call,
    float16 cast and allocation per linear per step: docs/dev-notes.md "Session 13: W4A8 scale codes speed")."""
    layer = plan.layer
    qweight = _attr(graph, layer.node, f"{layer.name}.qweight", pack_paired(quantized.codes))
    scales = _attr(graph, layer.node, f"{layer.name}.scales", quantized.stored_scales())
    rows = (_attr(graph, layer.node, f"{layer.name}.row_scales", quantized.row_scales)
            if quantized.row_scales is not None else None)
    args = (layer.input, qweight, scales, layer.bias_node, plan.fmt.group(quantized.shape[1]))
    # optional trailing arguments, written only when given (None per token, float16 scales and no row scales are the
    # op's defaults)
    trailing = (plan.settings.activation_group_size, (_scale_code_arg(plan.fmt) or (None,))[0], rows)
    while trailing and trailing[-1] is None:
        trailing = trailing[:-1]
    _swap(graph, layer.node, W4A8_LINEAR, (*args, *trailing), layer.weight_node)


def _layer_report(name: str, kind: str, fmt: str, method: str, params: int, stored: int, **extra: Any) -> dict[str, Any]:
    return {"layer": name, "kind": kind, "format": fmt, "method": method, "parameters": params,
            "float32_bytes": params * 4, "stored_bytes": stored, "bits_per_weight": round(8 * stored / max(params, 1), 3), **extra}


_Chosen = tuple[QuantizedWeight, torch.Tensor | None, dict[str, Any]]
_Apply = Callable[[_Planned, _Chosen], dict[str, Any]]


def _chosen_codes(graph: Graph, plans: list[_Planned], context: PassContext, config: QuantizeConfig,
                  apply: _Apply) -> list[dict[str, Any]]:
    """Each planned layer's codes by its registered method (``_quantize_handlers.METHODS``), handed to
    ``apply`` (which replaces the layer and returns its report); the reports in plan order.

    Uncalibrated methods only: layer by layer, each layer replaced as soon as its codes exist, so one
    layer's float and unpacked copies are alive at a time (issue 22: the compile's peak). When any layer's
    method is calibrated, every layer is quantized in graph order, sequentially on calibration data (each
    layer sees the already-quantized layers before it: its dequantized weight replaces the float one), and
    replaced once calibration is over (the graph must not change while it runs)."""
    by_node = {p.layer.node.name: p for p in plans}
    tied = _tied_layers(graph, plans)
    sequential = any(METHODS.get(p.settings.method).calibrated for p in plans)

    def quantize(plan: _Planned, stats: InputStatistics | None) -> _Chosen:
        w = plan.layer.weight(graph)
        method = METHODS.get(plan.settings.method)
        if stats is None and method.calibrated:  # a layer calibration did not reach: round to nearest
            method = METHODS.get("rtn")
        chosen = method.run(w, plan.fmt, stats, config)
        quantized, input_scale, extra = chosen.quantized, chosen.input_scale, dict(chosen.report)
        if not sequential and (stats is None or stats.hessian is None):
            return quantized, input_scale, extra  # nothing reads the dequantized weight
        effective = quantized.dequantize() if input_scale is None else quantized.dequantize() * input_scale
        if stats is not None and stats.hessian is not None:
            err = output_error(effective - w, stats.hessian)
            rtn_err = err if plan.settings.method == "rtn" else output_error(quantize_rtn(w, plan.fmt).dequantize() - w,
                                                                              stats.hessian)
            extra["output_error"] = err / max(stats.count, 1)
            extra["output_error_rtn"] = rtn_err / max(stats.count, 1)
        if plan.layer.name not in tied:  # later layers see it (a shared table stays as its other readers want it)
            set_attr(graph.module, str(plan.layer.weight_node.target), effective.contiguous())
        return quantized, input_scale, extra

    if not sequential:
        return [apply(plan, quantize(plan, None)) for plan in plans]
    results: dict[str, _Chosen] = {}
    calibrate_sequentially(graph, context.calibration, [p.layer.node.name for p in plans],
                           lambda node, stats: results.__setitem__(node.name, quantize(by_node[node.name], stats)))
    reports = []
    for plan in plans:
        chosen = results.pop(plan.layer.node.name, None) or quantize(plan, None)
        reports.append(apply(plan, chosen))
    return reports


@register_scheme("weight_only")
def _weight_only(graph: Graph, plans: list[_Planned], config: QuantizeConfig, context: PassContext) -> list[dict[str, Any]]:
    """Quantize weight-only layers by their registered method (``_chosen_codes``)."""

    def apply(plan: _Planned, chosen: _Chosen) -> dict[str, Any]:
        quantized, input_scale, extra = chosen
        n, k = quantized.shape
        stored = quantized.stored_bytes() + (input_scale.numel() * 4 if input_scale is not None else 0)
        _replace_linear(graph, plan, quantized, input_scale)
        return _layer_report(plan.layer.name, "linear", plan.fmt.describe(), plan.settings.method, n * k, stored, **extra)

    return _chosen_codes(graph, plans, context, config, apply)


@register_scheme("w8a8")
def _w8a8(graph: Graph, plans: list[_Planned], config: QuantizeConfig, context: PassContext) -> list[dict[str, Any]]:
    """Static int8 weights and activations; activation ranges observed on the original graph."""
    names = [p.layer.node.name for p in plans]
    stats = linear_input_statistics(graph, context.calibration, names, hessian=False)
    rows = sample_input_rows(graph, context.calibration, names) if config.observer == "percentile" else {}
    reports = []
    for plan in plans:
        w = plan.layer.weight(graph).detach().to(torch.float32)
        s = stats[plan.layer.node.name]
        input_scale = None
        if config.smoothquant is not None:
            factors = smoothing_factors(s.abs_max, w, config.smoothquant.alpha)
            w = w * factors
            input_scale = 1.0 / factors
        weight_scales = (w.abs().amax(dim=1) / 127.0).clamp_min(1e-12)
        codes = torch.clamp(torch.round(w / weight_scales.unsqueeze(1)), -127, 127)
        act = float(np.float32(activation_scale(rows.get(plan.layer.node.name), s.abs_max, input_scale, config.observer,
                                                config.percentile)))  # stored as the kernel's float32 constant
        n, k = w.shape
        stored = n * k + n * 4 + (k * 4 if input_scale is not None else 0)
        _replace_w8a8(graph, plan, codes, weight_scales, input_scale, act)
        reports.append(_layer_report(plan.layer.name, "linear", "w8a8 int8 per-channel weights, int8 per-tensor activations",
                                     "smoothquant+rtn" if input_scale is not None else "rtn", n * k, stored,
                                     activation_scale=act, observer=config.observer))
    return reports


@register_scheme("w4a8")
def _w4a8(graph: Graph, plans: list[_Planned], config: QuantizeConfig, context: PassContext) -> list[dict[str, Any]]:
    """Symmetric int4 weights chosen by the layer's method (``rtn`` or ``gptq``, ``_chosen_codes``), run
    with dynamic per-token int8 activations (``slmc.quantization.ops.w4a8_linear``)."""

    def apply(plan: _Planned, chosen: _Chosen) -> dict[str, Any]:
        quantized, _, extra = chosen
        n, k = quantized.shape
        _replace_w4a8(graph, plan, quantized)
        activations = ("per-token" if plan.settings.activation_group_size is None
                       else f"per-{plan.settings.activation_group_size}-input-block")
        return _layer_report(plan.layer.name, "linear", f"w4a8 {plan.fmt.describe()} weights, dynamic {activations} "
                             "int8 activations", plan.settings.method, n * k, quantized.stored_bytes(), **extra)

    return _chosen_codes(graph, plans, context, config, apply)


# A tied head's op (its name) -> how the embedding gathers rows of that op's stored codes and scales
# ``(graph, embedding node, its weight node, head op, head layer name)``. A head whose op is not registered
# (w8a8's signed per-channel int8 codes) leaves the embedding its own copy (``_embeddings``).
HeadGather = Callable[[Graph, fx.Node, fx.Node, fx.Node, str], None]
HEAD_GATHERS: HandlerRegistry[HeadGather] = HandlerRegistry("tied head gather")


def _head_op(graph: Graph, head: str) -> fx.Node | None:
    """The quantized linear with a registered gather (``HEAD_GATHERS``) that replaced layer ``head`` (reading
    ``<head>.qweight``), if any."""
    path = f"{head}.qweight"
    return next((n for n in graph.graph.nodes if n.op == "call_function" and str(n.target) in HEAD_GATHERS.names()
                 and isinstance(n.args[1], fx.Node) and n.args[1].op == "get_attr" and n.args[1].target == path), None)


def _replace_by_gather(graph: Graph, node: fx.Node, weight_node: fx.Node, rows: fx.Node, out: fx.Node) -> None:
    """Embedding ``node`` replaced by the gather ``rows`` whose scaled result is ``out``; its float table dropped."""
    rows.meta.update(node.meta)
    out.meta.update(node.meta)
    node.replace_all_uses_with(out)
    graph.graph.erase_node(node)
    _drop_weight(graph, weight_node)


def _gather_from_head(graph: Graph, node: fx.Node, weight_node: fx.Node, head: fx.Node, head_name: str) -> None:
    """Replace embedding ``node`` by a quantized gather of the tied ``head``'s own packed codes, scales,
    zero points and row scales (the same stored attributes: one table), times the head's AWQ input scale if it
    has one (the head's effective weight is ``dequantize(codes) * input_scale``)."""
    _, qweight, scales, zeros, _, input_scale, bits, group_size, *scale_code_bits = head.args
    row_path = f"{head_name}.row_scales"
    with graph.graph.inserting_before(node):
        q, s, z, inv = (graph.graph.get_attr(str(a.target)) if a is not None else None
                        for a in (qweight, scales, zeros, input_scale))
        row_scales = graph.graph.get_attr(row_path) if has_attr(graph.module, row_path) else None
        rows = graph.graph.call_function(QUANTIZED_EMBEDDING, (node.args[1], q, s, z, bits, group_size, *scale_code_bits))
        scaled = _row_scaled(graph, rows, row_scales, node.args[1])
        out = scaled if inv is None else graph.graph.call_function(torch.ops.aten.mul.Tensor, (scaled, inv))
    _replace_by_gather(graph, node, weight_node, rows, out)


def _gather_from_w4a8_head(graph: Graph, node: fx.Node, weight_node: fx.Node, head: fx.Node, head_name: str) -> None:
    """Replace embedding ``node`` by ``w4a8_embedding`` of the tied ``w4a8_linear`` head's own paired codes and
    scales (its group size and, when it has them, its scale codes and row scales): one stored table, which the
    compiled gather reads in the head's kernel layout (``tvm_kernels._convert_w4a8_embedding``)."""
    _, qweight, scales, _, group_size, *rest = head.args
    # after activation_group_size: the head's scale-code width, when it has one (None before its row scales: 8-bit)
    scale_code_bits = tuple(bits for bits in rest[1:2] if bits is not None)
    row_path = f"{head_name}.row_scales"
    with graph.graph.inserting_before(node):
        q, s = (graph.graph.get_attr(str(a.target)) for a in (qweight, scales))
        row_scales = graph.graph.get_attr(row_path) if has_attr(graph.module, row_path) else None
        rows = graph.graph.call_function(W4A8_EMBEDDING, (node.args[1], q, s, group_size, *scale_code_bits))
        out = _row_scaled(graph, rows, row_scales, node.args[1])
    _replace_by_gather(graph, node, weight_node, rows, out)


HEAD_GATHERS.add(str(QUANTIZED_LINEAR), _gather_from_head)
HEAD_GATHERS.add(str(W4A8_LINEAR), _gather_from_w4a8_head)


def _embeddings(graph: Graph, config: QuantizeConfig, target: TargetDescriptor, fallbacks: list[dict[str, Any]],
                tied_heads: dict[str, dict[str, Any]]) -> tuple[list[dict[str, Any]], list[Skip]]:
    """Quantize embedding tables (round to nearest; gathers have no calibration method).

    ``tied_heads``: table attribute -> report of the quantized linear layer that reads the same table (a
    tied output head). Such an embedding gathers rows of the head's packed codes and scales, so the table
    is stored once, in the head's quantization (its format and method, not the embedding's own settings);
    both reports say so. The gather is the head op's registered one (``HEAD_GATHERS``: ``quantized_embedding``
    for a weight-only head, ``w4a8_embedding`` for a w4a8 one). A head whose op has none (w8a8's signed codes)
    leaves the embedding its own copy, and its report says why."""
    reports, skipped = [], []
    readers = attribute_readers(graph)
    for node in list(graph.graph.nodes):
        if node.op != "call_function" or node.target is not torch.ops.aten.embedding.default:
            continue
        weight_node = node.args[0]
        if not isinstance(weight_node, fx.Node) or weight_node.op != "get_attr":
            skipped.append(Skip(node.name, "embedding table is computed at run time"))
            continue
        name = layer_name(str(weight_node.target))
        settings = config.settings_for(name)
        if not config.embeddings or isinstance(settings, str):
            skipped.append(Skip(name, "embeddings: false" if not config.embeddings else settings))
            continue
        if settings.scheme == "w8a8":
            settings = LayerSettings(bits=8, group_size=None, symmetric=True)
        if readers.get(str(weight_node.target), 0) != 1:
            skipped.append(Skip(name, "embedding table is shared with other nodes (tied)"))
            continue
        table = fetch_attr(graph.module, str(weight_node.target))
        head_report = tied_heads.get(str(weight_node.target))
        head = _head_op(graph, head_report["layer"]) if head_report is not None else None
        if head is not None:
            HEAD_GATHERS.get(str(head.target))(graph, node, weight_node, head, head_report["layer"])
            head_report["tied"] = (f"weight '{weight_node.target}' is shared with the embedding '{name}' (tied); the embedding "
                                   "gathers rows of this layer's packed codes and scales: the table is stored once")
            reports.append(_layer_report(name, "embedding", head_report["format"], head_report["method"], table.numel(), 0,
                                         stored_in=head_report["layer"], tied=f"gathers rows of the tied head '{head_report['layer']}''s packed codes and "
                                              "scales (the head's quantization, not the embedding's own settings); no "
                                              "bytes of its own"))
            continue
        fitted = _fit_group(name, settings, tuple(table.shape), config, target, fallbacks)
        if isinstance(fitted, str):
            skipped.append(Skip(name, fitted))
            continue
        settings, fmt = fitted
        quantized = quantize_rtn(table, fmt)
        own_copy = {} if head_report is None else {
            "tied": f"its tied head '{head_report['layer']}' is not a weight-only or w4a8 quantized linear "
                    f"({head_report['format']}), whose codes a quantized gather cannot read (HEAD_GATHERS): the embedding "
                    "is quantized into its own copy"}
        stored_as = name if not has_attr(graph.module, f"{name}.qweight") else own_copy_name(name)  # a tied head took `name`
        qweight, scales, zeros, rows = _packed_attrs(graph, node, stored_as, quantized)
        _swap(graph, node, QUANTIZED_EMBEDDING, (node.args[1], qweight, scales, zeros, fmt.bits, fmt.group(table.shape[1]),
                                                 *_scale_code_arg(fmt)),
              weight_node, rows, ids=node.args[1])
        reports.append(_layer_report(name, "embedding", fmt.describe(), "rtn", table.numel(), quantized.stored_bytes(), **own_copy))
    return reports, skipped


def _allocation_visitor(graph: Graph, slots: list[WeightSlot], config: QuantizeConfig,
                        context: PassContext) -> tuple[SlotVisitor, str]:
    """How ``target_bits_per_weight`` quantizes one layer to measure its sensitivity: as the pass will, by
    the layer's registered method (``_quantize_handlers.METHODS``) on the input statistics of the float
    model; embedding tables round to nearest. The statistics are collected by one calibration pass that
    changes no weight, each input's only while the layers reading it are measured
    (``calibrate_sequentially``), so at most one input's Hessian is alive at a time. The pass itself
    calibrates sequentially on the quantized layers before each one, which the per-layer measurement
    cannot, so the statistics differ from the final ones by that."""
    methods = {s.name: settings.method for s in slots
               if s.kind == "linear" and isinstance(settings := config.settings_for(s.name), LayerSettings)}
    calibrated = {s.node: s for s in slots if s.node is not None and METHODS.get(methods.get(s.name, "rtn")).calibrated}

    def quantizer(stats: InputStatistics | None) -> LayerQuantizer:
        def quantize_one(slot: WeightSlot, weight: torch.Tensor, fmt: QuantFormat) -> torch.Tensor:
            method = METHODS.get(methods[slot.name]) if stats is not None else METHODS.get("rtn")
            chosen = method.run(weight, fmt, stats, config)
            effective = chosen.quantized.dequantize()
            return effective if chosen.input_scale is None else effective * chosen.input_scale
        return quantize_one

    def visit(visited: Sequence[WeightSlot], measure: SlotMeasure) -> None:
        nodes = [s.node for s in visited if s.node in calibrated]
        if nodes:
            calibrate_sequentially(graph, context.calibration, nodes,
                                   lambda node, stats: measure(calibrated[node.name], quantizer(stats)))
        for slot in visited:
            if slot.node not in calibrated:
                measure(slot, quantizer(None))

    used = sorted({methods[s.name] for s in calibrated.values()})
    how = (f"{'/'.join(used)} (on the float model's calibration statistics; other layers and embedding tables: rtn)"
           if used else "rtn")
    return visit, how


@register_pass("quantize", config=QuantizeConfig, lossy=True)
def quantize(graph: Graph, config: QuantizeConfig, context: PassContext) -> PassOutcome:
    """Quantize the selected linear layers and embedding tables (see the module docstring).

    Precondition: calibration samples in ``context`` when a method or scheme needs them (the
    recipe check guarantees it).
    """
    fallbacks: list[dict[str, Any]] = []
    allocation = None
    if config.target_bits_per_weight is not None:
        layers_ = [(layer.name, str(layer.weight_node.target), layer.node.name) for layer in
                   selected_layers(graph, config.include, config.exclude, "quantized", allow_shared=True)[1]]
        slots = weight_slots(graph, layers_, config.embeddings, lambda name: s.symmetric if isinstance(
            s := config.settings_for(name), LayerSettings) and s.scheme == "weight_only" else None)
        visit, how = _allocation_visitor(graph, slots, config, context)
        allocation = allocate_bits(graph, slots, config.candidates, config.target_bits_per_weight, context.target,
                                   context.calibration, visit, how)
        config = config.with_allocation(allocation.choices)
    plans, skipped = _plan(graph, config, context.target, fallbacks)
    tied = _tied_layers(graph, plans)
    tied_tables = {p.layer.name: str(p.layer.weight_node.target) for p in plans if p.layer.name in tied}
    layers: list[dict[str, Any]] = []
    for scheme in get_args(Scheme):  # weight_only first, then w8a8, then w4a8
        group = [p for p in plans if p.settings.scheme == scheme]
        if group:
            layers += SCHEMES.get(scheme)(graph, group, config, context)
    tied_heads = {}
    for report in layers:
        if report["layer"] in tied:
            report["tied"] = tied[report["layer"]]
            tied_heads[tied_tables[report["layer"]]] = report
    embedding_reports, embedding_skips = _embeddings(graph, config, context.target, fallbacks, tied_heads)
    by_layer = {f["layer"]: f for f in fallbacks}
    for report in layers + embedding_reports:
        if report["layer"] in by_layer:
            report["group_fallback"] = by_layer[report["layer"]]
    layers += embedding_reports
    skipped += embedding_skips
    graph.graph.lint()
    graph.module.recompile()
    own = [r for r in layers if "stored_in" not in r]  # a tied embedding's table is its head's: counted once
    float_bytes = sum(r["float32_bytes"] for r in own)
    stored = sum(r["stored_bytes"] for r in layers)
    stats = {
        "layers_quantized": len(layers),
        "layers_skipped": len(skipped),
        "quantized_parameters": sum(r["parameters"] for r in layers),
        "float32_bytes": float_bytes,
        "stored_bytes": stored,
        "bits_per_weight": round(8 * stored / max(sum(r["parameters"] for r in own), 1), 3),
        "layers_group_fallback": len(fallbacks),
        "group_fallbacks": fallbacks,  # which layers, requested vs used group size (null: per channel), why
        "layers": layers,
    }
    if allocation is not None:
        stats["bit_allocation"] = allocation.report
    return PassOutcome(graph, stats, skipped)
