"""``report.json``: what a compile did, in a versioned schema (docs/reports.md, docs/reference/report.schema.json).

Built from the artifact's manifest (``slmc.artifact.manifest.Manifest``, whose types it reuses) alone (plus the compile's cache status and timings, and a
search's Pareto points when there are any), so a cache hit reports the same content as the
compile that stored it. ``SCHEMA_VERSION`` changes when a field is removed or changes meaning;
adding optional fields keeps it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from slmc.artifact.gpu_kernel_checks import GpuKernelChecks
from slmc.artifact.manifest import (CheckNotExecuted, GateResult, LayerSize, Manifest, ModelInfo, PassReport,
                                    PerplexityComparison, QualityMetrics)

SCHEMA_ID = "slmc-report"
SCHEMA_VERSION = 2  # 2: gates name themselves ``gate`` (as in the manifest), not ``name``
REPORT_JSON = "report.json"
REPORT_HTML = "report.html"
# numeric per-layer fields passes report in ``stats.layers`` that measure error or sensitivity
ERROR_FIELDS = ("output_error", "output_error_rtn", "gptq_loss", "sensitivity", "reconstruction_error")
# a pass whose ``stats.layers`` rows carry both re-encodes those layers' parameters (quantization):
# it stores them in fewer bits, it removes none, so the logical parameter count does not change
ENCODED_LAYER_FIELDS = ("parameters", "stored_bytes")


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class LayerError(_Model):
    """An error or sensitivity a pass measured for one layer (``passes[].stats.layers`` of the manifest)."""

    pass_name: str = Field(description="the pass that measured it")
    layer: str
    metric: str = Field(description=f"one of {', '.join(ERROR_FIELDS)}")
    value: float


class LayerDetail(_Model):
    """One row of the report's per-layer table: how a layer is stored and what that cost."""

    layer: str
    format: str = Field(description="how a pass stored it (``int4 g32 symmetric``), or ``as traced``")
    bits_per_weight: float | None = Field(None, description="stored bits per logical weight (null: not re-encoded)")
    bytes_before: int
    bytes_after: int
    error: float | None = Field(None, description="the error a pass measured for it (null: not measured)")
    error_metric: str | None = Field(None, description=f"which one: {', '.join(ERROR_FIELDS)}")


class EvalSummary(_Model):
    """What ``slmc eval --report`` measured: perplexity on a text and the comparison with ``--reference``."""

    text: str = Field(description="the text set or file evaluated on")
    perplexity: float | None = Field(None, description="of the artifact (causal LMs)")
    reference: str | None = Field(None, description="what it was compared with")
    reference_perplexity: float | None = None
    tokens_scored: int | None = None
    comparison: dict[str, float] = Field(default_factory=dict, description="logit error, top-1 agreement, KL, cosine")
    gates: list[GateResult] = Field(default_factory=list, description="the --gate options, measured")


class QualitySummary(_Model):
    """How accurate: the compressed model against the original, as the compile measured it (also
    without gates) and, after ``slmc eval --report``, on a held-out text."""

    compressed_vs_original: QualityMetrics | None = Field(None, description="cosine, top-1 agreement, max abs error")
    perplexity: PerplexityComparison | None = Field(None, description="when the recipe has a perplexity gate")
    evaluation: EvalSummary | None = Field(None, description="added by slmc eval --report")


class SpeedSummary(_Model):
    """How fast: the artifact's measured throughput (the manifest's ``speed`` record, fields of the same names)."""

    prefill_tokens_per_second: float | None = None
    decode_tokens_per_second: float | None = None
    detail: str = Field("", description="how it was measured")


class PassSummary(_Model):
    """One pass of the recipe as it ran."""

    name: str
    lossy: bool
    seconds: float
    nodes_before: int
    nodes_after: int
    weight_bytes_before: int
    weight_bytes_after: int
    skipped: int = Field(description="nodes or layers the pass left alone (reasons in the manifest)")


class VerificationSummary(_Model):
    """How the artifact was checked against eager execution and the original model."""

    executed: bool
    passed: bool
    how: str = Field("", description="what was run where, compared with what")
    reason: str = Field("", description="why it was not executed, if it was not")
    gates: list[GateResult] = Field(description="every executed check: artifact_vs_eager, decode, then each quality gate "
                                                "(where: host or artifact)")
    not_executed: list[CheckNotExecuted] = Field(default_factory=list,
                                                 description="checks that need the artifact executed and did not run, and why")
    gpu_kernels: GpuKernelChecks | None = Field(None, description="OpenCL kernels executed on PoCL or compiled only, per kernel "
                                                "(the manifest's verification.gpu_kernels)")


class ParetoPoint(_Model):
    """A candidate of ``slmc search`` (size and quality loss, both lower is better)."""

    label: str = Field(description="the candidate (a recipe name or its settings)")
    size_bytes: float
    error: float = Field(description="the search's quality loss (lower is better)")
    on_front: bool


class Report(_Model):
    """The top level of ``report.json``."""

    schema_id: str = Field(SCHEMA_ID, alias="schema", description=f"always {SCHEMA_ID!r}")
    schema_version: int = Field(SCHEMA_VERSION, description="changes when a field is removed or changes meaning")
    ok: bool = Field(description="an artifact was written and its verification passed")
    artifact: str | None = Field(description="the artifact directory (null: none was written)")
    model: ModelInfo
    target: str = Field(description="the target descriptor's name")
    versions: dict[str, str] = Field(description="slmc, tvm, torch, python versions of the compile (from the manifest)")
    weight_bytes_before: int = Field(description="bytes of the traced model's tensors")
    weight_bytes_after: int = Field(description="bytes of the artifact's weights file's tensors")
    files: dict[str, int] = Field(description="artifact file name -> bytes")
    layers: list[LayerSize] = Field(description="weight bytes per layer before and after the passes")
    layer_errors: list[LayerError] = Field(description="per-layer error or sensitivity the passes measured")
    parameters_before: int = Field(0, description="parameters of the traced model")
    parameters_after: int = Field(0, description="logical parameters after the passes: pruning removes some, "
                                  "quantization removes none (it stores them in fewer bits)")
    layer_table: list[LayerDetail] = Field(default_factory=list, description="per layer: format, bits, bytes, error")
    quality: QualitySummary = Field(default_factory=QualitySummary)
    speed: SpeedSummary | None = Field(None, description="null: not measured")
    passes: list[PassSummary] = Field(description="one entry per pass, in order")
    verification: VerificationSummary
    cache: dict[str, Any] = Field(default_factory=dict, description="status hit/miss/disabled, key, components")
    timings: dict[str, float] = Field(default_factory=dict, description="seconds per compile stage (this run)")
    search: list[ParetoPoint] = Field(default_factory=list, description="a search's candidates, if any")

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    def to_json(self) -> dict[str, Any]:
        return self.model_dump(mode="json", by_alias=True)


def report_schema() -> dict[str, Any]:
    """The JSON schema of ``report.json`` (committed as docs/reference/report.schema.json)."""
    schema = Report.model_json_schema(by_alias=True)
    schema["$id"] = f"https://slmc.invalid/schemas/{SCHEMA_ID}-v{SCHEMA_VERSION}.json"
    return schema


def layer_sizes(before: dict[str, Any], after: dict[str, Any]) -> list[dict[str, Any]]:
    """Bytes per layer before and after the passes, from ``{attribute path: tensor}`` maps.

    A layer is the attribute path without its last component (``a.b.weight`` and ``a.b.qweight``
    both belong to ``a.b``); layers appear in the order the original graph reads them, then the
    ones passes created. This is what the manifest records as ``layers``.
    """
    def group(tensors: dict[str, Any]) -> dict[str, int]:
        sizes: dict[str, int] = {}
        for path, t in tensors.items():
            layer = path.rsplit(".", 1)[0] if "." in path else path
            sizes[layer] = sizes.get(layer, 0) + int(t.numel() * t.element_size())
        return sizes

    old, new = group(before), group(after)
    return [{"layer": name, "bytes_before": old.get(name, 0), "bytes_after": new.get(name, 0)}
            for name in list(old) + [n for n in new if n not in old]]


def _layer_errors(passes: list[PassReport]) -> list[LayerError]:
    found = []
    for p in passes:
        layers = p.stats.get("layers")
        for row in layers if isinstance(layers, list) else []:
            if not isinstance(row, dict) or "layer" not in row:
                continue
            for metric in ERROR_FIELDS:
                if isinstance(row.get(metric), (int, float)):
                    found.append(LayerError(pass_name=p.name, layer=str(row["layer"]), metric=metric, value=float(row[metric])))
    return found


def logical_parameters(parameters: int, passes: list[PassReport]) -> int:
    """``parameters`` after ``passes``, counting weights, not stored tensor elements: a pass that
    re-encodes layers (its ``stats.layers`` rows carry ``ENCODED_LAYER_FIELDS``) keeps the count,
    any other pass changes it by its own before/after difference (pruning, factorization)."""
    count = parameters
    for p in passes:
        layers = p.stats.get("layers")
        rows = layers if isinstance(layers, list) else []
        encodes = any(isinstance(row, dict) and all(f in row for f in ENCODED_LAYER_FIELDS) for row in rows)
        if not encodes:
            count += p.after.parameters - p.before.parameters
    return count


def layer_table(layers: list[LayerSize], passes: list[PassReport], errors: list[LayerError]) -> list[LayerDetail]:
    """One row per layer of the manifest: its format and bits from the last pass that re-encoded it,
    its error from the last pass that measured one (``ERROR_FIELDS`` order within a pass)."""
    formats: dict[str, tuple[str, float | None]] = {}
    for p in passes:
        rows = p.stats.get("layers")
        for row in rows if isinstance(rows, list) else []:
            if isinstance(row, dict) and "layer" in row and "format" in row:
                bits = row.get("bits_per_weight")
                formats[str(row["layer"])] = (str(row["format"]), float(bits) if isinstance(bits, (int, float)) else None)
    measured: dict[str, LayerError] = {}
    for e in errors:
        if e.layer not in measured or measured[e.layer].pass_name != e.pass_name:
            measured[e.layer] = e
    table = []
    for size in layers:
        fmt, bits = formats.get(size.layer, ("as traced", None))
        error = measured.get(size.layer)
        table.append(LayerDetail(layer=size.layer, format=fmt, bits_per_weight=bits, bytes_before=size.bytes_before,
                                 bytes_after=size.bytes_after, error=error.value if error else None,
                                 error_metric=error.metric if error else None))
    return table


def _speed(manifest: Manifest) -> SpeedSummary | None:
    """The manifest's measured speed, if this manifest has such a record (else: not measured)."""
    record = getattr(manifest, "speed", None)
    if record is None:
        return None
    data = record.model_dump() if isinstance(record, BaseModel) else dict(record)
    return SpeedSummary.model_validate({k: data[k] for k in SpeedSummary.model_fields if k in data})


def build_report(manifest: Manifest, artifact: str | Path | None, cache: dict[str, Any] | None = None,
                 timings: dict[str, float] | None = None, search: list[dict[str, Any]] | None = None) -> Report:
    """The report of one compile from its manifest (see the module docstring)."""
    v = manifest.verification
    layers = list(manifest.layers or [])
    passes = manifest.passes
    before = passes[0].before.weight_bytes if passes else manifest.weights.bytes
    errors = _layer_errors(passes)
    return Report(
        ok=v.passed and artifact is not None,
        artifact=str(artifact) if artifact is not None else None,
        model=manifest.model,
        target=manifest.target.name,
        versions=manifest.versions.model_dump(),
        weight_bytes_before=sum(layer.bytes_before for layer in layers) if layers else before,
        weight_bytes_after=manifest.weights.bytes,
        files={name: e.size for name, e in manifest.files.items()},
        layers=layers,
        layer_errors=errors,
        parameters_before=manifest.model.parameters,
        parameters_after=logical_parameters(manifest.model.parameters, passes),
        layer_table=layer_table(layers, passes, errors),
        quality=QualitySummary(compressed_vs_original=v.compressed_vs_original, perplexity=v.perplexity),
        speed=_speed(manifest),
        passes=[PassSummary(name=p.name, lossy=p.lossy, seconds=p.seconds, nodes_before=p.before.nodes,
                            nodes_after=p.after.nodes, weight_bytes_before=p.before.weight_bytes,
                            weight_bytes_after=p.after.weight_bytes, skipped=len(p.skipped)) for p in passes],
        verification=VerificationSummary(executed=v.executed, passed=v.passed, how=v.how or "", reason=v.reason or "",
                                         gates=v.checks(), not_executed=v.not_executed, gpu_kernels=v.gpu_kernels),
        cache=cache or {"status": "disabled"},
        timings=timings or {},
        search=[ParetoPoint(**p) for p in search or []],
    )


def evaluation_summary(result: dict[str, Any]) -> EvalSummary:
    """An ``slmc eval`` result (the dict its ``--json`` prints) as the report's ``quality.evaluation``."""
    reference = result.get("reference") or {}
    comparison = result.get("comparison") or {}
    return EvalSummary(text=str(result["text"]), perplexity=result.get("perplexity"), reference=reference.get("subject"),
                       reference_perplexity=reference.get("perplexity"), tokens_scored=result.get("tokens_scored"),
                       comparison={k: float(v) for k, v in comparison.items() if isinstance(v, (int, float))},
                       gates=[GateResult.model_validate(g) for g in result.get("gates", [])])


def with_evaluation(report: Report, result: dict[str, Any]) -> Report:
    """``report`` with an ``slmc eval`` result added to its quality section."""
    quality = report.quality.model_copy(update={"evaluation": evaluation_summary(result)})
    return report.model_copy(update={"quality": quality})
