"""The ``slmc`` engine's footprint row (``slmc.bench.footprint``: issue 22.3's load + 64 decode steps, peak RSS).

Its own module so that the measuring process imports what a user's process that loads and runs an artifact
imports (``slmc.load``, numpy, TVM's runtime) and the bench's small timing helpers, not the engine module's
compile-side and native-runner machinery (``slmc.bench.engine_slmc`` imports the decode-bytes reader, the
preparation and subprocess: ~0.5 MiB of the 60 MiB allowance, docs/dev-notes.md session 13).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from slmc.artifact.layout import WEIGHTS
from slmc.bench.thread_policy import ThreadPolicy
from slmc.bench.timing import PROMPT_ID_RANGE, bench_prompt, peak_rss_mb
from slmc.errors import SlmcError


def footprint(info: dict[str, Any], policy: ThreadPolicy, prompt: int, steps: int) -> dict[str, Any]:
    """Load the artifact, prefill ``prompt`` bench ids, decode ``steps`` tokens one at a time (``last_only``, as
    ``generate`` runs them, the cache planned for that length first): this process's peak RSS and the terms of its
    bound (``slmc.bench.footprint``). An artifact of the copy contract has no resident cache to measure."""
    import slmc

    model = slmc.load(info["artifact"])
    if not model.resident:
        raise SlmcError(f"{info['artifact']}: the footprint row needs an artifact of the resident KV-cache contract")
    decoder, token = model.decoder(), bench_prompt(1)
    decoder.plan(prompt + steps)
    decoder.feed(bench_prompt(prompt), last_only=True)
    for step in range(steps):
        token[0, 0] = (step * 7 + 1) % PROMPT_ID_RANGE
        decoder.feed(token, last_only=True)
    return {"prompt_tokens": prompt, "decode_steps": steps, "peak_rss_bytes": int(peak_rss_mb() * 2**20),
            "weights_file_bytes": (Path(info["artifact"]) / WEIGHTS).stat().st_size,  # the file, as slmc-run reports it
            "kv_cache_bytes": decoder.cache.bytes_per_token() * (decoder.tokens + 1)}  # + the sink slot
