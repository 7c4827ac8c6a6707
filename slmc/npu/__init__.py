"""NPU targets (``kind: npu``): partitioning, integer lowering, partition report, QDQ ONNX export.

No TVM BYOC codegen for an NPU ships in the TVM wheel, so slmc does not execute anything on an NPU.
What it does for an NPU target (docs/targets.md, "NPU"):

- ``recipe_check``: the recipe must full-integer quantize (``quantize: {scheme: w8a8}``), else exit 2;
- ``partition``: NPU regions of the Relax module with ``FuseOpsByPattern`` + ``MergeCompositeFunctions``;
- ``fallback``: every other op of the graph, with the reason it stays on the CPU;
- ``fixed_point`` / ``integer_kernel``: the NPU's integer arithmetic (int8 x int8 -> int32,
  fixed-point requantize, saturation) as a numpy reference and as a TVM kernel run on the host;
- ``qdq_onnx``: the regions as a QDQ ONNX model, executed by ONNX Runtime for the cross-check;
- ``report``: per partition ops, MACs, SRAM fit or tiling, estimated cycles;
- ``offload``: the compile driver's entry point tying these together.

Layer 5 (beside ``slmc.passes`` and ``slmc.schedules``, which it does not import): imports ``slmc.models``,
``slmc.quantization``, ``slmc.artifact`` and below.
"""
