"""Choosing the rank of each layer for low-rank factorization.

Each candidate layer ``[out, in]`` has singular values ``s`` (plain or whitened, descending). At
rank ``r`` its relative truncation error is ``e(r) = sum_{i>r} s_i^2 / sum_i s_i^2`` (the share
of the layer's output energy on the calibration data that is lost, when whitened) and it saves
``out*in - r*(out+in)`` parameters; it is only factorized for ``1 <= r <= max_useful_rank``.

* ``energy``: per layer, the smallest rank that keeps ``energy`` of ``sum s_i^2``.
* ``ratio`` + ``uniform``: every layer gives up the same share of its parameters.
* ``ratio`` + ``global``: Lagrangian relaxation (Everett, 1963): for a price ``lambda`` each
  layer independently picks ``argmin_r e(r) - lambda * saved(r) / (out*in)`` (relative error
  against the share of its own parameters saved) or stays dense; bisection on ``lambda`` finds
  the smallest price that meets the budget, so layers whose spectrum decays fast give up more.
  On the fixture (svd_llm, 20% of linear parameters, 5000 held-out tokens) it measured +4.3%
  perplexity against +3.7% for ``uniform``, which is therefore the default.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from slmc.passes._lowrank_factor import max_useful_rank


@dataclass(frozen=True)
class Candidate:
    """A layer that may be factorized: its name, shape and singular values (descending)."""

    name: str
    out_features: int
    in_features: int
    singular_values: torch.Tensor | None = None  # needed by ``by_energy`` and ``global_budget``

    @property
    def max_rank(self) -> int:
        return max_useful_rank(self.out_features, self.in_features)

    def saved(self, rank: int) -> int:
        return self.out_features * self.in_features - rank * (self.out_features + self.in_features)

    def errors(self) -> torch.Tensor:
        """``e(r)`` for ``r = 0 .. len(s)`` (float64)."""
        if self.singular_values is None:
            raise ValueError(f"no singular values for layer {self.name}")
        energy = self.singular_values.detach().to(torch.float64).square()
        total = float(energy.sum())
        tail = torch.cat([energy.flip(0).cumsum(0).flip(0), torch.zeros(1, dtype=torch.float64)])
        return tail / total if total > 0 else torch.zeros_like(tail)


def by_energy(candidates: Sequence[Candidate], energy: float) -> dict[str, int]:
    """Smallest rank keeping ``energy`` of each layer's squared singular values (may exceed ``max_rank``)."""
    ranks = {}
    for c in candidates:
        errors = c.errors()
        ok = torch.nonzero(errors <= 1.0 - energy + 1e-12).flatten()
        ranks[c.name] = max(int(ok[0]), 1) if len(ok) else len(c.singular_values)
    return ranks


def uniform(candidates: Sequence[Candidate], share: float) -> dict[str, int]:
    """The rank at which each layer keeps at most ``1 - share`` of its parameters (0: cannot)."""
    ranks = {}
    for c in candidates:
        keep = (1.0 - share) * c.out_features * c.in_features
        ranks[c.name] = min(int(math.floor(keep / (c.out_features + c.in_features))), c.max_rank)
    return ranks


def _choices(c: Candidate, price: float, errors: torch.Tensor) -> int:
    """Best rank at this price (0 = stay dense)."""
    if c.max_rank < 1:
        return 0
    ranks = torch.arange(1, c.max_rank + 1)
    size = c.out_features * c.in_features
    saved_share = (size - ranks.to(torch.float64) * (c.out_features + c.in_features)) / size
    objective = errors[1 : c.max_rank + 1] - price * saved_share
    best = int(torch.argmin(objective))
    return int(ranks[best]) if float(objective[best]) < 0.0 else 0


def global_budget(candidates: Sequence[Candidate], params_to_remove: int) -> dict[str, int]:
    """Ranks (0 = stay dense) removing at least ``params_to_remove`` parameters, trading relative
    error against relative savings at one price for all layers. Raises ``ValueError`` when even
    the smallest ranks cannot remove that many."""
    most = sum(c.saved(1) for c in candidates if c.max_rank >= 1)
    if params_to_remove > most:
        raise ValueError(f"the selected layers can give up at most {most} parameters at rank 1; "
                         f"{params_to_remove} were asked for")
    errors = {c.name: c.errors() for c in candidates}

    def solve(price: float) -> tuple[dict[str, int], int]:
        ranks = {c.name: _choices(c, price, errors[c.name]) for c in candidates}
        removed = sum(c.saved(ranks[c.name]) for c in candidates if ranks[c.name] > 0)
        return ranks, removed

    low, high = 0.0, 1.0
    while solve(high)[1] < params_to_remove:
        high *= 2.0
        if high > 1e6:
            break
    for _ in range(80):
        middle = (low + high) / 2.0
        if solve(middle)[1] >= params_to_remove:
            high = middle
        else:
            low = middle
    return solve(high)[0]
