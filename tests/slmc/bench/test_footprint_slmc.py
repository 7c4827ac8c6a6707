"""The slmc engine's footprint module (slmc.bench.footprint_slmc) imports what a user's process that loads and runs
an artifact would, not the bench engine's compile-side and native-runner modules (their ~0.5 MiB counted in the
row's 60 MiB allowance). Its measurement runs in test_engine_slmc.py (the footprint process)."""

from __future__ import annotations

import subprocess
import sys

from slmc.bench.engines import engine

NOT_A_USERS = ("slmc.bench.engine_slmc", "slmc.bench.prepare", "slmc.bench.decode_bytes", "subprocess")


def test_the_slmc_engines_footprint_is_its_own_module():
    kind = engine("slmc")
    assert (kind.footprint_module, kind.footprint_name) == ("footprint_slmc", "footprint")
    assert engine("slmc-native").footprint_module is None  # slmc-run's process is measured, not this one


def test_the_footprint_process_imports_none_of_the_engines_other_machinery():
    code = ("import sys, slmc.bench.footprint, slmc.bench.footprint_slmc\n"
            f"print(sorted(set({NOT_A_USERS!r}) & set(sys.modules)))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]", out
