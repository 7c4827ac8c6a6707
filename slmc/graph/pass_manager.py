"""Runs a recipe's passes in order: checks, verification after each pass, timing, reports.

Each pass receives a clone of the graph, so a failing pass leaves nothing half-transformed.
After every pass the graph is verified (fx lint + symbolic shape propagation); any failure is
raised as ``PassError`` naming the pass, the passes that ran before it and the node.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

from slmc import progress
from slmc.graph.kv_cache_fit import fit_samples
from slmc.errors import NodeError, PassError
from slmc.graph.ir import Graph, check_graph
from slmc.graph.vocabulary import restricted_copy
from slmc.spec.pass_registry import PassContext, PassOutcome, PassStep, get_pass
from slmc.spec.vocabulary import VOCABULARY_META

# What a pass may raise for a bug or an unsupported graph; wrapped with the pass name, never swallowed.
PASS_FAILURES = (RuntimeError, ValueError, TypeError, KeyError, IndexError, AttributeError, ArithmeticError)


def _graph_summary(graph: Graph) -> dict[str, int]:
    return {"nodes": len(graph.op_nodes()), "parameters": graph.num_parameters(), "weight_bytes": graph.weight_bytes()}


def run_passes(graph: Graph, steps: Sequence[PassStep], context: PassContext) -> tuple[Graph, list[dict[str, Any]]]:
    """Run ``steps`` on ``graph``; return the final graph and one report entry per pass."""
    reports: list[dict[str, Any]] = []
    done: list[str] = []
    bar = progress.bar("passes", total=len(steps), unit="pass")
    for step in steps:
        bar.set_postfix_str(step.name)
        definition = get_pass(step.name)
        if definition is None:
            raise PassError(step.name, done, "no such pass is registered")
        before = _graph_summary(graph)
        start = time.perf_counter()
        try:
            outcome = definition.run(graph.clone(), step.config, context)
            if not isinstance(outcome, PassOutcome):
                raise TypeError(f"pass returned {type(outcome).__name__}, expected PassOutcome")
            check_graph(outcome.graph)
        except NodeError as exc:
            raise PassError(step.name, done, exc.detail, node=exc.node) from exc
        except PASS_FAILURES as exc:
            raise PassError(step.name, done, f"{type(exc).__name__}: {exc}") from exc
        seconds = time.perf_counter() - start
        graph = outcome.graph
        if outcome.vocabulary is not None:  # later passes see token ids, and the original, in the trimmed vocabulary
            graph.meta[VOCABULARY_META] = outcome.vocabulary
            context = replace(context, calibration=[outcome.vocabulary.translate_sample(tuple(s)) for s in context.calibration],
                              original=restricted_copy(context.original, outcome.vocabulary) if context.original else None)
        context = replace(context, calibration=fit_samples(graph, context.calibration))  # head pruning shrinks the cache
        reports.append(
            {
                "name": step.name,
                "config": step.config.model_dump(mode="json"),
                "lossy": definition.lossy,
                "seconds": round(seconds, 4),
                "before": before,
                "after": _graph_summary(graph),
                "stats": outcome.stats,
                "skipped": [{"node": s.node, "reason": s.reason} for s in outcome.skipped],
            }
        )
        done.append(step.name)
        bar.update()
    bar.close()
    return graph, reports
