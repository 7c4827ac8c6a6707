"""What every ``slmc`` command shares: ``--json`` output and turning a typed error into its exit code.

Exit codes: 0 success; 1 compile or verification failure; 2 bad input (recipe, descriptor, model
reference, arguments); 130 interrupted (Ctrl-C) - each ``SlmcError`` carries its own ``exit_code``. Imported by slmc/cli/main.py
and by every command-group module (bench, cache, device, search, tune); it imports none of them.
"""

from __future__ import annotations

import functools
import json
import traceback
from collections.abc import Callable
from typing import Any

import click

from slmc.errors import Interrupted, SlmcError


def emit_json(data: dict[str, Any]) -> None:
    """Print ``data`` as the command's one JSON object on stdout (sorted keys; non-JSON values as ``str``)."""
    click.echo(json.dumps(data, indent=2, sort_keys=True, default=str))


def handles_errors(func: Callable[..., Any]) -> Callable[..., Any]:
    """Turn ``SlmcError`` into a one-line message (or JSON, when the command has ``as_json``) and its exit code;
    Ctrl-C (``KeyboardInterrupt``) becomes ``Interrupted``: exit 130, and still one JSON object with ``--json``.

    Precondition: ``func`` is a click command callback (it runs inside a click context whose root
    command has the ``--debug`` flag, which also prints the traceback).
    """

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        ctx = click.get_current_context()
        as_json = bool(kwargs.get("as_json"))
        try:
            try:
                return func(*args, **kwargs)
            except KeyboardInterrupt as interrupt:
                raise Interrupted("interrupted (Ctrl-C)") from interrupt
        except SlmcError as exc:
            if ctx.find_root().params.get("debug"):
                traceback.print_exc()
            if as_json:
                emit_json({"ok": False, "error": exc.to_json()})
            click.echo(f"error: {exc}", err=True)
            ctx.exit(exc.exit_code)

    return wrapper
