"""The pass registry: explicit registration by decorator, one name per pass, ordering rules.

A pass is a frozen, validated config (a ``PassConfig`` subclass) plus a function
``run(graph, config, context) -> PassOutcome``. The registry key is the recipe key and the docs
name. Ordering constraints are declared at registration and checked on the recipe before any
model is loaded.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from slmc.spec.strict_model import StrictModel

if TYPE_CHECKING:
    from slmc.graph.ir import Graph
    from slmc.spec.target import TargetDescriptor
    from slmc.spec.vocabulary import VocabularyMap, VocabularySource


class PassConfig(StrictModel):
    """Settings of one pass. Subclasses add fields with ranges and literals."""

    def target_problems(self, target: TargetDescriptor) -> list[tuple[str, str]]:
        """``(field, message)`` for every setting the target cannot honour (default: none)."""
        return []

    def needs_calibration(self) -> str | None:
        """Why these settings need the recipe's calibration data, or ``None`` (default: they don't)."""
        return None

    def text_files(self) -> dict[str, str]:
        """``{field: value}`` for each setting naming a UTF-8 text file (relative to the recipe) or a
        built-in text set: the recipe checks that the file exists, the compile cache keys on its bytes."""
        return {}


@dataclass(frozen=True)
class PassStep:
    """One entry of a recipe's ``passes`` list: a registered pass name and its validated config."""

    name: str
    config: PassConfig

    def to_json(self) -> dict[str, Any]:
        return {self.name: self.config.model_dump(mode="json")}


@dataclass(frozen=True)
class Skip:
    """A node or layer a pass deliberately left alone, with the reason (goes into the report)."""

    node: str
    reason: str


@dataclass
class PassOutcome:
    """What a pass returns: the new graph, counters for the report, and what it skipped;
    ``vocabulary``: the token ids a vocabulary-trimming pass kept (``slmc.spec.vocabulary``)."""

    graph: Graph
    stats: dict[str, Any] = field(default_factory=dict)
    skipped: list[Skip] = field(default_factory=list)
    vocabulary: VocabularyMap | None = None


@dataclass
class PassContext:
    """What a pass may consult besides its graph: the target, the calibration samples and the
    original (uncompressed) graph, e.g. as a distillation teacher (read-only: never modify it);
    ``vocabulary``: the model's tokenizer, for passes over its vocabulary (None: it has none)."""

    target: TargetDescriptor
    calibration: Sequence[tuple[Any, ...]] = ()
    original: Graph | None = None
    vocabulary: VocabularySource | None = None


PassFunction = Callable[["Graph", PassConfig, PassContext], PassOutcome]


@dataclass(frozen=True)
class PassDefinition:
    """A registered pass.

    ``must_follow``: passes that, when present in a recipe, must come before this one.
    ``must_precede``: passes that, when present, must come after this one.
    ``requires``: passes that must be present and come before this one.
    """

    name: str
    config: type[PassConfig]
    run: PassFunction
    must_follow: tuple[str, ...] = ()
    must_precede: tuple[str, ...] = ()
    requires: tuple[str, ...] = ()
    lossy: bool = False

    @property
    def summary(self) -> str:
        doc = (self.run.__doc__ or "").strip()
        return doc.splitlines()[0] if doc else ""


class DuplicatePassError(ValueError):
    """Two passes were registered under one name (a programming error, not a user error)."""


_REGISTRY: dict[str, PassDefinition] = {}


def register_pass(
    name: str,
    *,
    config: type[PassConfig],
    must_follow: Sequence[str] = (),
    must_precede: Sequence[str] = (),
    requires: Sequence[str] = (),
    lossy: bool = False,
) -> Callable[[PassFunction], PassFunction]:
    """Register ``run`` as pass ``name``. Raises ``DuplicatePassError`` if the name is taken."""

    def decorate(run: PassFunction) -> PassFunction:
        if name in _REGISTRY:
            raise DuplicatePassError(f"pass '{name}' is already registered by {_REGISTRY[name].run.__module__}")
        _REGISTRY[name] = PassDefinition(
            name=name,
            config=config,
            run=run,
            must_follow=tuple(must_follow),
            must_precede=tuple(must_precede),
            requires=tuple(requires),
            lossy=lossy,
        )
        return run

    return decorate


def unregister_pass(name: str) -> None:
    """Remove a pass (for tests that register temporary passes)."""
    _REGISTRY.pop(name, None)


def _load_builtin_passes() -> None:
    importlib.import_module("slmc.passes")


def registered_passes() -> dict[str, PassDefinition]:
    """All registered passes by name (the built-in ones are imported on first use)."""
    _load_builtin_passes()
    return dict(sorted(_REGISTRY.items()))


def get_pass(name: str) -> PassDefinition | None:
    _load_builtin_passes()
    return _REGISTRY.get(name)


def order_problems(names: Sequence[str]) -> list[tuple[int, str]]:
    """``(index, message)`` for every ordering rule the sequence ``names`` breaks."""
    problems = []
    for i, name in enumerate(names):
        definition = get_pass(name)
        if definition is None:
            continue
        before, after = names[:i], names[i + 1 :]
        for other in definition.must_follow:
            if other in after:
                problems.append((i, f"'{name}' must come after '{other}', but '{other}' comes later"))
        for other in definition.must_precede:
            if other in before:
                problems.append((i, f"'{name}' must come before '{other}', but '{other}' comes earlier"))
        for other in definition.requires:
            if other not in before:
                problems.append((i, f"'{name}' requires '{other}' earlier in the recipe"))
    return problems
