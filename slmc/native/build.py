"""Compiles the native runtime's C++ sources with a given compiler into a cache directory.

``build_library(cxx="c++", kind="shared")`` returns the path of ``libslmc_runtime.so`` (``kind=
"static"``: ``libslmc_runtime.a``, archived with the compiler's own ``ar``: ``aarch64-linux-gnu-g++``
-> ``aarch64-linux-gnu-ar``). The output lives in ``<cache>/<compiler>-<kind>-<hash>/`` where the
hash covers every source, the header, the compiler name and the flags, so a session compiles once
and later calls reuse the file. zlib (``.gz`` tokenizers) is linked when the compiler finds
``zlib.h`` and ``-lz``; ``slmc_tokenizer_supports_gzip()`` reports it.

Preconditions: ``cxx`` is a C++17 compiler on PATH (``ToolchainError`` names the apt package
otherwise). Run as ``python -m slmc.native.build [--cxx aarch64-linux-gnu-g++] [--static]``.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from slmc.errors import ToolchainError

NATIVE_DIR = Path(__file__).resolve().parent
SOURCE_DIR = NATIVE_DIR / "src"
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cxx", default="c++", help="C++ compiler (e.g. aarch64-linux-gnu-g++)")
    parser.add_argument("--static", action="store_true", help="build libslmc_runtime.a instead of the shared library")
    parser.add_argument("--cache-dir", type=Path, default=None)
    args = parser.parse_args()
    print(build_library(args.cxx, "static" if args.static else "shared", args.cache_dir))


if __name__ == "__main__":
    main()
