"""Built-in passes, one module per pass; importing this package registers them all."""

from slmc.passes import (cast_weights, constant_folding, dead_code_elimination, fuse, lowrank, prune, prune_channels, quantize,
                         recover)

__all__ = ["cast_weights", "constant_folding", "dead_code_elimination", "fuse", "lowrank", "prune", "prune_channels", "quantize",
           "recover"]
