"""``slmc package``: an artifact and the native runtime of its architecture as one deploy bundle.

``package_artifact(artifact, out)`` writes the directory ``out`` and ``out.tar.gz`` (the directory
under its own name). The bundle is flat, so ``./slmc-run . --prompt TEXT`` runs it where it lies:

- ``model.so``, ``weights.safetensors``, the tokenizer and a ``manifest.json`` listing only these
  (the artifact's manifest with ``files`` restricted; the tokenizer stored as plain ``tokenizer.json``
  when the runner was built without zlib -- the aarch64 cross build -- and ``tokenizer.file`` updated);
- the runner of the bundle's flavour (slmc.driver.bundle_flavours) for the architecture of the
  artifact's target triple. ``dynamic`` (default): ``slmc-run``, ``libslmc_runtime.so``,
  ``libtvm_runtime.so``, ``libtvm_ffi.so`` (``slmc.native.build.runtime_for_arch``), all with the
  RPATH ``$ORIGIN`` only. ``static``: one static ``slmc-run`` (musl) with TVM's runtime and the
  model's code linked in, so the bundle has no ``model.so`` and its manifest does not list one;
- ``bundle.json`` (``slmc.artifact.bundle``): every file's role, sha256 and size, the artifact
  manifest's sha256, the runner's build record, and the record of one run of the bundle's runner.

The run: the bundle's ``slmc-run`` generates ``max_new_tokens`` greedy tokens from a fixed prompt,
natively when the architecture is this machine's, else under ``qemu-<arch>-static -L
/usr/<arch>-linux-gnu`` (user-mode emulation; no timing is recorded; the static flavour: without
``-L``, nothing but the bundle), with an environment holding
only ``PATH``. Where the artifact runs here its tokens must equal ``slmc generate``'s (greedy through
the Python runtime, up to the first eos: the native runner stops there); a difference or a failed run
is a ``VerificationError`` and no bundle is written. Without an emulator the run is recorded as not
executed, with the reason.
"""

from __future__ import annotations

import gzip
import os
import platform
import shutil
import subprocess
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from slmc.artifact.bundle import (BUNDLE_FORMAT_VERSION, RUNNER, Bundle, BundleFile, BundleRun, FileRole, RunnerBuild,
                                  is_bundle, write_bundle)
from slmc.artifact.layout import LIBRARY, MANIFEST, WEIGHTS, file_problems, read_manifest, sha256_file, write_manifest
from slmc.artifact.manifest import FileEntry, Manifest, TokenizerEntry
from slmc.driver.bundle_flavours import FLAVOURS, BundleRunner
from slmc.errors import ArtifactError, InputError, VerificationError

CHECK_PROMPT = "Once upon a time"
CHECK_TOKENS = 16


@dataclass(frozen=True)
class PackageResult:
    bundle: Path
    archive: Path
    record: Bundle

    def to_json(self) -> dict[str, Any]:
        return {"ok": True, "bundle": str(self.bundle), "archive": str(self.archive), **self.record.model_dump(mode="json")}


def _machine() -> str:
    machine = platform.machine().lower()
    return {"amd64": "x86_64", "arm64": "aarch64"}.get(machine, machine)


def _check_packable(artifact: Path, manifest: Manifest) -> tuple[TokenizerEntry, str]:
    """The tokenizer entry and its stored file, when the artifact is intact and the runtime runs it."""
    problems = file_problems(artifact, manifest)
    if problems:
        raise ArtifactError(f"{artifact} is damaged, not packaging it: " + "; ".join(problems))
    if manifest.kv_cache is None:
        raise InputError(f"{artifact}: the native runtime generates text only; task '{manifest.task}' has no KV cache "
                         "(manifest field 'kv_cache' is null)")
    entry = manifest.tokenizer
    if entry is None or entry.kind != "huggingface" or entry.file is None:
        raise InputError(f"{artifact}: the native runtime needs a 'huggingface' tokenizer (manifest field tokenizer.kind "
                         f"is {entry.kind if entry else None!r})")
    if manifest.target.tvm.kind != "llvm":
        raise InputError(f"{artifact}: the native runtime runs CPU (llvm) artifacts; target '{manifest.target.name}' is "
                         f"tvm kind '{manifest.target.tvm.kind}'")
    return entry, entry.file


def _copy_model(artifact: Path, manifest: Manifest, entry: TokenizerEntry, stored: str, staging: Path,
                zlib: bool, library: bool) -> tuple[dict[str, FileRole], bool]:
    """model.so (when ``library``), the weights, the tokenizer ``stored`` (unpacked without zlib) and
    their manifest into ``staging``; returns the files' roles and whether the tokenizer was unpacked."""
    tokenizer = stored.removesuffix(".gz") if stored.endswith(".gz") and not zlib else stored
    if library:
        shutil.copy2(artifact / LIBRARY, staging / LIBRARY)
    shutil.copy2(artifact / WEIGHTS, staging / WEIGHTS)
    (staging / tokenizer).parent.mkdir(parents=True, exist_ok=True)
    if tokenizer != stored:
        (staging / tokenizer).write_bytes(gzip.decompress((artifact / stored).read_bytes()))
    else:
        shutil.copy2(artifact / stored, staging / stored)
    roles: dict[str, FileRole] = {**({LIBRARY: "model-library"} if library else {}), WEIGHTS: "weights", tokenizer: "tokenizer"}
    files = {name: FileEntry(sha256=sha256_file(staging / name), size=(staging / name).stat().st_size) for name in roles}
    write_manifest(staging, manifest.model_copy(update={"files": files, "tokenizer": entry.model_copy(update={"file": tokenizer})}))
    return {**roles, MANIFEST: "manifest"}, tokenizer != stored


def _copy_runtime(runner: BundleRunner, staging: Path) -> dict[str, FileRole]:
    for name, (built, _) in runner.files.items():
        shutil.copy2(built, staging / name)
    return {name: role for name, (_, role) in runner.files.items()}


def _launcher(arch: str, sysroot: Path | None) -> tuple[list[str], str | None, str | None]:
    """(argv prefix, emulator description, reason it cannot run here) for running ``arch`` code that
    needs ``sysroot`` (None: a static executable, emulated without one)."""
    if arch == _machine():
        return [], None, None
    qemu = shutil.which(f"qemu-{arch}-static")
    if qemu is None or (sysroot is not None and not sysroot.is_dir()):
        needs = f" with the sysroot {sysroot}" if sysroot is not None else ""
        return [], None, (f"{arch} code does not run on this {_machine()} machine and qemu-{arch}-static{needs} is not "
                          f"installed (apt-get install qemu-user-static{f' g++-{arch}-linux-gnu' if sysroot else ''})")
    version = subprocess.run([qemu, "--version"], capture_output=True, text=True, check=False).stdout.splitlines()
    about = f"{version[0] if version else 'version unknown'}, user mode"
    if sysroot is None:
        return [qemu], f"{qemu} without a sysroot (a static executable; {about})", None
    return [qemu, "-L", str(sysroot)], f"{qemu} -L {sysroot} ({about})", None


def _reference_tokens(artifact: Path, manifest: Manifest, prompt: str, max_new_tokens: int) -> tuple[list[int] | None, str]:
    """``slmc generate``'s greedy tokens on the artifact, where its target runs here."""
    runs, why = manifest.target.runs_here()
    if not runs:
        return None, f"not compared: the artifact does not run in Python here ({why})"
    from slmc.driver.eval_subject import open_subject
    from slmc.graph.kv_cache import generate_greedy

    model = open_subject(str(artifact))
    tokens = generate_greedy(model.step, model.kv_cache, model.require_tokenizer().encode(prompt), max_new_tokens).tokens
    return tokens, "slmc generate (greedy, the Python runtime) on the packaged artifact, up to the first eos"


def _until_eos(tokens: list[int], eos: int | None) -> list[int]:
    return tokens[: tokens.index(eos) + 1] if eos is not None and eos in tokens else tokens


def run_bundle(bundle: Path, arch: str, prompt: str, max_new_tokens: int,
               sysroot: Path | None) -> tuple[BundleRun, dict[str, Any] | None]:
    """Executes the bundle's runner (natively or emulated, with ``sysroot`` if not None) with an
    environment of ``PATH`` only."""
    import json

    prefix, emulator, reason = _launcher(arch, sysroot)
    machine = f"{_machine()} {platform.system()} {platform.release()}"
    if reason is not None:
        return BundleRun(executed=False, summary=f"not executed: {reason}", machine=machine, runner_architecture=arch), None
    argv = [*prefix, str(bundle / RUNNER), str(bundle), "--prompt", prompt, "--max-new-tokens", str(max_new_tokens), "--json"]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=1800, env={"PATH": "/usr/bin:/bin"}, check=False)
    if done.returncode != 0:
        raise VerificationError(f"the bundle's {RUNNER} failed (exit {done.returncode}): {done.stderr.strip()[-2000:]}")
    output = json.loads(done.stdout)
    mode = "emulated" if prefix else "native"
    what = (f"executed natively-compiled {arch} runner under emulation ({emulator}) on this {_machine()} machine"
            if prefix else f"executed the {arch} runner natively on this {_machine()} machine")
    record = BundleRun(executed=True, summary=what + "; tokens only, no timing recorded",
                       command=[a.replace(str(bundle), "BUNDLE") for a in argv], machine=machine, mode=mode,
                       emulator=emulator, runner_architecture=arch, prompt=prompt, max_new_tokens=max_new_tokens,
                       tokens=output["tokens"])
    return record, output


def _anonymous(info: tarfile.TarInfo) -> tarfile.TarInfo:
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    return info


def _archive(bundle: Path) -> Path:
    """``bundle.tar.gz`` beside the directory, holding it under its own name (owner 0, no user names)."""
    archive = bundle.with_name(bundle.name + ".tar.gz")
    partial = archive.with_name(archive.name + ".partial")
    with tarfile.open(partial, "w:gz") as tar:
        tar.add(bundle, arcname=bundle.name, filter=_anonymous)
    partial.replace(archive)
    return archive


def _check_destination(out: Path) -> None:
    if out.exists() and not (out.is_dir() and (is_bundle(out) or not any(out.iterdir()))):
        raise InputError(f"-o {out}: exists and is not an slmc bundle or an empty directory; not replacing it")


def package_artifact(artifact: Path, out: Path, *, flavour: str = "dynamic", check_prompt: str = CHECK_PROMPT,
                     check_tokens: int = CHECK_TOKENS, cache_dir: Path | None = None) -> PackageResult:
    """Writes the bundle ``out`` and ``out.tar.gz`` for ``artifact`` (see the module docstring).

    Preconditions: ``artifact`` is an intact causal-LM artifact of a CPU target with a Hugging Face
    tokenizer (``ArtifactError`` / ``InputError`` otherwise); a C++ compiler for its architecture is
    installed (``ToolchainError`` naming the apt package otherwise; for ``flavour`` "static": the
    pip package ziglang); ``flavour`` is a key of ``FLAVOURS`` (``InputError`` otherwise)."""
    if flavour not in FLAVOURS:
        raise InputError(f"bundle flavour {flavour!r} is not one of {', '.join(FLAVOURS)}")
    artifact, out = Path(artifact), Path(out)
    manifest = read_manifest(artifact)
    entry, stored = _check_packable(artifact, manifest)
    _check_destination(out)
    arch = manifest.target.triple_arch
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.staging-{os.getpid()}-", dir=out.parent))
    workdir = Path(tempfile.mkdtemp(prefix=f".{out.name}.build-{os.getpid()}-", dir=out.parent))
    try:
        runner = FLAVOURS[flavour].runner(artifact, manifest, arch, workdir, cache_dir)
        build = RunnerBuild.model_validate(runner.build)
        model_roles, unpacked = _copy_model(artifact, manifest, entry, stored, staging, build.zlib, not runner.model_in_runner)
        roles = {**model_roles, **_copy_runtime(runner, staging)}
        files = {name: BundleFile(role=role, sha256=sha256_file(staging / name), size=(staging / name).stat().st_size)
                 for name, role in sorted(roles.items())}
        pending = BundleRun(executed=False, summary="pending")
        record = Bundle(format_version=BUNDLE_FORMAT_VERSION, artifact=str(artifact),
                        artifact_manifest_sha256=sha256_file(artifact / MANIFEST), target=manifest.target.name, flavour=flavour,
                        architecture=arch, tokenizer_unpacked=unpacked, runner=build, run=pending, files=files)
        write_bundle(staging, record)
        run, output = run_bundle(staging, arch, check_prompt, check_tokens, runner.sysroot)
        if output is not None:
            reference, how = _reference_tokens(artifact, manifest, check_prompt, check_tokens)
            matches = None
            if reference is not None:
                eos = reference[len(output["tokens"]) - 1] if output["stopped_at_eos"] else None
                matches = output["tokens"] == _until_eos(reference, eos)
                if not matches:
                    raise VerificationError(f"the bundle's {RUNNER} generated {output['tokens']} from {check_prompt!r}, "
                                            f"slmc generate on {artifact} generated {reference}")
            run = run.model_copy(update={"reference": how, "matches_reference": matches})
        record = record.model_copy(update={"run": run})
        write_bundle(staging, record)
        staging.chmod(0o755)  # mkdtemp made it private
        if out.exists():
            shutil.rmtree(out)
        staging.rename(out)
    finally:
        shutil.rmtree(workdir)
        if staging.exists():
            shutil.rmtree(staging)
    return PackageResult(out, _archive(out), record)
