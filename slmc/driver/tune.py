"""``slmc tune``: MetaSchedule search over a compiled model's kernels, records into the tuning database.

The model goes through the same steps as ``slmc compile`` up to the schedule point of slmc's
Relax pipeline (recipe passes, Relax import, legalization, fusion); the fused kernels there are
exactly what ``compile`` later looks up in the database (``slmc.backend.tuning_db``). Each kernel with static
shapes is tuned with MetaSchedule's evolutionary search (Shao et al., NeurIPS 2022), candidates
built in-process (``slmc.backend.tuning_builder``: TVM's ``LocalBuilder`` times out here, see
docs/tuning.md) and measured by TVM's ``LocalRunner``. Kernels with symbolic shapes (a causal LM's
token and cache lengths) cannot be measured by MetaSchedule's runner and are reported as skipped,
as are kernels the database already has records for (reuse). Tasks run heaviest first (FLOPs x
occurrences) until ``budget_minutes`` is spent; the budget is checked between kernels.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any

import tvm

from slmc.errors import InputError
from slmc.backend.tuning_db import open_json_database, target_key, user_database_root


def _static(func: tvm.tirx.PrimFunc) -> bool:
    """Every parameter is a tensor of constant shape (what MetaSchedule's runner can allocate)."""
    from tvm.s_tir.meta_schedule.arg_info import ArgInfo

    try:
        ArgInfo.from_prim_func(func)
    except (TypeError, RuntimeError, ValueError):  # symbolic sizes do not convert to IntImm shapes
        return False
    return True


def _flops(func: tvm.tirx.PrimFunc) -> float:
    from tvm.s_tir.analysis import estimate_tir_flops

    try:
        return float(estimate_tir_flops(tvm.IRModule({"main": func})))
    except (RuntimeError, ValueError, TypeError):
        return 0.0


def fused_kernels(model: Any, recipe: Any, target: Any) -> tuple[Any, Any, tvm.IRModule]:
    """(recipe, resolved target, fused unscheduled module) for ``model`` as ``compile`` would build it."""
    from slmc.driver.compress import compress
    from slmc.backend.base import backend_for
    from slmc.backend.deterministic_build import deterministic_call_te, deterministic_pipeline
    from slmc.backend.lowering import to_relax
    from slmc.frontend.model_source import load_model
    from slmc.models import DEFAULT_MODEL
    from slmc.spec.recipe import check_against_target, load_recipe
    from slmc.backend.relax_pipeline import PipelineRecord, build_pipeline
    from slmc.spec.target import load_target

    recipe = load_recipe(recipe)
    target_desc = load_target(target or recipe.document.target or "host")
    check_against_target(recipe, target_desc)
    if not backend_for(target_desc).supports_tuning:
        raise InputError(f"slmc tune measures kernels on this machine; target '{target_desc.name}' is a "
                         f"{target_desc.tvm.kind} target (CPU targets only)")
    runs, why = target_desc.runs_here()
    if not runs:
        raise InputError(f"slmc tune measures kernels on this machine, where target '{target_desc.name}' does not run: {why}")
    spec = load_model(model if model is not None else (recipe.document.model or DEFAULT_MODEL))
    program = to_relax(compress(spec, recipe, target_desc).final)
    record = PipelineRecord()
    with deterministic_call_te():
        deterministic_pipeline(build_pipeline(target_desc, target_desc.tvm_target(), record))(program.module)
    return recipe, target_desc, record.unscheduled


def tune(model: Any = None, recipe: Any = None, target: Any = None, trials: int = 64,
         budget_minutes: float | None = None, db: str | Path | None = None, seed: int = 0) -> dict[str, Any]:
    """Tune the static kernels of ``model`` (compiled with ``recipe`` for ``target``); returns a report."""
    from tvm.s_tir import meta_schedule as ms

    from slmc.backend.tuning_builder import STATS, InProcessBuilder, register_cpu_intrinsics, reset_stats

    if trials < 1:
        raise InputError(f"--trials must be at least 1, got {trials}")
    if budget_minutes is not None and budget_minutes <= 0:
        raise InputError(f"--budget-minutes must be positive, got {budget_minutes}")
    directory = user_database_root(db)  # checked before the model loads
    start = time.perf_counter()
    _, target_desc, fused = fused_kernels(model, recipe, target)
    tvm_target = target_desc.tvm_target()
    directory = directory / target_key(target_desc)
    database = open_json_database(directory, create=True)
    extracted = ms.relax_integration.extract_tasks(fused, tvm_target)
    kernels = []
    for task in extracted:
        func = task.dispatched[0]["main"]
        kernels.append({"task": task, "name": task.task_name, "weight": int(task.weight),
                        "flops": _flops(func), "static": _static(func)})
    kernels.sort(key=lambda k: (-k["flops"] * k["weight"], k["name"]))
    register_cpu_intrinsics()  # backends that support tuning are CPU ones (checked above): skips the CUDA intrinsics' import
    runner = ms.runner.LocalRunner(timeout_sec=60)
    reset_stats()
    report: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="slmc-tune-") as work:
        for entry in kernels:
            task = entry.pop("task")
            report.append(entry)
            mod = task.dispatched[0]
            if not entry["static"]:
                entry["skipped"] = "symbolic shapes: MetaSchedule's runner needs static shapes (default schedule rules apply)"
                continue
            if database.query_tuning_record(mod, tvm_target, "main") is not None:
                entry["skipped"] = "already in the database"
                continue
            if budget_minutes is not None and time.perf_counter() - start > 60 * budget_minutes:
                entry["skipped"] = f"budget of {budget_minutes} min spent"
                continue
            t = time.perf_counter()
            contexts, weights = ms.relax_integration.extracted_tasks_to_tune_contexts(
                [task], work_dir=work, seed=seed, num_threads=1)
            ms.tune_tasks(tasks=contexts, task_weights=weights, work_dir=work, max_trials_global=trials,
                          num_trials_per_iter=min(trials, 32), builder=InProcessBuilder(), runner=runner,
                          database=database, cost_model="xgb")
            best = database.query_tuning_record(mod, tvm_target, "main")
            entry["seconds"] = round(time.perf_counter() - t, 2)
            entry["trials"] = trials
            entry["best_us"] = (round(1e6 * sum(float(c) for c in best.run_secs) / len(best.run_secs), 2)
                                if best is not None and best.run_secs else None)
    return {
        "database": str(directory),
        "target": target_desc.name,
        "target_key": target_key(target_desc),
        "kernels": report,
        "tuned": sum("best_us" in k for k in report),
        "builder": {"built": STATS["built"], "failed": STATS["failed"], "seconds": round(STATS["seconds"], 2)},
        "seconds": round(time.perf_counter() - start, 1),
    }
