"""Naming the operation TVM's PyTorch importer cannot convert: graph node, op, and the model's source line.

TVM 0.27's ``from_exported_program`` decomposes the program to core ATen, then refuses it with
``AssertionError: Unsupported function types ['_fft_r2c.default']``: the op's name only. This
module repeats the decomposition on the same program, finds the nodes whose op has no converter,
and maps each back to the node of slmc's graph it came from (``node.meta['from_node']``) and to
the last frame of ``node.meta['stack_trace']`` outside torch itself: the line of the user's model
that created it. Ops behind side effects (``with_effects``, which the importer refuses as an
``InputKind.TOKEN`` input) are reported the same way.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch

from slmc.errors import UnsupportedOpError
from slmc.graph.ir import EXPORT_FAILURES

_FRAME = re.compile(r'File "(?P<file>[^"]+)", line (?P<line>\d+), in (?P<func>[^\n]+)\n(?P<code>[^\n]*)')
_TORCH_DIR = os.path.dirname(torch.__file__) + os.sep


@dataclass(frozen=True)
class Unsupported:
    """One node the importer cannot convert."""

    node: str
    op: str
    imported_as: str
    location: str | None
    code: str | None


def source_location(stack_trace: str | None) -> tuple[str | None, str | None]:
    """``("file:line in function", code)`` of the last frame outside torch's own package, or ``(None, None)``."""
    user = [m for m in _FRAME.finditer(stack_trace or "")
            if not m["file"].startswith(_TORCH_DIR) and not m["file"].startswith("<")]
    if not user:
        return None, None
    last = user[-1]
    return f"{last['file']}:{last['line']} in {last['func'].strip()}", last["code"].strip() or None


def _origin(node: torch.fx.Node) -> str:
    """The name of the node in the program before decomposition (slmc's graph), else this node's."""
    sources = node.meta.get("from_node") or []
    return str(getattr(sources[-1], "name", node.name)) if sources else node.name


def _effect_op(node: torch.fx.Node) -> Any:
    """The op a ``with_effects`` node wraps (its second argument), else None."""
    if node.target is torch.ops.higher_order.with_effects and len(node.args) > 1:
        return node.args[1]
    return None


def unsupported_nodes(program: torch.export.ExportedProgram, custom_ops: Mapping[str, Any] | None = None) -> list[Unsupported]:
    """One entry per node of ``program`` whose decomposition calls an op the importer has no converter for."""
    from tvm.relax.frontend.torch.exported_program_translator import ExportedProgramImporter

    known = set(ExportedProgramImporter().convert_map) | set(custom_ops or {})
    before = {node.name: node for node in program.graph.nodes}
    try:
        decomposed = program.run_decompositions()
    except EXPORT_FAILURES:
        return []  # the importer's own decomposition failed too: nothing to attribute to one op
    found: dict[str, Unsupported] = {}
    for node in decomposed.graph.nodes:
        if node.op != "call_function":
            continue
        wrapped = _effect_op(node)
        imported = getattr(wrapped if wrapped is not None else node.target, "__name__", str(node.target))
        if wrapped is None and imported in known:
            continue
        origin = _origin(node)
        if origin in found:
            continue
        source = before.get(origin)
        op = source.target if source is not None and source.op == "call_function" else (wrapped or node.target)
        location, code = source_location(node.meta.get("stack_trace"))
        found[origin] = Unsupported(origin, str(op), f"with_effects({imported})" if wrapped is not None else imported,
                                    location, code)
    return list(found.values())


def unsupported_op_error(program: torch.export.ExportedProgram,
                         custom_ops: Mapping[str, Any] | None = None) -> UnsupportedOpError | None:
    """An ``UnsupportedOpError`` naming the first unsupported node (and the others), or None if every
    op has a converter (then the import failed for another reason)."""
    nodes = unsupported_nodes(program, custom_ops)
    if not nodes:
        return None
    first = nodes[0]
    where = f" at {first.location}" if first.location else " (source location unknown: the node has no stack trace)"
    code = f": `{first.code}`" if first.code else ""
    same = first.op == first.imported_as or first.op.endswith("." + first.imported_as)
    as_ = "" if same else f", decomposed to {first.imported_as} for TVM"
    others = [f"'{n.node}' ({n.op})" for n in nodes[1:]]
    more = f"; also unsupported: {', '.join(others)}" if others else ""
    return UnsupportedOpError(
        f"TVM's PyTorch importer cannot convert node '{first.node}' ({first.op}{as_}){where}{code}{more}. "
        "Rewrite that part of the model with supported operations",
        first.node, first.op, first.location,
    )


def converting_node(exc: BaseException) -> torch.fx.Node | None:
    """The FX node TVM's importer was converting when it raised ``exc``: the ``node`` local of the
    innermost frame of TVM's torch frontend that has one (its loop over the graph's nodes)."""
    found = None
    tb = exc.__traceback__
    while tb is not None:
        frame = tb.tb_frame
        node = frame.f_locals.get("node")
        if "relax/frontend/torch" in frame.f_code.co_filename and isinstance(node, torch.fx.Node) \
                and node.op == "call_function":
            found = node
        tb = tb.tb_next
    return found


def conversion_failure_error(exc: BaseException, summary: str) -> UnsupportedOpError | None:
    """An ``UnsupportedOpError`` naming the node (its op and the model's source line) whose conversion
    raised ``exc`` although the op has a converter (e.g. arguments the converter does not take, such
    as symbolic repeat counts), or None when the node cannot be found."""
    node = converting_node(exc)
    if node is None:
        return None
    location, code = source_location(node.meta.get("stack_trace"))
    where = f" at {location}" if location else " (source location unknown: the node has no stack trace)"
    snippet = f": `{code}`" if code else ""
    return UnsupportedOpError(
        f"TVM's PyTorch importer failed converting node '{_origin(node)}' ({node.target}){where}{snippet}: {summary}. "
        "Rewrite that part of the model with supported operations or arguments",
        _origin(node), str(node.target), location,
    )
