"""Loading YAML documents with the line of every key, for error messages that point into the file.

Safe loading only (no Python object tags), duplicate keys rejected, and every mapping key and
sequence item remembered with its 1-based line so that a validation error on ``passes.1.ratio``
can say ``recipe.yaml:7``.

PyYAML itself is imported only when a document is parsed (``slmc.spec.yaml_parse``): reading a manifest or a
target descriptor already in memory (``slmc.load``) needs this module's types, not the parser (issue 22.3:
about 1 MB of a runtime process's RSS, docs/dev-notes.md session 12).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from slmc.errors import FieldProblem
from slmc.spec.yaml_limits import MAX_BYTES, MAX_DEPTH, MAX_NODES, KeyPath, YamlSyntaxError

__all__ = ["MAX_BYTES", "MAX_DEPTH", "MAX_NODES", "KeyPath", "YamlDocument", "YamlSyntaxError", "parse_yaml", "read_yaml"]


@dataclass
class YamlDocument:
    """A parsed YAML document and the line where each key path starts."""

    data: Any
    source: str
    lines: dict[KeyPath, int] = field(default_factory=dict)

    def line_of(self, path: KeyPath) -> int | None:
        """The line of ``path``, or of its longest prefix that has one."""
        for end in range(len(path), -1, -1):
            line = self.lines.get(tuple(path[:end]))
            if line is not None:
                return line
        return None


def parse_yaml(text: str, source: str) -> YamlDocument:
    """Parse one YAML document from ``text``; ``source`` names it in errors.

    Raises ``YamlSyntaxError`` on malformed YAML, several documents, duplicate keys, Python
    tags, documents over 4 MiB, or documents that nest too deep or expand (through aliases) to
    too many values.
    """
    if len(text) > MAX_BYTES:
        raise YamlSyntaxError(FieldProblem("", f"document is larger than {MAX_BYTES} bytes"))
    from slmc.spec.yaml_parse import parse_document

    data, lines = parse_document(text, source)
    return YamlDocument(data=data, source=source, lines=lines)


def read_yaml(path: Path) -> YamlDocument:
    """Read and parse the YAML file at ``path`` (UTF-8)."""
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise YamlSyntaxError(FieldProblem("", f"not UTF-8 text: {exc.reason} at byte {exc.start}")) from exc
    return parse_yaml(text, str(path))
