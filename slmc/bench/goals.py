"""Issue 7's speed goals, checked on one model's ``slmc bench`` result (docs/benchmarks.md).

Each goal compares slmc with a baseline engine of the same run (interleaved, same threads), so
the ratio is what the goal is about, not absolute times. A goal whose baseline engine was not run
is left out. The goals were set for int4 weight-only decode and int8 prefill of the SmolLM-135M
shape; the report computes them for whatever model and recipe ran and says which recipe that was.
"""

from __future__ import annotations

from typing import Any

# (key, what, baseline engine, limit, "max" = the measured value must be at most the limit)
GOALS = (
    ("decode_time_vs_torch_fp32", "decode ms/token, slmc / PyTorch eager fp32", "torch", 0.5, "max"),
    ("decode_time_vs_ort_int8", "decode ms/token, slmc / ONNX Runtime int8-dynamic", "ort-int8", 1.0, "max"),
    ("decode_fraction_of_bandwidth", "decode: bytes read / measured bandwidth / time", None, 0.5, "min"),
    ("prefill_throughput_vs_ort_int8", "prefill tokens/s, slmc / ONNX Runtime int8-dynamic", "ort-int8", 0.8, "min"),
)


def goals(result: dict[str, Any]) -> list[dict[str, Any]]:
    """The goals for one model's result (``bench_one``), at its first decode context."""
    engines = result["engines"]
    slmc = engines["slmc"]
    context = str(result["contexts"][0])
    rows = []
    for key, what, baseline, limit, kind in GOALS:
        if baseline is not None and baseline not in engines:
            continue
        if key.startswith("decode_time"):
            value = slmc["decode"][context]["ms_median"] / engines[baseline]["decode"][context]["ms_median"]
        elif key == "decode_fraction_of_bandwidth":
            value = slmc["decode"][context]["fraction_of_bandwidth_bound"]
        else:
            value = slmc["prefill_tokens_per_s"] / engines[baseline]["prefill_tokens_per_s"]
        met = value <= limit if kind == "max" else value >= limit
        rows.append({"goal": key, "what": what, "context": int(context), "measured": round(value, 3),
                     "limit": f"{'<=' if kind == 'max' else '>='} {limit}", "met": met})
    return rows
