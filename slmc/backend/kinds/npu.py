"""Kind ``npu``: an NPU beside a host CPU; host code is the ``cpu`` backend's, NPU regions are offloaded.

The descriptor's ``npu`` section (the integer datapath) is required, and the NPU executes
full-integer code only: int8 weights and activations, the ``w8a8`` scheme, and on-chip SRAM to size
partitions against. A recipe must have a ``quantize: {scheme: w8a8}`` step
(``slmc.npu.recipe_check``). After the build, ``slmc.npu.offload`` partitions, reports, exports
(QDQ ONNX) and cross-checks the NPU regions; the manifest records the partition report as ``npu``
and the cross-check as ``verification.npu``; with ``npu.tosa_profile``/``npu.vela`` the partitions
also go through Arm's TOSA tools and Vela (manifest ``npu_toolchain``), and the recipe's NPU gates are
measured. Ops the NPU lacks run on the host CPU (reported as fallbacks), so op coverage is not checked.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar

from slmc.backend.base import PostBuild
from slmc.backend.kinds.cpu import CpuBackend
from slmc.spec.backend_registry import register_backend

if TYPE_CHECKING:
    import tvm

    from slmc.errors import FieldProblem
    from slmc.graph.ir import Graph
    from slmc.spec.recipe import Gates, Recipe
    from slmc.spec.target import TargetDescriptor


@register_backend("npu")
class NpuBackend(CpuBackend):
    """The CPU backend's phases for the host code, plus the NPU offload after the build."""

    npu_section: ClassVar[bool] = True
    falls_back_to_host: ClassVar[bool] = True
    quantized_kv_cache: ClassVar[bool] = False  # an int8 cache with the NPU partitioner is not verified yet
    compiled_vm: ClassVar[bool] = False  # the VM's compiled mode with the NPU partitioner's offloaded functions: not tried

    def descriptor_problems(self, target: TargetDescriptor) -> list[str]:
        lacking = [f"{what} lacks int8" for what, dtypes in (("dtypes.weights", target.dtypes.weights),
                                                             ("dtypes.activations", target.dtypes.activations))
                   if "int8" not in dtypes]
        if "w8a8" not in target.quantization.schemes:
            lacking.append("quantization.schemes lacks w8a8")
        if target.memory.sram_bytes is None:
            lacking.append("memory.sram_bytes is not set")
        if not lacking:
            return []
        return ["an NPU executes full-integer (int8) code and slmc sizes its partitions against its on-chip SRAM: "
                + "; ".join(lacking)]

    def recipe_problems(self, recipe: Recipe, target: TargetDescriptor) -> list[FieldProblem]:
        from slmc.npu.recipe_check import npu_recipe_problems

        return npu_recipe_problems(recipe, target)

    def after_build(self, graph: Graph, module: tvm.IRModule, target: TargetDescriptor,
                    calibration: list[tuple[Any, ...]], gates: Gates | None = None) -> PostBuild | None:
        from slmc.npu.offload import npu_offload

        return npu_offload(graph, module, target, calibration, gates)
