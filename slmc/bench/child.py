"""Running a part of ``slmc bench`` in a fresh child process (``python -m slmc.bench TASK ...``).

Why a process per engine measurement: runtimes read their thread settings when they load
(libgomp reads ``OMP_WAIT_POLICY`` once), keep thread pools alive, and grow the heap; in one process
the engines measured later inherit all that, and the peak RSS is the sum of everything. A fresh
process per measurement gives each engine its own default threading (or the run's common policy,
``slmc.bench.thread_policy``) and its own peak RSS.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from slmc.errors import EXIT_BAD_INPUT, InputError, SlmcError


def run_child(task: str, args: dict[str, Any], env: dict[str, str], quiet: bool = False) -> dict[str, Any]:
    """``task(**args)`` in a child process with environment ``env``; its ``SlmcError`` re-raised here.
    ``quiet``: the child's output is kept and shown only when it fails."""
    with tempfile.TemporaryDirectory(prefix="slmc-bench-child-") as tmp:
        request, result = Path(tmp) / "args.json", Path(tmp) / "result.json"
        request.write_text(json.dumps(args))
        done = subprocess.run([sys.executable, "-m", "slmc.bench", task, str(request), str(result)], env=env, check=False,
                              capture_output=quiet, text=True)
        if not result.is_file():
            output = f": {(done.stderr or '')[-2000:]}" if quiet else "; its output is above"
            raise SlmcError(f"the benchmark's {task} process failed (exit code {done.returncode}){output}")
        report = json.loads(result.read_text())
    if "error" in report:
        error = report["error"]
        raise (InputError if error["exit_code"] == EXIT_BAD_INPUT else SlmcError)(error["message"])
    return report
