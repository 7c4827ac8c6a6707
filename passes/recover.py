"""``recover``: a short knowledge-distillation fine-tune of the compressed model against the original.

The student is the graph as the earlier passes left it; the teacher is the original traced graph
(``PassContext.original``). On the recipe's calibration samples the student's linear-layer
weights (and biases) are trained with AdamW to minimize ``T^2 * KL(softmax(z_t / T) ||
softmax(z_s / T))`` over every position (Hinton et al., 2015, "Distilling the Knowledge in a
Neural Network"). Weights that are exactly zero when the pass starts (pruned) stay zero, and the
factor shapes of ``lowrank`` are kept, so recovery never undoes compression. Quantized or
non-float32 weights are not trained.

A share of the calibration samples (``validation_share``) is held back: the report gives the
perplexity of teacher, student before and student after on them. If training made that
perplexity worse, the weights from before are kept (``kept: before``).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import torch
from pydantic import Field

from slmc.graph.kv_cache_fit import fit_sample
from slmc.graph.ir import Graph, fetch_attr, set_attr
from slmc.graph.linears import selected_layers
from slmc.spec.pass_registry import PassConfig, PassContext, PassOutcome, Skip, register_pass


class RecoverConfig(PassConfig):
    steps: int = Field(100, ge=1, le=1_000_000, description="optimizer steps")
    samples_per_step: int = Field(4, ge=1, le=4096, description="calibration samples per step (gradients accumulated)")
    learning_rate: float = Field(1e-4, gt=0.0, le=1.0)
    temperature: float = Field(1.0, gt=0.0, le=100.0, description="distillation temperature")
    validation_share: float = Field(0.25, ge=0.0, lt=1.0, description="calibration samples held back to measure perplexity")
    include: list[str] = Field(default_factory=lambda: ["*"], min_length=1, description="glob patterns of layers to train")
    exclude: list[str] = Field(default_factory=list, description="glob patterns of layers to keep frozen")
    seed: int = Field(0, ge=0, le=2**32 - 1)

    def needs_calibration(self) -> str | None:
        return "recover distills on the calibration samples"


def _logits(graph_or_module: Callable[..., Any], sample: Sequence[torch.Tensor]) -> torch.Tensor:
    out = graph_or_module(*sample)
    return out[0] if isinstance(out, (tuple, list)) else out


def _teacher(original: Graph) -> Callable[..., Any]:
    """The original graph, fed samples refitted to its inputs (head pruning shrinks the student's KV cache)."""

    def run(*sample: torch.Tensor) -> Any:
        return original.module(*fit_sample(original, sample))

    return run


def _perplexity(module: Callable[..., Any], samples: Sequence[tuple[torch.Tensor, ...]]) -> float:
    """Next-token perplexity over the samples (the first input holds the token ids ``[1, T]``)."""
    nll, count = 0.0, 0
    with torch.no_grad():
        for sample in samples:
            logits = _logits(module, sample)[0, :-1].double()
            targets = sample[0][0, 1:]
            nll += float(torch.nn.functional.cross_entropy(logits, targets, reduction="sum"))
            count += targets.numel()
    return math.exp(nll / max(count, 1))


def _trainable(graph: Graph, config: RecoverConfig) -> tuple[list[str], list[Skip]]:
    """Attribute paths of the float32 weights and biases of the selected linear layers."""
    _, candidates, skipped = selected_layers(graph, config.include, config.exclude, "trained")
    targets = []
    for layer in candidates:
        if layer.weight(graph).dtype != torch.float32:
            skipped.append(Skip(layer.node.name, f"{layer.name}: weight dtype {layer.weight(graph).dtype} is not trained"))
        else:
            targets.append(str(layer.weight_node.target))
            if layer.bias_node is not None:
                targets.append(str(layer.bias_node.target))
    return targets, skipped


@register_pass("recover", config=RecoverConfig, lossy=True)
def recover(graph: Graph, config: RecoverConfig, context: PassContext) -> PassOutcome:
    """Distill the original model into the compressed one on calibration text (zeros stay zero)."""
    if context.original is None:
        raise ValueError("recover needs the original graph as its teacher (PassContext.original)")
    samples = list(context.calibration)
    if not samples:
        raise ValueError("recover needs calibration samples (the recipe's 'calibration' section)")
    held = int(len(samples) * config.validation_share)
    validation, train = samples[:held], samples[held:]  # held < len(samples) since validation_share < 1
    targets, skipped = _trainable(graph, config)
    if not targets:
        reasons = "; ".join(s.reason for s in skipped[:3]) + (f"; and {len(skipped) - 3} more" if len(skipped) > 3 else "")
        raise ValueError("recover has no linear layer to train: " + (reasons or "the graph has no aten.linear node "
                         "with stored float32 weights (slmc.graph.linears)"))
    module, teacher = graph.module, _teacher(context.original)
    before = {t: fetch_attr(module, t) for t in targets}
    for target in targets:  # own copies: the tensors are shared with earlier graphs
        set_attr(module, target, before[target].clone())
        fetch_attr(module, target).requires_grad_(True)
    params = [fetch_attr(module, t) for t in targets]
    zeros = [p.detach() == 0 for p in params]
    frozen = [p for p in module.parameters() if p.requires_grad and all(p is not q for q in params)]
    for p in frozen:  # export keeps the model's requires_grad flags: no gradients for untrained tensors
        p.requires_grad_(False)
    try:
        report, losses = _distill(module, teacher, params, zeros, train, validation, config)
    finally:
        for p in frozen:
            p.requires_grad_(True)
    for target in targets:
        set_attr(module, target, fetch_attr(module, target).detach())
    report["distillation_loss"] = {"first_step": round(losses[0], 6), "last_step": round(losses[-1], 6)}
    report["kept"] = "after"
    if validation:
        after = _perplexity(module, validation)
        report["validation_perplexity"]["after"] = after
        if after > report["validation_perplexity"]["before"]:
            for target in targets:
                set_attr(module, target, before[target])
            report["kept"] = "before"
    module.recompile()
    return PassOutcome(graph, report, skipped)


def _distill(module: torch.nn.Module, teacher: Callable[..., Any], params: list[torch.Tensor], zeros: list[torch.Tensor],
             train: list[tuple[torch.Tensor, ...]], validation: list[tuple[torch.Tensor, ...]],
             config: RecoverConfig) -> tuple[dict, list[float]]:
    """The AdamW distillation loop; returns the report so far and the loss of every step."""
    report = {"trained_tensors": len(params), "trained_parameters": sum(p.numel() for p in params), "steps": config.steps}
    if validation:
        report["validation_perplexity"] = {"original": _perplexity(teacher, validation),
                                           "before": _perplexity(module, validation)}
    optimizer = torch.optim.AdamW(params, lr=config.learning_rate, weight_decay=0.0)
    order = torch.randperm(len(train), generator=torch.Generator().manual_seed(config.seed)).tolist()
    t, position, losses = config.temperature, 0, []
    for _ in range(config.steps):
        optimizer.zero_grad(set_to_none=True)
        total = 0.0
        for _ in range(config.samples_per_step):
            sample = train[order[position % len(order)]]
            position += 1
            with torch.no_grad():
                teacher_logp = torch.log_softmax(_logits(teacher, sample) / t, dim=-1)
            with torch.enable_grad():
                student_logp = torch.log_softmax(_logits(module, sample) / t, dim=-1)
                loss = torch.nn.functional.kl_div(student_logp.flatten(0, -2), teacher_logp.flatten(0, -2),
                                                  log_target=True, reduction="batchmean") * t * t / config.samples_per_step
                loss.backward()
            total += loss.item()
        optimizer.step()
        with torch.no_grad():
            for p, mask in zip(params, zeros):
                p.masked_fill_(mask, 0.0)
        losses.append(total)
    return report, losses
