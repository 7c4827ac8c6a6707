"""Every numeric field of a target descriptor is bounded, strictly typed and finite (issue 16, point 15).

The fuzz sets one numeric field of a valid descriptor (every numeric field slmc.spec.target declares,
found by walking the models) to a value outside its bounds, of the wrong type (a numeric string, a
bool, a float for an integer, a list) or non-finite, and runs ``slmc compile -t FILE -o OUT`` through
click's CliRunner: each document must end in exit 2 with the typed descriptor error naming that
field, without a traceback and without creating the output directory. 1,000+ documents per run.
"""

from __future__ import annotations

import copy
import math
import types
import typing
from pathlib import Path

import annotated_types
import pytest
import yaml
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel

from slmc.cli.main import cli
from slmc.spec.target import TargetDescriptor, load_target

FUZZ = settings(max_examples=1000, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])


def _bounds(metadata: list[object]) -> tuple[float | None, float | None, bool]:
    """``(lower, upper, lower_is_strict)`` from pydantic's annotated-types metadata."""
    lo = hi = None
    strict = False
    for m in metadata:
        if isinstance(m, annotated_types.Ge):
            lo = m.ge
        elif isinstance(m, annotated_types.Gt):
            lo, strict = m.gt, True
        elif isinstance(m, annotated_types.Le):
            hi = m.le
        elif isinstance(m, annotated_types.Lt):
            hi = m.lt
    return lo, hi, strict


def _numbers(annotation: object, path: tuple[str, ...], metadata: list[object]) -> list[tuple]:
    """``(path, type, lower, upper, lower_is_strict)`` of the int/float leaves an annotation holds."""
    origin = typing.get_origin(annotation)
    if annotation in (int, float):
        return [(path, annotation, *_bounds(metadata))]
    if origin is typing.Annotated:
        base, *extra = typing.get_args(annotation)
        inner = [m for e in extra for m in getattr(e, "metadata", [e])]
        return _numbers(base, path, metadata + inner)
    if origin in (typing.Union, types.UnionType):
        return [leaf for arg in typing.get_args(annotation) for leaf in _numbers(arg, path, metadata)]
    if origin is list:
        return _numbers(typing.get_args(annotation)[0], path + ("0",), [])
    if origin is dict:
        return _numbers(typing.get_args(annotation)[1], path + ("int8",), [])
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return numeric_fields(annotation, path)
    return []


def numeric_fields(model: type[BaseModel] = TargetDescriptor, prefix: tuple[str, ...] = ()) -> list[tuple]:
    """Every numeric field of the descriptor (a ``TvmTargetSpec``'s ``host`` repeats ``tvm``: skipped)."""
    found = []
    for name, field in model.model_fields.items():
        if name == "host":
            continue
        found.extend(_numbers(field.annotation, prefix + (name,), list(field.metadata)))
    return found


FIELDS = numeric_fields()


def _full_document() -> dict:
    """A valid descriptor that sets every numeric field (an NPU with GPU-style limits declared)."""
    doc = load_target("ethos-u65").model_dump(mode="json")
    doc["memory"].update(local_memory_bytes=32768, kv_cache_bytes=2**28)
    doc["compute"].update(vector_width_bits=128)
    doc["quantization"].update(group_sizes=[32, 64])
    doc["ops"]["supported"] = "all"  # a short document parses fast: the fuzz's time goes to YAML parsing
    doc["description"] = ""
    doc["limits"].update(max_workgroup_size=256, max_workgroup_dims=[256, 256, 64])
    return doc


FULL = _full_document()


def _set(doc: dict, path: tuple[str, ...], value: object) -> None:
    parent = doc
    for part in path[:-1]:
        parent = parent[int(part)] if isinstance(parent, list) else parent[part]
    if isinstance(parent, list):
        parent[int(path[-1])] = value
    else:
        parent[path[-1]] = value


def _bad_values(kind: type, lo: float, hi: float, lo_strict: bool) -> st.SearchStrategy:
    """Values a field of ``kind`` bounded by [lo, hi] must refuse."""
    non_finite = st.sampled_from([math.nan, math.inf, -math.inf])
    wrong_type = st.one_of(
        st.booleans(),
        st.integers(int(max(lo, 1)), int(hi)).map(str),                      # "4": a number in a string
        st.sampled_from(["1e3", "0x10", " 8 ", "8_000", "1,024", "4 GB", ""]),
        st.lists(st.integers(1, 8), min_size=1, max_size=2),
        st.dictionaries(st.sampled_from(["value", "gb"]), st.integers(1, 8), min_size=1, max_size=1),
    )
    if kind is int:
        below = st.integers(min_value=-(10**30), max_value=int(lo) - 1)
        above = st.integers(min_value=int(hi) + 1, max_value=10**40)
        as_float = st.one_of(st.floats(allow_nan=False, allow_infinity=False), non_finite)  # 4.0 is not an int
        return st.one_of(below, above, as_float, wrong_type)
    below = st.floats(max_value=lo, exclude_max=not lo_strict, allow_nan=False, allow_infinity=False)
    above = st.floats(min_value=hi, exclude_min=True, allow_nan=False, allow_infinity=False)
    return st.one_of(below, above, non_finite, st.floats(lo, hi, exclude_min=lo_strict).map(repr), wrong_type)


@st.composite
def bad_descriptors(draw) -> tuple[str, dict]:
    path, kind, lo, hi, lo_strict = draw(st.sampled_from(FIELDS))
    doc = copy.deepcopy(FULL)
    _set(doc, path, draw(_bad_values(kind, lo, hi, lo_strict)))
    return ".".join(path), doc


def test_every_numeric_field_has_physical_bounds_and_is_fuzzed():
    assert {".".join(f[0]) for f in FIELDS} >= {
        "tvm.num_cores", "memory.ram_bytes", "memory.sram_bytes", "memory.local_memory_bytes", "memory.bandwidth_gbps",
        "memory.kv_cache_bytes", "compute.vector_width_bits", "compute.peak_gops.int8", "quantization.group_sizes.0",
        "limits.max_workgroup_size", "limits.max_workgroup_dims.0", "npu.macs_per_cycle", "npu.clock_hz"}
    unbounded = [".".join(path) for path, _, lo, hi, _ in FIELDS if lo is None or hi is None]
    assert not unbounded, f"numeric descriptor fields without a lower and an upper bound: {unbounded}"
    for path, *_ in FIELDS:  # the fuzz's valid document sets every one of them
        value = FULL
        for part in path:
            value = value[int(part)] if isinstance(value, list) else value[part]
        assert isinstance(value, (int, float)) and not isinstance(value, bool), path


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("descriptor-fuzz")


def _compile_with(workdir: Path, doc: dict) -> object:
    file = workdir / "target.yaml"
    file.write_text(yaml.safe_dump(doc, allow_unicode=True))
    return CliRunner().invoke(cli, ["compile", "-t", str(file), "-o", str(workdir / "out")])


def test_the_full_document_is_valid(workdir):
    file = workdir / "full.yaml"
    file.write_text(yaml.safe_dump(FULL))
    assert CliRunner().invoke(cli, ["targets", "show", str(file)]).exit_code == 0


@FUZZ
@given(bad_descriptors())
def test_every_out_of_bounds_or_mistyped_number_is_a_typed_error_naming_the_field(workdir, case):
    field, doc = case
    result = _compile_with(workdir, doc)
    assert result.exit_code == 2, (field, _value(doc, field), result.output)
    assert "error: invalid target descriptor" in result.output and f": {field}: " in result.output, result.output
    assert "Traceback" not in result.output and isinstance(result.exception, SystemExit)
    assert not (workdir / "out").exists()


def _value(doc: dict, field: str) -> object:
    value = doc
    for part in field.split("."):
        value = value[int(part)] if isinstance(value, list) else value[part]
    return value


@pytest.mark.parametrize("field, value, needle", [
    ("tvm.num_cores", 10**23, "less than or equal to 8192"),         # ended in TVM's "ffi.BigInt" ValueError
    ("memory.ram_bytes", "4294967296", "valid integer"),            # a string was coerced into a number
    ("tvm.num_cores", True, "valid integer"),                        # so was a bool
    ("memory.bandwidth_gbps", math.nan, "finite number"),
    ("compute.peak_gops.int8", math.inf, "finite number"),
    ("npu.clock_hz", 1.0e9, "valid integer"),
])
def test_examples_that_passed_or_reached_tvm_before(workdir, field, value, needle):
    doc = copy.deepcopy(FULL)
    _set(doc, tuple(field.split(".")), value)
    result = _compile_with(workdir, doc)
    assert result.exit_code == 2 and f": {field}: " in result.output and needle in result.output, result.output
