"""Where verification executes an artifact: natively here, on a device through TVM RPC, or not at all.

``decide(recipe, target, device)`` is the one place that decides it, and ``Execution`` opens the
staged artifact there and writes the manifest's account of it (``how`` and ``execution``). The
checks that compare the compressed graph with the original (the recipe's gates) do not need the
artifact: they are measured on the host in every case but a disabled verification.

- the target runs here: natively through ``slmc.load`` (a ``device`` given anyway is not used, and
  the record says so);
- it does not, and ``device`` (``rpc://HOST:PORT``) is given: through ``slmc.artifact.remote_runtime.RemoteModel``
  on that TVM RPC server, for kinds whose backend allows it (``TargetKind.remote_execution``: CPU code); the record says whether slmc saw an emulator
  serve the URL (``slmc.artifact.device_identity``) or could not tell what does;
- otherwise the artifact is not executed (``Execution.runs`` false, ``Execution.not_run`` says why).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from slmc.spec.backend_registry import get_backend
from slmc.artifact.manifest import NativeExecution, RpcExecution, Verification
from slmc.spec.recipe import Recipe
from slmc.artifact.runtime import CompiledModel
from slmc.spec.target import TargetDescriptor


@dataclass
class Execution:
    """Verification runs the staged artifact natively (``device`` None) or on ``device`` through TVM RPC.

    ``why`` is ``TargetDescriptor.runs_here``'s reason; ``unused_device`` a device given for a target
    that runs here; ``not_run`` (the artifact is not executed anywhere) why not. ``identity`` is
    filled in by ``open`` for a device.
    """

    why: str
    device: str | None = None
    unused_device: str | None = None
    not_run: str | None = None
    identity: Any = field(default=None, repr=False)

    @property
    def runs(self) -> bool:
        """The artifact is executed (natively or on the device)."""
        return self.not_run is None

    @contextlib.contextmanager
    def open(self, staged: Path) -> Iterator[CompiledModel]:
        """The staged artifact, loaded where it executes; a device session ends on exit (TVM's RPC
        server serves one client at a time). Precondition: ``runs``."""
        if self.not_run is not None:
            raise ValueError(f"the artifact is not executed: {self.not_run}")
        if self.device is None:
            yield CompiledModel(staged)
            return
        from slmc.artifact.device_identity import identify
        from slmc.artifact.remote_runtime import RemoteModel

        self.identity = identify(self.device)
        with RemoteModel(self.device, staged) as model:
            yield model

    def how(self, samples: int) -> str:
        """The opening of the manifest's ``verification.how`` (after ``open``)."""
        if self.device is not None:
            return f"{self.identity.describe()} on {samples} samples (not natively: {self.why})"
        unused = f"; device {self.unused_device} not used: the target runs here" if self.unused_device else ""
        return f"executed natively through slmc.load on {samples} samples ({self.why}{unused})"

    def record(self) -> NativeExecution | RpcExecution:
        """The manifest's ``verification.execution``: where, and what served a device URL."""
        if self.device is not None:
            return RpcExecution(where="rpc", **self.identity.to_json())
        return NativeExecution(where="native", unused_device=self.unused_device)


def decide(recipe: Recipe, target: TargetDescriptor, device: str | None) -> tuple[Verification | None, Execution | None]:
    """``(report, None)`` when verification is disabled (nothing is checked), else ``(None,
    execution)``: where the artifact executes, or (``execution.runs`` false) why it does not."""
    unused = f"; device {device} not used" if device is not None else ""
    if not recipe.verify.enabled:
        return Verification.skipped(f"disabled by the recipe (verify.enabled: false){unused}"), None
    runs, why = target.runs_here()
    if runs:
        return None, Execution(why, unused_device=device)
    if device is None:
        return None, Execution(why, not_run=f"not executed: {why}; no device given (device rpc://HOST:PORT "
                                            "runs it through TVM RPC: docs/devices.md)")
    if not get_backend(target.kind).remote_execution:
        return None, Execution(why, not_run=f"not executed: {why}{unused}: TVM RPC verification runs CPU (llvm) "
                                            "artifacts only")
    return None, Execution(why, device=device)


def check_device(recipe: Recipe, target: TargetDescriptor, device: str | None) -> None:
    """Before any model loads: ``device`` is ``rpc://HOST:PORT`` (``DeviceURLError``, exit 2) and,
    if verification will use it, something listens there (``DeviceConnectionError``, exit 1)."""
    if device is None:
        return
    from slmc.artifact.remote_runtime import check_reachable, parse_device_url

    parse_device_url(device)
    if recipe.verify.enabled and not target.runs_here()[0] and get_backend(target.kind).remote_execution:
        check_reachable(device)
