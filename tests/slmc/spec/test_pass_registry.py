import pytest

from slmc.spec.pass_registry import (
    DuplicatePassError,
    PassConfig,
    PassOutcome,
    get_pass,
    order_problems,
    register_pass,
    registered_passes,
    unregister_pass,
)


@pytest.fixture()
def temp_passes():
    names = []

    def add(name, **rules):
        register_pass(name, config=PassConfig, **rules)(lambda g, c, ctx: PassOutcome(g))
        names.append(name)

    yield add
    for name in names:
        unregister_pass(name)


def test_builtin_passes_are_registered_under_their_module_names():
    passes = registered_passes()
    for name in ("constant_folding", "dead_code_elimination", "cast_weights"):
        assert passes[name].run.__module__ == f"slmc.passes.{name}"
        assert passes[name].summary


def test_duplicate_name_raises(temp_passes):
    temp_passes("t_dup")
    with pytest.raises(DuplicatePassError, match="t_dup"):
        register_pass("t_dup", config=PassConfig)(lambda g, c, ctx: PassOutcome(g))


def test_unknown_pass_is_none():
    assert get_pass("no_such_pass") is None


def test_ordering_rules(temp_passes):
    temp_passes("t_a")
    temp_passes("t_b", must_follow=("t_a",))
    temp_passes("t_c", must_precede=("t_a",))
    temp_passes("t_d", requires=("t_a",))
    assert order_problems(["t_a", "t_b"]) == []
    assert order_problems(["t_b"]) == []  # must_follow only applies when present
    assert order_problems(["t_b", "t_a"]) == [(0, "'t_b' must come after 't_a', but 't_a' comes later")]
    assert order_problems(["t_a", "t_c"]) == [(1, "'t_c' must come before 't_a', but 't_a' comes earlier")]
    assert order_problems(["t_d"]) == [(0, "'t_d' requires 't_a' earlier in the recipe")]
    assert order_problems(["t_a", "t_d"]) == []
    assert order_problems(["cast_weights", "constant_folding"])  # a real rule between built-ins
