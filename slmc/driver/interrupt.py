"""Ctrl-C (SIGINT) during a compile that cannot be lost: the request is recorded as well as raised.

Python's own SIGINT handler raises ``KeyboardInterrupt`` at the next bytecode boundary, wherever the
main thread is. Some places lose it: a ``__del__`` or weakref callback running then (the garbage
collection ``return_freed_memory`` starts, TVM and torch object finalizers) prints "Exception ignored"
and carries on; native code that polls signals (tvm_ffi's ``EnvCheckSignals`` turns the
``KeyboardInterrupt`` into an ``EnvErrorAlreadySet`` FFI error) may catch that error and recover. The
compile then ran to the end and committed its artifact (session 12's CI flake: exit 0 after a Ctrl-C).

``watch()`` installs a handler that records the request and then raises as Python's does; the driver
calls ``check()`` at every stage boundary and right before the artifact is renamed into place, so a
swallowed interrupt still aborts the compile there (``KeyboardInterrupt``; the CLI makes it exit 130).
``finishing()`` is the commit itself (rename, cache entry): a Ctrl-C inside it is recorded, not raised,
so the artifact is either not committed or committed with its cache entry; a second Ctrl-C there
raises at once.

Precondition: signal handlers can only be installed from the main thread; ``watch()`` elsewhere (a
compile run from a worker thread) installs nothing, and ``check()`` still sees a request recorded by a
handler installed in the main thread.
"""

from __future__ import annotations

import signal
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType
from typing import Any

from slmc import progress

_requested = threading.Event()
_deferring = threading.Event()


def _handler(signum: int, frame: FrameType | None) -> None:
    if _deferring.is_set() and not _requested.is_set():
        _requested.set()  # no output here: a handler that writes could interrupt a write to the same stream
        return
    _requested.set()
    raise KeyboardInterrupt


def requested() -> bool:
    """Whether a Ctrl-C arrived inside the outermost ``watch()`` (the handler records it before raising)."""
    return _requested.is_set()


def check() -> None:
    """Raise ``KeyboardInterrupt`` if a Ctrl-C arrived, even if the one the handler raised was swallowed."""
    if _requested.is_set():
        raise KeyboardInterrupt("Ctrl-C (recorded by slmc.driver.interrupt; the raised interrupt had been swallowed)")


@contextmanager
def watch() -> Iterator[None]:
    """Record Ctrl-C for the duration. Installs the handler only in the main thread, only where SIGINT
    has a Python handler (a process that ignores SIGINT keeps ignoring it), and only if no enclosing
    ``watch`` did (nested compiles share the outer request); restores the previous handler on exit."""
    previous: Any = None
    install = threading.current_thread() is threading.main_thread()
    if install:
        previous = signal.getsignal(signal.SIGINT)
        install = callable(previous) and previous is not _handler
    if install:
        _requested.clear()
        signal.signal(signal.SIGINT, _handler)
    try:
        yield
    finally:
        if install:
            signal.signal(signal.SIGINT, previous)
            _requested.clear()  # code run after the compile (eval shares its stages) is not stopped by its record


@contextmanager
def finishing() -> Iterator[None]:
    """The commit: ``check()`` first (a recorded Ctrl-C aborts before anything is put in place), then a
    Ctrl-C is recorded without raising until the block ends (a second one raises). Afterwards the
    compile is complete, and a Ctrl-C that arrived inside the block is not raised: the artifact is in
    place, and the exit status says so."""
    check()
    _deferring.set()
    try:
        yield
    finally:
        _deferring.clear()
    if _requested.is_set():  # only when the block completed: a second Ctrl-C did stop it
        print("slmc: Ctrl-C arrived while the artifact was being committed: it was finished, not stopped",
              file=sys.stderr, flush=True)


def stage(name: str) -> None:
    """A stage boundary of a compile: ``check()``, then the progress display moves to ``name``."""
    check()
    progress.stage(name)
