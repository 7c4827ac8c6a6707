"""Strict pydantic base model and translation of validation errors into file/field/line problems."""

from __future__ import annotations

import types
import typing
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError

from slmc.errors import FieldProblem, did_you_mean
from slmc.spec.yaml_source import KeyPath, YamlDocument


class StrictModel(BaseModel):
    """Frozen, unknown keys forbidden, no type coercion from strings to numbers."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=False, validate_default=True)


def model_classes(annotation: Any) -> list[type[BaseModel]]:
    """The BaseModel classes an annotation can hold (through Optional, Union, list, dict)."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    origin = typing.get_origin(annotation)
    if origin is None:
        return []
    found: list[type[BaseModel]] = []
    args = typing.get_args(annotation)
    if origin in (dict,) and args:
        args = args[1:]
    if origin in (typing.Union, types.UnionType, list, tuple, dict, typing.Annotated):
        for arg in args:
            found.extend(model_classes(arg))
    return found


def allowed_keys(model: type[BaseModel], loc: KeyPath) -> list[str]:
    """Field names valid at ``loc`` inside ``model`` (empty when ``loc`` cannot be followed)."""
    classes = [model]
    for part in loc:
        if isinstance(part, int):
            continue
        nxt: list[type[BaseModel]] = []
        for cls in classes:
            field = cls.model_fields.get(part)
            if field is not None:
                nxt.extend(model_classes(field.annotation))
        if not nxt:
            return []
        classes = nxt
    return sorted({name for cls in classes for name in cls.model_fields})


_TYPE_TAGS = {"int", "str", "float", "bool", "none", "list", "dict", "tuple", "set", "bytes"}


def _is_union_tag(part: object) -> bool:
    """pydantic names the branch of a union that failed (``constrained-int``, ``literal['native']``)."""
    return isinstance(part, str) and (part in _TYPE_TAGS or any(c in part for c in "[-(") or part.startswith("function"))


def problems_from_validation(
    exc: ValidationError, doc: YamlDocument | None, model: type[BaseModel], prefix: KeyPath = ()
) -> list[FieldProblem]:
    """Turn a pydantic ``ValidationError`` into ``FieldProblem``s with key paths and lines."""
    problems = []
    for err in exc.errors(include_url=False):
        loc = tuple(p for p in err["loc"] if not _is_union_tag(p))
        path = prefix + loc
        message = err["msg"]
        found = err.get("input")
        if err["type"] == "extra_forbidden":
            valid = allowed_keys(model, loc[:-1])
            message = "unknown key" + did_you_mean(str(err["loc"][-1]), valid) + (f"; expected one of: {', '.join(valid)}" if valid else "")
            found = None
        elif err["type"] == "missing":
            found = None
        if isinstance(found, (dict, list)) and len(repr(found)) > 80:
            found = f"{type(found).__name__} of {len(found)} items"
        line = doc.line_of(path) if doc is not None else None
        problems.append(FieldProblem(".".join(map(str, path)), message, line, found))
    return _merge_union_branches(problems)


def _merge_union_branches(problems: list[FieldProblem]) -> list[FieldProblem]:
    """One problem per field: the failed branches of a union become 'A, or B'."""
    merged: dict[str, FieldProblem] = {}
    for p in problems:
        if p.path in merged:
            first = merged[p.path]
            merged[p.path] = FieldProblem(p.path, f"{first.message}, or {p.message[0].lower()}{p.message[1:]}", first.line, first.found)
        else:
            merged[p.path] = p
    return list(merged.values())
