"""SparseGPT: one-shot pruning with optimal-brain-surgeon weight updates (Frantar & Alistarh, 2023,
"SparseGPT: Massive Language Models Can Be Accurately Pruned in One-Shot", arXiv:2301.00774).

For a layer with weight ``W`` ``[out, in]`` and calibration Hessian ``H = X^T X`` (inputs as rows),
columns are processed left to right in blocks of ``block_size``. Within a block the mask is chosen
adaptively from ``w^2 / [H^-1]_jj^2`` (the OBS saliency; unstructured: the lowest share
``sparsity`` of the block, N:M: the lowest ``m - n`` of every ``m`` columns of a row, chosen when
the group's first column is reached); pruning column ``j`` spreads its error
``(w_j - q_j) / [H^-1]_jj`` over the not-yet-processed columns through the upper Cholesky factor
of ``H^-1`` (Algorithm 1 of the paper; as in its reference implementation, ``H`` is damped by
``damping * mean(diag H)`` and dead inputs get ``H_jj = 1``).
"""

from __future__ import annotations

import torch


def _inverse_cholesky(hessian: torch.Tensor, damping: float) -> torch.Tensor:
    """Upper Cholesky factor of ``(H + damping * mean(diag H) I)^-1`` (float64)."""
    h = hessian.to(torch.float64).clone()
    diag = torch.arange(h.shape[0])
    h[diag, diag] += damping * float(h.diagonal().mean())
    eye = torch.eye(h.shape[0], dtype=torch.float64)
    for extra in (0.0, 1e-6, 1e-4, 1e-2):
        factor, info = torch.linalg.cholesky_ex(h + extra * float(h.diagonal().mean()) * eye)
        if int(info) == 0:
            inverse = torch.cholesky_inverse(factor)
            return torch.linalg.cholesky(inverse, upper=True)
    raise ValueError("the calibration Hessian is not positive definite even after damping")


def sparsegpt_prune(weight: torch.Tensor, hessian: torch.Tensor, sparsity: float, n_m: tuple[int, int] | None,
                    block_size: int = 128, damping: float = 0.01) -> torch.Tensor:
    """The pruned (and OBS-updated) weight, in the weight's dtype; exact zeros where pruned.

    ``n_m`` = ``(n, m)`` keeps ``n`` of every ``m`` consecutive input weights of a row (then
    ``sparsity`` is ignored). Precondition for N:M: ``in_features % m == 0``; ``block_size % m == 0``.
    """
    w = weight.detach().to(torch.float64).clone()
    h = hessian.to(torch.float64).clone()
    dead = h.diagonal() == 0
    h[dead, dead] = 1.0
    w[:, dead] = 0.0
    hinv = _inverse_cholesky(h, damping)
    columns = w.shape[1]
    for start in range(0, columns, block_size):
        end = min(start + block_size, columns)
        block = w[:, start:end].clone()
        pruned = torch.zeros_like(block)
        errors = torch.zeros_like(block)
        hinv_block = hinv[start:end, start:end]
        diag = hinv_block.diagonal()
        if n_m is None:
            saliency = block.square() / diag.square().reshape(1, -1)
            k = int(round(sparsity * saliency.numel()))
            mask = torch.zeros(saliency.numel(), dtype=torch.bool)
            if k > 0:
                mask[torch.topk(saliency.flatten(), k, largest=False).indices] = True
            mask = mask.view_as(block)
        else:
            mask = torch.zeros_like(block, dtype=torch.bool)
        for i in range(end - start):
            column = block[:, i]
            if n_m is not None and i % n_m[1] == 0:
                group = block[:, i:i + n_m[1]].square() / diag[i:i + n_m[1]].square().reshape(1, -1)
                mask.scatter_(1, i + torch.topk(group, n_m[1] - n_m[0], dim=1, largest=False).indices, True)
            q = torch.where(mask[:, i], torch.zeros_like(column), column)
            pruned[:, i] = q
            error = (column - q) / diag[i]
            block[:, i:] -= error.unsqueeze(1) @ hinv_block[i, i:].unsqueeze(0)
            errors[:, i] = error
        w[:, start:end] = pruned
        w[:, end:] -= errors @ hinv[start:end, end:]
    return w.to(weight.dtype)
