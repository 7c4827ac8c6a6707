"""``slmc search``: run the grid's trials, derive the objectives, pick the front and the recipe.

Objectives (all minimized): relative perplexity increase over the uncompressed model (measured
on the same tokens in the same way), stored weight bytes, and decode latency. Latency:
``measured`` compiles and times only the candidates on the quality x size front that meet the
quality and size budgets (a compile takes ~25 s on 2 cores; a candidate dominated in quality and
size is not measured, so the front is the quality x size front annotated with latency), ``model``
uses the target's roofline for every candidate (3-objective front), ``none`` leaves it out.
The chosen recipe: the smallest front member within every budget (ties: lower perplexity
increase, lower latency, id).

A time budget (``minutes``) bounds the search's wall time: the baseline runs first and always;
no further trial (nor latency measurement) starts once it is spent, and the result lists the
candidates left out (``not_run``). Progress: one candidate ``i/N`` (with an ETA) as each trial ends.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from slmc import progress
from slmc.errors import BudgetNotMetError, InputError
from slmc.search import pareto
from slmc.search.executors import run_local, run_ray
from slmc.search.latency import cost_model_ms, measure
from slmc.search.space import BASELINE_ID, Budget, Candidate, EvalSettings, SearchSpace, candidates
from slmc.search.trial import TrialJob, run_trial
from slmc.spec.target import TargetDescriptor, builtin_target_names, load_target

LATENCY_MODES = ("auto", "measured", "model", "none")


@dataclass
class SearchResult:
    target: str
    points: list[dict[str, Any]]
    front: list[str]
    chosen: str
    excluded: list[dict[str, Any]]
    settings: dict[str, Any]
    candidates: dict[str, Candidate] = field(repr=False)
    not_run: list[str] = field(default_factory=list)  # candidates left out when the time budget was spent


def _target_reference(ref: str, target: TargetDescriptor) -> str:
    """How recipes and trial processes name the target: a built-in name, else the file's absolute path."""
    return ref if ref == target.name and ref in builtin_target_names() else str(Path(ref).resolve())


def _jobs(model: str, target: str, cands: list[Candidate], evaluation: EvalSettings, budget: Budget,
          threads: int) -> list[TrialJob]:
    """One job per candidate, the baseline first (every other trial is compared with it)."""
    cands = sorted(cands, key=lambda c: c.id != BASELINE_ID)
    return [TrialJob(c.id, c.recipe_yaml(), model, target, evaluation.text, evaluation.max_tokens, evaluation.window,
                     evaluation.stride, budget.min_cosine is not None, threads) for c in cands]


def _points(results: list[dict[str, Any]], cands: dict[str, Candidate]) -> list[dict[str, Any]]:
    base = next(r for r in results if r["id"] == BASELINE_ID)["perplexity"]
    return [{**r, **cands[r["id"]].settings(), "ppl_increase": r["perplexity"] / base - 1.0,
             "baseline_perplexity": base, "latency_ms": None} for r in results]


def _violations(point: dict[str, Any], budget: Budget, with_latency: bool) -> list[tuple[str, float, str]]:
    """(CLI option, limit, metric key) of each budget the point misses."""
    checks = [("--max-ppl-increase", budget.max_ppl_increase, "ppl_increase", lambda v, t: v <= t),
              ("--min-cosine", budget.min_cosine, "cosine", lambda v, t: v >= t),
              ("--max-size-bytes", budget.max_size_bytes, "size_bytes", lambda v, t: v <= t)]
    if with_latency:
        checks.append(("--max-latency-ms", budget.max_latency_ms, "latency_ms", lambda v, t: v is not None and v <= t))
    return [(opt, limit, key) for opt, limit, key, ok in checks if limit is not None and not ok(point[key], limit)]


def _no_candidate(points: list[dict[str, Any]], budget: Budget, with_latency: bool, note: str = "") -> BudgetNotMetError:
    missed = sorted({v for p in points for v in _violations(p, budget, with_latency)})
    budgets = []
    for opt, limit, key in missed:
        values = [p[key] for p in points if p[key] is not None]
        best = (max if opt == "--min-cosine" else min)(values) if values else None
        budgets.append({"option": opt, "limit": limit, "metric": key, "best_reached": best})
    text = "; ".join(f"{b['option']} {b['limit']:g}: best {b['metric']} reached {b['best_reached']!r}" for b in budgets)
    return BudgetNotMetError(f"no candidate of {len(points)} meets the budget ({text}){note}", budgets)


def _latency(points: list[dict[str, Any]], mode: str, target: TargetDescriptor, cands: dict[str, Candidate],
             budget: Budget, out: Path, model: str, deadline: float | None = None) -> list[str]:
    """Fill ``latency_ms`` (measurements that would start after ``deadline`` are left out); return the
    objectives of the front."""
    quality_size = ["ppl_increase", "size_bytes"]
    if mode == "none":
        return quality_size
    if mode == "model":
        for p in points:
            p["latency_ms"] = cost_model_ms(target, p["size_bytes"], p["macs_per_token"])
            p["latency_source"] = "cost model"
        return quality_size + ["latency_ms"]
    for point in pareto.front(points, quality_size):  # the same dicts as in ``points``
        if _violations(point, replace(budget, max_latency_ms=None), False):
            continue
        if deadline is not None and time.monotonic() >= deadline:
            progress.line(f"search: time budget spent, latency of {point['id']} not measured")
            continue
        recipe_path = out / "candidates" / f"{point['id']}.yaml"
        recipe_path.parent.mkdir(parents=True, exist_ok=True)
        recipe_path.write_text(cands[point["id"]].recipe_yaml(), encoding="utf-8")
        point.update(measure(model, recipe_path, target, out / "candidates" / point["id"]), latency_source="measured")
    return quality_size


def search(model: str, target_ref: str, budget: Budget, out: Path, *, space: SearchSpace = SearchSpace(),
           evaluation: EvalSettings = EvalSettings(), workers: int = 1, ray_address: str | None = None,
           latency: str = "auto", threads: int = 1, minutes: float | None = None) -> SearchResult:
    """Run the search within ``minutes`` of wall time (None: no limit); raise ``BudgetNotMetError`` when
    no candidate meets ``budget``."""
    if minutes is not None and minutes <= 0:
        raise InputError(f"time budget {minutes:g} minutes: expected a positive number")
    deadline = None if minutes is None else time.monotonic() + 60.0 * minutes
    if latency not in LATENCY_MODES:
        raise InputError(f"latency mode {latency!r}: expected one of {', '.join(LATENCY_MODES)}")
    target = load_target(target_ref)
    if latency == "auto":
        latency = "measured" if target.runs_here()[0] else "model"
    if latency == "measured" and not target.runs_here()[0]:
        raise InputError(f"--latency measured: {target.runs_here()[1]}; use --latency model (the target's cost model)")
    if budget.max_latency_ms is not None and latency == "none":
        raise InputError("--max-latency-ms needs latency (--latency measured or model), not --latency none")
    if latency == "model":
        cost_model_ms(target, 0, 0)  # the descriptor has the numbers: fail before any trial
    target_ref = _target_reference(str(target_ref), target)
    cands, excluded = candidates(model, space, target, budget, evaluation, target_ref)
    by_id = {c.id: c for c in cands}
    jobs = _jobs(model, target_ref, cands, evaluation, budget, threads)
    with progress.bar("search", total=len(jobs), unit="candidate", mininterval=0) as bar:
        def done(result: dict[str, Any]) -> None:
            bar.update()

        if ray_address:
            results = run_ray(run_trial, jobs, ray_address, deadline, done)
        else:
            results = run_local(run_trial, jobs, workers, deadline, done)
    run_ids = {r["id"] for r in results}
    not_run = [job.candidate_id for job in jobs if job.candidate_id not in run_ids]
    if not_run:
        progress.line(f"search: time budget of {minutes:g} min spent: {len(results)} of {len(jobs)} candidates evaluated, "
                      f"{len(not_run)} not run")
    points = _points(results, by_id)
    objectives = _latency(points, latency, target, by_id, budget, out, model, deadline)
    with_latency = latency != "none"
    front_points = pareto.front([p for p in points if all(p[k] is not None for k in objectives)], objectives)
    front_ids = [p["id"] for p in front_points]
    feasible = [p for p in front_points if not _violations(p, budget, with_latency) and p.get("compiled") is not False]
    if not feasible:
        cut = f"; the time budget of {minutes:g} min left {len(not_run)} of {len(jobs)} candidates not run" if not_run else ""
        raise _no_candidate(points, budget, with_latency, cut)
    chosen = min(feasible, key=lambda p: (p["size_bytes"], p["ppl_increase"], p["latency_ms"] or 0.0, p["id"]))
    settings = {"model": model, "target": target.name, "budget": vars(budget), "space": vars(space),
                "evaluation": vars(evaluation), "latency": latency, "objectives": objectives,
                "executor": f"ray {ray_address}" if ray_address else f"local, {workers} worker(s)", "threads_per_trial": threads,
                "time_budget": {"minutes": minutes, "candidates": len(jobs), "evaluated": len(results), "not_run": not_run}}
    for p in points:
        p["on_front"] = p["id"] in front_ids
    return SearchResult(target.name, points, front_ids, chosen["id"], excluded, settings, by_id, not_run)
