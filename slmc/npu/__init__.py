"""NPU targets (``kind: npu``): partitioning, integer lowering, partition report, QDQ ONNX export.

No TVM BYOC codegen for an NPU ships in the TVM wheel, so slmc does not execute anything on an NPU;
Arm's tools compile (Vela) and execute (TOSA reference model) the partitions' TOSA lowering.
What it does for an NPU target (docs/targets.md, "NPU"):

- ``recipe_check``: the recipe must full-integer quantize (``quantize: {scheme: w8a8}``), else exit 2;
- ``partition``: NPU regions of the Relax module with ``FuseOpsByPattern`` + ``MergeCompositeFunctions``;
- ``fallback``: every other op of the graph, with the reason it stays on the CPU;
- ``fixed_point`` / ``integer_kernel``: the NPU's integer arithmetic (int8 x int8 -> int32,
  fixed-point requantize, saturation) as a numpy reference and as a TVM kernel run on the host;
- ``qdq_onnx``: the regions as a QDQ ONNX model, executed by ONNX Runtime for the cross-check;
- ``report``: per partition ops, MACs, SRAM fit or tiling, estimated cycles;
- ``tosa_lowering``: each partition as a TOSA 1.0 graph (CONV2D + RESCALE), serialized with Arm's tosa-tools;
- ``tosa_reference``: Arm's TOSA reference model executing it, the integer oracle (bit-exact check);
- ``vela``: Arm's Vela compiling it for an Ethos-U, its summary, per-op placement and refusals;
- ``toolchain``: those three per partition, for the manifest's ``npu_toolchain``;
- ``gates``: the recipe's NPU gates (``min_npu_mac_fraction``, ``max_npu_cycles``, ...);
- ``offload``: the compile driver's entry point tying these together.

Layer 5 (beside ``slmc.passes`` and ``slmc.schedules``, which it does not import): imports ``slmc.models``,
``slmc.quantization``, ``slmc.artifact`` and below.
"""
