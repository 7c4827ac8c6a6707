"""Loading YAML documents with the line of every key, for error messages that point into the file.

Safe loading only (no Python object tags), duplicate keys rejected, and every mapping key and
sequence item remembered with its 1-based line so that a validation error on ``passes.1.ratio``
can say ``recipe.yaml:7``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from slmc.errors import FieldProblem

KeyPath = tuple[str | int, ...]


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


MAX_NODES = 100_000  # after alias expansion: a "billion laughs" document stops here
MAX_DEPTH = 64
MAX_BYTES = 4 * 1024 * 1024


class _LineLoader(yaml.SafeLoader):
    """SafeLoader that keeps node marks; used only through ``parse_yaml``."""

    nodes_built = 0


def _construct(node: yaml.Node, loader: _LineLoader, path: KeyPath, lines: dict[KeyPath, int], source: str) -> Any:
    loader.nodes_built += 1
    if loader.nodes_built > MAX_NODES:
        raise _problem(source, path, node, f"document expands to more than {MAX_NODES} values (alias expansion?)")
    if len(path) > MAX_DEPTH:
        raise _problem(source, path[:MAX_DEPTH], node, f"document nests deeper than {MAX_DEPTH} levels")
    lines[path] = node.start_mark.line + 1
    standard = {yaml.MappingNode: "tag:yaml.org,2002:map", yaml.SequenceNode: "tag:yaml.org,2002:seq"}
    if type(node) in standard and node.tag != standard[type(node)]:
        raise _problem(source, path, node, f"tag {node.tag!r} is not allowed")
    if isinstance(node, yaml.MappingNode):
        loader.flatten_mapping(node)
        result: dict[Any, Any] = {}
        for key_node, value_node in node.value:
            key = loader.construct_object(key_node, deep=True)
            if isinstance(key, (list, dict)):
                raise _problem(source, path, key_node, "mapping keys must be scalars")
            if key in result:
                raise _problem(source, path + (str(key),), key_node, f"duplicate key {key!r}")
            child = path + (str(key),)
            result[key] = _construct(value_node, loader, child, lines, source)
            lines[child] = key_node.start_mark.line + 1
        return result
    if isinstance(node, yaml.SequenceNode):
        return [_construct(item, loader, path + (i,), lines, source) for i, item in enumerate(node.value)]
    return loader.construct_object(node, deep=True)


class YamlSyntaxError(ValueError):
    """The text is not a YAML document slmc accepts; carries a ``FieldProblem``."""

    def __init__(self, problem: FieldProblem):
        self.problem = problem
        super().__init__(problem.message)


def _problem(source: str, path: KeyPath, node: yaml.Node, message: str) -> YamlSyntaxError:
    return YamlSyntaxError(FieldProblem(".".join(map(str, path)), message, node.start_mark.line + 1))


def parse_yaml(text: str, source: str) -> YamlDocument:
    """Parse one YAML document from ``text``; ``source`` names it in errors.

    Raises ``YamlSyntaxError`` on malformed YAML, several documents, duplicate keys, Python
    tags, documents over 4 MiB, or documents that nest too deep or expand (through aliases) to
    too many values.
    """
    if len(text) > MAX_BYTES:
        raise YamlSyntaxError(FieldProblem("", f"document is larger than {MAX_BYTES} bytes"))
    loader = None
    try:
        loader = _LineLoader(text)
        node = loader.get_single_node()
        lines: dict[KeyPath, int] = {}
        data = None if node is None else _construct(node, loader, (), lines, source)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark is not None else None
        raise YamlSyntaxError(FieldProblem("", f"not valid YAML: {exc.problem or exc}", line)) from exc
    except yaml.YAMLError as exc:
        raise YamlSyntaxError(FieldProblem("", f"not valid YAML: {exc}")) from exc
    except RecursionError as exc:
        raise YamlSyntaxError(FieldProblem("", "not valid YAML: nested too deeply")) from exc
    finally:
        if loader is not None:
            loader.dispose()
    return YamlDocument(data=data, source=source, lines=lines)


def read_yaml(path: Path) -> YamlDocument:
    """Read and parse the YAML file at ``path`` (UTF-8)."""
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise YamlSyntaxError(FieldProblem("", f"not UTF-8 text: {exc.reason} at byte {exc.start}")) from exc
    return parse_yaml(text, str(path))
