"""Truncated SVD of a weight matrix, plain or whitened by calibration activations.

Plain (``svd``): ``W = U S V^T``; rank ``r`` keeps the ``r`` largest singular values, which
minimizes ``||W - W_r||_F`` (Eckart & Young, 1936) but ignores which input directions the layer
actually sees.

Whitened (``svd_llm``, Wang et al., 2024, "SVD-LLM: Truncation-aware Singular Value Decomposition
for Large Language Model Compression", arXiv:2403.07378): with ``H = X^T X`` over the calibration
inputs and its Cholesky factor ``L`` (``H = L L^T``), take the SVD ``W L = U S V^T``. Then
``||(W - W_r) X^T||_F^2 = sum_{i > r} s_i^2`` exactly, so truncating the smallest singular
values of ``W L`` minimizes the layer's output error on the calibration data, and the factors are
``A = U_r S_r^{1/2}`` (``[out, r]``) and ``B = S_r^{1/2} V_r^T L^{-1}`` (``[r, in]``).

``H`` is damped by ``damping * mean(diag(H))`` on its diagonal so that the Cholesky factor exists
when some input directions are never excited (rank-deficient ``H``).
"""

from __future__ import annotations

import torch


def whitening_factor(hessian: torch.Tensor, damping: float) -> torch.Tensor:
    """Lower-triangular ``L`` with ``L L^T = H + damping * mean(diag H) * I`` (float64).

    Raises ``ValueError`` if ``H`` is not symmetric positive semi-definite enough to factor.
    """
    h = hessian.to(torch.float64)
    mean_diag = float(h.diagonal().mean())
    if not mean_diag > 0.0:
        raise ValueError("the calibration inputs of this layer are all zero")
    eye = torch.eye(h.shape[0], dtype=torch.float64)
    for extra in (damping, damping * 10, damping * 100, max(damping, 1e-6) * 1e3):
        factor, info = torch.linalg.cholesky_ex(h + extra * mean_diag * eye)
        if int(info) == 0:
            return factor
    raise ValueError("X^T X is not positive definite even after damping")


def singular_values(weight: torch.Tensor, whitening: torch.Tensor | None) -> torch.Tensor:
    """Singular values (descending, float64) of ``W`` or ``W L``."""
    w = weight.to(torch.float64)
    return torch.linalg.svdvals(w if whitening is None else w @ whitening)


def factorize(weight: torch.Tensor, rank: int, whitening: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
    """``(A [out, rank], B [rank, in])`` in the weight's dtype with ``A @ B`` the best rank-``rank``
    approximation of ``W`` (plain) or of ``W`` on the calibration inputs (whitened)."""
    w = weight.to(torch.float64)
    target = w if whitening is None else w @ whitening
    u, s, vh = torch.linalg.svd(target, full_matrices=False)
    root = s[:rank].sqrt()
    a = u[:, :rank] * root
    b = root[:, None] * vh[:rank]
    if whitening is not None:
        b = torch.linalg.solve_triangular(whitening, b, upper=False, left=False)  # b L^{-1}
    return a.to(weight.dtype).contiguous(), b.to(weight.dtype).contiguous()


def max_useful_rank(out_features: int, in_features: int) -> int:
    """Largest ``r`` with ``r (out + in) < out * in``: the two factors hold fewer parameters (and
    cost fewer multiply-adds per token) than the dense weight. 0 when no rank qualifies."""
    return max((out_features * in_features - 1) // (out_features + in_features), 0)
