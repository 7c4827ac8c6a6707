"""Names of stored tensors that the quantize pass writes and later layers read back.

An embedding table that is quantized into its own copy while a tied output head keeps the table's name
(its head is a w8a8 linear, whose codes no quantized gather reads: ``passes/quantize.py``'s ``HEAD_GATHERS``)
is stored under ``<table>.<OWN_COPY>`` (``<table>.embedding.qweight``, ``.scales``, ...). Only the gather
reads those tensors, one row per token, so ``slmc.bench.decode_bytes`` counts them as gathered.
"""

from __future__ import annotations

OWN_COPY = "embedding"


def own_copy_name(table: str) -> str:
    """The module path an embedding's own quantized copy is stored under, beside a tied head's ``table``."""
    return f"{table}.{OWN_COPY}"
