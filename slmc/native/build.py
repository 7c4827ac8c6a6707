"""Compiles the native runtime's C++ sources with a given compiler into a cache directory.

Two products. The tokenizer-only library (``build_library``: ``src/``, no TVM) and the full
runtime (``build_runtime``: ``src/`` + ``runtime/`` as ``libslmc_runtime.so`` linked with TVM's C++
runtime, and the ``slmc-run`` executable from ``cli/``). The runtime links ``libtvm_runtime.so`` and
``libtvm_ffi.so`` of the apache-tvm / apache-tvm-ffi wheels of the target's architecture (the wheels
ship the headers and the libraries): ``TvmWheels.installed()`` for the host, ``TvmWheels(root)`` for
wheels unpacked under ``root`` (``root/tvm``, ``root/tvm_ffi``). The two TVM libraries are copied
into the build directory and both binaries carry only the RPATH ``$ORIGIN`` (libtvm_runtime's own
RUNPATH is ``$ORIGIN`` too): the build directory runs as it is, and a deploy bundle that copies its
four files (``slmc-run``, ``libslmc_runtime.so``, ``libtvm_runtime.so``, ``libtvm_ffi.so``) runs
with nothing else but the C/C++ system libraries. ``build.json`` beside them records how they were
built (``RuntimeBuild.info``). ``runtime_for_arch(arch)`` picks the compiler and wheels for a CPU
architecture (``TOOLCHAINS``).

``build_library(cxx="c++", kind="shared")`` returns the path of ``libslmc_runtime.so`` (``kind=
"static"``: ``libslmc_runtime.a``, archived with the compiler's own ``ar``: ``aarch64-linux-gnu-g++``
-> ``aarch64-linux-gnu-ar``). The output lives in ``<cache>/<compiler>-<kind>-<hash>/`` where the
hash covers every source, the header, the compiler name and the flags, so a session compiles once
and later calls reuse the file. zlib (``.gz`` tokenizers) is linked when the compiler finds
``zlib.h`` and ``-lz``; ``slmc_tokenizer_supports_gzip()`` reports it.

Preconditions: ``cxx`` is a C++17 compiler on PATH (``ToolchainError`` names the apt package
otherwise). Run as ``python -m slmc.native.build [--cxx aarch64-linux-gnu-g++] [--static]`` (tokenizer
library) or ``python -m slmc.native.build --runtime [--cxx aarch64-linux-gnu-g++ --tvm-wheels DIR]``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from slmc.errors import ToolchainError

NATIVE_DIR = Path(__file__).resolve().parent
SOURCE_DIR = NATIVE_DIR / "src"
RUNTIME_DIR = NATIVE_DIR / "runtime"
CLI_SOURCE = NATIVE_DIR / "cli" / "slmc_run.cpp"
HEADER = NATIVE_DIR / "include" / "slmc_runtime.h"
CXXFLAGS = ["-std=c++17", "-O2", "-Wall", "-Wextra", "-fPIC"]
DEFAULT_CACHE = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "slmc" / "native"
APT_PACKAGES = {"c++": "g++", "g++": "g++", "aarch64-linux-gnu-g++": "g++-aarch64-linux-gnu"}


def _sources() -> list[Path]:
    return sorted(SOURCE_DIR.glob("*.cpp"))


def _source_hash(cxx: str, kind: str, flags: list[str]) -> str:
    h = hashlib.sha256(f"{cxx}|{kind}|{' '.join(flags)}".encode())
    for path in [*_sources(), *sorted(SOURCE_DIR.glob("*.hpp")), *sorted(SOURCE_DIR.glob("*.inc")), HEADER]:
        h.update(path.name.encode())
        h.update(path.read_bytes())
    return h.hexdigest()[:16]


def _require(tool: str) -> str:
    found = shutil.which(tool)
    if not found:
        package = APT_PACKAGES.get(tool, "the package providing it")
        raise ToolchainError(f"native runtime build needs the C++ compiler {tool!r}, which is not on PATH "
                             f"(install it: apt-get install {package})")
    return found


def _has_zlib(cxx: str, workdir: Path) -> bool:
    probe = workdir / "zlib_probe.cpp"
    probe.write_text("#include <zlib.h>\nint main() { return zlibVersion() ? 0 : 1; }\n")
    result = subprocess.run([cxx, str(probe), "-o", str(workdir / "zlib_probe"), "-lz"], capture_output=True)
    return result.returncode == 0


def _run(cmd: list[str]) -> None:
    result = subprocess.run(cmd, capture_output=True, text=True)
    if result.returncode != 0:
        raise ToolchainError(f"native runtime build failed: {' '.join(cmd)}\n{result.stderr[-4000:]}")


def build_library(cxx: str = "c++", kind: str = "shared", cache_dir: Path | None = None) -> Path:
    """The built library (``kind`` "shared" or "static"), compiled now or found in the cache."""
    if kind not in ("shared", "static"):
        raise ValueError(f"kind must be 'shared' or 'static', not {kind!r}")
    compiler = _require(cxx)
    cache = Path(cache_dir) if cache_dir else DEFAULT_CACHE
    with tempfile.TemporaryDirectory() as probe_dir:
        zlib = _has_zlib(compiler, Path(probe_dir))
    flags = CXXFLAGS + (["-DSLMC_WITH_ZLIB"] if zlib else [])
    out_dir = cache / f"{Path(cxx).name}-{kind}-{_source_hash(cxx, kind, flags)}"
    library = out_dir / ("libslmc_runtime.so" if kind == "shared" else "libslmc_runtime.a")
    if library.is_file():
        return library
    out_dir.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=out_dir))
    if kind == "shared":
        _run([compiler, *flags, "-shared", "-o", str(staging / library.name), *map(str, _sources()), *(["-lz"] if zlib else [])])
    else:
        ar = _require(cxx[: -len("g++")] + "ar" if cxx.endswith("g++") else "ar")
        objects = []
        for src in _sources():
            obj = staging / (src.stem + ".o")
            _run([compiler, *flags, "-c", str(src), "-o", str(obj)])
            objects.append(str(obj))
        _run([ar, "rcs", str(staging / library.name), *objects])
    (staging / library.name).replace(library)  # atomic: concurrent builds never see a partial file
    (out_dir / "zlib").write_text("1" if zlib else "0")
    shutil.rmtree(staging)
    return library


@dataclass(frozen=True)
class TvmWheels:
    """Where the apache-tvm and apache-tvm-ffi wheels' files are: ``root/tvm`` and ``root/tvm_ffi``."""

    root: Path

    @staticmethod
    def installed() -> TvmWheels:
        """The wheels of this Python environment (the host's architecture)."""
        import importlib.util

        spec = importlib.util.find_spec("tvm_ffi")
        if spec is None or not spec.submodule_search_locations:
            raise ToolchainError("the native runtime build needs the apache-tvm-ffi wheel (pip install apache-tvm-ffi)")
        return TvmWheels(Path(list(spec.submodule_search_locations)[0]).parent)

    @property
    def include_dirs(self) -> list[Path]:
        return [self.root / "tvm" / "include", self.root / "tvm_ffi" / "include"]

    @property
    def lib_dirs(self) -> list[Path]:
        return [self.root / "tvm" / "lib", self.root / "tvm_ffi" / "lib"]

    @property
    def libraries(self) -> list[Path]:
        return [self.root / "tvm" / "lib" / "libtvm_runtime.so", self.root / "tvm_ffi" / "lib" / "libtvm_ffi.so"]

    def check(self) -> None:
        missing = [str(p) for p in [*self.include_dirs, *self.libraries] if not p.exists()]
        if missing:
            raise ToolchainError(f"the TVM wheels under {self.root} lack {', '.join(missing)} "
                                 "(the runtime needs apache-tvm's tvm/include + tvm/lib/libtvm_runtime.so and "
                                 "apache-tvm-ffi's tvm_ffi/include + tvm_ffi/lib/libtvm_ffi.so)")


WHEEL_PACKAGES = (("apache-tvm", "tvm"), ("apache-tvm-ffi", "tvm_ffi"))
WHEEL_FILES = ("tvm/include/", "tvm_ffi/include/", "tvm/lib/libtvm_runtime.so", "tvm_ffi/lib/libtvm_ffi.so")


def download_tvm_wheels(platform: str, python_version: str = "3.11", cache_dir: Path | None = None) -> TvmWheels:
    """The apache-tvm / apache-tvm-ffi wheels of this environment's versions for another
    ``platform`` (e.g. ``manylinux_2_28_aarch64``), fetched once with ``pip download`` into
    ``<cache>/../wheels-<platform>/`` and unpacked there (headers and the two runtime libraries)."""
    import importlib.metadata
    import sys
    import zipfile

    root = (Path(cache_dir) if cache_dir else DEFAULT_CACHE).parent / f"wheels-{platform}"
    wheels = TvmWheels(root / "unpacked")
    if all(p.exists() for p in [*wheels.include_dirs, *wheels.libraries]):
        return wheels
    pins = [f"{dist}=={importlib.metadata.version(dist)}" for dist, _ in WHEEL_PACKAGES]
    _run([sys.executable, "-m", "pip", "download", "--platform", platform, "--python-version", python_version,
          "--only-binary=:all:", "--no-deps", *pins, "-d", str(root)])
    staging = Path(tempfile.mkdtemp(dir=root))
    for wheel in sorted(root.glob("*.whl")):
        with zipfile.ZipFile(wheel) as archive:
            archive.extractall(staging, [n for n in archive.namelist() if n.startswith(WHEEL_FILES)])
    if wheels.root.exists():
        shutil.rmtree(wheels.root)
    staging.rename(wheels.root)
    wheels.check()
    return wheels


@dataclass(frozen=True)
class RuntimeBuild:
    """The built runtime: ``library`` (libslmc_runtime.so) and ``executable`` (slmc-run), side by side."""

    library: Path
    executable: Path
    wheels: TvmWheels

    @property
    def directory(self) -> Path:
        return self.executable.parent

    @property
    def tvm_libraries(self) -> list[Path]:
        """The copies of libtvm_runtime.so and libtvm_ffi.so beside ``slmc-run``."""
        return [self.directory / lib.name for lib in self.wheels.libraries]

    @property
    def info(self) -> dict[str, object]:
        """``build.json``: compiler, its version and target triple, flags, zlib, source hash, TVM wheel versions."""
        import json

        return json.loads((self.directory / BUILD_INFO).read_text())


def _runtime_hash(cxx: str, flags: list[str], wheels: TvmWheels) -> str:
    h = hashlib.sha256(f"{cxx}|runtime|{' '.join(flags)}|{wheels.root}".encode())
    for lib in wheels.libraries:
        h.update(f"{lib.name}:{lib.stat().st_size}".encode())
    for path in [*_sources(), *sorted(SOURCE_DIR.glob("*.hpp")), *sorted(SOURCE_DIR.glob("*.inc")), HEADER,
                 *sorted(RUNTIME_DIR.glob("*.[ch]pp")), CLI_SOURCE]:
        h.update(path.name.encode())
        h.update(path.read_bytes())
    return h.hexdigest()[:16]


BUILD_INFO = "build.json"


def _build_info(compiler: str, cxx: str, flags: list[str], zlib: bool, source_hash: str, wheels: TvmWheels) -> dict[str, object]:
    def out(*args: str) -> str:
        return subprocess.run([compiler, *args], capture_output=True, text=True, check=False).stdout.strip()

    import importlib.metadata

    # download_tvm_wheels pins this environment's versions, so they hold for every build
    versions = {dist: importlib.metadata.version(dist) for dist, _ in WHEEL_PACKAGES}
    return {"compiler": cxx, "compiler_version": out("--version").splitlines()[0], "target_triple": out("-dumpmachine"),
            "flags": flags, "zlib": zlib, "source_hash": source_hash, "rpath": "$ORIGIN", "tvm_wheels": versions}


def build_runtime(cxx: str = "c++", wheels: TvmWheels | None = None, cache_dir: Path | None = None) -> RuntimeBuild:
    """``libslmc_runtime.so`` (tokenizer + model, linked with TVM) and ``slmc-run``, compiled now or
    found in the cache. ``wheels`` default to the installed ones; cross builds pass the target's."""
    compiler = _require(cxx)
    wheels = wheels or TvmWheels.installed()
    wheels.check()
    cache = Path(cache_dir) if cache_dir else DEFAULT_CACHE
    with tempfile.TemporaryDirectory() as probe_dir:
        zlib = _has_zlib(compiler, Path(probe_dir))
    flags = CXXFLAGS + (["-DSLMC_WITH_ZLIB"] if zlib else [])
    source_hash = _runtime_hash(cxx, flags, wheels)
    out_dir = cache / f"{Path(cxx).name}-runtime-{source_hash}"
    result = RuntimeBuild(out_dir / "libslmc_runtime.so", out_dir / "slmc-run", wheels)
    if result.library.is_file() and result.executable.is_file():
        return result
    out_dir.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=out_dir))
    includes = [arg for d in wheels.include_dirs for arg in ("-isystem", str(d))]  # TVM headers: no warnings of theirs
    link = [*(f"-L{d}" for d in wheels.lib_dirs), "-ltvm_runtime", "-ltvm_ffi", "-Wl,--disable-new-dtags,-rpath,$ORIGIN"]
    sources = [*_sources(), *sorted(RUNTIME_DIR.glob("*.cpp"))]
    _run([compiler, *flags, *includes, "-shared", "-o", str(staging / result.library.name), *map(str, sources),
          *link, *(["-lz"] if zlib else [])])
    _run([compiler, *flags, str(CLI_SOURCE), "-o", str(staging / result.executable.name), f"-L{staging}", "-lslmc_runtime",
          *link])
    for lib in wheels.libraries:
        shutil.copy2(lib, staging / lib.name)
        (staging / lib.name).replace(out_dir / lib.name)
    (out_dir / BUILD_INFO).write_text(json.dumps(_build_info(compiler, cxx, flags, zlib, source_hash, wheels), indent=2))
    (staging / result.library.name).replace(result.library)
    (staging / result.executable.name).replace(result.executable)  # last: its presence marks a complete build
    shutil.rmtree(staging)
    return result


@dataclass(frozen=True)
class Toolchain:
    """How to build the runtime for one CPU architecture from another: the cross compiler and the
    pip platform tag of the TVM wheels."""

    cxx: str
    wheel_platform: str


# CPU architecture (a target triple's first part) -> its cross toolchain. On a machine of that
# architecture the host compiler ``c++`` and the installed wheels are used instead.
TOOLCHAINS = {
    "aarch64": Toolchain("aarch64-linux-gnu-g++", "manylinux_2_28_aarch64"),
    "x86_64": Toolchain("x86_64-linux-gnu-g++", "manylinux_2_28_x86_64"),
}


def runtime_for_arch(arch: str, cache_dir: Path | None = None) -> RuntimeBuild:
    """The runtime built for CPU architecture ``arch``: natively for this machine's, else with
    ``TOOLCHAINS[arch]`` against downloaded wheels. ``ToolchainError`` for an architecture without one."""
    import platform

    machine = {"amd64": "x86_64", "arm64": "aarch64"}.get(platform.machine().lower(), platform.machine().lower())
    if arch == machine:
        return build_runtime("c++", TvmWheels.installed(), cache_dir)
    if arch not in TOOLCHAINS:
        raise ToolchainError(f"no native runtime toolchain for CPU architecture {arch!r} (known: "
                             f"{', '.join(sorted(TOOLCHAINS))}; this machine is {machine})")
    chain = TOOLCHAINS[arch]
    return build_runtime(chain.cxx, download_tvm_wheels(chain.wheel_platform, cache_dir=cache_dir), cache_dir)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cxx", default="c++", help="C++ compiler (e.g. aarch64-linux-gnu-g++)")
    parser.add_argument("--static", action="store_true", help="build libslmc_runtime.a instead of the shared library")
    parser.add_argument("--runtime", action="store_true",
                        help="build libslmc_runtime.so with the model runtime (linked with TVM) and slmc-run")
    parser.add_argument("--tvm-wheels", type=Path, default=None,
                        help="with --runtime: a directory holding the target's unpacked tvm/ and tvm_ffi/ wheels")
    parser.add_argument("--cache-dir", type=Path, default=None)
    args = parser.parse_args()
    if args.runtime:
        built = build_runtime(args.cxx, TvmWheels(args.tvm_wheels) if args.tvm_wheels else None, args.cache_dir)
        print(built.library)
        print(built.executable)
    else:
        print(build_library(args.cxx, "static" if args.static else "shared", args.cache_dir))


if __name__ == "__main__":
    main()
