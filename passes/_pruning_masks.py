"""Pruning masks from importance scores: unstructured (per layer or per output row) and N:M.

Scores (higher = keep), for a weight ``W`` ``[out, in]``:

* magnitude: ``|W_ij|``, compared across the whole layer (Han et al., 2015, "Learning both
  Weights and Connections for Efficient Neural Networks").
* Wanda: ``|W_ij| * ||X_j||_2`` with ``||X_j||_2`` the norm of input channel ``j`` over the
  calibration tokens, compared within each output row (Sun et al., 2023, "A Simple and Effective
  Pruning Approach for Large Language Models", arXiv:2306.11695).

N:M (``n`` kept of every ``m`` consecutive input weights of a row; Mishra et al., 2021, "Accelerating
Sparse Deep Neural Networks", the 2:4 pattern of NVIDIA Ampere sparse tensor cores) keeps the ``n``
highest scores of each group. A mask is ``True`` where the weight is pruned (set to zero).
"""

from __future__ import annotations

import torch


def unstructured_mask(scores: torch.Tensor, sparsity: float, per_row: bool) -> torch.Tensor:
    """Prune the ``round(sparsity * count)`` lowest scores of the layer (or of each row)."""
    if per_row:
        k = int(round(sparsity * scores.shape[1]))
        mask = torch.zeros_like(scores, dtype=torch.bool)
        if k > 0:
            mask.scatter_(1, torch.topk(scores, k, dim=1, largest=False).indices, True)
        return mask
    k = int(round(sparsity * scores.numel()))
    mask = torch.zeros(scores.numel(), dtype=torch.bool)
    if k > 0:
        mask[torch.topk(scores.flatten(), k, largest=False).indices] = True
    return mask.view_as(scores)


def n_m_mask(scores: torch.Tensor, n: int, m: int) -> torch.Tensor:
    """Keep the ``n`` highest scores in each group of ``m`` consecutive columns of every row.

    Precondition: ``scores.shape[1] % m == 0`` (callers skip other layers).
    """
    rows, cols = scores.shape
    groups = scores.reshape(rows, cols // m, m)
    mask = torch.zeros_like(groups, dtype=torch.bool)
    mask.scatter_(2, torch.topk(groups, m - n, dim=2, largest=False).indices, True)
    return mask.reshape(rows, cols)


def magnitude_scores(weight: torch.Tensor) -> torch.Tensor:
    return weight.detach().abs().to(torch.float64)


def wanda_scores(weight: torch.Tensor, channel_norm: torch.Tensor) -> torch.Tensor:
    return weight.detach().abs().to(torch.float64) * channel_norm.to(torch.float64).reshape(1, -1)
