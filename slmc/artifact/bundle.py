"""``bundle.json``: the record of a deploy bundle (``slmc package``; docs/reference/bundle.md).

A bundle is one flat directory that runs an artifact without Python: the model files (library,
weights, tokenizer, a manifest listing only those), the native runtime (``slmc-run``,
``libslmc_runtime.so``) and TVM's runtime libraries of the artifact's architecture -- or, in the
static flavour, the weights, tokenizer, manifest and one static ``slmc-run`` holding the rest. ``bundle.json``
lists every other file with its role, sha256 and size, the sha256 of the packaged artifact's own
manifest, how the runner was built, and what was executed to check the bundle (where, by what;
never a timing from emulation). Who checks what: ``slmc verify BUNDLE`` (Python, on the build
machine) every listed file including the runner; ``slmc-run`` (C++, on the device) every listed file
before it opens the model, including its own binaries -- which detects damage, not tampering: a
damaged byte that the dynamic loader trips over, or one in the checking code itself, is not
reported by the runner (``slmc verify`` reports it). This module only reads, writes and checks.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from slmc.artifact.layout import listed_file_problems
from slmc.errors import ArtifactError, BundleIntegrityError

BUNDLE_FILE = "bundle.json"
BUNDLE_FORMAT_VERSION = 1  # slmc/native/runtime/bundle.hpp kBundleFormatVersion
RUNNER = "slmc-run"
FileRole = Literal["model-library", "weights", "tokenizer", "manifest", "runtime-library", "runner"]


class BundleModel(BaseModel):
    """Base of every bundle.json section: unknown keys forbidden, strict types, immutable."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class BundleFile(BundleModel):
    """One file of the bundle."""

    role: FileRole
    sha256: str
    size: int = Field(description="bytes")


class RunnerBuild(BundleModel):
    """How ``slmc-run`` and ``libslmc_runtime.so`` were built (``slmc.native.build``'s build.json)."""

    compiler: str
    compiler_version: str
    target_triple: str = Field(description="the compiler's -dumpmachine")
    flags: list[str]
    zlib: bool = Field(description="reads tokenizer.json.gz; without it the bundle ships tokenizer.json")
    source_hash: str
    rpath: str
    tvm_wheels: dict[str, str] = Field(description="distribution -> version of the TVM wheels linked")


class BundleRun(BundleModel):
    """The bundle's own runner executed once after packaging: what, where, by what, and its tokens.
    No timing is recorded (under emulation it would mean nothing)."""

    executed: bool
    summary: str = Field(description="one sentence: what was executed where, or why nothing was")
    command: list[str] | None = Field(None, description="argv, the bundle's directory written as BUNDLE")
    machine: str | None = Field(None, description="the machine that executed it (architecture, OS)")
    mode: Literal["native", "emulated"] | None = None
    emulator: str | None = Field(None, description="the user-mode emulator and its sysroot, when emulated")
    runner_architecture: str | None = None
    prompt: str | None = None
    max_new_tokens: int | None = None
    tokens: list[int] | None = None
    reference: str | None = Field(None, description="what the tokens were compared with, or why they were not")
    matches_reference: bool | None = None


class Bundle(BundleModel):
    """The top level of ``bundle.json``."""

    format_version: Literal[1]
    artifact: str = Field(description="the artifact directory packaged (as given)")
    artifact_manifest_sha256: str = Field(description="sha256 of the packaged artifact's manifest.json")
    target: str
    flavour: Literal["dynamic", "static"] = Field(
        "dynamic", description="dynamic: slmc-run + shared libraries + model.so (glibc); static: one static slmc-run "
        "(musl) with TVM's runtime and the model's code linked in (slmc.driver.bundle_flavours)")
    architecture: str = Field(description="CPU architecture of the model's code and the runtime (the target triple's)")
    tokenizer_unpacked: bool = Field(description="tokenizer.json stored uncompressed for a runner built without zlib "
                                     "(the bundled manifest.json then differs from the artifact's)")
    runner: RunnerBuild
    run: BundleRun
    files: dict[str, BundleFile] = Field(description="every file of the bundle but bundle.json -> role, sha256, size")


def bundle_text(bundle: Bundle) -> str:
    return json.dumps(bundle.model_dump(mode="json"), indent=2, sort_keys=True) + "\n"


def write_bundle(directory: Path, bundle: Bundle) -> None:
    (Path(directory) / BUNDLE_FILE).write_text(bundle_text(bundle), encoding="utf-8")


def is_bundle(directory: Path) -> bool:
    return (Path(directory) / BUNDLE_FILE).is_file()


def read_bundle(directory: Path) -> Bundle:
    """The validated ``bundle.json`` of ``directory``; ``ArtifactError`` naming the file and each bad field."""
    path = Path(directory) / BUNDLE_FILE
    if not path.is_file():
        raise ArtifactError(f"{directory} is not an slmc bundle: {BUNDLE_FILE} is missing")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BundleIntegrityError(f"{path} is not valid JSON (damaged?): {exc}") from exc
    if not isinstance(data, dict) or data.get("format_version") != BUNDLE_FORMAT_VERSION:
        found = data.get("format_version") if isinstance(data, dict) else type(data).__name__
        raise ArtifactError(f"{path}: unsupported bundle format_version {found!r}, expected {BUNDLE_FORMAT_VERSION}")
    try:
        return Bundle.model_validate(data)
    except ValidationError as exc:
        problems = [f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors(include_url=False)]
        raise ArtifactError(f"{path} is not a valid slmc bundle record: {'; '.join(problems[:5])}") from exc


def verify_bundle(directory: Path) -> dict[str, Any]:
    """Checks every file ``bundle.json`` lists (size and sha256). Returns ``{files_checked, run}``;
    ``BundleIntegrityError`` (exit 1) naming every damaged or missing file."""
    bundle = read_bundle(directory)
    problems = listed_file_problems(Path(directory), bundle.files, BUNDLE_FILE)
    if problems:
        raise BundleIntegrityError(f"bundle {directory} is damaged: " + "; ".join(problems), problems)
    return {"files_checked": len(bundle.files), "architecture": bundle.architecture, "run": bundle.run.summary}


def bundle_schema() -> dict[str, Any]:
    """The JSON schema of ``bundle.json`` (committed as docs/reference/bundle.schema.json)."""
    schema = Bundle.model_json_schema()
    schema["$id"] = f"https://slmc.invalid/schemas/slmc-bundle-v{BUNDLE_FORMAT_VERSION}.json"
    return schema
