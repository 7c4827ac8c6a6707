"""slmc's untuned CPU schedules: rules for the kernels small language models are made of.

``cpu_schedule_passes`` is the ``cpu`` backend's schedule phase (``slmc.backend.kinds.cpu``), in order:
slmc's own rules (``QuantizedMatmul``: int4/int8 weight-only linears with dequantization fused;
``Int8Matmul``: int8 x int8 (w8a8) linears on the target's int8 dot-product instructions;
``Int4Int8Matmul``: int4 x dynamic int8 (w4a8) linears on the same instructions, group by group;
``DenseMatmul``: float linears on prepacked ``[K, N]`` weights; ``AttentionScores`` /
``AttentionValues``: attention on the KV cache in place, ``slmc.schedules.attention`` (in the resident
functions each layer's attention is instead one tiled kernel, scheduled when it is built:
``slmc.schedules.flash_rewrite``, ``slmc.schedules.flash_attention``); ``RowReduction``:
softmax and norms, ``slmc.schedules.norms``, among them each RMSNorm with its residual add as one kernel,
``slmc.schedules.residual_norm``), then dlight's CPU rules (GEMV, Reduction), then
``Fallback`` (parallel outer loop, vectorized inner loop) for what is left. Weights are prepacked
at lowering time by ``slmc.schedules.prepack``. Every rule reads the target's vector width and core
count from the descriptor.

Layer 5 (beside ``slmc.passes`` and ``slmc.npu``, which it does not import): imports ``slmc.models``,
``slmc.quantization``, ``slmc.artifact`` and below.
"""

from __future__ import annotations

from collections import Counter

import tvm
from tvm.s_tir import dlight

from slmc.schedules.attention import attention_rules
from slmc.schedules.dense_matmul import DenseMatmul
from slmc.schedules.fallback import Fallback
from slmc.schedules.int4_int8_matmul import Int4Int8Matmul
from slmc.schedules.int8_matmul import Int8Matmul
from slmc.schedules.quantized_matmul import QuantizedMatmul
from slmc.schedules.row_matmul import CpuParams
from slmc.spec.target import TargetDescriptor

DEFAULT_VECTOR_BITS = 128  # NEON / SSE: every CPU target slmc knows has at least this


def cpu_params(target: TargetDescriptor) -> CpuParams:
    """Vector width and cores from the descriptor (``native`` is resolved when it is loaded)."""
    bits = target.compute.vector_width_bits
    cores = target.tvm.num_cores
    return CpuParams(vector_bits=bits if isinstance(bits, int) else DEFAULT_VECTOR_BITS,
                     cores=cores if isinstance(cores, int) else 1)


def cpu_schedule_passes(target: TargetDescriptor, notes: list[str]) -> list[tvm.transform.Pass]:
    """The schedule passes for a CPU target; a summary of which rule took how many kernels goes to ``notes``."""
    params = cpu_params(target)
    dot = target.compute.int8_dot
    dot_features = dot if isinstance(dot, list) else []
    slmc_rules = [QuantizedMatmul(params, notes), DenseMatmul(params, notes), Int8Matmul(params, dot_features, notes),
                  Int4Int8Matmul(params, dot_features, notes)]
    slmc_rules += attention_rules(params, notes)  # attention's kernels, softmax, norms (slmc.schedules.attention)
    fallback = Fallback(params, notes)

    @tvm.transform.module_pass(opt_level=0, name="slmc_cpu_schedules")
    def _summary(mod: tvm.IRModule, _ctx: tvm.transform.PassContext) -> tvm.IRModule:
        counts = Counter(name for rule in [*slmc_rules, fallback] for name in rule.applied)
        if counts:
            notes.append("CPU schedules: " + ", ".join(f"{name} {n}" for name, n in sorted(counts.items())))
        return mod

    return [
        dlight.ApplyDefaultSchedule(*slmc_rules),
        dlight.ApplyDefaultSchedule(dlight.cpu.GEMV(), dlight.cpu.Reduction()),
        dlight.ApplyDefaultSchedule(fallback),
        _summary,
    ]
