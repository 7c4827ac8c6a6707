"""``slmc cache ls`` / ``slmc cache prune``: the compile cache (slmc/cache/store.py, docs/integration.md).

The cache directory is ``--cache-dir``, else ``$SLMC_CACHE_DIR``; without either there is no
cache and these commands exit 2. Registered by slmc/cli/main.py (``cli.add_command(cache_group)``).
"""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import click

from slmc.cli.output import handles_errors
from slmc.errors import InputError

DURATION_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
SIZE_UNITS = {"": 1, "b": 1, "k": 1 << 10, "kb": 1 << 10, "kib": 1 << 10, "m": 1 << 20, "mb": 1 << 20, "mib": 1 << 20,
              "g": 1 << 30, "gb": 1 << 30, "gib": 1 << 30, "t": 1 << 40, "tb": 1 << 40, "tib": 1 << 40}

cache_dir_option = click.option("--cache-dir", type=click.Path(path_type=Path), default=None,
                                help="Cache directory [default: $SLMC_CACHE_DIR].")


def parse_duration(text: str) -> float:
    """``"90s"``, ``"15m"``, ``"12h"``, ``"7d"``, ``"2w"`` (a bare number is seconds) -> seconds."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smhdw]?)\s*", text.lower())
    if match is None:
        raise InputError(f"--older-than: expected a duration such as 90s, 15m, 12h, 7d or 2w, found {text!r}")
    return float(match.group(1)) * DURATION_UNITS[match.group(2) or "s"]


def parse_size(text: str) -> int:
    """``"500M"``, ``"10GiB"``, ``"1024"`` (binary units) -> bytes."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([a-z]*)\s*", text.lower())
    if match is None or match.group(2) not in SIZE_UNITS:
        raise InputError(f"--max-bytes: expected a size such as 1024, 500M or 10G, found {text!r}")
    return int(float(match.group(1)) * SIZE_UNITS[match.group(2)])


def _open(cache_dir: Path | None):  # -> CompileCache
    from slmc.cache.store import ENV_VAR, CompileCache, resolve_cache_dir

    root = resolve_cache_dir(cache_dir)
    if root is None:
        raise InputError(f"no cache directory: give --cache-dir or set {ENV_VAR}")
    return CompileCache(root)


@click.group("cache")
def cache_group() -> None:
    """The compile cache (compile --cache-dir DIR or $SLMC_CACHE_DIR): list and prune entries."""


@cache_group.command("ls")
@cache_dir_option
@click.option("--json", "as_json", is_flag=True, help="Print the entries as JSON.")
@handles_errors
def ls_command(cache_dir: Path | None, as_json: bool) -> None:
    """List the cached artifacts, most recently used first."""
    cache = _open(cache_dir)
    entries = cache.entries()
    if as_json:
        click.echo(json.dumps({"ok": True, "dir": str(cache.root), "entries": [e.to_json() for e in entries],
                               "bytes": sum(e.bytes for e in entries)}, indent=2, sort_keys=True))
        return
    now = time.time()
    for e in entries:
        click.echo(f"{e.key[:16]}  {e.info.get('model', '?'):<24} {e.info.get('target', '?'):<16} "
                   f"{e.bytes / (1 << 20):8.1f} MiB  used {(now - e.last_used) / 3600:6.1f} h ago")
    click.echo(f"{len(entries)} entries, {sum(e.bytes for e in entries) / (1 << 20):.1f} MiB in {cache.root}")


@cache_group.command("prune")
@cache_dir_option
@click.option("--older-than", default=None, help="Remove entries unused for this long (90s, 15m, 12h, 7d, 2w).")
@click.option("--max-bytes", default=None, help="Then remove the least recently used until the rest fit (500M, 10G).")
@click.option("--all", "everything", is_flag=True, help="Remove every entry.")
@click.option("--json", "as_json", is_flag=True, help="Print the removed entries as JSON.")
@handles_errors
def prune_command(cache_dir: Path | None, older_than: str | None, max_bytes: str | None, everything: bool, as_json: bool) -> None:
    """Remove cache entries by age and/or total size (also clears what killed compiles left)."""
    if older_than is None and max_bytes is None and not everything:
        raise InputError("slmc cache prune needs --older-than, --max-bytes or --all")
    age = parse_duration(older_than) if older_than is not None else None
    size = parse_size(max_bytes) if max_bytes is not None else None
    cache = _open(cache_dir)
    removed = cache.prune(older_than=age, max_bytes=size, everything=everything)
    if as_json:
        click.echo(json.dumps({"ok": True, "removed": [e.to_json() for e in removed],
                               "bytes_freed": sum(e.bytes for e in removed)}, indent=2, sort_keys=True))
        return
    click.echo(f"removed {len(removed)} entries ({sum(e.bytes for e in removed) / (1 << 20):.1f} MiB) from {cache.root}")
