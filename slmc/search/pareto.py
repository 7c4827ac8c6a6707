"""Pareto fronts over objectives that are all minimized, with deterministic order and ties.

A point dominates another when it is no worse in every objective and better in at least one
(Deb, "Multi-Objective Optimization using Evolutionary Algorithms", 2001, ch. 2). Points with
equal objectives do not dominate each other, so both stay on the front. Output order: by the
objectives in the given order, then by ``id``, independent of input order.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, TypeVar

P = TypeVar("P", bound=Mapping[str, Any])


def dominates(a: Mapping[str, Any], b: Mapping[str, Any], objectives: Sequence[str]) -> bool:
    """``a`` is no worse than ``b`` in every objective and strictly better in one."""
    return all(a[k] <= b[k] for k in objectives) and any(a[k] < b[k] for k in objectives)


def front(points: Sequence[P], objectives: Sequence[str]) -> list[P]:
    """The non-dominated points (the objects given, not copies), sorted by ``objectives`` then ``id``.

    Precondition: every point has an ``id`` and a number for each objective.
    """
    ordered = sorted(points, key=lambda p: (*(p[k] for k in objectives), p["id"]))
    return [p for p in ordered if not any(dominates(q, p, objectives) for q in ordered)]
