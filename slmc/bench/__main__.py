"""Child process of ``slmc bench``: ``python -m slmc.bench TASK ARGS.json RESULT.json``.

TASK is ``prepare`` (``slmc.bench.prepare.prepare_model``: every engine's files for one model) or
``measure`` (``slmc.bench.measure.measure``: one engine timed in this fresh process). The parent
(``slmc.bench.child``) sets the environment of the run's thread policy before anything loads; the
result, or the error, goes to RESULT.json.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from slmc.errors import SlmcError


def _task(name: str):  # noqa: ANN202
    if name == "prepare":
        from slmc.bench.prepare import prepare_model

        return prepare_model
    from slmc.bench.measure import measure

    return measure


def main() -> None:
    task, request, result_path = sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3])
    try:
        result = _task(task)(**json.loads(request.read_text()))
    except SlmcError as exc:
        result = {"error": exc.to_json()}
    result_path.write_text(json.dumps(result, indent=2, sort_keys=True) + "\n")


if __name__ == "__main__":
    main()
