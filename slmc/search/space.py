"""The search space: sparsity x weight bits x group size x low-rank ratio, pruned by the target.

Every candidate is a recipe *document* (the same mapping a recipe file holds), validated through
the recipe loader (``recipe_from_document``) and checked against the target with each pass's own
``target_problems``, so a candidate the target cannot run never reaches a trial; the reason is
recorded. Passes run in the order the pass registry requires: prune, lowrank, quantize.

Precondition: the target descriptor is resolved (``load_target``).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from slmc.errors import InputError, SlmcError
from slmc.spec.pass_registry import get_pass
from slmc.spec.recipe import Recipe, check_against_target, recipe_from_document
from slmc.spec.target import TargetDescriptor
from slmc.spec.yaml_source import parse_yaml

CALIBRATION = {"text": "stdlib-train", "num_samples": 16, "sequence_length": 128}


@dataclass(frozen=True)
class Budget:
    """Limits the chosen recipe must meet; ``None`` is no limit."""

    max_ppl_increase: float | None = None
    min_cosine: float | None = None
    max_size_bytes: int | None = None
    max_latency_ms: float | None = None


@dataclass(frozen=True)
class SearchSpace:
    """Axes of the grid. ``bits`` 32 means float32 weights (no quantize pass); sparsity or ratio 0 means no such pass.

    ``group_sizes`` ``None`` entries mean per output channel. Methods: prune magnitude / wanda /
    sparsegpt, lowrank svd / svd_llm, quantize rtn / gptq / awq (calibration added when needed).
    """

    sparsities: tuple[float, ...] = (0.0, 0.25, 0.5)
    bits: tuple[int, ...] = (32, 8, 4)
    group_sizes: tuple[int | None, ...] = (None, 32, 64, 128)
    lowrank_ratios: tuple[float, ...] = (0.0, 0.1)
    prune_method: str = "magnitude"
    lowrank_method: str = "svd"
    quantize_method: str = "rtn"


@dataclass(frozen=True)
class EvalSettings:
    """How quality is measured: the text, how many tokens, the sliding windows."""

    text: str = "stdlib-heldout"
    max_tokens: int = 8000
    window: int = 256
    stride: int = 128


@dataclass(frozen=True)
class Candidate:
    """One point of the grid; ``id`` sorts in grid order and names the setting."""

    id: str
    sparsity: float
    bits: int
    group_size: int | None
    lowrank_ratio: float
    document: dict[str, Any] = field(compare=False, hash=False)

    def settings(self) -> dict[str, Any]:
        return {"sparsity": self.sparsity, "bits": self.bits, "group_size": self.group_size, "lowrank_ratio": self.lowrank_ratio}

    def recipe_yaml(self) -> str:
        return yaml.safe_dump(self.document, sort_keys=False)


def _passes(space: SearchSpace, sparsity: float, bits: int, group_size: int | None, ratio: float) -> list[dict[str, Any]]:
    passes: list[dict[str, Any]] = []
    if sparsity > 0:
        passes.append({"prune": {"method": space.prune_method, "sparsity": sparsity}})
    if ratio > 0:
        passes.append({"lowrank": {"method": space.lowrank_method, "ratio": ratio}})
    if bits < 32:
        passes.append({"quantize": {"bits": bits, "group_size": group_size, "method": space.quantize_method}})
    return passes


def recipe_document(model: str, target: str, passes: list[dict[str, Any]], budget: Budget,
                    evaluation: EvalSettings) -> dict[str, Any]:
    """A recipe document that reproduces a candidate with ``slmc compile`` and gates it on the budget."""
    gates: dict[str, Any] = {}
    if budget.max_ppl_increase is not None:
        gates["max_perplexity_increase"] = budget.max_ppl_increase
    if budget.min_cosine is not None:
        gates["min_cosine"] = budget.min_cosine
    doc: dict[str, Any] = {"model": model, "target": target, "passes": passes}
    if any(_needs_calibration(item) for item in passes):
        doc["calibration"] = dict(CALIBRATION)
    doc["verify"] = {"gates": gates, "text": evaluation.text, "max_eval_tokens": evaluation.max_tokens,
                     "window": evaluation.window, "stride": evaluation.stride}
    return doc


def _needs_calibration(item: dict[str, Any]) -> bool:
    (name, settings), = item.items()
    definition = get_pass(name)
    return definition is not None and definition.config.model_validate(settings).needs_calibration() is not None


def validate_document(document: dict[str, Any], target: TargetDescriptor, source: str) -> Recipe:
    """The candidate through the recipe loader and the target check (raises their typed errors)."""
    recipe = recipe_from_document(parse_yaml(yaml.safe_dump(document, sort_keys=False), source), Path.cwd())
    check_against_target(recipe, target)
    return recipe


def _candidate_id(sparsity: float, bits: int, group_size: int | None, ratio: float) -> str:
    grouping = "" if bits >= 32 else ("-pc" if group_size is None else f"-g{group_size:04d}")
    return f"s{sparsity:.3f}-b{bits:02d}{grouping}-r{ratio:.3f}"


def _target_skip(target: TargetDescriptor, bits: int, group_size: int | None) -> str | None:
    """Why the target rules out a weight format before any recipe is built (``None``: allowed)."""
    if bits < 32 and not target.supports_weight_dtype(f"int{bits}"):
        return f"target '{target.name}' has no int{bits} weights (dtypes.weights: {target.dtypes.weights})"
    caps = target.quantization
    if bits < 32 and group_size is None and not caps.per_channel:
        return f"target '{target.name}' has no per-channel scales"
    if bits < 32 and group_size is not None and group_size not in caps.group_sizes:
        return f"target '{target.name}' does not list group size {group_size} (quantization.group_sizes: {caps.group_sizes})"
    return None


def candidates(model: str, space: SearchSpace, target: TargetDescriptor, budget: Budget,
               evaluation: EvalSettings, target_ref: str | None = None) -> tuple[list[Candidate], list[dict[str, Any]]]:
    """The grid's candidates the target can run (sorted by id) and the excluded ones with reasons.

    ``target_ref`` is what the recipes name as their target (default: the descriptor's name, which
    only resolves for built-in targets; give a descriptor file's absolute path otherwise).

    Float weights (``bits`` 32) ignore the group size, so they appear once. The uncompressed model
    (no passes, the baseline every trial is compared with) is always a candidate. Raises
    ``InputError`` when nothing but the baseline is left.
    """
    kept: dict[str, Candidate] = {}
    excluded: dict[str, dict[str, Any]] = {}
    grid = itertools.product(space.sparsities, space.bits, space.group_sizes, space.lowrank_ratios)
    for sparsity, bits, group_size, ratio in itertools.chain([(0.0, 32, None, 0.0)], grid):
        group_size = None if bits >= 32 else group_size
        cid = _candidate_id(sparsity, bits, group_size, ratio)
        if cid in kept or cid in excluded:
            continue
        reason = _target_skip(target, bits, group_size)
        document = recipe_document(model, target_ref or target.name, _passes(space, sparsity, bits, group_size, ratio), budget, evaluation)
        if reason is None:
            try:
                validate_document(document, target, f"<search candidate {cid}>")
            except SlmcError as exc:
                reason = str(exc)
        if reason is None:
            kept[cid] = Candidate(cid, sparsity, bits, group_size, ratio, document)
        else:
            excluded[cid] = {"id": cid, "reason": reason}
    if len(kept) < 2:
        raise InputError(f"the search space has no candidate target '{target.name}' can run: "
                         + "; ".join(e["reason"] for e in list(excluded.values())[:3]))
    return [kept[k] for k in sorted(kept)], [excluded[k] for k in sorted(excluded)]


BASELINE_ID = _candidate_id(0.0, 32, None, 0.0)
