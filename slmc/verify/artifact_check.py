"""``slmc verify DIR`` / ``slmc.verify_artifact(DIR)``: re-check an artifact without the original model.

At compile time, verification stores its inputs and the eager outputs it compared against (the
transformed graph in torch, or ONNX Runtime for ``.onnx`` models) in ``verification.safetensors``,
hashed in the manifest like every file; ``manifest.verification.recheck`` names the file and the
tolerance. ``verify_artifact`` then checks, in order:

1. the directory is a finished artifact: not a compile's staging directory, a readable manifest
   of the supported format whose verification finished and passed;
2. every file the manifest lists exists with its size and sha256, and no other file is there;
3. the artifact's outputs on the stored inputs match the stored outputs within the recorded
   ``atol``/``rtol`` (``slmc.verify.numerics.numeric_comparison``): natively where its target runs
   on this machine, or on ``device`` (``rpc://HOST:PORT``, a TVM RPC server) when one is given. An
   artifact for another machine without ``device`` passes on 1-2 alone, and the report says the
   outputs were not re-checked and that ``--device`` would re-check them (``outputs_rechecked`` false).

Failures: ``ArtifactError`` (exit 2) for 1-2 and for artifacts without stored verification data,
``VerificationError`` (exit 1) when the outputs are outside the tolerance, ``DeviceError`` (exit 1)
when the device cannot be reached or fails.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from slmc.artifact.layout import MANIFEST, STAGING_MARKERS, file_problems, read_manifest
from slmc.artifact.manifest import Manifest, RecheckEntry
from slmc.errors import ArtifactError, VerificationError

REFERENCE_FILE = "verification.safetensors"
# Recheck data stays small next to the weights (an int4 model of a few MB must not double in size):
# the first verification sample always, later ones while the file stays under this many bytes.
MAX_REFERENCE_BYTES = 64 * 1024


def save_reference(directory: Path, samples: Sequence[Sequence[Any]], expected: Sequence[Sequence[np.ndarray]],
                   atol: float, rtol: float) -> RecheckEntry:
    """Write the verification inputs and expected outputs into ``directory``; return the manifest entry.

    ``samples[i]`` are the inputs of sample ``i`` (torch tensors or arrays, in signature order),
    ``expected[i]`` the reference outputs the artifact was compared with.
    """
    from safetensors.numpy import save_file

    tensors: dict[str, np.ndarray] = {}
    kept = 0
    for i, (inputs, outputs) in enumerate(zip(samples, expected)):
        arrays = [np.asarray(v, order="C") for v in (*inputs, *outputs)]
        size = sum(a.nbytes for a in arrays) + sum(a.nbytes for a in tensors.values())
        if kept and size > MAX_REFERENCE_BYTES:  # the first sample always; more while they fit the budget
            continue
        for j, value in enumerate(arrays[: len(inputs)]):
            tensors[f"sample{kept}.input{j}"] = value
        for k, value in enumerate(arrays[len(inputs):]):
            tensors[f"sample{kept}.expected{k}"] = value
        kept += 1
    save_file(tensors, str(Path(directory) / REFERENCE_FILE))
    return RecheckEntry(file=REFERENCE_FILE, samples=kept, samples_verified_at_compile=len(samples),
                        inputs=len(samples[0]) if samples else 0, outputs=len(expected[0]) if expected else 0, atol=atol, rtol=rtol)


def load_reference(directory: Path, entry: RecheckEntry) -> tuple[list[list[np.ndarray]], list[list[np.ndarray]]]:
    """The stored inputs and expected outputs, per sample (``ArtifactError`` if the file does not hold them)."""
    from safetensors import SafetensorError
    from safetensors.numpy import load_file

    path = Path(directory) / entry.file
    try:
        data = load_file(str(path))
        samples = [[data[f"sample{i}.input{j}"] for j in range(entry.inputs)] for i in range(entry.samples)]
        expected = [[data[f"sample{i}.expected{k}"] for k in range(entry.outputs)] for i in range(entry.samples)]
    except (SafetensorError, OSError, KeyError, TypeError, ValueError) as exc:
        raise ArtifactError(f"{path}: verification data unreadable or incomplete ({type(exc).__name__}: {exc})") from exc
    return samples, expected


def _structure_problems(manifest: Manifest) -> list[str]:
    """What makes a valid manifest unusable: no file list, an unfinished or failed verification."""
    if not manifest.files:
        return ["the manifest lists no files"]
    if manifest.verification.pending:
        return ["its verification never finished (the compile that wrote it was interrupted or is still running)"]
    if not manifest.verification.passed:
        return ["its recorded verification did not pass"]
    return []


def foreign_files(directory: Path, manifest: Manifest) -> list[str]:
    """Files in ``directory`` that the manifest does not list (the manifest itself aside)."""
    listed = set(manifest.files) | {MANIFEST}
    present = {p.relative_to(directory).as_posix() for p in Path(directory).rglob("*") if p.is_file() or p.is_symlink()}
    return sorted(present - listed)


def check_files(path: Path) -> Manifest:
    """Steps 1-2 of the module docstring; returns the manifest (``ArtifactError`` on any problem)."""
    if not path.is_dir():
        raise ArtifactError(f"{path} is not a directory (an slmc artifact is a directory with {MANIFEST})")
    if path.name.startswith(".") and any(marker in path.name for marker in STAGING_MARKERS):
        raise ArtifactError(f"{path} is a staging directory of a compile that did not finish (or a replaced artifact "
                            "being removed), not an artifact")
    manifest = read_manifest(path)
    problems = _structure_problems(manifest)
    if problems:
        raise ArtifactError(f"{path} is not a complete slmc artifact: {'; '.join(problems)}")
    problems = file_problems(path, manifest) + [f"{name}: not listed in the manifest" for name in foreign_files(path, manifest)]
    if problems:
        raise ArtifactError(f"artifact {path} is damaged or incomplete: {'; '.join(problems)}")
    return manifest


def verify_artifact(path: str | Path, device: str | None = None) -> dict[str, Any]:
    """Re-check the artifact at ``path`` (module docstring), on ``device`` if given; returns what was
    checked and measured (``outputs_rechecked``: whether step 3 ran, ``where``: natively or the device)."""
    from slmc.artifact.remote_runtime import open_artifact, parse_device_url
    from slmc.verify.numerics import numeric_comparison

    path = Path(path)
    if device is not None:
        parse_device_url(device)  # a malformed URL is bad input before any file is read
    manifest = check_files(path)
    files = manifest.files
    report: dict[str, Any] = {"artifact": str(path), "files_checked": len(files),
                              "bytes_checked": int(sum(e.size for e in files.values()))}
    runs, why = manifest.target.runs_here()
    if not runs and device is None:
        report.update(passed=True, outputs_rechecked=False, where=None,
                      reason=f"outputs not re-checked: {why}; re-running the stored verification inputs needs "
                             "--device rpc://HOST:PORT (a TVM RPC server on the target: docs/devices.md)")
        return report
    entry = manifest.verification.recheck
    if entry is None:
        reason = manifest.verification.reason or "it was compiled without stored verification data"
        raise ArtifactError(f"artifact {path}: all {len(files)} files match the manifest, but it holds no verification "
                            f"inputs to re-run (verification at compile time: {reason})")
    samples, expected = load_reference(path, entry)
    with open_artifact(path, device, check_hashes=False) as model:  # hashes were checked above
        actual = [model.run_numpy(*inputs) for inputs in samples]
    numeric = numeric_comparison(expected, actual, entry.atol, entry.rtol)
    report.update(samples=len(samples), artifact_vs_recorded=numeric, passed=bool(numeric["within_tolerance"]),
                  outputs_rechecked=True, where=device or "native")
    if not numeric["within_tolerance"]:
        detail = numeric.get("error") or (
            f"max abs error {numeric['max_abs_error']:.3g} with {numeric['elements_out_of_tolerance']} of "
            f"{numeric['elements_compared']} elements outside atol={numeric['atol']:g}, rtol={numeric['rtol']:g}")
        raise VerificationError(f"artifact {path}: its outputs on the {len(samples)} stored samples differ from the "
                                f"outputs recorded at compile time: {detail}", report)
    return report
