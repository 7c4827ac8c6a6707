"""Typed errors and their exit codes.

Every failure that reaches a user is one of these. The CLI maps ``exit_code`` to the process exit
status; the Python API raises the same classes. ``InputError`` (exit 2) means the user's input is
wrong and nothing was compiled; ``CompileError`` and ``VerificationError`` (exit 1) mean the input
was valid but the compile or its verification failed; ``Interrupted`` (exit 130) means Ctrl-C.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

EXIT_COMPILE_FAILURE = 1
EXIT_BAD_INPUT = 2
EXIT_INTERRUPTED = 130  # 128 + SIGINT, as shells report a command stopped by Ctrl-C


def did_you_mean(word: str, choices: Iterable[str]) -> str:
    """``" (did you mean 'X'?)"`` (or ``'X' or 'Y'``) for the choices closest to a mistyped ``word``
    (difflib, similarity 0.6 or more), else ``""``. Every "unknown NAME" message uses this one helper."""
    import difflib  # on first use: a runtime process never names an unknown key (issue 22.3)

    close = difflib.get_close_matches(str(word), sorted(set(choices)), n=2, cutoff=0.6)
    return f" (did you mean {' or '.join(repr(c) for c in close)}?)" if close else ""


class SlmcError(Exception):
    """Base of every error slmc raises on purpose."""

    exit_code: int = EXIT_COMPILE_FAILURE

    def to_json(self) -> dict[str, Any]:
        return {"type": type(self).__name__, "message": str(self), "exit_code": self.exit_code}


class InputError(SlmcError):
    """The user's input (recipe, descriptor, model reference, arguments) is invalid."""

    exit_code = EXIT_BAD_INPUT


@dataclass(frozen=True)
class FieldProblem:
    """One invalid field of a YAML document: where it is, what was found, what was expected."""

    path: str
    message: str
    line: int | None = None
    found: Any = None

    def render(self, source: str) -> str:
        where = f"{source}:{self.line}" if self.line is not None else source
        found = "" if self.found is None else f" (found {self.found!r})"
        return f"{where}: {self.path or '<document>'}: {self.message}{found}"


class DocumentError(InputError):
    """A YAML document (recipe or target descriptor) failed validation.

    ``source`` names the file (or ``<built-in NAME>``/``<string>``), ``problems`` each field.
    """

    kind = "document"

    def __init__(self, source: str | Path, problems: list[FieldProblem]):
        self.source = str(source)
        self.problems = list(problems)
        lines = "\n".join("  " + p.render(self.source) for p in self.problems)
        super().__init__(f"invalid {self.kind} {self.source}:\n{lines}")

    def to_json(self) -> dict[str, Any]:
        data = super().to_json()
        data["file"] = self.source
        data["problems"] = [
            {"path": p.path, "line": p.line, "message": p.message, "found": None if p.found is None else repr(p.found)} for p in self.problems
        ]
        return data


class RecipeError(DocumentError):
    """The recipe is invalid: unknown key, out-of-range value, unknown pass, bad pass order."""

    kind = "recipe"


class TargetError(DocumentError):
    """A target descriptor is invalid, or a recipe asks for something the target lacks."""

    kind = "target descriptor"


class RecipeTargetMismatchError(RecipeError, TargetError):
    """A valid recipe asks for something a valid target lacks: a recipe problem, headlined as one.

    Each problem names the step and setting (``passes.I.PASS.SETTING``) and what the target offers;
    ``fitting`` lists the built-in recipes that fit the target. Also a ``TargetError`` (the target's
    side of the mismatch), for callers that catch that.
    """

    def __init__(self, source: str | Path, target: str, problems: list[FieldProblem], fitting: list[str]):
        self.target = target
        self.fitting = list(fitting)
        super().__init__(source, problems)
        fits = (f"built-in recipes that fit target '{target}': {', '.join(self.fitting)}" if self.fitting
                else f"no built-in recipe fits target '{target}'")
        lines = "\n".join("  " + p.render(self.source) for p in self.problems)
        self.args = (f"recipe {self.source} does not fit target '{target}':\n{lines}\n  ({fits})",)

    def to_json(self) -> dict[str, Any]:
        data = super().to_json()
        data.update(target=self.target, fitting_recipes=self.fitting)
        return data


class TargetNotFoundError(InputError):
    """A target name is neither a built-in descriptor nor an existing file."""


class ModelError(InputError):
    """The model reference cannot be resolved or loaded."""


class ArtifactError(InputError):
    """An artifact directory is missing, incomplete, or fails its manifest's checks."""


class ArtifactNotRunnableError(ArtifactError):
    """An intact artifact whose target does not run on this machine is to be loaded here (``slmc.load``,
    ``slmc run/generate/eval`` without ``--device``). ``files_checked`` counts the files the manifest lists."""

    def __init__(self, message: str, files_checked: int, reason: str):
        self.files_checked = files_checked
        self.reason = reason
        super().__init__(message)

    def to_json(self) -> dict[str, Any]:
        data = super().to_json()
        data.update(files_checked=self.files_checked, reason=self.reason)
        return data


class ModelTooLargeError(InputError):
    """The model's parameters (and, for a causal LM, its KV cache) exceed the target's memory."""

    def __init__(self, message: str, parameter_bytes: int, kv_cache_bytes: int, ram_bytes: int):
        self.parameter_bytes = parameter_bytes
        self.kv_cache_bytes = kv_cache_bytes
        self.ram_bytes = ram_bytes
        super().__init__(message)

    def to_json(self) -> dict[str, Any]:
        data = super().to_json()
        data.update(parameter_bytes=self.parameter_bytes, kv_cache_bytes=self.kv_cache_bytes, ram_bytes=self.ram_bytes)
        return data


class CompileError(SlmcError):
    """A valid input failed to compile (a pass, the lowering or the TVM build)."""


class PassError(CompileError):
    """A pass failed, or left an invalid graph. Names the pass, the passes before it and the node."""

    def __init__(self, pass_name: str, passes_before: list[str], message: str, node: str | None = None):
        self.pass_name = pass_name
        self.passes_before = list(passes_before)
        self.node = node
        before = ", ".join(passes_before) if passes_before else "none"
        at = f" at node '{node}'" if node else ""
        super().__init__(f"pass '{pass_name}' failed{at} (passes before it: {before}): {message}")

    def to_json(self) -> dict[str, Any]:
        data = super().to_json()
        data.update(pass_name=self.pass_name, passes_before=self.passes_before, node=self.node)
        return data


class NodeError(CompileError):
    """Raised inside a pass for a problem at one graph node; the pass manager adds the pass name."""

    def __init__(self, node: str, message: str):
        self.node = node
        self.detail = message
        super().__init__(f"node '{node}': {message}")


class TraceError(CompileError):
    """``torch.export`` could not trace the model into a graph."""


class LoweringError(CompileError):
    """The graph could not be exported or converted to TVM Relax."""


class UnsupportedOpError(LoweringError):
    """TVM's importer has no conversion for an operation: names the graph node, the op and where the
    model's source creates it (``location``: ``file:line in function``, or None if unknown)."""

    def __init__(self, message: str, node: str, op: str, location: str | None):
        self.node = node
        self.op = op
        self.location = location
        super().__init__(message)

    def to_json(self) -> dict[str, Any]:
        data = super().to_json()
        data.update(node=self.node, op=self.op, location=self.location)
        return data


class BuildError(CompileError):
    """TVM failed to build or export the library for the target."""


class ToolchainError(CompileError):
    """A toolchain needed to link the artifact for the target is missing."""


class VerificationError(SlmcError):
    """The artifact's outputs are outside the recipe's tolerance, or a quality gate is not met.

    A compile's error carries ``manifest`` (``slmc.artifact.manifest.Manifest``): what the staged,
    discarded artifact's manifest held, with the failed verification, so ``--report`` and
    ``--junit`` can still describe the compile; None where there is none (``slmc verify``, eval);
    ``timings`` the compile's seconds per stage up to the failure.
    """

    def __init__(self, message: str, verification: dict[str, Any] | None = None, manifest: Any = None):
        self.verification = verification or {}
        self.manifest = manifest
        self.timings: dict[str, float] = {}
        super().__init__(message)

    def to_json(self) -> dict[str, Any]:
        data = super().to_json()
        data["verification"] = self.verification
        return data


class BundleIntegrityError(SlmcError):
    """A deploy bundle's file differs from ``bundle.json`` (missing, other size or sha256): damaged or modified."""

    def __init__(self, message: str, problems: list[str] | None = None):
        self.problems = problems or []
        super().__init__(message)

    def to_json(self) -> dict[str, Any]:
        data = super().to_json()
        data["problems"] = self.problems
        return data


class ExecutionRequiredError(VerificationError):
    """The build requires its artifact executed (``--require-execution``, ``verify.require_execution``)
    and it was not, anywhere; the message says why (``verification.reason``)."""


class DeviceURLError(InputError):
    """A device URL (``--device``) is not of the form ``rpc://HOST:PORT``."""


class DeviceError(SlmcError):
    """A device (a TVM RPC server: docs/devices.md) failed to load or run an artifact. ``url`` names it.

    Exit 1: the input was valid, but verification on the device could not be done.
    """

    def __init__(self, url: str, message: str):
        self.url = url
        super().__init__(message)

    def to_json(self) -> dict[str, Any]:
        data = super().to_json()
        data["url"] = self.url
        return data


class DeviceConnectionError(DeviceError):
    """No TVM RPC session could be opened with the device at ``url`` (nothing listens, or no handshake)."""


class DeviceSetupError(ToolchainError):
    """The emulated arm64 board could not be prepared or started: a missing host package, a failed
    download or install, a port in use, a server that did not come up."""


class KernelCheckError(VerificationError):
    """A generated GPU kernel fails the compile-time check (slmc/backend/opencl_kernel_check.py): it exceeds a limit
    of the target descriptor (``limit`` names the field, e.g. ``limits.max_workgroup_size``), or the
    OpenCL compiler rejects it (``limit`` is ``opencl_compile``). ``kernel`` names the kernel."""

    def __init__(self, kernel: str, limit: str, message: str, verification: dict[str, Any] | None = None):
        self.kernel = kernel
        self.limit = limit
        super().__init__(message, verification)

    def to_json(self) -> dict[str, Any]:
        data = super().to_json()
        data.update(kernel=self.kernel, limit=self.limit)
        return data


class BitBudgetError(InputError):
    """``quantize.target_bits_per_weight`` cannot be met: the target supports none of the candidate
    settings, no candidate fits a layer, or the budget is below the ``minimum`` achievable bits per
    weight (every layer at its cheapest candidate). ``field`` names the recipe key."""

    def __init__(self, field: str, message: str, minimum: float | None = None):
        self.field = field
        self.minimum = minimum
        super().__init__(f"{field}: {message}")

    def to_json(self) -> dict[str, Any]:
        data = super().to_json()
        data.update(field=self.field, minimum_bits_per_weight=self.minimum)
        return data


class BudgetNotMetError(SlmcError):
    """``slmc search``: no candidate meets the budget. ``budgets`` names each limit (the CLI option,
    e.g. ``--max-size-bytes``) with its value and the best any candidate reached."""

    def __init__(self, message: str, budgets: list[dict[str, Any]]):
        self.budgets = budgets
        super().__init__(message)

    def to_json(self) -> dict[str, Any]:
        data = super().to_json()
        data["budgets"] = self.budgets
        return data


class Interrupted(SlmcError):
    """The user stopped the command (Ctrl-C, SIGINT). Whatever it was writing was not put in place:
    artifacts and cache entries are staged and renamed into place only when complete."""

    exit_code = EXIT_INTERRUPTED


# Lines of a TVM/torch exception text that are traceback frames, not the message.
_TRACEBACK_FRAME_PREFIXES = ("File ", "0:", "1:", "2:", "3:")


def exception_summary(exc: BaseException, limit: int = 8) -> str:
    """``exc`` as one short message for a typed error: its type name and at most ``limit`` of its
    non-empty lines, traceback frames (TVM's ``File ...`` / ``0: ...`` lines) left out, ``...`` when
    lines were cut. An exception with no text is summarized by its type name alone."""
    lines = [line for line in str(exc).strip().splitlines() if line.strip()]
    kept = [line for line in lines if not line.lstrip().startswith(_TRACEBACK_FRAME_PREFIXES)]
    text = "\n".join(kept[:limit]) + ("\n..." if len(kept) > limit else "")
    return f"{type(exc).__name__}: {text}" if kept else type(exc).__name__
