"""The backend registry (slmc/spec/backend_registry.py): kinds by decorator, duplicates refused, unknown
kinds in a descriptor reported as a typed error naming the field, with the nearest kind suggested."""

from __future__ import annotations

from typing import ClassVar

import pytest
import yaml

from slmc.errors import TargetError
from slmc.spec.backend_registry import (DuplicateBackendError, TargetKind, UnknownBackendError, backend_kinds, get_backend,
                                        register_backend, unregister_backend)
from slmc.spec.target import load_target


def test_the_built_in_kinds_are_registered():
    assert backend_kinds() == ["cpu", "gpu", "npu"]
    assert get_backend("cpu").tvm_kinds == frozenset({"llvm"}) and get_backend("cpu").remote_execution
    assert get_backend("npu").falls_back_to_host and get_backend("npu").npu_section
    assert not get_backend("gpu").remote_execution and "opencl" in get_backend("gpu").tvm_kinds


def test_registering_a_taken_kind_raises():
    with pytest.raises(DuplicateBackendError, match="'cpu' is already registered by slmc.backend.kinds.cpu"):
        @register_backend("cpu")
        class _Again(TargetKind):
            tvm_kinds: ClassVar[frozenset[str]] = frozenset({"llvm"})
    assert type(get_backend("cpu")).__module__ == "slmc.backend.kinds.cpu"  # the first registration stands


def test_a_kind_without_tvm_kinds_is_refused():
    with pytest.raises(TypeError, match="declares no tvm_kinds"):
        @register_backend("registry-test-empty")
        class _Empty(TargetKind):
            pass
    assert "registry-test-empty" not in backend_kinds()


def test_unknown_kind_lists_the_kinds_and_suggests_the_nearest():
    with pytest.raises(UnknownBackendError, match=r"unknown target kind 'gpx': expected 'cpu', 'gpu' or 'npu' \(did you mean 'gpu'\?\)"):
        get_backend("gpx")


def _descriptor(tmp_path, **changes):
    data = load_target("arm-cortex-a76").model_dump(mode="json")
    data.update(changes)
    path = tmp_path / "descriptor.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def test_an_unknown_kind_in_a_descriptor_is_a_target_error_naming_the_field(tmp_path):
    path = _descriptor(tmp_path, kind="cpus")
    with pytest.raises(TargetError) as err:
        load_target(path)
    problems = {p.path: p for p in err.value.problems}
    assert set(problems) == {"kind"} and problems["kind"].line is not None
    assert "unknown target kind 'cpus': expected 'cpu', 'gpu' or 'npu' (did you mean 'cpu'?)" in problems["kind"].message
    assert str(path) in str(err.value) and err.value.exit_code == 2


def test_a_kind_with_another_kinds_tvm_target_is_refused(tmp_path):
    path = _descriptor(tmp_path, kind="gpu")  # a GPU backend generates opencl/cuda/... code, not llvm
    with pytest.raises(TargetError, match="kind 'gpu' generates code for tvm.kind 'cuda', 'metal', 'opencl' or 'vulkan', "
                                          "not 'llvm'"):
        load_target(path)


def test_a_registered_kind_validates_and_an_unregistered_one_no_longer_does(tmp_path):
    @register_backend("registry-test-kind")
    class _Kind(TargetKind):
        tvm_kinds: ClassVar[frozenset[str]] = frozenset({"llvm"})

    try:
        assert load_target(_descriptor(tmp_path, kind="registry-test-kind")).kind == "registry-test-kind"
        assert get_backend("registry-test-kind").kind == "registry-test-kind"
    finally:
        unregister_backend("registry-test-kind")
    with pytest.raises(TargetError, match="unknown target kind 'registry-test-kind'"):
        load_target(_descriptor(tmp_path, kind="registry-test-kind"))
