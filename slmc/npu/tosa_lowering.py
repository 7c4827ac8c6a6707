"""Each NPU partition (one int8 linear) lowered to a TOSA 1.0 graph and serialized with Arm's TOSA tools.

A partition ``y = requantize(x @ W.T + b)`` becomes, in the TOSA 1.0 ``PRO-INT`` profile (the TOSA
1.0 specification, www.mlplatform.org/tosa: profiles, operators CONV2D and RESCALE):

- ``CONV2D`` with a 1x1 kernel: input int8 ``[1, 1, rows, K]`` (NHWC), weights int8 ``[N, 1, 1, K]``
  (OHWI), bias int32 ``[N]``, input and weight zero points 0 (slmc's int8 is symmetric), ``acc_type``
  INT32: the int8 x int8 -> int32 accumulation;
- ``RESCALE`` int32 -> int8, per channel, ``scale32``, with slmc's multiplier (int32, 31 fractional bits)
  and shift (int8) from ``slmc.npu.fixed_point``, ``SINGLE_ROUND`` rounding:
  ``(value * multiplier + 2**(shift-1)) >> shift`` saturated to int8, which is the descriptor's
  ``half_up``. TOSA has no rounding mode equal to ``half_away_from_zero`` (``DOUBLE_ROUND`` is
  TFLite's double rounding), so a descriptor with that rounding and a TOSA profile is refused when it
  loads (``slmc.spec.target.Npu``), and ``lower_partition`` raises ``TosaLoweringError`` for it.

TOSA's RESCALE requires ``2 <= shift <= 62``, and its ``apply_scale_32`` requires every input value within
``[-2**(shift-1), 2**(shift-1))`` (else the result is UNPREDICTABLE, which the reference model reports):
slmc's "negligible rescale" encoding (multiplier 0, shift 1) is written as shift 32, which admits every
int32 and maps it to 0 exactly as before. The flatbuffer is
what Vela compiles (``slmc.npu.vela``) and what the TOSA reference model executes
(``slmc.npu.tosa_reference``).
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from slmc.errors import CompileError, ToolchainError
from slmc.npu.layers import NpuLayer

TOSA_VERSION = (1, 0, 0)  # the TOSA spec version written into the flatbuffer (Vela 5.2 reads TOSA 1.0)
PROFILE_OPS = {"PRO-INT": frozenset({"CONST", "CONV2D", "RESCALE"})}  # the ops this lowering emits, per profile
RESCALE_SHIFT = (2, 62)  # TOSA 1.0 RESCALE: shift in [2, 62] when scale32
ZERO_RESCALE_SHIFT = 32  # for multiplier 0: any int32 value is within [-2**31, 2**31), the result is 0
ROUNDING_MODES = {"half_up": "SINGLE_ROUND"}  # slmc rounding -> TOSA RescaleAttribute.rounding_mode


class TosaLoweringError(CompileError):
    """A partition cannot be expressed in TOSA as the descriptor asks (rounding, profile, shift range)."""


@dataclass
class TosaPartition:
    """One partition serialized as a TOSA flatbuffer: input int8 ``[1, 1, rows, K]``, output int8 ``[1, 1, rows, N]``."""

    index: int
    layer: str
    rows: int
    in_features: int
    out_features: int
    profile: str
    operators: list[str]
    flatbuffer: bytes = field(repr=False)

    @property
    def file_name(self) -> str:
        return f"partition_{self.index}.tosa"


def tosa_tools_module(name: str) -> Any:
    """Import ``name`` (``tosa_serializer`` or ``tosa_reference_model``) from PyPI ``tosa-tools``, or say how to get it."""
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as exc:
        raise ToolchainError(f"the target names a TOSA profile (npu.tosa_profile) and Python module '{name}' is missing: "
                             "install Arm's TOSA tools: pip install 'slmc[npu]' && pip install --no-deps tosa-tools==2026.8.0") from exc


def _tosa_shift(layer: NpuLayer) -> np.ndarray:
    multiplier, shift = layer.multiplier, layer.shift.astype(np.int64)
    shift = np.where(multiplier == 0, ZERO_RESCALE_SHIFT, shift)
    low, high = RESCALE_SHIFT
    bad = np.flatnonzero((shift < low) | (shift > high))
    if bad.size:
        raise TosaLoweringError(
            f"NPU partition '{layer.node}': requantize shift {int(shift[bad[0]])} of output channel {int(bad[0])} is outside "
            f"TOSA RESCALE's [{low}, {high}] (a rescale of 2**29 or more): it cannot be lowered to TOSA")
    return shift.astype(np.int8)


def lower_partition(index: int, layer: NpuLayer, rows: int, rounding: str, profile: str) -> TosaPartition:
    """The TOSA flatbuffer of ``layer`` at ``rows`` rows. Precondition: ``rows >= 1``; ``profile`` in ``PROFILE_OPS``."""
    ts = tosa_tools_module("tosa_serializer")
    if rounding not in ROUNDING_MODES:
        raise TosaLoweringError(f"NPU rounding '{rounding}' has no TOSA RESCALE rounding mode (TOSA 1.0 offers "
                                f"SINGLE_ROUND = half_up and TFLite's DOUBLE_ROUND): partition '{layer.node}' is not lowered")
    if profile not in PROFILE_OPS:
        raise TosaLoweringError(f"TOSA profile '{profile}' is not one slmc lowers to (known: {sorted(PROFILE_OPS)})")
    k, n = layer.in_features, layer.out_features
    major, minor, patch = TOSA_VERSION
    graph = ts.TosaSerializer("", targetMajor=major, targetMinor=minor, targetPatch=patch, targetDraft=False)
    x = graph.addPlaceholder([1, 1, rows, k], ts.DType.INT8)
    weight = graph.addConst([n, 1, 1, k], ts.DType.INT8, layer.qweight.reshape(n, 1, 1, k), name="weight")
    bias = graph.addConst([n], ts.DType.INT32, layer.bias_codes.astype(np.int32), name="bias")
    input_zp = graph.addConst([1], ts.DType.INT8, np.zeros(1, np.int8), name="input_zp")
    weight_zp = graph.addConst([1], ts.DType.INT8, np.zeros(1, np.int8), name="weight_zp")
    accumulator = graph.addIntermediate([1, 1, rows, n], ts.DType.INT32)
    conv = ts.TosaSerializerAttribute()
    conv.Conv2dAttribute([0, 0, 0, 0], [1, 1], [1, 1], False, ts.DType.INT32)
    graph.addOperator(ts.Op.CONV2D, [x.name, weight.name, bias.name, input_zp.name, weight_zp.name], [accumulator.name], conv)
    multiplier = graph.addConst([n], ts.DType.INT32, layer.multiplier.astype(np.int32), name="multiplier")
    shift = graph.addConst([n], ts.DType.INT8, _tosa_shift(layer), name="shift")
    rescale_input_zp = graph.addConst([1], ts.DType.INT32, np.zeros(1, np.int32), name="rescale_input_zp")
    rescale_output_zp = graph.addConst([1], ts.DType.INT8, np.zeros(1, np.int8), name="rescale_output_zp")
    output = graph.addOutput([1, 1, rows, n], ts.DType.INT8)
    rescale = ts.TosaSerializerAttribute()
    rescale.RescaleAttribute(True, getattr(ts.RoundingMode, ROUNDING_MODES[rounding]), True, False, False)
    graph.addOperator(ts.Op.RESCALE, [accumulator.name, multiplier.name, shift.name, rescale_input_zp.name,
                                      rescale_output_zp.name], [output.name], rescale)
    operators = ["CONV2D", "RESCALE"]
    outside = set(operators) - PROFILE_OPS[profile]
    if outside:
        raise TosaLoweringError(f"partition '{layer.node}' uses {sorted(outside)}, outside TOSA profile {profile}")
    return TosaPartition(index=index, layer=layer.node, rows=rows, in_features=k, out_features=n, profile=profile,
                         operators=operators, flatbuffer=bytes(graph.serialize()))


def tosa_tools_version() -> str:
    """The installed ``tosa-tools`` distribution's version."""
    from importlib.metadata import version

    return version("tosa-tools")
