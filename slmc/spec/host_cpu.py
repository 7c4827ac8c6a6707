"""This machine's CPU name as LLVM knows it (an ``mcpu``), without loading TVM's compiler here.

LLVM's host detection lives in TVM's compiler library (``tvm.target.codegen.llvm_get_system_cpu``),
which ``slmc.load`` does not load (it runs artifacts with TVM's runtime library alone:
``slmc.artifact.tvm_runtime``). A process that imported ``tvm`` asks it directly; any other asks
a short-lived Python subprocess once per machine and keeps the answer in
``$XDG_CACHE_HOME/slmc/host-cpu/<key>`` (else ``~/.cache``), the key hashing the CPU's
``/proc/cpuinfo`` model name and flags and the installed TVM version, so later loads read a file.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from importlib import metadata
from pathlib import Path

from slmc.errors import ToolchainError

ASK_LLVM = "import tvm; print(tvm.target.codegen.llvm_get_system_cpu())"


def system_cpu() -> str:
    """LLVM's name of this machine's CPU (``ToolchainError`` if TVM cannot be asked)."""
    if "tvm" in sys.modules:
        import tvm

        return str(tvm.target.codegen.llvm_get_system_cpu())
    memo = _memo_file()
    try:
        return memo.read_text(encoding="utf-8").strip()
    except OSError:
        pass
    try:
        answer = subprocess.run([sys.executable, "-c", ASK_LLVM], capture_output=True, text=True, check=True,
                                timeout=600).stdout.strip()
    except (OSError, subprocess.SubprocessError) as exc:
        detail = getattr(exc, "stderr", None) or str(exc)
        raise ToolchainError(f"could not ask TVM's LLVM for this machine's CPU name ({ASK_LLVM!r}): "
                             f"{detail.strip().splitlines()[-1] if detail.strip() else exc}") from exc
    try:
        memo.parent.mkdir(parents=True, exist_ok=True)
        partial = memo.with_suffix(f".{os.getpid()}")
        partial.write_text(answer + "\n", encoding="utf-8")
        partial.replace(memo)
    except OSError:
        pass  # a read-only cache directory: asked again next time, same answer
    return answer


def _memo_file() -> Path:
    cache = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    try:
        cpuinfo = Path("/proc/cpuinfo").read_text(encoding="utf-8")
    except OSError:
        cpuinfo = ""
    lines = [line for line in cpuinfo.splitlines() if line.startswith(("model name", "flags", "Features", "CPU part"))]
    identity = "\n".join(sorted(set(lines))) + "\n" + metadata.version("apache-tvm")
    return Path(cache) / "slmc" / "host-cpu" / hashlib.sha256(identity.encode()).hexdigest()[:16]
