"""Fixtures of the native tests: the sampler drivers (drivers/*.cpp) compiled against
slmc/native/runtime/sampler.cpp alone with the runtime's flags (no TVM: a second or two each)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from slmc.native.build import CXXFLAGS, RUNTIME_DIR

DRIVERS = Path(__file__).parent / "drivers"


@pytest.fixture(scope="module")
def sampler_driver(request, tmp_path_factory) -> Path:
    """The executable of ``drivers/<name>.cpp``, ``name`` given by the module's ``SAMPLER_DRIVER``; skips
    when there is no ``c++``."""
    if shutil.which("c++") is None:
        pytest.skip("no C++ compiler (c++) on PATH")
    name = request.module.SAMPLER_DRIVER
    out = tmp_path_factory.mktemp(name) / name
    subprocess.run(["c++", *CXXFLAGS, f"-I{RUNTIME_DIR}", str(DRIVERS / f"{name}.cpp"), str(RUNTIME_DIR / "sampler.cpp"),
                    "-o", str(out)], check=True, capture_output=True)
    return out
