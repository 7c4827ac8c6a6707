"""The compression half of a compile: calibration, trace, passes. Shared by ``compile`` and ``eval``.

``slmc eval MODEL --recipe R`` measures the compressed graph eagerly (the fake-quant / masked
reference the compiled artifact is verified against), which is how quality tables are reproduced
without building an artifact for every row.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import torch

from slmc.driver import interrupt
from slmc.graph.kv_cache_fit import graph_kv_cache
from slmc.data.bpe_trim import tokenization_change
from slmc.data.texts import load_texts
from slmc.frontend.calibration import load_calibration
from slmc.frontend.vocabulary_source import trimmed_tokenizer, vocabulary_source
from slmc.graph.ir import Graph, ModelSpec, check_graph, trace
from slmc.graph.op_coverage import check_op_coverage
from slmc.graph.pass_manager import run_passes
from slmc.graph.vocabulary import restricted_copy
from slmc.spec.pass_registry import PassContext
from slmc.spec.recipe import Recipe
from slmc.spec.target import TargetDescriptor
from slmc.spec.vocabulary import VOCABULARY_META


@dataclass
class Compressed:
    """The traced original, the graph after every pass, the calibration samples and the pass reports;
    ``kv_cache`` is the final graph's cache (head pruning shrinks it; ``slmc.graph.kv_cache_fit``).

    ``reference``: what the final graph is compared with, the original on the final graph's token
    ids (after ``vocab_trim``: restricted to the kept vocabulary, else the original itself);
    ``tokenizer``: the final graph's (after ``vocab_trim``: the rewritten one); ``calibration`` is in
    the final graph's token ids."""

    original: Graph
    final: Graph
    calibration: list[tuple[torch.Tensor, ...]]
    reports: list[dict[str, Any]]
    kv_cache: Any = None
    reference: Graph | None = None
    tokenizer: Any = None


def trace_and_calibrate(spec: ModelSpec, recipe: Recipe, target: TargetDescriptor,
                        timings: dict[str, float]) -> tuple[Graph, list[tuple[torch.Tensor, ...]]]:
    """Load the recipe's calibration data and trace ``spec``: the inputs of the passes (and of the cache key)."""
    import time

    t = time.perf_counter()
    interrupt.stage("trace")
    calibration = load_calibration(recipe, spec)
    original = trace(spec)
    check_graph(original)
    check_op_coverage(original, target, "tracing")
    timings["trace"] = time.perf_counter() - t
    return original, calibration


def compress(spec: ModelSpec, recipe: Recipe, target: TargetDescriptor, timings: dict[str, float] | None = None,
             prepared: tuple[Graph, list[tuple[torch.Tensor, ...]]] | None = None) -> Compressed:
    """Load the recipe's calibration data, trace ``spec`` and run the recipe's passes for ``target``
    (``prepared``: the result of ``trace_and_calibrate`` when the caller already has it).

    Precondition: the recipe was checked against the target (``check_against_target``).
    """
    import time

    timings = timings if timings is not None else {}
    original, calibration = prepared if prepared is not None else trace_and_calibrate(spec, recipe, target, timings)
    t = time.perf_counter()
    interrupt.stage("passes")
    context = PassContext(target, calibration, original, vocabulary_source(spec, recipe))
    final, reports = run_passes(original, recipe.steps, context)
    check_op_coverage(final, target, "the recipe's passes")
    vocabulary = final.meta.get(VOCABULARY_META)
    reference, tokenizer = original, spec.tokenizer
    if vocabulary is not None:
        reference = restricted_copy(original, vocabulary)
        calibration = [vocabulary.translate_sample(tuple(sample)) for sample in calibration]
        tokenizer = trimmed_tokenizer(spec.tokenizer, vocabulary)
        if recipe.verify.text is not None:  # what the trim does to the evaluation text's tokens
            report = next(r for r in reports if r["name"] == "vocab_trim")
            report["stats"]["verify_text"] = tokenization_change(spec.tokenizer, tokenizer, load_texts(recipe.evaluation_text()))
    timings["passes"] = time.perf_counter() - t
    cache = graph_kv_cache(final, spec.kv_cache)
    if cache is not None:  # the stored dtype the recipe asks for (checked against the target's kind: check_recipe)
        cache = replace(cache, dtype=recipe.kv_cache.dtype)
    return Compressed(original, final, calibration, reports, cache, reference,
                      tokenizer)
