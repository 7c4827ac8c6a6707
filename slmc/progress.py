"""Progress of the long parts of a command (calibration, each pass, the compile's stages, search
candidates, evaluated tokens), on stderr; stdout is never written to.

Two forms, both off in quiet mode (``--quiet`` on the CLI, ``quiet()`` in Python):

* stderr is a terminal: transient tqdm bars (``leave=False``), so a finished compile leaves only
  its summary;
* stderr is not a terminal (CI logs, a captured stream): plain lines, no carriage returns, each
  prefixed with the seconds since slmc started, e.g. ``[  12.3s] pass quantize done in 8.1 s``.
  A named step (a pass, a stage: the bar's ``set_postfix_str(name)`` then ``update()``) gets one
  line when it ends; a count (``update(n)`` without a name) gets a line at most every
  ``mininterval`` seconds (default ``PLAIN_INTERVAL``) and one when it reaches its total, with an
  ETA while it has not.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from tqdm import tqdm

_quiet = False
_stages: list[Any] = []
_origin = time.monotonic()

COMPILE_STAGES = ("load", "trace", "passes", "lower", "build", "export", "verify")
PLAIN_INTERVAL = 5.0  # seconds between two plain lines of one count


def set_quiet(value: bool) -> None:
    """Turn all progress off (True) or back on (False)."""
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


def _stderr_is_terminal() -> bool:
    isatty = getattr(sys.stderr, "isatty", None)
    return callable(isatty) and bool(isatty())


def enabled() -> bool:
    """Bars are drawn: stderr is a terminal and quiet mode is off."""
    return not _quiet and _stderr_is_terminal()


def plain() -> bool:
    """Plain lines are printed: stderr is not a terminal and quiet mode is off."""
    return not _quiet and not _stderr_is_terminal()


def elapsed() -> float:
    """Seconds since slmc's progress module was imported (the start of the command, on the CLI)."""
    return time.monotonic() - _origin


def line(text: str) -> None:
    """One plain progress line on stderr, prefixed with the elapsed time (printed only when ``plain()``)."""
    if plain():
        sys.stderr.write(f"[{elapsed():7.1f}s] {text}\n")
        sys.stderr.flush()


def duration(seconds: float) -> str:
    """``42 s`` or ``3m 05s``."""
    seconds = max(seconds, 0.0)
    return f"{seconds:.0f} s" if seconds < 60 else f"{int(seconds // 60)}m {int(seconds % 60):02d}s"


class PlainBar:
    """The part of tqdm's interface slmc's code uses, printing plain lines (see the module docstring)."""

    def __init__(self, description: str, total: int | None, unit: str, mininterval: float = PLAIN_INTERVAL):
        self.desc, self.total, self.unit, self.mininterval = description, total, unit, mininterval
        self.n = 0
        self.started = self.last_line = time.monotonic()
        self.item: str | None = None
        self.item_started = self.started
        self.closed = False

    def __enter__(self) -> PlainBar:
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        self.close(stopped=exc_type is not None)

    def set_postfix_str(self, name: str) -> None:
        """Name the step now starting (its line is printed when ``update`` ends it)."""
        self.item, self.item_started = str(name), time.monotonic()

    def update(self, n: int = 1) -> None:
        self.n += n
        now = time.monotonic()
        if self.item is not None:
            if n > 0:
                line(f"{self.unit} {self.item} done in {now - self.item_started:.1f} s")
                self.item = None
            return
        if (self.total is not None and self.n >= self.total) or now - self.last_line >= self.mininterval:
            self.last_line = now
            line(self._count(now))

    def _count(self, now: float) -> str:
        total = f"/{self.total}" if self.total is not None else ""
        text = f"{self.desc}: {self.n}{total} {self.unit}s"
        spent = now - self.started
        if self.total is not None and self.n >= self.total:
            return f"{text}, done in {spent:.1f} s"
        if self.total and self.n > 0:
            text += f", ETA {duration(spent / self.n * (self.total - self.n))}"
        return text

    def close(self, stopped: bool = False) -> None:
        """End the bar: a named step still open gets its line (``stopped`` when an exception ends it)."""
        if self.closed:
            return
        self.closed = True
        if self.item is not None:
            how = "stopped after" if stopped else "done in"
            line(f"{self.unit} {self.item} {how} {time.monotonic() - self.item_started:.1f} s")
            self.item = None


def bar(description: str, total: int | None = None, unit: str = "it", **kwargs: Any) -> Any:
    """Progress of a loop, used as a context manager: a tqdm bar on a terminal, a ``PlainBar`` elsewhere
    (both at no cost in quiet mode). ``kwargs`` go to tqdm; ``mininterval`` also to ``PlainBar``."""
    if plain():
        return PlainBar(description, total, unit, kwargs.get("mininterval", PLAIN_INTERVAL))
    return tqdm(total=total, desc=description, unit=unit, file=sys.stderr, leave=False, disable=not enabled(),
                dynamic_ncols=True, **kwargs)


@contextmanager
def compile_stages(stages: tuple[str, ...] = COMPILE_STAGES) -> Iterator[Any]:
    """The bar of a compile's stages; ``stage(name)`` marks where the compile is (nested compiles stack)."""
    with bar("compile", total=len(stages), unit="stage") as b:
        b.set_postfix_str(stages[0])
        b.stages = list(stages)
        b.current = stages[0]
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
    names: list[str] = b.stages
    position = names.index(name) if name in names else b.n
    b.update(max(position - b.n, 0))
    b.set_postfix_str(name)
    b.current = name


def current_stage() -> str | None:
    """The stage the innermost running compile is in (the last ``stage`` name, else the first of its
    ``compile_stages``), or None outside ``compile_stages``. Safe to read from another thread (a memory
    sampler: benchmarks/compile_memory.py)."""
    stages = list(_stages)
    return getattr(stages[-1], "current", None) if stages else None
