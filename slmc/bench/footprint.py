"""Issue 22 point 3's memory goal, as it is worded: "Peak RSS of load + 64 decode steps <= weights file + KV
cache + 60 MB for the SmolLM-135M shape", measured in a fresh process that does only that.

The measuring processes (``slmc.bench.measure``) also prefill 1,024 tokens and hold contexts up to 2,000,
so their peak is not this one (their row, ``peak_rss_vs_weights_kv_budget``, stays). A footprint process
(``python -m slmc.bench footprint``, one per round for each engine that has one, ``EngineKind.footprint``)
loads the artifact, prefills a ``PROMPT_TOKENS``-token prompt (the bench's ids) and decodes ``DECODE_STEPS``
tokens one at a time, then reports its peak RSS (``VmHWM``) beside the terms of the bound:
``weights_file_bytes`` and ``kv_cache_bytes`` (the cache of the context reached, prompt + steps + the sink
slot, at the engine's stored bytes per position). ``slmc``: the Python runtime in that process (the
interpreter, numpy and TVM's runtime included: the peak is the process's, as a user's would be).
``slmc-native``: one ``slmc-run`` process (its own ``VmHWM``; the Python process that starts it is not
counted, as for the engine's other rows).
"""

from __future__ import annotations

from typing import Any

from slmc.bench.engines import engine
from slmc.bench.thread_policy import from_json

PROMPT_TOKENS = 8
DECODE_STEPS = 64
FIELDS = ("prompt_tokens", "decode_steps", "peak_rss_bytes", "weights_file_bytes", "kv_cache_bytes")


def footprint(engine_name: str, info: dict[str, Any], policy: dict[str, Any], prompt: int = PROMPT_TOKENS,
              steps: int = DECODE_STEPS) -> dict[str, Any]:
    """The footprint of ``engine_name`` (a kind with ``EngineKind.footprint``) in this fresh process: ``FIELDS``."""
    return engine(engine_name).footprint(info, from_json(policy), prompt, steps)
