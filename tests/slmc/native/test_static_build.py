"""The static runner's build inputs: the TVM sources the wheels ship plus the vendored headers compile
as one tree (every include resolves), and what is left out is named. The build itself (minutes) and
the static bundle run under qemu are in tests/slmc/driver/test_package.py (slow)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from slmc.errors import ToolchainError
from slmc.native.build import TvmWheels
from slmc.native.static_build import LEFT_OUT, MISSING_HEADERS, _wheel_sources, musl_triple

INCLUDE = re.compile(r'^\s*#include\s+[<"]([^>"]+)[>"]', re.MULTILINE)


def test_every_support_header_the_compiled_sources_include_is_vendored():
    """The wheel lacks TVM's support headers: each one a compiled source or a wheel header includes is in
    third_party/tvm_missing_headers (``tvm/support/X`` under include/, ``../support/X`` under src/support)."""
    wheels = TvmWheels.installed()
    tvm_sources, ffi_sources = _wheel_sources(wheels)
    assert tvm_sources and ffi_sources
    headers = sorted((wheels.root / "tvm" / "include").rglob("*.h"))
    missing = []
    for path in [*tvm_sources, *ffi_sources, *headers]:
        for name in INCLUDE.findall(path.read_text(encoding="utf-8", errors="replace")):
            if name.startswith("tvm/support/"):
                found = (MISSING_HEADERS / "include" / name).is_file() or (wheels.root / "tvm" / "include" / name).is_file()
            elif name.startswith("../") and "/support/" in name:
                found = (MISSING_HEADERS / "src" / "support" / Path(name).name).is_file()
            else:
                continue
            if not found:
                missing.append(f"{path.name}: {name}")
    assert missing == []


def test_left_out_sources_are_not_compiled_and_each_has_a_reason():
    tvm_sources, ffi_sources = _wheel_sources(TvmWheels.installed())
    names = {p.name for p in [*tvm_sources, *ffi_sources]}
    assert all(Path(path).name not in names and reason for path, reason in LEFT_OUT.items())
    assert {"vm.cc", "executable.cc", "paged_kv_cache.cc", "library_module_system_lib.cc"} <= names
    assert not any("rpc" in p.parts or "disco" in p.parts for p in tvm_sources)


def test_an_architecture_without_a_musl_triple_is_refused_by_name():
    assert musl_triple("aarch64") == "aarch64-linux-musl"
    with pytest.raises(ToolchainError, match="riscv64"):
        musl_triple("riscv64")


def test_cached_objects_are_listed_whole_and_built_once(tmp_path):
    """The list that marks a complete build is renamed into place (concurrent test workers share the cache), no
    partial file is left, and a second call takes the cache without building."""
    from slmc.native.static_build import _cached_objects

    source = tmp_path / "a.cc"
    source.write_text("int a;\n")
    builds = []

    def build(staging: Path) -> list[Path]:
        builds.append(staging)
        objects = [staging / "000-a.o", staging / "001-b.o"]
        for obj in objects:
            obj.write_bytes(b"obj")
        return objects

    cache = tmp_path / "cache"
    first = _cached_objects("t", "x86_64-linux-musl", ["-O2"], [source], cache, build)
    again = _cached_objects("t", "x86_64-linux-musl", ["-O2"], [source], cache, build)
    assert first == again and [p.name for p in first] == ["000-a.o", "001-b.o"] and len(builds) == 1
    (out_dir,) = cache.iterdir()
    assert sorted(p.name for p in out_dir.iterdir()) == ["000-a.o", "001-b.o", "objects.txt"]
