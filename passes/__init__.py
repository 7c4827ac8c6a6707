"""Built-in passes, one module per pass; importing this package registers them all.

Layer 5 (``slmc.passes``, beside ``slmc.schedules`` and ``slmc.npu``): a pass imports only the pass-author API,
``slmc.graph``, ``slmc.spec``, ``slmc.quantization`` and ``slmc.errors``, and this package's ``_``-prefixed
helper modules; passes never import each other (shared graph edits live in ``slmc.graph.edit``).
"""

from slmc.passes import (cast_weights, constant_folding, dead_code_elimination, fuse, lowrank, prune, prune_channels, quantize,
                         recover, rotate, vocab_trim)

__all__ = ["cast_weights", "constant_folding", "dead_code_elimination", "fuse", "lowrank", "prune", "prune_channels", "quantize",
           "recover", "rotate", "vocab_trim"]
