"""Latency of a candidate: measured on a compiled artifact here, or the target's roofline cost model.

Measured (targets that run on this machine): the candidate's recipe is compiled with
``slmc.compile`` (verification and the recipe's quality gates included, so a candidate whose
compiled artifact misses the budget is caught here), then the artifact decodes one token after a
``context``-token prefill, ``repeats`` times; the median is reported. Trials are not timed while
other trials run: this runs in the driver, one candidate at a time.

Cost model (targets that do not run here): one decoded token reads every stored weight byte once
and does ``macs_per_token`` multiply-accumulates, so
``latency = max(bytes / memory.bandwidth_gbps, 2 * MACs / compute.peak_gops[float32])``, the
roofline bound (Williams, Waterman, Patterson, "Roofline", CACM 2009). Weight-only int4/int8 is
dequantized to float32 before the matmul, hence the float32 peak.
"""

from __future__ import annotations

import statistics
import time
from pathlib import Path
from typing import Any

import numpy as np

from slmc.errors import InputError, VerificationError
from slmc.spec.target import TargetDescriptor


def cost_model_ms(target: TargetDescriptor, weight_bytes: int, macs: int) -> float:
    """Roofline latency of one decoded token in milliseconds (raises ``InputError`` without the numbers)."""
    bandwidth = target.memory.bandwidth_gbps
    peak = target.compute.peak_gops.get("float32")
    if bandwidth is None or peak is None:
        raise InputError(f"target '{target.name}' has no memory.bandwidth_gbps and compute.peak_gops.float32 for the "
                         "latency cost model; give them in the descriptor or use --latency none")
    return 1e3 * max(weight_bytes / (bandwidth * 1e9), 2 * macs / (peak * 1e9))


def decode_ms(artifact: Path, context: int, repeats: int) -> float:
    """Median milliseconds of one decode step after a ``context``-token prefill of the artifact."""
    from slmc.artifact.runtime import load

    model = load(artifact)
    decoder = model.decoder()
    ids = (np.arange(context, dtype=np.int64) % 200 + 20).reshape(1, -1)
    decoder.reset()
    logits = decoder.feed(ids, last_only=True)
    token = np.asarray([[int(np.argmax(logits[0, -1]))]], dtype=np.int64)
    snapshot = None if model.resident else (decoder.keys, decoder.values)  # the copy contract's cache after the prompt
    times = []
    for _ in range(repeats + 1):  # the first: warm-up
        if snapshot is None:
            decoder.truncate(context)
        else:
            decoder.keys, decoder.values = snapshot
        t = time.perf_counter()
        decoder.feed(token, last_only=True)
        times.append(time.perf_counter() - t)
    return 1e3 * statistics.median(times[1:])


def measure(model: str, recipe_path: Path, target: TargetDescriptor, out: Path, context: int = 64,
            repeats: int = 20) -> dict[str, Any]:
    """Compile the recipe into ``out`` and time it; a failed quality gate is reported, not raised."""
    import slmc

    t = time.perf_counter()
    try:
        result = slmc.compile(model, recipe_path, target, out)
    except VerificationError as exc:
        return {"latency_ms": None, "compiled": False, "compile_failure": str(exc)}
    compile_s = time.perf_counter() - t
    gates = [g.model_dump(mode="json") for g in result.manifest.verification.gates]
    return {"latency_ms": decode_ms(result.artifact, context, repeats), "compiled": True, "artifact": str(result.artifact),
            "compile_seconds": round(compile_s, 1), "compiled_gates": gates,
            "latency_measure": f"median of {repeats} one-token decode steps after a {context}-token prefill"}
