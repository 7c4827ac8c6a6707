"""The compile driver: recipe + target + model -> passes -> TVM build -> verified artifact.

Order matters for build pipelines: everything that can be checked without the model (recipe,
descriptor, recipe against target, output directory) is checked before the model is loaded.
"""

from __future__ import annotations

import platform
from collections.abc import Callable
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import tvm

import slmc
from slmc.driver import interrupt
from slmc.artifact.aligned_safetensors import save_aligned
from slmc.artifact.weight_aliases import identical_tensors, mapped_parameters
from slmc.artifact.layout import LIBRARY, WEIGHTS, StagedArtifact, check_destination, file_entries, write_manifest
from slmc.artifact.manifest import (HOST, CompiledGraph, ContextInfo, KVCacheInfo, LayerSize, Manifest, ModelInfo, PassReport, Signature,
                                    TokenizerEntry, Verification, Versions, WeightsInfo, new_manifest)
from slmc.verify.artifact_check import save_reference
from slmc.graph.kv_cache_fit import fit_samples
from slmc.cache.compile_step import CacheSession
from slmc.driver import default_recipe
from slmc.driver.compress import compress, trace_and_calibrate
from slmc.driver.freed_memory import return_freed_memory
from slmc.models.context_length import fit_context
from slmc.quantization.ops import forget_dequantized
from slmc.models.memory_fit import check_compiled_weights, check_loaded_model
from slmc.errors import BuildError, ExecutionRequiredError, FieldProblem, InputError, RecipeError, VerificationError
from slmc.verify.decode_speed import measure_decode_speed, not_measured as speed_not_measured
from slmc.verify.evaluation import document_tokens
from slmc.data.texts import load_texts
from slmc.graph.ir import Graph, ModelSpec
from slmc.graph.kv_cache import KVCacheSpec, eager_step, round_stored
from slmc.backend.lowering import RelaxProgram, build, export_library, to_relax
from slmc.frontend.model_source import load_model
from slmc.models import DEFAULT_MODEL
from slmc.backend.base import PostBuild, backend_for, check_recipe
from slmc.frontend.onnx_import import (is_onnx_file, load_onnx_model, onnx_fingerprint, onnx_sample_inputs, onnx_signature,
                              run_onnxruntime)
from slmc.verify.placement import Execution, check_device, decide
from slmc.spec.recipe import Recipe, check_against_target, load_recipe
from slmc.report.report_json import layer_sizes
from slmc.spec.target import TargetDescriptor, load_target
from slmc.data.tokenizer import save_tokenizer
from slmc.verify.numerics import (decode_comparison, eager_decode, effective_settings, generated_samples, host_report, perplexity_gate,
                                  run_eager, smallest_sample, verification_report)


@dataclass
class CompileResult:
    """What ``slmc.compile`` returns (and ``slmc compile --json`` prints)."""

    artifact: Path | None
    manifest: Manifest
    timings: dict[str, float] = field(default_factory=dict)
    cache: dict[str, Any] | None = None  # hit or miss, key, components (slmc.cache.compile_step); None: caching off

    @property
    def verification(self) -> Verification:
        return self.manifest.verification

    def to_json(self) -> dict[str, Any]:
        m = self.manifest
        return {
            "ok": self.artifact is not None,
            "artifact": str(self.artifact) if self.artifact else None,
            "model": m.model.model_dump(mode="json", exclude_none=True),
            "target": m.target.name,
            "verification": m.verification.model_dump(mode="json"),
            "passes": [{"name": p.name, "seconds": p.seconds, "stats": p.stats} for p in m.passes],
            "files": {name: entry.model_dump(mode="json") for name, entry in m.files.items()},
            "timings": self.timings,
            "cache": self.cache or {"status": "disabled"},
        }


def default_output_dir(model_name: str, target: TargetDescriptor) -> Path:
    safe = re.sub(r"[^A-Za-z0-9._-]+", "_", model_name).strip("_") or "model"
    return Path("slmc-out") / f"{safe}-{target.name}"


def _kv_cache_info(cache: KVCacheSpec | None, residency: Any) -> KVCacheInfo | None:
    """The manifest's ``kv_cache``: the compressed graph's cache and the contract the build gave it
    (``residency``: ``slmc.schedules.resident_kv.Residency``, the outcome of the resident-cache rewrite)."""
    if cache is None:
        return None
    resident = residency is not None and residency.mode == "resident"
    if cache.narrowed and not resident:
        why = residency.reason if residency is not None else "not built by slmc's pipeline"
        raise BuildError(f"the KV cache cannot be stored in {cache.dtype}: it needs the resident cache contract, and "
                         f"this model's build kept the copy contract ({why})")
    return KVCacheInfo(**cache.to_json(), mode="resident" if resident else "copy",
                       reason=None if resident else (residency.reason if residency is not None else "not built by slmc's pipeline"),
                       last_position=resident and residency.last_position is None, dtype=cache.dtype,
                       bytes_per_token=cache.bytes_per_token())


def _signature(graph: Graph) -> Signature:
    """Inputs and outputs with dtypes and shapes; dynamic sizes named after their ``Dim``s."""
    import sympy

    placeholders = [n for n in graph.graph.nodes if n.op == "placeholder"]
    specs = list(graph.dynamic_shapes or [None] * len(placeholders))
    names: dict[sympy.Symbol, sympy.Symbol] = {}
    bounds: dict[str, list[int]] = {}
    for node, spec in zip(placeholders, specs):
        for axis, dim in dict(spec or {}).items():
            size = node.meta["val"].shape[int(axis)]
            if isinstance(size, torch.SymInt):
                names[size.node.expr] = sympy.Symbol(dim.__name__)
            bounds[dim.__name__] = [int(dim.min), int(dim.max)]

    def describe(val: Any, name: str) -> dict[str, Any]:
        shape = [int(d) if isinstance(d, int) else str(d.node.expr.xreplace(names)) for d in val.shape]
        return {"name": name, "dtype": str(val.dtype).removeprefix("torch."), "shape": shape}

    output_node = next(n for n in graph.graph.nodes if n.op == "output")
    vals = output_node.args[0] if isinstance(output_node.args[0], (tuple, list)) else [output_node.args[0]]
    return Signature.model_validate({
        "inputs": [describe(n.meta["val"], name) for n, name in zip(placeholders, graph.input_names)],
        "outputs": [describe(v.meta["val"], (graph.output_names or ())[i] if i < len(graph.output_names or ()) else f"output_{i}")
                    for i, v in enumerate(vals)],
        "dynamic_dims": bounds,
    })


def _versions() -> Versions:
    return Versions(slmc=slmc.__version__, tvm=tvm.__version__, torch=torch.__version__, python=platform.python_version())


def _verify_artifact(staged: Path, execution: Execution, recipe: Recipe, final: Graph, original: Graph,
                     calibration: list[tuple[torch.Tensor, ...]], spec: ModelSpec, final_cache: Any,
                     tokenizer: Any) -> Verification:
    """``final_cache``: the compressed graph's KV cache (``spec.kv_cache`` is the original's);
    ``original``: the original on the final graph's token ids, ``tokenizer`` the final graph's
    (both differ from the model's after ``vocab_trim``: ``Compressed.reference``).

    The gates (compressed graph against the original, both eager) are measured here in every case;
    the artifact is compared with eager only where ``execution.runs``, else those checks are
    recorded as not executed. The stored inputs and eager outputs (for ``slmc verify``) are saved either way."""
    settings, tolerance_reason = effective_settings(recipe.verify, final)
    # num_samples in all: the smallest inputs first (kept for `slmc verify`), then calibration samples
    # if the recipe has them, else inputs generated like the example (the example itself first)
    rest = settings.num_samples - 1
    if calibration:
        others = fit_samples(final, calibration[:rest])
    else:
        max_context = spec.kv_cache.max_context if spec.kv_cache is not None else None
        others = generated_samples(final, rest, seed=0, max_context=max_context) if rest else []
    samples = [_as_stored(final_cache, s) for s in [smallest_sample(final)] + others]
    reference = run_eager(final, samples)
    # everything the final graph runs eagerly before the artifact loads: its dequantized weights (the float
    # model's size) are then forgotten, not held beside the artifact (issue 22's compile peak)
    theirs = eager_decode(eager_step(final.module), final_cache) if execution.runs and spec.task == "causal-lm" else None
    forget_dequantized()
    return_freed_memory()
    original_out = run_eager(original, fit_samples(original, samples))
    recheck = save_reference(staged, samples, reference, settings.atol, settings.rtol)  # for slmc verify
    ids = None
    if settings.gates.max_perplexity_increase is not None:
        ids = document_tokens(load_texts(recipe.evaluation_text()), tokenizer, settings.max_eval_tokens)
    update: dict[str, Any] = {"recheck": recheck}
    if tolerance_reason:
        update["tolerance"] = tolerance_reason
    if not execution.runs:
        checks = ["artifact_vs_eager"] + (["decode"] if spec.task == "causal-lm" else [])
        how = (f"gates measured on this machine: the compressed fx graph run eagerly against the original on "
               f"{len(samples)} samples; the artifact was {execution.not_run}")
        report = host_report(settings, reference, original_out, how, execution.not_run, checks)
        if spec.task == "causal-lm":
            update["speed"] = speed_not_measured(f"the artifact was {execution.not_run}")
        if ids is not None:
            update["perplexity"], gate = perplexity_gate(eager_step(final.module), eager_step(original.module), final_cache, ids,
                                                         settings, original_cache=spec.kv_cache, where=HOST)
            update.update(gates=[*report.gates, gate], passed=report.passed and gate.passed,
                          how=f"{how}; perplexity of the compressed graph run eagerly against the original's")
        return report.model_copy(update=update)
    with execution.open(staged) as model:
        actual = [model.run_numpy(*[t.numpy() for t in s]) for s in samples]
        how = f"{execution.how(len(samples))}; compared with eager torch"
        report = verification_report(settings, reference, actual, original_out, how)
        update.update(device=execution.device, execution=execution.record())
        if spec.task == "causal-lm":
            decode = decode_comparison(model.decoder(), theirs, final_cache, settings)
            update.update(decode=decode, passed=report.passed and decode.within_tolerance,
                          how=f"{report.how}; greedy decode of {decode.steps} tokens through the KV cache compared step by step")
            update["speed"] = (measure_decode_speed(model.decoder(), final_cache, eager_step(original.module), spec.kv_cache,
                                                    int(model.outputs[0].shape[-1]))
                               if execution.device is None else
                               speed_not_measured(f"executed on {execution.device}, not on this host"))
        if ids is not None:
            update["perplexity"], gate = perplexity_gate(model.decoder(), eager_step(original.module), final_cache, ids, settings,
                                                         original_cache=spec.kv_cache)
            update.update(gates=[*report.gates, gate], passed=update.get("passed", report.passed) and gate.passed)
    return report.model_copy(update=update)


def _as_stored(cache: KVCacheSpec | None, sample: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
    """A verification sample with its past cache as a float16 or int8 cache stores it (the artifact rounds the cache it is
    given, ``ResidentCache.load``): eager and artifact then read the same cache. Unchanged for float32."""
    if cache is None or not cache.narrowed or len(sample) != 3:
        return sample
    ids, keys, values = sample
    return (ids, *(torch.from_numpy(round_stored(cache, t.numpy())) for t in (keys, values)))


def _check_model_fits_recipe(recipe: Recipe, spec: ModelSpec) -> None:
    """Settings that only make sense for some models, checked as soon as the model is known."""
    if recipe.verify.gates.max_perplexity_increase is not None and (spec.task != "causal-lm" or spec.tokenizer is None):
        raise InputError(
            f"{recipe.source}: verify.gates.max_perplexity_increase needs a causal LM with a tokenizer; "
            f"model '{spec.name}' is a {spec.task} model"
        )
    if recipe.kv_cache.dtype != "float32" and spec.kv_cache is None:
        raise InputError(f"{recipe.source}: kv_cache.dtype {recipe.kv_cache.dtype} needs a causal LM with a KV cache; "
                         f"model '{spec.name}' is a {spec.task} model without one")


def _write_weights(program: RelaxProgram, path: Path) -> WeightsInfo:
    # 64-byte aligned, so the runtimes can hand TVM views of the memory-mapped file; identical tensors stored once
    tensors = {name: np.asarray(w, order="C") for name, w in zip(program.weight_names, program.weights)}
    aliases = identical_tensors(tensors)
    stored = {name: w for name, w in tensors.items() if name not in aliases}
    save_aligned(stored, path)
    return WeightsInfo(order=list(program.weight_names), count=len(program.weights), bytes=int(sum(w.nbytes for w in stored.values())),
                       dtypes=sorted({str(w.dtype) for w in program.weights}), aliases=aliases)


def _onnx_recipe(recipe: Recipe, given: bool, example_inputs: Any, dynamic_shapes: Any) -> list[str]:
    """What an ONNX model cannot take from a recipe: fx passes, calibration, perplexity gates.

    An explicit recipe that asks for any of them is rejected (exit 2); the built-in default
    recipe (no ``recipe`` given: ``cleanup``) contributes only its ``verify`` settings. Returns notes.
    """
    if example_inputs is not None or dynamic_shapes is not None:
        raise InputError("example_inputs/dynamic_shapes do not apply to an ONNX model: its graph inputs define them")
    if not given:
        dropped = [step.name for step in recipe.steps]
        return [f"built-in '{default_recipe.LOSSLESS}' recipe's passes ({', '.join(dropped)}) not run: slmc's fx passes do not apply to ONNX models"] if dropped else []
    problems = [FieldProblem(f"passes.{i}.{step.name}", "slmc's fx passes do not apply to an ONNX model (there is no fx graph)")
                for i, step in enumerate(recipe.steps)]
    if recipe.calibration is not None:
        problems.append(FieldProblem("calibration", "calibration feeds fx passes, which do not apply to an ONNX model"))
    if recipe.verify.gates.max_perplexity_increase is not None:
        problems.append(FieldProblem("verify.gates.max_perplexity_increase", "needs a causal LM with a tokenizer, not an ONNX model"))
    if problems:
        raise RecipeError(recipe.source, problems)
    return []


def _verify_onnx_artifact(staged: Path, execution: Execution, recipe: Recipe, path: Path) -> Verification:
    settings = recipe.verify
    samples = onnx_sample_inputs(path, settings.num_samples, seed=0)
    reference = [run_onnxruntime(path, s) for s in samples]
    recheck = save_reference(staged, samples, reference, settings.atol, settings.rtol)  # for slmc verify
    if not execution.runs:
        how = (f"gates measured on this machine with ONNX Runtime (CPUExecutionProvider) on {len(samples)} samples; no passes "
               f"ran, so they compare ONNX Runtime with itself; the artifact was {execution.not_run}")
        return host_report(settings, reference, reference, how, execution.not_run, ["artifact_vs_eager"]).model_copy(
            update={"recheck": recheck})
    with execution.open(staged) as model:
        actual = [model.run_numpy(*s) for s in samples]
        how = (f"{execution.how(len(samples))}; compared with ONNX Runtime "
               "(CPUExecutionProvider); no passes ran, so the gates compare ONNX Runtime with itself")
    report = verification_report(settings, reference, actual, reference, how)
    return report.model_copy(update={"device": execution.device, "execution": execution.record(), "recheck": recheck})


def _compile_onnx(path: Path, recipe: Recipe, target_desc: TargetDescriptor, out: str | Path | None, notes: list[str],
                  timings: dict[str, float], start: float, device: str | None, require_execution: bool) -> CompileResult:
    """``compile`` for an ``.onnx`` file: TVM's ONNX frontend, no fx passes, ONNX Runtime as reference."""
    t = time.perf_counter()
    program = load_onnx_model(path)
    check_compiled_weights(path.stem, int(sum(w.nbytes for w in program.weights)), None, target_desc, after_passes=False)
    out_dir = Path(out) if out is not None else default_output_dir(path.stem, target_desc)
    check_destination(out_dir)
    timings["import"] = time.perf_counter() - t
    t = time.perf_counter()
    executable = build(program, target_desc)
    timings["build"] = time.perf_counter() - t
    fingerprint = onnx_fingerprint(path)
    parameters = int(sum(w.size for w in program.weights))
    head = CompiledGraph(
        model=ModelInfo(name=path.stem, format="onnx", source=str(path), fingerprint=fingerprint, compiled_fingerprint=fingerprint,
                        parameters=parameters, compiled_parameters=parameters,
                        weight_bytes=int(sum(w.nbytes for w in program.weights))),
        signature=Signature.model_validate(onnx_signature(path)),
        passes=[],
        lowering_notes=program.notes + notes,
        task="generic",
    )
    return _package(out_dir, executable, program, recipe, target_desc, head, timings, start, device,
                    verify=lambda staged, execution: _verify_onnx_artifact(staged, execution, recipe, path), tokenizer=None,
                    require_execution=require_execution)


def _package(out_dir: Path, executable: Any, program: RelaxProgram, recipe: Recipe, target_desc: TargetDescriptor,
             head: CompiledGraph, timings: dict[str, float], start: float, device: str | None,
             verify: Callable[[Path, Execution], Verification], tokenizer: Any,
             post_build: PostBuild | None = None, require_execution: bool = False,
             on_commit: Callable[[Path, Manifest], None] | None = None) -> CompileResult:
    """Write library, weights, tokenizer and manifest into a staging directory, verify the staged
    artifact, and rename it into place only if verification passed (and, with ``require_execution``,
    executed the artifact). A ``VerificationError`` carries the staged manifest with the verification.
    ``on_commit(artifact, manifest)`` (the cache entry) runs with the rename, both inside
    ``interrupt.finishing()``: a Ctrl-C recorded before it aborts, one during it does not half-finish it."""
    with StagedArtifact(out_dir) as staged:
        interrupt.stage("export")
        export_library(executable, target_desc, staged.path / LIBRARY)
        if post_build is not None:
            post_build.write(staged.path)  # the backend's files (NPU: partition report + QDQ ONNX of the regions)
        weights = _write_weights(program, staged.path / WEIGHTS)
        # from here on the weights are the file's: views of a mapping cost no memory until read, the
        # arrays they replace (as large as the model) are freed before verification loads the artifact
        program.weights = list(mapped_parameters(staged.path / WEIGHTS, weights.order, weights.aliases).values())
        return_freed_memory()
        stored_tokenizer = save_tokenizer(tokenizer, staged.path)
        manifest = new_manifest(head, versions=_versions(), recipe=recipe.normalized(), target=target_desc, weights=weights,
                                tokenizer=TokenizerEntry.model_validate(stored_tokenizer) if stored_tokenizer is not None else None,
                                files=file_entries(staged.path))
        write_manifest(staged.path, manifest)
        t = time.perf_counter()
        interrupt.stage("verify")
        skipped, execution = decide(recipe, target_desc, device)
        try:
            verification = skipped or verify(staged.path, execution)
            verification = backend_for(target_desc).check_kernels(
                verification, executable, program, target_desc, recipe.verify.enabled)  # GPU: compiled + limits
            if post_build is not None:
                verification = post_build.record(verification)  # NPU: integer reference vs ORT
            timings["verify"] = time.perf_counter() - t
            # now with the stored verification data
            manifest = manifest.model_copy(update={"verification": verification, "files": file_entries(staged.path)})
            if not verification.passed:
                raise VerificationError(verification.failure_message(), verification.model_dump(mode="json"))
            check_executed(verification, require_execution or recipe.verify.require_execution, manifest)
        except VerificationError as exc:
            timings["total"] = time.perf_counter() - start
            exc.manifest = exc.manifest or manifest  # for --report and --junit (KernelCheckError: verification pending)
            exc.timings = {k: round(v, 3) for k, v in timings.items()}
            raise
        write_manifest(staged.path, manifest)
        with interrupt.finishing():
            artifact = staged.commit()
            if on_commit is not None:
                on_commit(artifact, manifest)
    timings["total"] = time.perf_counter() - start
    return CompileResult(artifact=artifact, manifest=manifest, timings={k: round(v, 3) for k, v in timings.items()})


def check_executed(verification: Verification, required: bool, manifest: Manifest,
                   timings: dict[str, float] | None = None) -> None:
    """``ExecutionRequiredError`` (carrying ``manifest``) if ``required`` and the artifact was not executed anywhere."""
    if required and not verification.executed:
        error = ExecutionRequiredError(
            f"the build requires its artifact executed (--require-execution / verify.require_execution), and it was not: "
            f"{verification.reason}", verification.model_dump(mode="json"), manifest)
        error.timings = {k: round(v, 3) for k, v in (timings or {}).items()}
        raise error


@interrupt.watch()  # a Ctrl-C is recorded as well as raised, and checked at every stage and before the commit
def compile(  # noqa: A001 - the public name of the API
    model: Any = None,
    recipe: str | Path | Recipe | None = None,
    target: str | Path | TargetDescriptor | None = None,
    out: str | Path | None = None,
    *,
    example_inputs: Any = None,
    dynamic_shapes: Any = None,
    device: str | None = None,
    cache_dir: str | Path | None = None,
    use_cache: bool = True,
    require_execution: bool = False,
) -> CompileResult:
    """Compile ``model`` with ``recipe`` for ``target`` into the artifact directory ``out``.

    Defaults: the built-in recipe ``default`` (int4, perplexity gate; ``cleanup``, lossless, for a model or
    target it cannot apply to: slmc.driver.default_recipe); the recipe's ``model``/``target`` or ``tiny-lm`` on
    ``host``; ``slmc-out/<model>-<target>``. Raises ``InputError`` subclasses (exit 2) for bad
    input, ``CompileError`` or ``VerificationError`` (exit 1) when the compile or its check fails.
    ``device`` (``rpc://HOST:PORT``, a TVM RPC server: docs/devices.md) is where an artifact for a
    CPU target that does not run here is executed for verification; ``DeviceError`` (exit 1) if
    it cannot be reached (checked before the model loads) or fails. ``cache_dir`` (else
    ``$SLMC_CACHE_DIR``; ``use_cache=False`` ignores both) is a compile cache (slmc/cache/store.py): a
    hit copies the stored, byte-identical artifact into ``out`` instead of compiling.
    ``require_execution`` (or the recipe's ``verify.require_execution``): an artifact that was not
    executed anywhere (natively or on ``device``) fails the build (``ExecutionRequiredError``, exit 1);
    otherwise the quality gates are measured on the host and the checks that need the artifact are
    recorded as not executed (``Verification.not_executed``).
    """
    timings: dict[str, float] = {}
    start = time.perf_counter()
    recipe_given = recipe is not None
    choice = None
    if recipe_given:
        recipe = load_recipe(recipe)
        target_desc = load_target(target or recipe.document.target or "host")
    else:  # the built-in default, or cleanup where default cannot apply (slmc.driver.default_recipe)
        target_desc = load_target(target or "host")
        choice = default_recipe.before_model(target_desc, onnx=is_onnx_file(model if model is not None else DEFAULT_MODEL))
        recipe = choice.recipe
    check_against_target(recipe, target_desc)
    check_recipe(recipe, target_desc)  # what the target's backend refuses (NPU: no w8a8 step)
    model_ref = model if model is not None else (recipe.document.model or DEFAULT_MODEL)
    onnx_notes = _onnx_recipe(recipe, recipe_given, example_inputs, dynamic_shapes) if is_onnx_file(model_ref) else None
    if out is not None:
        check_destination(Path(out))
    check_device(recipe, target_desc, device)
    cache = CacheSession.open(cache_dir, use_cache) if onnx_notes is None else None  # unusable directory: exit 2 now
    timings["check_inputs"] = time.perf_counter() - start
    if onnx_notes is not None:
        return _compile_onnx(Path(model_ref), recipe, target_desc, out, onnx_notes, timings, start, device, require_execution)

    t = time.perf_counter()
    spec = load_model(model_ref, example_inputs, dynamic_shapes)
    out_dir = Path(out) if out is not None else default_output_dir(spec.name, target_desc)
    check_destination(out_dir)
    if choice is not None:
        choice = default_recipe.for_model(choice, spec)
        recipe = choice.recipe
    _check_model_fits_recipe(recipe, spec)
    check_loaded_model(spec, target_desc)
    context = fit_context(spec, recipe, target_desc)
    timings["load"] = time.perf_counter() - t
    prepared = None
    if cache is not None:
        prepared = trace_and_calibrate(spec, recipe, target_desc, timings)
        hit = cache.lookup(spec, *prepared, recipe, target_desc, device, out_dir)
        if hit is not None:
            timings["total"] = time.perf_counter() - start
            check_executed(hit.verification, require_execution or recipe.verify.require_execution, hit, timings)
            return CompileResult(out_dir, hit, {k: round(v, 3) for k, v in timings.items()}, cache.to_json())
    compressed = compress(spec, recipe, target_desc, timings, prepared)
    original, final, calibration, pass_reports = (compressed.original, compressed.final, compressed.calibration,
                                                  compressed.reports)
    check_compiled_weights(spec.name, final.weight_bytes(), compressed.kv_cache, target_desc)

    t = time.perf_counter()
    interrupt.stage("lower")
    program = to_relax(final)
    return_freed_memory()  # TVM's copies of the weights that prepack replaced
    interrupt.stage("build")
    executable = build(program, target_desc, compressed.kv_cache)
    timings["build"] = time.perf_counter() - t
    post_build = backend_for(target_desc).after_build(final, program.module, target_desc, calibration,
                                                            recipe.verify.gates)

    head = CompiledGraph(
        model=ModelInfo(name=spec.name, fingerprint=original.fingerprint(), compiled_fingerprint=final.fingerprint(),
                        parameters=original.num_parameters(), compiled_parameters=final.num_parameters(),
                        weight_bytes=original.weight_bytes()),
        signature=_signature(final),
        layers=[LayerSize.model_validate(row) for row in layer_sizes(original.tensors(), final.tensors())],
        passes=[PassReport.model_validate(report) for report in pass_reports],
        lowering_notes=program.notes,
        tuning=program.tuning,  # None, or which kernels the tuning database scheduled (slmc.backend.tuning_db)
        task=spec.task,
        # the compressed graph's cache
        kv_cache=_kv_cache_info(compressed.kv_cache, program.residency),
        context=ContextInfo.model_validate(context) if context is not None else None,
        recipe_choice=choice.note if choice is not None else None,
    )
    if post_build is not None:  # the backend's own entries (NPU: the partition report)
        head = CompiledGraph.model_validate({**head.model_dump(), **post_build.manifest_entries()})
    result = _package(
        out_dir, executable, program, recipe, target_desc, head, timings, start, device,
        verify=lambda staged, execution: _verify_artifact(staged, execution, recipe, final, compressed.reference, calibration,
                                                          spec, compressed.kv_cache, compressed.tokenizer),
        tokenizer=compressed.tokenizer, post_build=post_build, require_execution=require_execution,
        on_commit=cache.record if cache is not None else None,
    )
    if cache is not None:
        result.cache = cache.to_json()
    return result
