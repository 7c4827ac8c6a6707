"""The ``Backend`` interface: everything slmc does differently per target kind, in one object.

After TVM's ``tvm/relax/backend/<kind>/pipeline.py``, a backend's Relax pipeline is named phases
(``library_dispatch_passes``, ``legalize_passes``, ``schedule_passes``, ``dataflow_lower_passes``,
``finalize_passes``), which ``slmc.backend.relax_pipeline.build_pipeline`` runs in that order with
the tuning database's passes between legalization and scheduling. Around the build, a backend
says which recipes it refuses (``recipe_problems``, checked before the model loads), what it does
after the build (``after_build``: the NPU offload), what it checks of the built kernels
(``check_kernels``: the OpenCL kernel check), and whether ``slmc tune`` can measure its kernels
(``supports_tuning``). What lower layers ask (descriptor checks, op coverage, remote execution)
is ``slmc.spec.backend_registry.TargetKind``, which ``Backend`` extends.

Drivers get a target's backend with ``backend_for(target)`` and never test the kind themselves.
Nothing here imports TVM at import time: the registry loads the backends to validate descriptors.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Protocol, cast

from slmc.errors import BuildError, FieldProblem, RecipeError
from slmc.spec.backend_registry import TargetKind, backend_kinds, get_backend

if TYPE_CHECKING:
    import tvm

    from slmc.artifact.manifest import Verification
    from slmc.backend.lowering import RelaxProgram
    from slmc.graph.ir import Graph
    from slmc.schedules.resident_kv import Residency
    from slmc.spec.recipe import Gates, Recipe
    from slmc.spec.target import TargetDescriptor


@dataclass
class PhaseInputs:
    """What a pipeline phase may use: the descriptor, its TVM target, the notes list schedules report
    into (the manifest's lowering notes), ``slmc_rules`` (False: dlight's rules only, for benchmarks), and
    ``residency`` (a causal LM's cache, which the resident-cache rewrite records its outcome in; else None)."""

    target: TargetDescriptor
    tvm_target: tvm.target.Target
    notes: list[str] = field(default_factory=list)
    slmc_rules: bool = True
    residency: Residency | None = None


class PostBuild(Protocol):
    """What a backend's ``after_build`` returns: files for the artifact, manifest entries, and its
    addition to the verification report."""

    def write(self, directory: Path) -> None:
        """Write its files into the staged artifact ``directory``."""

    def manifest_entries(self) -> dict[str, Any]:
        """Top-level manifest fields it sets (``slmc.artifact.manifest.CompiledGraph``: e.g. ``npu``, the
        partition report; a kind without a typed field of its own writes under ``backend``)."""

    def record(self, verification: Verification) -> Verification:
        """``verification`` with this backend's own check added (``passed`` includes it)."""


class Backend(TargetKind):
    """One target kind's compilation. Subclasses register with ``@register_backend("<kind>")``.

    ``supports_tuning``: ``slmc tune`` can measure this kind's kernels on this machine (MetaSchedule's
    local runner executes CPU code).
    """

    supports_tuning: ClassVar[bool] = False
    # the resident attention kernels read a KV cache stored in int8 (recipe kv_cache.dtype; slmc.schedules.resident_kv)
    quantized_kv_cache: ClassVar[bool] = False

    # -- before the model loads ---------------------------------------------------------------
    def recipe_problems(self, recipe: Recipe, target: TargetDescriptor) -> list[FieldProblem]:
        """Recipe settings this kind cannot compile (default: none). Precondition: the recipe
        passed ``slmc.spec.recipe.check_against_target``."""
        return []

    # -- the Relax pipeline, in the order build_pipeline runs the phases -----------------------
    def library_dispatch_passes(self, phase: PhaseInputs) -> list[tvm.transform.Pass]:
        """Ops dispatched to libraries before legalization (TVM's generic CPU ones by default)."""
        from tvm.relax.backend.cpu_generic import pipeline

        return pipeline.library_dispatch_passes(phase.tvm_target)

    def legalize_passes(self, phase: PhaseInputs) -> list[tvm.transform.Pass]:
        """Legalization and fusion; the default is slmc's (``fused_kernel_passes``)."""
        return fused_kernel_passes(phase.residency)

    def schedule_passes(self, phase: PhaseInputs) -> list[tvm.transform.Pass]:
        """Schedules for the fused kernels the tuning database left unscheduled."""
        raise NotImplementedError(f"backend '{self.kind}' defines no schedule_passes")

    def dataflow_lower_passes(self, phase: PhaseInputs) -> list[tvm.transform.Pass]:
        """A returned reshape made a view (``slmc.schedules.returned_view``), then TVM's generic lowering, with
        TVM's common-subexpression elimination right after its ``RewriteDataflowReshape``: a Llama layer reshapes
        the rotary tables to the same view as every other layer (``unsqueeze`` in ``apply_rotary_pos_emb``), and
        each repeat was a ``vm.builtin.reshape`` call per step (60 of the 244 of a SmolLM-135M step; docs/dev-notes.md
        "Session 13: VM cost per decode step"); a pure call repeated in a dataflow block becomes the first."""
        from tvm.relax.backend.cpu_generic import pipeline

        from tvm import relax
        from slmc.schedules.returned_view import returned_view

        rewrite_reshape, *lowering = pipeline.dataflow_lower_passes(phase.tvm_target)
        if rewrite_reshape.info.name != "RewriteDataflowReshape":
            raise BuildError(f"TVM's CPU dataflow lowering starts with {rewrite_reshape.info.name}, "
                             "not RewriteDataflowReshape (common-subexpression elimination runs after it)")
        return [returned_view, rewrite_reshape, relax.transform.EliminateCommonSubexpr(), *lowering]

    def finalize_passes(self, phase: PhaseInputs) -> list[tvm.transform.Pass]:
        """TVM's generic finalization (memory plan, kills, VM builtins), then the kills that free nothing
        dropped from functions whose memory is planned and small (``slmc.schedules.planned_kills``)."""
        from tvm.relax.backend.cpu_generic import pipeline

        from slmc.schedules.planned_kills import planned_kills

        return [*pipeline.finalize_passes(phase.tvm_target), planned_kills]

    # -- after the build -----------------------------------------------------------------------
    def after_build(self, graph: Graph, module: tvm.IRModule, target: TargetDescriptor,
                    calibration: list[tuple[Any, ...]], gates: Gates | None = None) -> PostBuild | None:
        """Work on the built model beyond the library (default: none). ``graph`` is the compiled fx
        graph, ``module`` the Relax module lowered from it, ``calibration`` the recipe's samples,
        ``gates`` the recipe's ``verify.gates`` (a kind measuring gates of its own: the NPU's)."""
        return None

    def check_kernels(self, verification: Verification, executable: Any, program: RelaxProgram,
                      target: TargetDescriptor, verify_enabled: bool) -> Verification:
        """The verification report with this kind's check of the built kernels added (default:
        unchanged). Called after the artifact was (or was not) executed."""
        return verification


def fused_kernel_passes(residency: Residency | None = None,
                        resident_rewrites: list[tvm.transform.Pass] | None = None) -> list[tvm.transform.Pass]:
    """slmc's legalization and fusion, shared by every kind: the KV cache append in place, the resident
    cache function when ``residency`` is given (``slmc.schedules.resident_kv``: it needs attention
    kernels that read the cache as it is, so a kind without ``attention_rewrite`` records why not), then a
    kind's own ``resident_rewrites`` of the resident functions (CPU: one tiled attention kernel per layer,
    ``slmc.schedules.flash_rewrite``), TVM's legalization with slmc's overrides
    (``slmc.backend.legalize_overrides``), then fusion."""
    from tvm import relax

    from slmc.backend.legalize_overrides import legalize_overrides
    from slmc.schedules.kv_append import kv_append
    from slmc.schedules.resident_kv import resident_kv

    return [
        kv_append,  # each layer's KV append reads the stacked cache in place (slmc.schedules.kv_append)
        *([resident_kv(residency)] if residency is not None else []),
        *(resident_rewrites or []),
        relax.transform.LegalizeOps(legalize_overrides()),
        relax.transform.AnnotateTIROpPattern(),
        relax.transform.FoldConstant(),
        relax.transform.FuseOps(),
        relax.transform.FuseTIR(),
        relax.transform.DeadCodeElimination(),
    ]


def backend_for(target: TargetDescriptor) -> Backend:
    """The backend of ``target.kind`` (a validated descriptor's kind is always registered)."""
    backend = get_backend(target.kind)
    if not isinstance(backend, Backend):
        raise TypeError(f"the backend of kind '{target.kind}' ({type(backend).__qualname__}) is not a slmc.backend.base.Backend")
    return cast(Backend, backend)


def kv_cache_problems(backend: Backend, recipe: Recipe, target: TargetDescriptor) -> list[FieldProblem]:
    """The recipe's ``kv_cache`` against the kind: a stored dtype other than float32 needs
    ``Backend.quantized_kv_cache``."""
    dtype = recipe.kv_cache.dtype
    if dtype == "float32" or backend.quantized_kv_cache:
        return []
    able = [kind for kind in backend_kinds() if getattr(get_backend(kind), "quantized_kv_cache", False)]
    return [FieldProblem("kv_cache.dtype", f"target '{target.name}' (kind '{target.kind}') cannot store the KV cache in "
                                           f"{dtype}: its attention does not read the resident cache; kinds that can: "
                                           f"{', '.join(able) or 'none'}", None, dtype)]


def check_recipe(recipe: Recipe, target: TargetDescriptor) -> None:
    """Raise ``RecipeError`` (exit 2) naming every setting the target's backend refuses."""
    backend = backend_for(target)
    problems = [*kv_cache_problems(backend, recipe, target), *backend.recipe_problems(recipe, target),
                *_npu_gate_problems(recipe, target)]
    if problems:
        raise RecipeError(recipe.source, problems)


NPU_GATES = ("min_npu_mac_fraction", "max_npu_cycles", "max_npu_latency_ms", "npu_sram_fit")


def _npu_gate_problems(recipe: Recipe, target: TargetDescriptor) -> list[FieldProblem]:
    """The NPU gates (``slmc.npu.gates``) name NPU partitions: a target without an ``npu`` section has none."""
    if target.npu is not None:
        return []
    gates = recipe.verify.gates
    return [FieldProblem(f"verify.gates.{name}", f"an NPU gate, and target '{target.name}' (kind {target.kind}) has no NPU")
            for name in NPU_GATES if getattr(gates, name) is not None]
