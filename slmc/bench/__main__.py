"""Child process of ``slmc bench``: ``python -m slmc.bench TASK ARGS.json RESULT.json``.

TASK is ``prepare`` (``slmc.bench.prepare.prepare_model``: every engine's files for one model),
``measure`` (``slmc.bench.measure.measure``: one engine timed in this fresh process) or ``footprint``
(``slmc.bench.footprint.footprint``: load + a short prompt + 64 decode steps, the peak RSS) or ``read``
(``slmc.bench.parallel_read.measure``: the read-only bandwidth on one thread and on the run's). The parent
(``slmc.bench.child``) sets the environment of the run's thread policy before anything loads; the
result, or the error, goes to RESULT.json.
"""

from __future__ import annotations

import importlib
import json
import sys
from pathlib import Path

from slmc.errors import SlmcError


TASKS = {"prepare": ("slmc.bench.prepare", "prepare_model"), "measure": ("slmc.bench.measure", "measure"),
         "footprint": ("slmc.bench.footprint", "footprint"), "read": ("slmc.bench.parallel_read", "measure")}  # imported when run: each loads what it needs


def _task(name: str):  # noqa: ANN202
    module, function = TASKS[name]
    return getattr(importlib.import_module(module), function)


def main() -> None:
    task, request, result_path = sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3])
    try:
        result = _task(task)(**json.loads(request.read_text()))
    except SlmcError as exc:
        result = {"error": exc.to_json()}
    result_path.write_text(json.dumps(result, indent=2, sort_keys=True) + "\n")


if __name__ == "__main__":
    main()
