"""The runner a deploy bundle carries, by flavour (``slmc package --flavour``):

- ``dynamic``: ``slmc-run``, ``libslmc_runtime.so`` and TVM's two runtime libraries built against the
  TVM wheels of the artifact's architecture with the system's (cross) g++ (slmc.native.build); the
  model's code is the bundle's ``model.so``. Needs glibc on the device; under emulation it runs with
  the cross toolchain's sysroot (``qemu-<arch>-static -L /usr/<arch>-linux-gnu``).
- ``static``: one statically linked ``slmc-run`` for ``<arch>-linux-musl`` with TVM's runtime and the
  model's code (rebuilt as a TVM system library: slmc.driver.system_library) linked in
  (slmc.native.static_build); no ``model.so``, no shared library, no libc on the device: it runs from
  ``adb shell`` on arm64 Android, and under emulation without a sysroot.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from slmc.artifact.bundle import RUNNER, FileRole
from slmc.artifact.manifest import Manifest


@dataclass(frozen=True)
class BundleRunner:
    """What a flavour puts into the bundle besides the model's data files."""

    files: dict[str, tuple[Path, FileRole]]  # name in the bundle -> (built file, role)
    build: dict[str, Any]  # bundle.json's ``runner`` fields
    model_in_runner: bool  # the model's code is linked into slmc-run (no model.so in the bundle)
    sysroot: Path | None  # what the emulator needs besides the bundle (None: nothing)


class BundleFlavour(Protocol):
    def runner(self, artifact: Path, manifest: Manifest, arch: str, workdir: Path, cache_dir: Path | None) -> BundleRunner:
        """Builds (or finds cached) the runner for ``arch``; ``workdir`` is the caller's scratch directory."""


class DynamicFlavour:
    def runner(self, artifact: Path, manifest: Manifest, arch: str, workdir: Path, cache_dir: Path | None) -> BundleRunner:
        from slmc.native.build import runtime_for_arch

        runtime = runtime_for_arch(arch, cache_dir)
        files: dict[str, tuple[Path, FileRole]] = {
            lib.name: (lib, "runtime-library") for lib in [runtime.library, *runtime.tvm_libraries]}
        files[RUNNER] = (runtime.executable, "runner")
        return BundleRunner(files, runtime.info, model_in_runner=False, sysroot=Path(f"/usr/{arch}-linux-gnu"))


class StaticFlavour:
    def runner(self, artifact: Path, manifest: Manifest, arch: str, workdir: Path, cache_dir: Path | None) -> BundleRunner:
        from slmc.driver.system_library import system_library_objects
        from slmc.native.static_build import link_static_runner

        objects = system_library_objects(artifact, manifest, workdir / "model-objects")
        linked = link_static_runner(arch, objects, workdir / RUNNER, cache_dir)
        return BundleRunner({RUNNER: (linked.executable, "runner")}, linked.info, model_in_runner=True, sysroot=None)


FLAVOURS: dict[str, BundleFlavour] = {"dynamic": DynamicFlavour(), "static": StaticFlavour()}
