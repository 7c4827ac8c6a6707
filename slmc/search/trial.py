"""One search trial: a candidate recipe's passes on a fresh copy of the model, then its quality and size.

Quality is measured eagerly on the compressed graph (the reference the compiled artifact is
verified against, as ``slmc eval -r``): token-weighted perplexity over the first ``max_tokens``
tokens of the evaluation text with the same sliding windows the recipe's perplexity gate uses,
and, when asked, the mean per-token cosine similarity of the logits against the original model.
Size is the bytes of every tensor the compressed graph stores (packed int4/int8 codes, scales,
float weights): what ``weights.safetensors`` holds. The cost-model inputs are also recorded:
multiply-accumulates and weight bytes of one decoded token.

Preconditions: ``job.recipe_yaml`` passed ``space.validate_document`` for ``job.target``; the
function is module-level and its argument plain data, so it runs the same in this process, in a
``ProcessPoolExecutor`` worker or as a Ray task. ``job.threads`` fixes torch's thread count, so the
numbers do not depend on where the trial ran.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np


@dataclass(frozen=True)
class TrialJob:
    candidate_id: str
    recipe_yaml: str
    model: str
    target: str
    text: str
    max_tokens: int
    window: int
    stride: int
    with_cosine: bool
    threads: int = 1
    seed: int = 0


def logit_cosine(subject: Any, reference: Any, cache: Any, documents: list[np.ndarray], window: int, stride: int,
                 reference_cache: Any = None) -> float:
    """Mean cosine similarity of the logit rows of ``subject`` and ``reference`` over the scored windows
    (``reference_cache``: the reference's KV cache when it differs from the subject's, e.g. after head pruning)."""
    from slmc.verify.evaluation import windows
    from slmc.graph.kv_cache import prompt_logits
    from slmc.verify.numerics import quality_metrics

    originals, compressed = [], []
    for ids in documents:
        for begin, end, first in windows(len(ids), min(window, cache.max_context), stride):
            chunk = ids[begin:end]
            originals.append([prompt_logits(reference, reference_cache or cache, chunk)[first:]])
            compressed.append([prompt_logits(subject, cache, chunk)[first:]])
    return quality_metrics(originals, compressed)["cosine"]


def _linear_parameters(graph: Any) -> int:
    from slmc.graph.linears import linear_layers

    layers, _ = linear_layers(graph)
    return sum(int(layer.weight(graph).numel()) for layer in layers)


def _macs_per_token(original: Any, reports: list[dict[str, Any]]) -> int:
    """Multiply-accumulates of the linear layers for one token: the original's linear parameters minus
    what low-rank factorization removed. Unstructured zeros count (no target here has sparse kernels);
    attention over the cache is left out (small next to the linears at the fixture's contexts)."""
    removed = sum(r["stats"].get("parameters_removed", 0) for r in reports if r["name"] == "lowrank")
    return _linear_parameters(original) - int(removed)


def run_trial(job: TrialJob) -> dict[str, Any]:
    """Compress, measure; returns plain data (the candidate id, metrics, per-pass stats, seconds). Quiet:
    the search shows the progress of its candidates, not of each trial's passes and tokens."""
    from slmc import progress

    with progress.quiet():
        return _compress_and_measure(job)


def _compress_and_measure(job: TrialJob) -> dict[str, Any]:
    import torch

    from slmc.driver.compress import compress
    from slmc.models.context_length import fit_context
    from slmc.verify.evaluation import document_tokens, perplexity
    from slmc.frontend.model_source import load_model
    from slmc.spec.recipe import recipe_from_document
    from slmc.driver.eval_subject import eager_runner
    from slmc.spec.target import load_target
    from slmc.data.texts import load_texts
    from slmc.spec.yaml_source import parse_yaml

    start = time.perf_counter()
    torch.set_num_threads(job.threads)
    torch.manual_seed(job.seed)
    recipe = recipe_from_document(parse_yaml(job.recipe_yaml, f"<search candidate {job.candidate_id}>"), Path.cwd())
    target = load_target(job.target)
    spec = load_model(job.model)
    spec.module.eval()
    fit_context(spec, recipe, target)
    result = compress(spec, recipe, target)
    subject = eager_runner(result.final.module)
    docs = document_tokens(load_texts(job.text), result.tokenizer, job.max_tokens)
    cache = result.kv_cache or spec.kv_cache  # the compressed graph's own cache (head pruning shrinks it)
    quality = perplexity(lambda i, k, v: tuple(subject(i, k, v)), cache, docs, job.window, job.stride)
    out: dict[str, Any] = {
        "id": job.candidate_id,
        "perplexity": quality["perplexity"],
        "tokens_scored": quality["tokens_scored"],
        "size_bytes": result.final.weight_bytes(),
        "parameters": result.final.num_parameters(),
        "macs_per_token": _macs_per_token(result.original, result.reports),
        "passes": [{"name": r["name"], "stats": {k: v for k, v in r["stats"].items() if k != "layers"}} for r in result.reports],
    }
    if job.with_cosine:
        reference = eager_runner(result.reference.module)
        out["cosine"] = logit_cosine(lambda i, k, v: tuple(subject(i, k, v)), lambda i, k, v: tuple(reference(i, k, v)),
                                     cache, docs, job.window, job.stride, reference_cache=spec.kv_cache)
    out["seconds"] = round(time.perf_counter() - start, 2)
    return out
