"""``manifest.json``: the typed, versioned record of one artifact (docs/reference/manifest.schema.json).

``Manifest`` is what the compile driver writes (``new_manifest`` then ``with_verification``, for
fx and ONNX models alike) and what every reader gets back from
``slmc.artifact.layout.read_manifest``: unknown keys are refused, every section is typed.
Free-form reports stay ``dict[str, Any]``: a pass's ``stats`` and ``config``, the recipe as
normalized, TVM's target dict, the tuning record, the NPU partition report and the OpenCL
per-kernel records.

``FORMAT_VERSION`` changes whenever the on-disk shape changes; a manifest of another version is
an ``ArtifactError`` saying which slmc wrote it (recompile the model).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from slmc.artifact.gpu_kernel_checks import GpuKernelChecks
from slmc.artifact.npu_toolchain import NpuToolchain
from slmc.errors import ArtifactError
from slmc.graph.kv_cache import KVCacheSpec
from slmc.spec.kv_cache_dtype import KvCacheDtype
from slmc.spec.target import TargetDescriptor

# 2: every section typed (this module); optional sections and fields are written as null instead of left out
# 3: verification says per check where it was measured (``GateResult.where``) and which checks did not run
#    (``Verification.not_executed``); gates are measured on the host when the artifact is not executed
# 4: weights.aliases: a parameter whose bytes equal another's is stored once (issue 22); kv_cache.mode/reason/last_position: the resident KV-cache contract
FORMAT_VERSION = 4


class ManifestModel(BaseModel):
    """Base of every manifest section: unknown keys forbidden, immutable once built."""

    model_config = ConfigDict(extra="forbid", frozen=True, ser_json_inf_nan="constants")  # NaN stays NaN, as json.dumps writes it


# --- what the artifact holds ---------------------------------------------------------------------


class Versions(ManifestModel):
    """Versions of the software that compiled the artifact."""

    slmc: str
    tvm: str
    torch: str
    python: str


class ModelInfo(ManifestModel):
    """The compiled model."""

    name: str
    fingerprint: str = Field(description="sha256 of the traced graph's code and weights (of the ONNX file for ONNX models)")
    compiled_fingerprint: str = Field(description="the same after the passes")
    parameters: int
    compiled_parameters: int
    weight_bytes: int | None = Field(None, description="bytes of the model's weights before the passes (null: not recorded)")
    format: Literal["onnx"] | None = Field(None, description="'onnx' for a model compiled from an ONNX file, else null")
    source: str | None = Field(None, description="the ONNX file compiled (ONNX models only)")


class TensorSignature(ManifestModel):
    """One input or output of the compiled function."""

    name: str
    dtype: str
    shape: list[int | str] = Field(description="sizes; a dynamic size is the name of its dimension or an expression of names")


class Signature(ManifestModel):
    """The compiled function's inputs and outputs."""

    inputs: list[TensorSignature]
    outputs: list[TensorSignature]
    dynamic_dims: dict[str, list[int | None]] = Field(
        description="dimension name -> [min, max] (max null: not declared, as in ONNX models)")


class LayerSize(ManifestModel):
    """One layer's weight bytes."""

    layer: str = Field(description="module path of the tensors (``blocks.0.attn.q_proj``)")
    bytes_before: int = Field(description="bytes of the layer's tensors in the traced model (0: created by a pass)")
    bytes_after: int = Field(description="bytes of its tensors in the graph after the passes (0: removed)")


class GraphSummary(ManifestModel):
    """Size of the graph before or after a pass."""

    nodes: int
    parameters: int
    weight_bytes: int


class SkippedNode(ManifestModel):
    """A node or layer a pass left alone, and why."""

    node: str
    reason: str


class PassReport(ManifestModel):
    """One pass of the recipe as it ran (``slmc.graph.pass_manager.run_passes``)."""

    name: str
    config: dict[str, Any] = Field(description="the pass's validated config")
    lossy: bool
    seconds: float
    before: GraphSummary
    after: GraphSummary
    stats: dict[str, Any] = Field(description="what the pass measured and changed (free-form per pass)")
    skipped: list[SkippedNode]


class KVCacheInfo(ManifestModel):
    """The compiled graph's KV cache (causal LMs) and the contract the library follows (``slmc.graph.kv_cache``)."""

    layers: int
    kv_heads: int
    head_dim: int
    max_context: int
    mode: Literal["resident", "copy"] = Field(
        description="resident: the library also has `resident_all`, which appends to a cache allocated once "
                    "[L, 1, H_kv, max_context + 1, D] in place (slmc.schedules.resident_kv); copy: only `main`, "
                    "which takes the whole cache in and returns a new one each step")
    reason: str | None = Field(None, description="why the cache is not resident (mode copy)")
    last_position: bool = Field(False, description="the library also has `resident_last`: the logits of the last new "
                                                    "token only, for generation (slmc.schedules.last_position)")
    dtype: KvCacheDtype = Field(
        "float32", description="dtype of the resident cache buffers (recipe kv_cache.dtype); int8: the resident functions "
                               "take cache_keys, cache_values int8 [L, 1, H_kv, max_context + 1, D] and key_scales, "
                               "value_scales float32 [L, 1, H_kv, max_context + 1] (one symmetric scale per layer, head and "
                               "slot: x = q * scale), before the past length (slmc.schedules.resident_kv); main keeps the "
                               "float32 copy contract")
    bytes_per_token: int | None = Field(None, description="bytes one token adds to the stored cache (keys, values and "
                                                          "their scales)")

    def shape(self) -> dict[str, int]:
        """The cache's shape fields (``slmc.graph.kv_cache.KVCacheSpec``'s)."""
        return {"layers": self.layers, "kv_heads": self.kv_heads, "head_dim": self.head_dim, "max_context": self.max_context}

    @model_validator(mode="after")
    def _quantized_cache_is_resident(self) -> KVCacheInfo:
        # main's copy contract passes float32 caches; only the resident functions store another dtype (slmc-run
        # refuses the same combination: slmc/native/runtime/manifest.cpp)
        if self.dtype != "float32" and self.mode != "resident":
            raise ValueError(f"kv_cache.dtype {self.dtype} needs mode resident, found mode {self.mode}")
        return self

    def spec(self) -> KVCacheSpec:
        """The cache as the runtimes allocate it: the shape, and the stored dtype of the resident buffers."""
        return KVCacheSpec(**self.shape(), dtype=self.dtype)


class ContextInfo(ManifestModel):
    """How the context length was chosen (``slmc.models.context_length.fit_context``)."""

    max_context: int
    limits: dict[str, int] = Field(description="model / target_memory / recipe -> tokens each allows")
    decided_by: list[str] = Field(description="the limits equal to max_context")
    kv_bytes_per_token: int
    kv_budget_bytes: int
    kv_budget_source: str


class WeightsInfo(ManifestModel):
    """The weights file: parameter order the library expects, count, bytes, dtypes, and which
    parameters share one stored tensor."""

    order: list[str]
    count: int
    bytes: int = Field(description="bytes stored in the weights file (a tensor named in aliases is stored once)")
    dtypes: list[str]
    aliases: dict[str, str] = Field(
        default_factory=dict,
        description="parameter name -> the name of the stored tensor holding its identical bytes (same dtype and shape); "
                    "a parameter named here has no tensor of its own in the weights file (format_version 4)")


class TokenizerEntry(ManifestModel):
    """The tokenizer the artifact carries (``slmc.data.tokenizer.save_tokenizer``)."""

    kind: Literal["bytes", "huggingface"]
    file: str | None = Field(None, description="the stored tokenizer file (huggingface)")
    bos_token: str | None = None
    eos_token: str | None = Field(None, description="ends generation (tokenizer_config.json's eos_token), if the model has one")


class FileEntry(ManifestModel):
    """One file of the artifact."""

    sha256: str
    size: int = Field(description="bytes")


# --- verification --------------------------------------------------------------------------------


HOST = "host"  # GateResult.where: the compressed fx graph run eagerly on the compiling machine
ARTIFACT = "artifact"  # GateResult.where: the artifact itself, natively or on a device (Verification.execution)


class GateResult(ManifestModel):
    """One verification check or quality gate that was executed (each a JUnit test case with ``--junit``)."""

    gate: str = Field(description="gate name: a recipe gate (min_cosine, ...), artifact_vs_eager or decode")
    passed: bool
    measured: float | None = None
    threshold: float | None = None
    detail: str = ""
    where: Literal["host", "artifact"] | None = Field(
        None, description="host: the compressed fx graph run eagerly against the original on the compiling machine; "
                          "artifact: the compiled artifact (natively or on the device of verification.execution)")


class CheckNotExecuted(ManifestModel):
    """A check that needs the artifact executed and did not run (a skipped JUnit test case with ``--junit``)."""

    check: str = Field(description="artifact_vs_eager, decode, or verification (everything: verification disabled)")
    reason: str


class NumericComparison(ManifestModel):
    """Outputs compared elementwise (``|a - b| <= atol + rtol * |b|``); only ``within_tolerance``
    and ``error`` when the shapes differ."""

    within_tolerance: bool
    max_abs_error: float | None = None
    max_rel_error: float | None = None
    elements_compared: int | None = None
    elements_out_of_tolerance: int | None = None
    atol: float | None = None
    rtol: float | None = None
    error: str | None = Field(None, description="why the outputs could not be compared (shape mismatch)")


class QualityMetrics(ManifestModel):
    """The compressed graph against the original model."""

    cosine: float
    min_row_cosine: float
    top1_agreement: float
    max_abs_error: float


class TokenFlip(ManifestModel):
    """A decode step where the artifact's greedy token differs from eager's (both after eager's history)."""

    step: int = Field(description="0: the token after the prompt, k: after k more of eager's tokens")
    eager_token: int
    artifact_token: int
    eager_margin: float = Field(description="eager's logit of its own token minus its logit of the artifact's token")
    allowed_margin: float = Field(description="the two tokens' tolerances added, ``2 atol + rtol (|l_eager| + |l_artifact|)`` "
                                              "on eager's logits: within it, two logits each within tolerance may swap order")
    accepted: bool = Field(description="eager_margin <= allowed_margin: a near tie the tolerance permits to flip (implied "
                                       "when every logit is within tolerance; false only beside a failed logit check)")


class DecodeComparison(ManifestModel):
    """Greedy decoding through the KV cache, artifact against eager, teacher-forced on eager's tokens.

    Eager decodes greedily from a fixed prompt; the artifact is fed the same tokens, so every step's
    logits are compared after the same history (elementwise ``|a - b| <= atol + rtol * |b|``). The
    artifact's greedy token may differ from eager's only at a near tie: where eager's logits of the two
    tokens are closer than their tolerances added (``TokenFlip.allowed_margin``), which logits within the
    tolerance may reorder. A flip with a clearer margin implies a logit outside its tolerance: the logit
    check decides, and each flip is listed with its margins so the reader sees where greedy decoding diverged."""

    steps: int
    max_abs_error: float
    same_tokens: bool = Field(description="the artifact's greedy token equals eager's at every step")
    atol: float
    rtol: float
    within_tolerance: bool = Field(description="every step's logits within atol/rtol and every flip accepted")
    near_ties: int = Field(0, description="steps where eager's top-2 logit margin is within the two tokens' tolerances "
                                          "added: a flip is accepted there")
    flips: list[TokenFlip] = Field(default_factory=list, description="every step where the greedy tokens differ")

    def summary(self) -> str:
        """The tokens' agreement in one phrase (for the checks' detail and the failure message)."""
        if self.same_tokens:
            return f"same tokens ({self.near_ties} near ties)"
        rejected = [f for f in self.flips if not f.accepted]
        text = f"{len(self.flips)} token flips, {len(self.flips) - len(rejected)} within the tolerance ({self.near_ties} near ties)"
        return text + "".join(
            f"; step {f.step}: artifact token {f.artifact_token}, eager {f.eager_token}, eager's margin {f.eager_margin:.3g} "
            f"> {f.allowed_margin:.3g} allowed" for f in rejected)


class PerplexityComparison(ManifestModel):
    """Perplexity of the artifact and of the original model on the same tokens."""

    original: float
    artifact: float = Field(description="the artifact's perplexity; where the artifact was not executed, the compressed "
                                        "graph's run eagerly on the host (the gate's ``where`` says which)")
    increase: float
    tokens_scored: int
    window: int
    stride: int


class DecodeSpeed(ManifestModel):
    """Greedy decode speed on the compiling host: the original eager model against the artifact.
    ``measured`` false: ``reason`` says why (the artifact does not run here, not a causal LM)."""

    measured: bool
    reason: str | None = None
    how: str | None = Field(None, description="what was timed, where")
    prompt_tokens: int | None = None
    new_tokens: int | None = Field(None, description="tokens generated by each, one decode call per token")
    original_tokens_per_s: float | None = Field(None, description="eager PyTorch, the model before the passes")
    artifact_tokens_per_s: float | None = None


class NativeExecution(ManifestModel):
    """Verification executed the artifact in the compiling process (``slmc.load``)."""

    where: Literal["native"]
    device: None = None
    unused_device: str | None = Field(None, description="a device given for a target that runs here")


class RpcExecution(ManifestModel):
    """Verification executed the artifact on a TVM RPC server (``slmc.device.identify`` says what served it)."""

    where: Literal["rpc"]
    device: str = Field(description="the rpc:// URL")
    emulated: bool | None = Field(description="true: a qemu process on this machine served it; null: slmc cannot tell")
    emulator: str | None
    emulated_cpu: str | None
    server_pid: int | None
    server_program: str | None
    note: str


ExecutionRecord = Annotated[NativeExecution | RpcExecution, Field(discriminator="where")]


class RecheckEntry(ManifestModel):
    """The stored samples ``slmc verify`` re-runs (``slmc.verify.artifact_check.save_reference``)."""

    file: str
    samples: int
    inputs: int
    outputs: int
    atol: float
    rtol: float
    samples_verified_at_compile: int


class IntegerComparison(ManifestModel):
    """Integer outputs compared in LSBs."""

    compared: str
    elements: int
    max_abs_lsb: int
    elements_differing: int
    fraction_equal: float


class NpuCheck(ManifestModel):
    """The NPU regions' integer arithmetic cross-checked on the host (``slmc.npu.offload``)."""

    executed: bool
    passed: bool
    how: str | None = None
    reason: str | None = None
    tolerance: dict[str, int | float] | None = None
    tvm_vs_numpy: IntegerComparison | None = None
    tvm_vs_onnxruntime: IntegerComparison | None = None
    tosa_reference: IntegerComparison | None = Field(
        None, description="slmc's integer kernels vs the TOSA reference model executing each partition's TOSA graph (exact)")


class OpenCLCheck(ManifestModel):
    """Every GPU kernel compiled by an OpenCL compiler and checked against the descriptor's limits
    (``slmc.backend.opencl_kernel_check``)."""

    compiler: str
    compiler_device: str
    kernels: int
    kernels_compiled: int
    kernels_compiled_by_pocl: int
    kernels_compiled_by_clang: list[dict[str, str]]
    not_compiled: list[dict[str, str]]
    limits: dict[str, Any]
    largest_workgroup: int
    largest_local_memory_bytes: int
    kernels_using_images: int
    violations: list[dict[str, Any]]
    per_kernel: list[dict[str, Any]] = Field(description="one record per kernel (free-form)")


PENDING = "pending"


class Verification(ManifestModel):
    """How the artifact was checked. ``executed``: the artifact itself was executed (natively or on
    a device); false: ``reason`` says why (``pending`` while the compile that writes it has not
    finished), and ``not_executed`` lists the checks that need it. ``passed``: every check that was
    executed passed (``gates`` say where each was measured), never more."""

    executed: bool = Field(description="the artifact itself was executed, natively or through TVM RPC")
    passed: bool = Field(description="every executed check passed (the checks in not_executed did not run)")
    reason: str | None = None
    not_executed: list[CheckNotExecuted] = Field(default_factory=list,
                                                 description="checks that need the artifact executed and did not run, and why")
    how: str | None = Field(None, description="what was run where, compared with what")
    samples: int | None = None
    device: str | None = None
    execution: ExecutionRecord | None = None
    artifact_vs_eager: NumericComparison | None = None
    compressed_vs_original: QualityMetrics | None = None
    gates: list[GateResult] = Field(default_factory=list, description="the recipe's quality gates, measured")
    decode: DecodeComparison | None = None
    perplexity: PerplexityComparison | None = None
    speed: DecodeSpeed | None = Field(None, description="decode tokens/s before and after, measured on the host (causal LMs)")
    recheck: RecheckEntry | None = None
    tolerance: str | None = Field(None, description="why the tolerance differs from the recipe's, if it does")
    opencl: OpenCLCheck | None = None
    gpu_kernels: GpuKernelChecks | None = Field(None, description="OpenCL kernels executed on PoCL and compared with their "
                                                "host build, or reported compiled-only (slmc.backend.opencl_kernel_run)")
    npu: NpuCheck | None = None
    backend: dict[str, Any] = Field(default_factory=dict, description="checks of a target kind's backend that have no typed "
                                    "field (a kind added as one module, slmc.backend.kinds)")

    @classmethod
    def skipped(cls, reason: str, passed: bool = True) -> Verification:
        """Nothing was checked (verification disabled, or still pending): one not-executed entry."""
        return cls(executed=False, reason=reason, passed=passed, not_executed=[CheckNotExecuted(check="verification", reason=reason)])

    @property
    def pending(self) -> bool:
        return not self.executed and self.reason == PENDING

    def checks(self) -> list[GateResult]:
        """Every check as a gate: the numeric comparison, decode, then each quality gate."""
        found = []
        numeric = self.artifact_vs_eager
        if numeric is not None:
            found.append(GateResult(gate="artifact_vs_eager", passed=numeric.within_tolerance, measured=numeric.max_abs_error,
                                    threshold=numeric.atol, detail=numeric.error or f"atol {numeric.atol}, rtol {numeric.rtol}",
                                    where=ARTIFACT))
        decode = self.decode
        if decode is not None:
            found.append(GateResult(gate="decode", passed=decode.within_tolerance, measured=decode.max_abs_error,
                                    detail=f"{decode.steps} greedy steps through the KV cache on eager's tokens, {decode.summary()}",
                                    where=ARTIFACT))
        return found + list(self.gates)

    def failure_message(self) -> str:
        """Every failed check, in one message."""
        failures = []
        numeric = self.artifact_vs_eager
        if numeric is not None and not numeric.within_tolerance:
            failures.append("the artifact's outputs differ from eager: " + (numeric.error or (
                f"max abs error {numeric.max_abs_error:.3g} with {numeric.elements_out_of_tolerance} of "
                f"{numeric.elements_compared} elements outside atol={numeric.atol:g}, rtol={numeric.rtol:g}")))
        decode = self.decode
        if decode is not None and not decode.within_tolerance:
            failures.append(f"KV-cache decode differs from eager: max abs logit error {decode.max_abs_error:.3g} "
                            f"over {decode.steps} steps (atol={decode.atol:g}, rtol={decode.rtol:g}), {decode.summary()}")
        failures.extend(f"quality gate {g.gate} not met: measured {g.measured:.6g}, threshold {g.threshold:g}"
                        + (f" ({g.detail})" if g.detail else "") for g in self.gates if not g.passed)
        if self.npu is not None and self.npu.executed and not self.npu.passed:
            failures.append("the NPU regions' integer cross-check failed (verification.npu)")
        return "verification failed: " + "; ".join(failures)


# --- the manifest --------------------------------------------------------------------------------


class CompiledGraph(ManifestModel):
    """What the compile path knows about the model it compiled (fx graph or ONNX file)."""

    model: ModelInfo
    signature: Signature
    task: str = Field(description="causal-lm, embedding, generic, ...")
    passes: list[PassReport] = Field(description="one entry per pass, in order (none for ONNX models)")
    lowering_notes: list[str]
    layers: list[LayerSize] | None = Field(None, description="weight bytes per layer before and after the passes")
    tuning: dict[str, Any] | None = Field(None, description="kernels scheduled from the tuning database (slmc.backend.tuning_db)")
    kv_cache: KVCacheInfo | None = Field(None, description="the compiled graph's KV cache (causal LMs)")
    context: ContextInfo | None = None
    npu: dict[str, Any] | None = Field(None, description="the NPU partition report (NPU targets; also npu_partitions.json)")
    npu_toolchain: NpuToolchain | None = Field(None, description="the NPU partitions through Arm's TOSA tools and Vela "
                                               "(NPU targets with npu.tosa_profile)")
    backend: dict[str, Any] = Field(default_factory=dict, description="what a target kind's backend records that has no "
                                    "typed field (a kind added as one module, slmc.backend.kinds)")
    recipe_choice: str | None = Field(None, description="which built-in recipe a compile given none used, and why "
                                      "(slmc.driver.default_recipe); null: a recipe was given")


class Manifest(CompiledGraph):
    """The top level of ``manifest.json``."""

    format_version: Literal[4] = Field(description="changes whenever the on-disk shape changes")
    versions: Versions
    recipe: dict[str, Any] = Field(description="the recipe with every default filled in (slmc.spec.recipe.Recipe.normalized)")
    target: TargetDescriptor
    tvm_target: dict[str, Any] = Field(description="the TVM target the library was built for")
    weights: WeightsInfo
    tokenizer: TokenizerEntry | None
    verification: Verification
    files: dict[str, FileEntry] = Field(description="every file of the artifact but the manifest -> sha256 and size")

    def to_json(self) -> dict[str, Any]:
        return self.model_dump(mode="json")


def new_manifest(compiled: CompiledGraph, *, versions: Versions, recipe: dict[str, Any], target: TargetDescriptor,
                 weights: WeightsInfo, tokenizer: TokenizerEntry | None, files: dict[str, FileEntry]) -> Manifest:
    """The manifest of a staged artifact whose verification is still pending (``Verification.pending``)."""
    return Manifest(format_version=FORMAT_VERSION, versions=versions, recipe=recipe, target=target,
                    tvm_target=target.tvm_dict(), weights=weights, tokenizer=tokenizer, files=files,
                    verification=Verification.skipped(PENDING, passed=False), **dict(compiled))


def manifest_schema() -> dict[str, Any]:
    """The JSON schema of ``manifest.json`` (committed as docs/reference/manifest.schema.json)."""
    schema = Manifest.model_json_schema()
    schema["$id"] = f"https://slmc.invalid/schemas/slmc-manifest-v{FORMAT_VERSION}.json"
    return schema


def manifest_text(manifest: Manifest) -> str:
    return json.dumps(manifest.to_json(), indent=2, sort_keys=True) + "\n"


def parse_manifest(text: str, path: Path) -> Manifest:
    """The manifest in ``text`` (read from ``path``); ``ArtifactError`` naming the file and each bad field."""
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ArtifactError(f"{path} is not valid JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise ArtifactError(f"{path}: a manifest is a JSON object, found {type(data).__name__}")
    version = data.get("format_version")
    if version != FORMAT_VERSION:
        if isinstance(version, int) and not isinstance(version, bool):
            who = "an older" if version < FORMAT_VERSION else "a newer"
            raise ArtifactError(f"{path}: manifest format_version {version} was written by {who} slmc; this slmc reads "
                                f"format_version {FORMAT_VERSION} (compile the model again with this slmc)")
        raise ArtifactError(f"{path}: unsupported manifest format_version {version!r}, expected {FORMAT_VERSION}")
    try:
        return Manifest.model_validate(data)
    except ValidationError as exc:
        problems = [f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors(include_url=False)]
        shown = "; ".join(problems[:5]) + (f"; ... {len(problems) - 5} more" if len(problems) > 5 else "")
        raise ArtifactError(f"{path} is not a valid slmc manifest: {shown}") from exc
