"""Progress bars (tqdm, on stderr) for the long parts of a compile: calibration, each pass, the stages.

Bars are drawn only when stderr is a terminal and quiet mode is off (``--quiet`` on the CLI,
``quiet()`` in Python): logs of CI jobs and ``--json`` consumers see nothing. stdout is never
written to. Bars are transient (``leave=False``), so a finished compile leaves only its summary.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from tqdm import tqdm

_quiet = False
_stages: list[tqdm] = []

COMPILE_STAGES = ("load", "trace", "passes", "lower", "build", "export", "verify")


def set_quiet(value: bool) -> None:
    """Turn every bar off (True) or back on where stderr is a terminal (False)."""
    global _quiet
    _quiet = bool(value)


@contextmanager
def quiet() -> Iterator[None]:
    previous = _quiet
    set_quiet(True)
    try:
        yield
    finally:
        set_quiet(previous)


def enabled() -> bool:
    isatty = getattr(sys.stderr, "isatty", None)
    return not _quiet and callable(isatty) and bool(isatty())


def bar(description: str, total: int | None = None, unit: str = "it", **kwargs: Any) -> tqdm:
    """A tqdm bar on stderr (disabled, at no cost, when ``enabled()`` is false); use as a context manager."""
    return tqdm(total=total, desc=description, unit=unit, file=sys.stderr, leave=False, disable=not enabled(),
                dynamic_ncols=True, **kwargs)


@contextmanager
def compile_stages(stages: tuple[str, ...] = COMPILE_STAGES) -> Iterator[tqdm]:
    """The bar of a compile's stages; ``stage(name)`` marks where the compile is (nested compiles stack)."""
    with bar("compile", total=len(stages), unit="stage") as b:
        b.set_postfix_str(stages[0])
        b.stages = list(stages)  # type: ignore[attr-defined]
        _stages.append(b)
        try:
            yield b
        finally:
            _stages.remove(b)


def stage(name: str) -> None:
    """Move the current compile's stage bar to ``name`` (a no-op outside ``compile_stages``)."""
    if not _stages:
        return
    b = _stages[-1]
    names: list[str] = b.stages  # type: ignore[attr-defined]
    position = names.index(name) if name in names else b.n
    b.update(max(position - b.n, 0))
    b.set_postfix_str(name)
