"""Output of the libraries slmc drives (TVM's C++ log lines), kept off a normal run.

TVM's C++ code logs warnings with ``LOG(WARNING)`` straight to the process's stderr (file
descriptor 2, not Python's ``sys.stderr``), with no level to turn them off. Where slmc calls into
TVM code known to log a warning that does not apply to slmc's use, ``native_stderr`` captures
descriptor 2 for the call and drops the lines of that known warning (``KNOWN_NOTICES`` says why
each is harmless); every other line is written back to stderr, so nothing unknown is hidden. In
debug mode (``slmc --debug``, ``set_debug(True)``) every captured line is written back.
"""

from __future__ import annotations

import os
import re
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager

_debug = False

# Library notices that do not apply to slmc's use of the library, with the reason.
KNOWN_NOTICES: dict[str, re.Pattern[str]] = {
    # topi::take (TVM's include/tvm/topi/transform.h) logs this for every relax.take legalized in mode
    # "fast", which is how TVM's PyTorch frontend imports embedding lookups and index_select. Token ids
    # are range-checked before they reach an artifact's embedding lookup (slmc.artifact.runtime refuses
    # ids outside [0, vocabulary) with an InputError), so the unchecked gather is never given one.
    "take-fast-mode": re.compile(r"Warning: Fast mode segfaults when there are out-of-bounds indices"),
    # relax::BlockBuilder's destructor (src/relax/ir/block_builder.cc) logs this when TVM's PyTorch
    # importer raised in the middle of a function; slmc reports that failure itself, naming the node
    # (slmc.backend.import_diagnosis), and the half-built module is discarded.
    "abandoned-block-builder": re.compile(r"Warning: BlockBuilder destroyed with remaining blocks"),
}


def set_debug(value: bool) -> None:
    """Show (True) or drop (False, the default) the known library notices."""
    global _debug
    _debug = bool(value)


def debug_enabled() -> bool:
    return _debug


@contextmanager
def native_stderr() -> Iterator[None]:
    """Capture file descriptor 2 while the block runs; afterwards (also when it raises) write back
    every captured line except those of ``KNOWN_NOTICES`` (all of them in debug mode).

    Precondition: nothing else needs to draw on stderr during the block (its output is delayed to
    the end of the block, not lost). Where descriptor 2 cannot be duplicated, the block runs uncaptured.
    """
    sys.stderr.flush()
    try:
        saved = os.dup(2)
    except OSError:
        yield
        return
    with tempfile.TemporaryFile() as capture:
        os.dup2(capture.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            capture.seek(0)
            text = capture.read().decode("utf-8", errors="replace")
            kept = [line for line in text.splitlines(keepends=True)
                    if _debug or not any(p.search(line) for p in KNOWN_NOTICES.values())]
            if kept:
                sys.stderr.write("".join(kept))
                sys.stderr.flush()
