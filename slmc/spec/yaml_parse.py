"""PyYAML's side of ``slmc.spec.yaml_source.parse_yaml``: one document, safe loading, every key's line.

Imported by ``parse_yaml`` when a document is parsed, not with ``slmc.spec.yaml_source`` (whose types a runtime
process reading a manifest needs without PyYAML; issue 22.3). The limits are ``slmc.spec.yaml_limits``'.
"""

from __future__ import annotations

from typing import Any

import yaml

from slmc.errors import FieldProblem
from slmc.spec.yaml_limits import MAX_DEPTH, MAX_NODES, KeyPath, YamlSyntaxError


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


def _problem(source: str, path: KeyPath, node: yaml.Node, message: str) -> YamlSyntaxError:
    return YamlSyntaxError(FieldProblem(".".join(map(str, path)), message, node.start_mark.line + 1))


def parse_document(text: str, source: str) -> tuple[Any, dict[KeyPath, int]]:
    """The single YAML document in ``text`` and the line of each key path (``yaml_source.parse_yaml``'s errors:
    ``YamlSyntaxError`` on malformed YAML, several documents, duplicate keys, Python tags, or a document that
    nests too deep or expands to too many values)."""
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
    return data, lines
