"""Evaluation texts: a UTF-8 file, or a built-in text set that every machine can rebuild.

``stdlib-heldout``: the held-out modules of the fixture LM's split (``split.json`` beside the
fixture checkpoint), re-read from this machine's Python standard library; one document per module.
"""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path

from slmc.errors import InputError

TEXT_SETS = {"stdlib-heldout": "held-out Python standard-library modules of the fixture LM's split"}


def _stdlib_heldout() -> list[str]:
    import sysconfig
    import tokenize

    split_file = resources.files("slmc.models") / "fixture_lm" / "split.json"
    if not split_file.is_file():
        raise InputError("text set 'stdlib-heldout' needs the fixture LM's split.json, which is not installed")
    root = Path(sysconfig.get_paths()["stdlib"])
    texts = []
    for rel in json.loads(split_file.read_text(encoding="utf-8"))["heldout"]:
        path = root / rel
        if not path.is_file():
            raise InputError(f"text set 'stdlib-heldout': module {rel} is missing from this Python's stdlib ({root})")
        with tokenize.open(path) as f:  # PEP 263 encodings, as in training
            texts.append(f.read())
    return texts


def load_texts(ref: str | Path) -> list[str]:
    """Documents of a built-in text set, or the single document of a UTF-8 text file."""
    if str(ref) == "stdlib-heldout":
        return _stdlib_heldout()
    path = Path(ref)
    try:
        return [path.read_text(encoding="utf-8")]
    except FileNotFoundError as exc:
        raise InputError(f"evaluation text {path} not found (built-in text sets: {', '.join(TEXT_SETS)})") from exc
    except UnicodeDecodeError as exc:
        raise InputError(f"evaluation text {path} is not UTF-8 ({exc.reason} at byte {exc.start})") from exc
