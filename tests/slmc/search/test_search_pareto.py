"""Pareto fronts on known points: domination, ties, order independence."""

from __future__ import annotations

import itertools

from slmc.search.pareto import dominates, front

OBJ = ("error", "size")
POINTS = [
    {"id": "a", "error": 0.00, "size": 100},
    {"id": "b", "error": 0.01, "size": 50},
    {"id": "c", "error": 0.02, "size": 60},   # dominated by b
    {"id": "d", "error": 0.05, "size": 20},
    {"id": "e", "error": 0.05, "size": 20},   # equal to d: neither dominates, both stay
    {"id": "f", "error": 0.05, "size": 30},   # dominated by d
]


def test_front_of_known_points():
    assert [p["id"] for p in front(POINTS, OBJ)] == ["a", "b", "d", "e"]


def test_front_does_not_depend_on_input_order():
    for order in itertools.permutations(POINTS):
        assert [p["id"] for p in front(list(order), OBJ)] == ["a", "b", "d", "e"]


def test_domination_needs_one_strict_improvement():
    assert dominates(POINTS[1], POINTS[2], OBJ)
    assert not dominates(POINTS[3], POINTS[4], OBJ)
    assert not dominates(POINTS[0], POINTS[1], OBJ)


def test_a_third_objective_can_bring_a_dominated_point_back():
    fast = [{**p, "latency": 1.0 if p["id"] == "c" else 2.0} for p in POINTS]
    assert [p["id"] for p in front(fast, OBJ + ("latency",))] == ["a", "b", "c", "d", "e"]
