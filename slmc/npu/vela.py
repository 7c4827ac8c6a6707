"""Arm's Vela compiler (PyPI ``ethos-u-vela``) run on each NPU partition's TOSA graph.

Vela 5.2 reads TOSA 1.0 flatbuffers (file identifier ``TOSA``) and compiles them with its C++ core
("Regor") for every Ethos-U55/U65/U85 configuration. slmc runs the ``vela`` command line in a child
process (``python -m ethosu.vela``; Regor prints from C++ and raises on a refusal) with the
descriptor's ``npu.vela``: ``--accelerator-config``, ``--system-config``, ``--memory-mode`` and
``--config``, plus ``--verbose-performance`` for the per-operator table. What Vela writes is parsed:

- ``<name>_summary_<system config>.csv``: one row of totals (``cycles_total``, ``cycles_npu``,
  ``inference_time`` in seconds, ``sram_memory_used``/``*_flash_memory_used``/``dram_memory_used`` in
  KiB, ``nn_macs``, ...);
- ``<name>_per-layer.csv``: per operator its placement (``Target`` NPU or CPU), cycles and MACs;
- ``<name>_vela.tflite``: the compiled command stream (a TFLite file whose custom operator carries
  the Ethos-U command stream and the encoded weights), kept in the artifact.

A TOSA graph has no CPU to fall back to: when Vela cannot place an operator on the NPU it stops with
a message naming it (for example ``Non-passthrough operation (Div) could not run on NPU``); that is a
*refusal*, recorded per operator instead of failing the compile, with the constraints Vela documents
for that operator (``slmc.npu.vela_constraints``: the message names no failed check). All these figures
are Vela's estimates from its performance model, not measurements on silicon.
"""

from __future__ import annotations

import csv
import re
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from slmc.errors import ToolchainError
from slmc.spec.target import Vela

VELA_TIMEOUT_S = 600
KIB = 1024
_OPERATION = re.compile(r"operation \(([A-Za-z0-9_]+)\)")


@dataclass
class VelaOperator:
    """One row of Vela's per-layer table."""

    operator: str
    placement: str          # NPU or CPU
    cycles: int
    macs: int
    name: str


@dataclass
class VelaResult:
    """Vela's outcome for one TOSA graph: compiled with its summary, or refused with its reason."""

    compiled: bool
    summary: dict[str, float] = field(default_factory=dict)
    operators: list[VelaOperator] = field(default_factory=list)
    command_stream: Path | None = None
    refused_operator: str | None = None
    reason: str | None = None

    @property
    def npu_operators(self) -> int:
        return sum(op.placement == "NPU" for op in self.operators)

    @property
    def cpu_operators(self) -> int:
        return sum(op.placement != "NPU" for op in self.operators)

    def summary_record(self) -> dict[str, Any]:
        """The manifest's figures (``slmc.artifact.npu_toolchain.VelaSummary``) from Vela's summary CSV."""
        s = self.summary
        return {"cycles_total": int(s["cycles_total"]), "cycles_npu": int(s["cycles_npu"]),
                "inference_time_s": float(s["inference_time"]), "nn_macs": int(s["nn_macs"]),
                "sram_used_bytes": round(s["sram_memory_used"] * KIB),
                "dram_used_bytes": round(s["dram_memory_used"] * KIB),
                "flash_used_bytes": round((s["on_chip_flash_memory_used"] + s["off_chip_flash_memory_used"]) * KIB),
                "npu_operators": self.npu_operators, "cpu_operators": self.cpu_operators,
                "weights_storage_area": str(s.get("weights_storage_area_text", "")),
                "operators": [{"operator": op.operator, "placement": op.placement, "cycles": op.cycles, "macs": op.macs,
                               "name": op.name} for op in self.operators]}


def vela_version() -> str:
    """The installed ``ethos-u-vela`` distribution's version."""
    from importlib.metadata import version

    return version("ethos-u-vela")


def _read_summary(path: Path) -> dict[str, Any]:
    with path.open(newline="", encoding="utf-8") as handle:
        row = next(csv.DictReader(handle))
    numbers: dict[str, Any] = {}
    for key, value in row.items():
        try:
            numbers[key] = float(value)
        except ValueError:
            numbers[key + "_text"] = value
    return numbers


def _read_operators(path: Path) -> list[VelaOperator]:
    with path.open(newline="", encoding="utf-8") as handle:
        return [VelaOperator(operator=row["Original Operator"], placement=row["Target"], cycles=int(float(row["Op Cycles"])),
                             macs=int(float(row["MAC Count"])), name=row["Name"]) for row in csv.DictReader(handle)]


def _last_line(done: subprocess.CompletedProcess) -> str:
    lines = [line.strip() for line in done.stderr.splitlines() if line.strip()]
    return lines[-1] if lines else f"exit status {done.returncode}"


def run_vela(args: list[str], what: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    """``python -m ethosu.vela ARGS`` (in ``cwd``); ``ToolchainError`` when it does not finish within
    ``VELA_TIMEOUT_S`` or Vela is not installed. Other failures are the caller's to read."""
    try:
        done = subprocess.run([sys.executable, "-m", "ethosu.vela", *args], capture_output=True, text=True,
                              timeout=VELA_TIMEOUT_S, check=False, cwd=cwd)
    except subprocess.TimeoutExpired as exc:
        raise ToolchainError(f"Vela did not finish {what} within {VELA_TIMEOUT_S} s") from exc
    if done.returncode != 0 and "No module named ethosu" in _last_line(done):
        raise ToolchainError("the target names a Vela configuration (npu.vela) and Arm's Vela is not installed: "
                             "pip install 'slmc[npu]' (ethos-u-vela)")
    return done


def compile_tosa(tosa_file: Path, config: Vela, output_dir: Path) -> VelaResult:
    """Run Vela on ``tosa_file`` into ``output_dir``. A refusal is a result; a Vela that does not run
    or writes no summary raises ``ToolchainError``."""
    args = [str(tosa_file), "--accelerator-config", config.accelerator_config,
            "--system-config", config.system_config, "--memory-mode", config.memory_mode, "--config", config.config_file,
            "--output-dir", str(output_dir), "--verbose-performance"]
    done = run_vela(args, f"{tosa_file.name} ({config.accelerator_config}, {config.system_config}, {config.memory_mode})")
    if done.returncode != 0:
        last = _last_line(done)
        reason = last.removeprefix("RuntimeError:").strip()
        match = _OPERATION.search(reason) if last.startswith("RuntimeError:") else None
        if match is None:  # not Regor's refusal of an operation: Vela itself failed (bad config, internal error, ...)
            raise ToolchainError(f"Vela failed on {tosa_file.name} ({config.accelerator_config}, {config.system_config}, "
                                 f"{config.memory_mode}): {last}")
        return VelaResult(compiled=False, refused_operator=match.group(1), reason=reason)
    stem = tosa_file.stem
    summary = output_dir / f"{stem}_summary_{config.system_config}.csv"
    per_layer = output_dir / f"{stem}_per-layer.csv"
    stream = output_dir / f"{stem}_vela.tflite"
    missing = [p.name for p in (summary, per_layer, stream) if not p.is_file()]
    if missing:
        raise ToolchainError(f"Vela compiled {tosa_file.name} but did not write {missing}; its output: {done.stdout[-500:]}")
    return VelaResult(compiled=True, summary=_read_summary(summary), operators=_read_operators(per_layer),
                      command_stream=stream)
