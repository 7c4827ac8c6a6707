"""The tuning database: MetaSchedule records per kernel (workload) and TVM target, applied by compile.

MetaSchedule (Shao et al., "Tensor Program Optimization with Probabilistic Programs", NeurIPS 2022)
searches schedules for a TIR kernel and stores the best as a trace. slmc keeps those records in
MetaSchedule's ``JSONDatabase`` (which hashes each workload structurally) inside one directory per
TVM target: ``<root>/<target key>/database_{workload,tuning_record}.json``. The target key comes
from the resolved descriptor's TVM target (``native`` fields already filled in), so records tuned
for one CPU are never applied to another.

Where: the user database root is ``--db`` (``slmc tune``), else ``$SLMC_TUNING_DB``, else
``$XDG_CACHE_HOME/slmc/tuning`` (``~/.cache/slmc/tuning``). Built-in targets may ship records in
the package (``slmc/targets/tuning/<target key>/``); they are looked up after the user's.
``compile`` applies whatever records exist before slmc's default schedule rules; kernels without
a record keep the default rules, and the manifest lists which kernels came from the database.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from importlib import resources
from pathlib import Path
from typing import Any

import tvm

from slmc.errors import InputError
from slmc.spec.target import TargetDescriptor

DATABASE_ENV = "SLMC_TUNING_DB"
RECORDS = "database_tuning_record.json"
WORKLOADS = "database_workload.json"


def user_database_root(path: str | Path | None = None) -> Path:
    """The user's database root: ``path``, else ``$SLMC_TUNING_DB``, else the user cache dir.

    ``InputError`` if the chosen path exists and is not a directory.
    """
    source = "--db"
    if path is None and os.environ.get(DATABASE_ENV):
        path, source = os.environ[DATABASE_ENV], f"${DATABASE_ENV}"
    if path is None:
        cache = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
        path, source = Path(cache) / "slmc" / "tuning", "the default location"
    root = Path(path).expanduser()
    if root.exists() and not root.is_dir():
        raise InputError(f"tuning database {root} (from {source}) is not a directory")
    return root


def shipped_database_root() -> Path:
    """Records shipped with the built-in targets (``slmc/targets/tuning``)."""
    return Path(str(resources.files("slmc.targets"))) / "tuning"


def target_key(target: TargetDescriptor) -> str:
    """Directory name for the resolved TVM target: readable prefix + hash of the full target dict."""
    tvm_dict = target.tvm_dict()
    readable = "-".join(str(tvm_dict[k]) for k in ("kind", "mtriple", "mcpu") if tvm_dict.get(k))
    digest = hashlib.sha256(json.dumps(tvm_dict, sort_keys=True).encode()).hexdigest()[:12]
    return f"{re.sub(r'[^A-Za-z0-9._-]+', '_', readable)}-{digest}"


def database_dirs(target: TargetDescriptor, root: str | Path | None = None) -> list[Path]:
    """The directories with records for this target: the user's first, then the shipped one."""
    key = target_key(target)
    candidates = [user_database_root(root) / key, shipped_database_root() / key]
    return [d for d in candidates if (d / RECORDS).is_file() and (d / RECORDS).stat().st_size > 0]


def open_json_database(directory: Path, create: bool = False) -> Any:
    """MetaSchedule's ``JSONDatabase`` in ``directory``; ``InputError`` if its files cannot be read."""
    from tvm.s_tir import meta_schedule as ms

    if create:
        directory.mkdir(parents=True, exist_ok=True)
    try:
        return ms.database.JSONDatabase(work_dir=str(directory), allow_missing=create,
                                        module_equality="structural")
    except (RuntimeError, ValueError, OSError) as exc:
        raise InputError(f"tuning database {directory} cannot be read ({RECORDS}, {WORKLOADS}): "
                         f"{type(exc).__name__}: {str(exc).strip().splitlines()[-1] if str(exc).strip() else ''}") from exc


def open_database(dirs: list[Path]) -> Any:
    """One database over ``dirs``, queried in order (first directory with a record wins)."""
    from tvm.s_tir import meta_schedule as ms

    databases = [open_json_database(d) for d in dirs]
    return databases[0] if len(databases) == 1 else ms.database.OrderedUnionDatabase(*databases)


_OPENED: dict[tuple[Any, ...], Any] = {}


def target_database(target: TargetDescriptor) -> tuple[list[Path], Any]:
    """(directories, database) with this target's records, or ``([], None)``; ``InputError`` if a
    database cannot be read. Opened once per directory contents (the build pass reuses it)."""
    dirs = database_dirs(target)
    if not dirs:
        return [], None
    key = tuple((str(d), (d / RECORDS).stat().st_mtime_ns, (d / RECORDS).stat().st_size) for d in dirs)
    if key not in _OPENED:
        _OPENED.clear()
        _OPENED[key] = open_database(dirs)
    return dirs, _OPENED[key]


def _scheduled(mod: tvm.IRModule) -> set[str]:
    return {gv.name_hint for gv, f in mod.functions.items()
            if isinstance(f, tvm.tirx.PrimFunc) and f.attrs is not None and "tirx.is_scheduled" in f.attrs
            and int(f.attrs["tirx.is_scheduled"]) == 1}


def kernel_names(mod: tvm.IRModule) -> list[str]:
    return sorted(gv.name_hint for gv, f in mod.functions.items() if isinstance(f, tvm.tirx.PrimFunc))


def tuning_passes(target: TargetDescriptor, record: Any) -> list[tvm.transform.Pass]:
    """The hook ``relax_pipeline.build_pipeline`` runs before the default schedule rules.

    Keeps the fused, unscheduled module in ``record.unscheduled`` (what ``slmc tune`` extracts
    kernels from), and when the database has records for this target applies them
    (``MetaScheduleApplyDatabase``) and sets ``record.tuning`` for the manifest.
    """
    dirs, database = target_database(target)

    @tvm.transform.module_pass(opt_level=0, name="slmc_apply_tuning_database")
    def _apply(mod: tvm.IRModule, _ctx: tvm.transform.PassContext) -> tvm.IRModule:
        record.unscheduled = mod.clone()  # a copy: dlight's ApplyDefaultSchedule updates `mod` in place
        if not dirs:
            return mod
        before = _scheduled(mod)
        with database:
            out = tvm.relax.transform.MetaScheduleApplyDatabase(enable_warning=False)(mod)
        from_db = sorted(_scheduled(out) - before)
        record.tuning = {"databases": [str(d) for d in dirs], "target_key": target_key(target),
                         "kernels": len(kernel_names(out)), "kernels_from_database": from_db}
        record.notes.append(f"tuning database: {len(from_db)} of {len(kernel_names(out))} kernels scheduled from "
                            f"records in {', '.join(str(d) for d in dirs)}")
        return out

    return [_apply]
