"""Orthogonal matrices for QuaRot/SpinQuant-style rotations: randomized Hadamard matrices of any order
that has a known construction, else a random orthogonal matrix.

A Hadamard matrix ``H`` of order ``n`` has entries +-1 and ``H Hᵀ = n I``; ``H diag(s) / sqrt(n)`` with
random signs ``s`` is orthogonal and spreads every input channel evenly over all outputs, which is
what removes activation outliers before quantization (Ashkboos et al., 2024, "QuaRot", arXiv:2404.00456,
Section 3; Liu et al., 2024, "SpinQuant", arXiv:2405.16406, use the same randomized Hadamard as their
starting point). Orders ``n = m * 2^k`` are built as ``H_m ⊗ H_(2^k)`` (Kronecker product, as QuaRot
does for 12 * 2^k, 20 * 2^k, ...), with ``H_(2^k)`` from Sylvester's construction and ``H_m`` (m a
multiple of 4) from Paley's constructions (R. E. A. C. Paley, 1933, "On orthogonal matrices"):
Paley I for ``m = q + 1``, Paley II for ``m = 2(q + 1)``, ``q`` a prime with ``q ≡ 3`` resp.
``1 (mod 4)``. That covers e.g. 576 = 36 * 16 (SmolLM-135M), 896 = 28 * 32 (Qwen2.5-0.5B), 960 = 60 * 16,
1536 = 12 * 128. Orders without such a factorization get a random orthogonal matrix (QR of a Gaussian,
signs fixed so that it is Haar-distributed; Mezzadri, 2007, "How to generate random matrices from the
classical compact groups"), and the description says so.
"""

from __future__ import annotations

import math

import torch


def _is_prime(q: int) -> bool:
    return q >= 2 and all(q % d for d in range(2, math.isqrt(q) + 1))


def _jacobsthal(q: int) -> torch.Tensor:
    """``Q[i, j] = χ(j - i)``, χ the quadratic character modulo the prime ``q`` (χ(0) = 0)."""
    squares = {(x * x) % q for x in range(1, q)}
    chi = torch.tensor([0] + [1 if a in squares else -1 for a in range(1, q)], dtype=torch.int64)
    index = torch.arange(q)
    return chi[(index.unsqueeze(0) - index.unsqueeze(1)) % q]


def _conference(q: int, skew: bool) -> torch.Tensor:
    """The conference matrix of order ``q + 1``: zero diagonal, border of ones (negated below for skew)."""
    c = torch.zeros(q + 1, q + 1, dtype=torch.int64)
    c[0, 1:] = 1
    c[1:, 0] = -1 if skew else 1
    c[1:, 1:] = _jacobsthal(q)
    return c


def _paley(m: int) -> tuple[torch.Tensor, str] | None:
    """A Hadamard matrix of order ``m`` by Paley I or II, or None when neither applies."""
    q = m - 1
    if _is_prime(q) and q % 4 == 3:
        return torch.eye(m, dtype=torch.int64) + _conference(q, skew=True), f"Paley I (q={q})"
    q = m // 2 - 1
    if m % 2 == 0 and _is_prime(q) and q % 4 == 1:
        plus = torch.tensor([[1, 1], [1, -1]], dtype=torch.int64)
        zero = torch.tensor([[1, -1], [-1, -1]], dtype=torch.int64)
        return torch.kron(_conference(q, skew=False), plus) + torch.kron(torch.eye(q + 1, dtype=torch.int64), zero), \
            f"Paley II (q={q})"
    return None


def sylvester(order: int) -> torch.Tensor:
    """The Sylvester Hadamard matrix of a power-of-two ``order`` (int64 +-1 entries)."""
    h = torch.ones(1, 1, dtype=torch.int64)
    while h.shape[0] < order:
        h = torch.cat([torch.cat([h, h], 1), torch.cat([h, -h], 1)], 0)
    return h


def hadamard_factors(order: int) -> tuple[torch.Tensor, torch.Tensor, str] | None:
    """Hadamard matrices ``A`` (order ``m``) and ``B`` (order ``p``), ``m * p = order``, whose Kronecker
    product ``A ⊗ B`` is the Hadamard matrix ``hadamard(order)`` returns, and how it was built; None when no
    construction here gives one. ``B`` is the largest power-of-two factor (``A`` the smallest Paley block);
    for a power of two, ``A`` and ``B`` are Sylvester matrices of about ``sqrt(order)`` each (Sylvester's
    construction is ``H_2 ⊗ ... ⊗ H_2``, so any split gives the same product). Multiplying by ``A ⊗ B`` as
    two small matrix products costs ``order * (m + p)`` instead of ``order²`` (QuaRot's online Hadamard)."""
    for k in range(order.bit_length(), -1, -1):
        power = 1 << k
        if order % power:
            continue
        m = order // power
        if m == 1:
            half = 1 << (k // 2)
            return sylvester(half), sylvester(order // half), f"Sylvester {order}"
        base = _paley(m) if m % 4 == 0 else None
        if base is not None:
            # the Kronecker product of two Hadamard matrices is one, so checking the Paley block suffices
            if not torch.equal(base[0] @ base[0].T, m * torch.eye(m, dtype=torch.int64)):
                raise ArithmeticError(f"the {base[1]} construction of order {m} is not a Hadamard matrix (a bug)")
            return base[0], sylvester(power), f"{base[1]} {m} ⊗ Sylvester {power}"
    return None


def hadamard(order: int) -> tuple[torch.Tensor, str] | None:
    """A Hadamard matrix of ``order`` (int64 +-1) and how it was built, or None when no construction here
    gives one. Prefers the largest power-of-two factor (the smallest Paley block)."""
    found = hadamard_factors(order)
    return None if found is None else (torch.kron(found[0], found[1]), found[2])


def random_orthogonal(order: int, generator: torch.Generator) -> torch.Tensor:
    """A Haar-random orthogonal matrix (float64): QR of a Gaussian with the signs of R's diagonal fixed."""
    q, r = torch.linalg.qr(torch.randn(order, order, generator=generator, dtype=torch.float64))
    return q * torch.sign(torch.diagonal(r)).unsqueeze(0)


def rotation(order: int, kind: str, seed: int) -> tuple[torch.Tensor, str]:
    """An orthogonal ``[order, order]`` float64 matrix and its description.

    ``kind == "hadamard"``: ``H diag(s) / sqrt(order)`` with random signs ``s`` (seeded), or a random
    orthogonal matrix when no Hadamard construction of ``order`` is known here (the description says
    which); ``kind == "random"``: always a random orthogonal matrix.
    """
    generator = torch.Generator().manual_seed(seed)
    if kind == "hadamard":
        found = hadamard(order)
        if found is not None:
            signs = torch.randint(0, 2, (order,), generator=generator, dtype=torch.int64) * 2 - 1
            return found[0].to(torch.float64) * signs.to(torch.float64).unsqueeze(0) / math.sqrt(order), \
                f"randomized Hadamard ({found[1]})"
        return random_orthogonal(order, generator), f"random orthogonal (no Hadamard construction of order {order})"
    return random_orthogonal(order, generator), "random orthogonal"
