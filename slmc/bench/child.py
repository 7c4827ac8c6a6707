"""Running a benchmark in a child process whose thread environment is set before any runtime loads.

Why: on a shared machine, runtimes that spin-wait between parallel regions starve each other and
everything else. Measured here (fixture-lm, 2 threads, load 12): PyTorch eager decode 284 ms per
token with libgomp's default wait policy, 2-5 ms with ``OMP_WAIT_POLICY=PASSIVE``. libgomp reads
that variable when it loads, so it must be set before torch is imported, hence a fresh process.
The same run sets TVM's (``TVM_THREAD_POOL_SPIN_COUNT=0``) and ONNX Runtime's
(``session.intra_op.allow_spinning=0``, in ``slmc.bench.engines``) equivalents, so every engine
runs with passive waiting and ``threads`` threads.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from slmc.errors import EXIT_BAD_INPUT, InputError, SlmcError


def child_env(threads: int) -> dict[str, str]:
    env = dict(os.environ)
    env.update(OMP_WAIT_POLICY="PASSIVE", OMP_NUM_THREADS=str(threads), TVM_NUM_THREADS=str(threads),
               TVM_THREAD_POOL_SPIN_COUNT="0")
    return env


def run_in_child(args: dict[str, Any]) -> dict[str, Any]:
    """``slmc.bench.run.run_bench(**args)`` in a child process; its ``SlmcError`` re-raised here."""
    with tempfile.TemporaryDirectory(prefix="slmc-bench-args-") as tmp:
        request, result = Path(tmp) / "args.json", Path(tmp) / "result.json"
        request.write_text(json.dumps(args))
        done = subprocess.run([sys.executable, "-m", "slmc.bench", str(request), str(result)],
                              env=child_env(args["threads"]), check=False)
        if not result.is_file():
            raise SlmcError(f"the benchmark process failed (exit code {done.returncode}); its output is above")
        report = json.loads(result.read_text())
    if "error" in report:
        error = report["error"]
        raise (InputError if error["exit_code"] == EXIT_BAD_INPUT else SlmcError)(error["message"])
    return report
