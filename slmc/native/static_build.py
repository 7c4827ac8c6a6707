"""The static flavour of the native runtime: one statically linked ``slmc-run`` for ``<arch>-linux-musl``
(no glibc, no dynamic loader: it runs on any Linux kernel of its architecture, Android's included)
with TVM's C++ runtime and the model's code linked in, built with zig's clang (``python -m ziglang
c++``; the PyPI package ``ziglang``, pinned in the ``static`` extra).

Three parts; the first two are cached under ``<cache>/zig-<triple>-<part>-<hash>/`` where the hash
covers every source, header, flag and zig's version (compiled once per machine, in parallel on every
core; measured on this project's 2 cores shared with other jobs: the TVM part 3 min 12 s of CPU, 18
min wall at load 16; slmc's 34 s of CPU; zig also builds musl and libc++ for the target once, into
``~/.cache/zig``, on the first link: docs/runtime.md):

- TVM's runtime objects (``tvm_runtime_objects``): the CPU part of ``libtvm_runtime`` (TVM's
  ``src/runtime/*.cc``, ``vm/``, ``memory/``) and tvm-ffi (``src/ffi``, ``src/ffi/extra``), compiled
  from the C++ sources the installed apache-tvm and apache-tvm-ffi wheels ship (the sources do not
  depend on the wheel's architecture). The apache-tvm wheel lacks six headers those sources include;
  they are in ``third_party/tvm_missing_headers`` (see its README: apache/tvm at the commit whose
  runtime sources equal the wheel's). Left out: ``builtin_fp16.cc`` (fp16 conversion fallbacks for
  code loaded at run time; zig's compiler-rt, linked statically, defines them) and the RPC, disco,
  CUDA and Hexagon parts.
- slmc's runtime objects (``slmc_objects``): ``src/``, ``runtime/`` and ``cli/`` compiled with
  ``-DSLMC_SYSTEM_LIB`` (the model comes from TVM's system library, not from ``model.so``) and
  without zlib (the bundle then ships ``tokenizer.json`` uncompressed).
- per model (``link_static_runner``): the link of both with the model's system-lib objects
  (``slmc.backend.lowering.export_system_library``). Every object is given to the linker directly,
  not through an archive, so no static initializer that registers a TVM function or a model symbol
  is dropped.

Preconditions: ``ziglang`` is installed (``ToolchainError`` naming the pip command otherwise) and
the apache-tvm / apache-tvm-ffi wheels of this environment ship ``src/`` (0.27.0.post1 /
0.1.14.post1 do).
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import importlib.util
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from slmc.errors import ToolchainError
from slmc.native.build import (CLI_SOURCE, CXXFLAGS, DEFAULT_CACHE, HEADER, NATIVE_DIR, RUNTIME_DIR, SOURCE_DIR, WHEEL_PACKAGES,
                               TvmWheels, _run, _sources)

ZIG_PIN = "ziglang==0.17.0"  # pyproject.toml's `static` extra
MUSL_TRIPLES = {"aarch64": "aarch64-linux-musl", "x86_64": "x86_64-linux-musl"}
MISSING_HEADERS = NATIVE_DIR / "third_party" / "tvm_missing_headers"
# TVM's CMake defines the endianness; without it tvm/ffi/endian.h does not recognise musl
TVM_DEFINES = ["-DNDEBUG", "-DTVM_FFI_CMAKE_LITTLE_ENDIAN=1", "-DTVM_FFI_USE_LIBBACKTRACE=0",
               "-DTVM_FFI_BACKTRACE_ON_SEGFAULT=0"]
STATIC_FLAGS = ["-std=c++17", "-O2", "-g0"]
# paths under the wheels' tvm/src and tvm_ffi/src: the minimal CPU runtime (libtvm_runtime's CMake
# target without RPC, disco, CUDA, Hexagon) and tvm-ffi's core + extra objects
TVM_SOURCE_GLOBS = ("runtime/*.cc", "runtime/vm/*.cc", "runtime/memory/*.cc")
FFI_SOURCE_GLOBS = ("ffi/*.cc", "ffi/extra/*.cc")
LEFT_OUT = {"runtime/builtin_fp16.cc": "fp16 conversion fallbacks; zig's compiler-rt defines them",
            "ffi/backtrace_win.cc": "Windows only"}


def zig_cxx() -> list[str]:
    """The argv prefix of zig's C++ compiler; ``ToolchainError`` when ziglang is not installed."""
    if importlib.util.find_spec("ziglang") is None:
        raise ToolchainError(f"the static bundle flavour needs zig's C++ compiler: pip install '{ZIG_PIN}' "
                             "(or the slmc[static] extra)")
    return [sys.executable, "-m", "ziglang", "c++"]


def zig_version() -> str:
    done = subprocess.run([sys.executable, "-m", "ziglang", "version"], capture_output=True, text=True, check=False)
    return f"zig {done.stdout.strip() or 'version unknown'} (ziglang {importlib.metadata.version('ziglang')})"


def musl_triple(arch: str) -> str:
    if arch not in MUSL_TRIPLES:
        raise ToolchainError(f"no static (musl) runner for CPU architecture {arch!r} (known: {', '.join(sorted(MUSL_TRIPLES))})")
    return MUSL_TRIPLES[arch]


def _hash(label: str, flags: list[str], files: list[Path]) -> str:
    h = hashlib.sha256(f"{label}|{' '.join(flags)}|{zig_version()}".encode())
    for path in files:
        h.update(path.name.encode())
        h.update(path.read_bytes())
    return h.hexdigest()[:16]


def _compile_all(cxx: list[str], flags: list[str], sources: list[Path], out_dir: Path) -> list[Path]:
    """Every source compiled to ``out_dir/<n>-<stem>.o``, as many at once as there are cores."""
    objects = [out_dir / f"{i:03d}-{src.stem}.o" for i, src in enumerate(sources)]
    with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
        list(pool.map(lambda pair: _run([*cxx, *flags, "-c", str(pair[0]), "-o", str(pair[1])]), zip(sources, objects)))
    return objects


def _cached_objects(name: str, triple: str, flags: list[str], inputs: list[Path], cache_dir: Path | None,
                    build: Callable[[Path], list[Path]]) -> list[Path]:
    """The objects of ``build(staging)`` in ``<cache>/zig-<triple>-<name>-<hash>/``, built once: the
    list file ``objects.txt`` is written last and marks a complete build."""
    cache = Path(cache_dir) if cache_dir else DEFAULT_CACHE
    out_dir = cache / f"zig-{triple}-{name}-{_hash(name, flags, inputs)}"
    listing = out_dir / "objects.txt"
    if listing.is_file():
        return [out_dir / line for line in listing.read_text().split()]
    out_dir.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=out_dir))
    objects = build(staging)
    for obj in objects:
        obj.replace(out_dir / obj.name)
    shutil.rmtree(staging)
    partial = listing.with_suffix(f".{os.getpid()}")  # written whole, then renamed: a concurrent build (another
    partial.write_text("\n".join(obj.name for obj in objects) + "\n")  # test worker) never reads half a list
    partial.replace(listing)
    return [out_dir / obj.name for obj in objects]


def _wheel_sources(wheels: TvmWheels) -> tuple[list[Path], list[Path]]:
    """(TVM runtime sources, tvm-ffi sources) of the installed wheels, without ``LEFT_OUT``."""
    def pick(root: Path, globs: tuple[str, ...]) -> list[Path]:
        found = sorted(p for g in globs for p in root.glob(g))
        return [p for p in found if p.relative_to(root).as_posix() not in LEFT_OUT]

    tvm_src, ffi_src = wheels.root / "tvm" / "src", wheels.root / "tvm_ffi" / "src"
    if not (tvm_src / "runtime").is_dir() or not (ffi_src / "ffi").is_dir():
        raise ToolchainError(f"the TVM wheels under {wheels.root} ship no C++ sources ({tvm_src}/runtime, {ffi_src}/ffi); "
                             "the static runner is built from them (apache-tvm 0.27.0.post1 and apache-tvm-ffi 0.1.14.post1 have them)")
    return pick(tvm_src, TVM_SOURCE_GLOBS), pick(ffi_src, FFI_SOURCE_GLOBS)


def _tvm_includes(wheels: TvmWheels) -> list[str]:
    dirs = [wheels.root / "tvm" / "include", MISSING_HEADERS / "include", wheels.root / "tvm_ffi" / "include",
            wheels.root / "tvm_ffi" / "3rdparty" / "dlpack" / "include"]
    return [arg for d in dirs for arg in ("-isystem", str(d))]


def tvm_runtime_objects(triple: str, cache_dir: Path | None = None, wheels: TvmWheels | None = None) -> list[Path]:
    """TVM's CPU runtime and tvm-ffi compiled for ``triple`` (see the module docstring), cached."""
    wheels = wheels or TvmWheels.installed()
    tvm_sources, ffi_sources = _wheel_sources(wheels)
    headers = sorted(p for root in (wheels.root / "tvm", wheels.root / "tvm_ffi", MISSING_HEADERS)
                     for p in root.rglob("*.h") if "3rdparty" not in p.parts or "dlpack" in p.parts)
    flags = [*STATIC_FLAGS, "-target", triple, *TVM_DEFINES]

    def build(staging: Path) -> list[Path]:
        # TVM's sources include "../support/..." relative to themselves: a tree where the missing
        # src/support headers sit beside src/runtime
        tree = staging / "src"
        shutil.copytree(wheels.root / "tvm" / "src" / "runtime", tree / "runtime")
        shutil.copytree(MISSING_HEADERS / "src" / "support", tree / "support")
        shutil.copytree(wheels.root / "tvm_ffi" / "src" / "ffi", tree / "ffi")
        tvm_root, ffi_root = wheels.root / "tvm" / "src", wheels.root / "tvm_ffi" / "src"
        sources = [tree / p.relative_to(tvm_root) for p in tvm_sources] + [tree / p.relative_to(ffi_root) for p in ffi_sources]
        objects = _compile_all(zig_cxx(), [*flags, *_tvm_includes(wheels)], sources, staging)
        shutil.rmtree(tree)
        return objects

    return _cached_objects("tvm-runtime", triple, flags, [*tvm_sources, *ffi_sources, *headers], cache_dir, build)


SLMC_DEFINES = ["-DSLMC_SYSTEM_LIB"]


def slmc_objects(triple: str, cache_dir: Path | None = None, wheels: TvmWheels | None = None) -> list[Path]:
    """slmc's tokenizer, runtime and ``slmc-run`` main compiled for ``triple`` with ``SLMC_SYSTEM_LIB``, cached."""
    wheels = wheels or TvmWheels.installed()
    sources = [*_sources(), *sorted(RUNTIME_DIR.glob("*.cpp")), CLI_SOURCE]
    headers = [*sorted(SOURCE_DIR.glob("*.hpp")), *sorted(SOURCE_DIR.glob("*.inc")), HEADER, *sorted(RUNTIME_DIR.glob("*.hpp"))]
    flags = [*CXXFLAGS, "-g0", "-target", triple, "-DTVM_FFI_CMAKE_LITTLE_ENDIAN=1", *SLMC_DEFINES]
    return _cached_objects("slmc-runtime", triple, flags, [*sources, *headers], cache_dir,
                           lambda staging: _compile_all(zig_cxx(), [*flags, *_tvm_includes(wheels)], sources, staging))


@dataclass(frozen=True)
class StaticRunner:
    """A linked static ``slmc-run`` and how it was built (``info``: the fields of bundle.json's ``runner``)."""

    executable: Path
    info: dict[str, object]


def link_static_runner(arch: str, model_objects: list[Path], out: Path, cache_dir: Path | None = None) -> StaticRunner:
    """``out``: a static ``slmc-run`` for ``arch`` with the model's system-lib objects linked in."""
    triple = musl_triple(arch)
    wheels = TvmWheels.installed()
    tvm_objects = tvm_runtime_objects(triple, cache_dir, wheels)
    own = slmc_objects(triple, cache_dir, wheels)
    _run([*zig_cxx(), "-target", triple, "-static", "-s", "-o", str(out), *map(str, own), *map(str, tvm_objects),
          *map(str, model_objects), "-lpthread"])
    # the two cached object sets, each named by the hash of its sources, flags and zig's version
    source_hash = hashlib.sha256("".join(p.parent.name for p in (tvm_objects[0], own[0])).encode()).hexdigest()[:16]
    info = {"compiler": "python -m ziglang c++", "compiler_version": zig_version(), "target_triple": triple,
            "flags": [*CXXFLAGS, *SLMC_DEFINES, "-static"], "zlib": False, "source_hash": source_hash,
            "rpath": "none: a static executable", "tvm_wheels": {d: importlib.metadata.version(d) for d, _ in WHEEL_PACKAGES}}
    return StaticRunner(out, info)


def main() -> None:
    import argparse

    parser = argparse.ArgumentParser(description="Build (and cache) the static runtime's objects for an architecture.")
    parser.add_argument("--arch", default="aarch64", choices=sorted(MUSL_TRIPLES))
    parser.add_argument("--cache-dir", type=Path, default=None)
    args = parser.parse_args()
    triple = musl_triple(args.arch)
    for obj in [*tvm_runtime_objects(triple, args.cache_dir), *slmc_objects(triple, args.cache_dir)]:
        print(obj)


if __name__ == "__main__":
    main()
