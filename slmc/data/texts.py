"""Evaluation texts: a UTF-8 file, or a built-in text set that every machine can rebuild.

``stdlib-heldout``: the held-out modules of the fixture LM's split (``split.json`` beside the
fixture checkpoint), re-read from this machine's Python standard library; one document per module.
``stdlib-train``: the training modules of that split (the fixture's training text, for
calibration), likewise re-read; never a held-out module. ``stdlib-train/PACKAGE`` and
``stdlib-heldout/PACKAGE`` (e.g. ``stdlib-train/email``): only the modules of one stdlib package,
a domain corpus and its held-out text.
"""

from __future__ import annotations

import json
from importlib import resources
from collections.abc import Sequence
from pathlib import Path

from slmc.errors import InputError

TEXT_SETS = {
    "stdlib-heldout": "held-out Python standard-library modules of the fixture LM's split",
    "stdlib-train": "training Python standard-library modules of the fixture LM's split (for calibration)",
    "stdlib-sentences-heldout": "English docstring sentences of the held-out modules, one per line (embedding evaluation)",
    "stdlib-sentences-train": "English docstring sentences of the training modules, one per line (embedding calibration)",
}


def is_text_set(name: str | Path) -> bool:
    """Whether ``name`` is a built-in text set (``TEXT_SETS``, or a split part of one package)."""
    part, _, package = str(name).partition("/")
    return str(name) in TEXT_SETS or (part in ("stdlib-train", "stdlib-heldout") and package.isidentifier())


def _stdlib_split(part: str, package: str | None = None) -> list[str]:
    """The modules of one part (``train`` or ``heldout``) of the fixture LM's split, as this
    machine's standard library has them (only those of ``package`` when given)."""
    import sysconfig
    import tokenize

    split_file = resources.files("slmc.models") / "fixture_lm" / "split.json"
    if not split_file.is_file():
        raise InputError(f"text set 'stdlib-{part}' needs the fixture LM's split.json, which is not installed")
    root = Path(sysconfig.get_paths()["stdlib"])
    texts = []
    modules = [rel for rel in json.loads(split_file.read_text(encoding="utf-8"))[part]
               if package is None or rel.startswith(f"{package}/")]
    if not modules:
        raise InputError(f"text set 'stdlib-{part}/{package}': the split has no {part} module in package '{package}'")
    for rel in modules:
        path = root / rel
        if not path.is_file():
            raise InputError(f"text set 'stdlib-{part}': module {rel} is missing from this Python's stdlib ({root})")
        with tokenize.open(path) as f:  # PEP 263 encodings, as in training
            texts.append(f.read())
    return texts


def _docstring_sentences(sources: list[str], limit: int = 2000) -> list[str]:
    """The first line of every module/class/function docstring with at least 6 words, deduplicated,
    as one document with one sentence per line (at most ``limit``)."""
    import ast

    found: dict[str, None] = {}
    for source in sources:
        try:
            tree = ast.parse(source)
        except SyntaxError:  # a stdlib test module may hold deliberately broken code
            continue
        for node in ast.walk(tree):
            if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
                doc = ast.get_docstring(node)
                line = doc.strip().splitlines()[0].strip() if doc and doc.strip() else ""
                if len(line.split()) >= 6 and line.isascii():
                    found.setdefault(line, None)
    return ["\n".join(list(found)[:limit])]


def load_texts(ref: str | Path) -> list[str]:
    """Documents of a built-in text set, or the single document of a UTF-8 text file."""
    if str(ref) == "stdlib-heldout":
        return _stdlib_split("heldout")
    if str(ref) == "stdlib-train":
        return _stdlib_split("train")
    if is_text_set(ref) and "/" in str(ref):
        part, package = str(ref).split("/", 1)
        return _stdlib_split(part.removeprefix("stdlib-"), package)
    if str(ref) in ("stdlib-sentences-heldout", "stdlib-sentences-train"):
        return _docstring_sentences(_stdlib_split(str(ref).rsplit("-", 1)[1]))
    path = Path(ref)
    try:
        return [path.read_text(encoding="utf-8")]
    except FileNotFoundError as exc:
        raise InputError(f"evaluation text {path} not found (built-in text sets: {', '.join(TEXT_SETS)})") from exc
    except UnicodeDecodeError as exc:
        raise InputError(f"evaluation text {path} is not UTF-8 ({exc.reason} at byte {exc.start})") from exc


def sentences(texts: Sequence[str]) -> list[str]:
    """Non-empty lines of the texts: one sentence per line."""
    found = [line.strip() for text in texts for line in text.splitlines() if line.strip()]
    if not found:
        raise InputError("the evaluation text has no sentences (one per line)")
    return found
