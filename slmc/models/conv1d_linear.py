"""transformers' ``Conv1D`` layers (GPT-2, OpenAI GPT, ...) as the ``nn.Linear`` layers they are.

``transformers.pytorch_utils.Conv1D`` computes ``x @ W + b`` with ``W`` stored ``[in, out]``, which
torch.export traces as ``aten.addmm(b, x.view(-1, in), W)``: not a linear layer in slmc's sense
(``slmc.graph.linears``), so quantize, prune, lowrank, fuse and recover found nothing to work on in
such a model. Each ``Conv1D`` is replaced by an ``nn.Linear`` holding ``W`` transposed (``[out, in]``)
and the same bias: the same function (``linear(x, W^T, b) = x @ W + b``), under the same module path,
so a recipe's globs over layer names (``transformer.h.*.attn.c_attn``) match as before.
"""

from __future__ import annotations

from torch import nn


def conv1d_as_linear(model: nn.Module) -> int:
    """Replace every transformers ``Conv1D`` inside ``model`` by the equivalent ``nn.Linear``; returns how many.

    Precondition: ``model`` is in eval mode with float weights (as ``huggingface._from_pretrained`` loads it).
    """
    from transformers.pytorch_utils import Conv1D

    replaced = 0
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, Conv1D):
                in_features, out_features = child.weight.shape
                linear = nn.Linear(in_features, out_features, bias=child.bias is not None,
                                   dtype=child.weight.dtype, device=child.weight.device)
                linear.weight = nn.Parameter(child.weight.detach().t().contiguous())
                if child.bias is not None:
                    linear.bias = nn.Parameter(child.bias.detach().clone())
                setattr(parent, name, linear.eval())
                replaced += 1
    return replaced
