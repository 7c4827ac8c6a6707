"""Quantization: storage formats, the quantized ops of slmc graphs, their TVM kernels, and the
methods that choose the codes (round-to-nearest, GPTQ, AWQ, SmoothQuant). The recipe-facing pass
is ``quantize`` (``passes/quantize.py``)."""

from slmc.quantization import ops as ops  # registers torch.ops.slmc.*
