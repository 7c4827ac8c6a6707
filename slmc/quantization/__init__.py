"""Quantization: storage formats, the quantized ops of slmc graphs, their TVM kernels, and the
methods that choose the codes (round-to-nearest, GPTQ, AWQ, SmoothQuant). The recipe-facing pass
is ``quantize`` (``passes/quantize.py``).

Layer 4 (beside ``slmc.models`` and ``slmc.artifact``, which it does not import): imports
``slmc.graph`` and below. Part of the pass-author API (``passes/`` may import it).
"""

from slmc.quantization import ops as ops  # registers torch.ops.slmc.*
