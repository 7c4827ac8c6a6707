"""Fenced code blocks of the docs, for tests that run or check them exactly as written."""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
FENCE = re.compile(r"^```(\w*)\n(.*?)^```", re.M | re.S)


@dataclass(frozen=True)
class Block:
    language: str
    text: str

    @property
    def file_name(self) -> str | None:
        """The file a block shows, named by its first line (``# recipes/int4.yaml``), else None."""
        first = self.text.splitlines()[0] if self.text.strip() else ""
        match = re.fullmatch(r"#\s*([\w./-]+\.\w+)", first.strip())
        return match.group(1) if match else None


def blocks(doc: str) -> list[Block]:
    """Every fenced block of ``docs/<doc>`` in order."""
    return [Block(m.group(1), m.group(2)) for m in FENCE.finditer((REPO / "docs" / doc).read_text(encoding="utf-8"))]


def shell_lines(text: str) -> list[str]:
    """The commands of a shell block: comments stripped, backslash continuations joined."""
    joined = re.sub(r"\\\n\s*", " ", text)
    found = []
    for line in joined.splitlines():
        words = shlex.split(line, comments=True)
        if words:
            found.append(shlex.join(words))
    return found
