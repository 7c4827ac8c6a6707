"""Child process of ``slmc bench``: ``python -m slmc.bench ARGS.json RESULT.json``.

The parent (``slmc.cli.bench``) starts it with the thread environment set before torch, ONNX
Runtime or TVM load (``slmc.bench.child_env``); the report, or the error, goes to RESULT.json.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from slmc.bench.run import run_bench
from slmc.errors import SlmcError


def main() -> None:
    args = json.loads(Path(sys.argv[1]).read_text())
    try:
        result = run_bench(**args)
    except SlmcError as exc:
        result = {"error": exc.to_json()}
    Path(sys.argv[2]).write_text(json.dumps(result, indent=2, sort_keys=True) + "\n")


if __name__ == "__main__":
    main()
