"""The manifest's ``npu_toolchain``: what Arm's tools made of each NPU partition (``slmc.npu.toolchain``).

Per partition: its TOSA flatbuffer (``tosa-tools``' serializer), Vela's summary of its compilation
(an *estimate* from Vela's performance model: cycles, inference time, SRAM/flash/DRAM used, per-op
placement) beside slmc's own roofline estimate (``slmc.npu.report``) with their ratio, or Vela's
refusal with its reason. The bit-exact comparison with the TOSA reference model (*executed*) is in
``verification.npu.tosa_reference``.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class _Section(BaseModel):
    # the configuration of slmc.artifact.manifest.ManifestModel (manifest.py imports this module, so not from there)
    model_config = ConfigDict(extra="forbid", frozen=True, ser_json_inf_nan="constants")


class VelaOperator(_Section):
    """One operator of Vela's per-layer table."""

    operator: str
    placement: str = Field(description="NPU or CPU, as Vela placed it")
    cycles: int
    macs: int
    name: str


class VelaSummary(_Section):
    """Vela's summary of one compiled partition (its summary CSV); estimates, not measurements."""

    cycles_total: int
    cycles_npu: int
    inference_time_s: float
    nn_macs: int
    sram_used_bytes: int
    dram_used_bytes: int
    flash_used_bytes: int
    npu_operators: int
    cpu_operators: int
    weights_storage_area: str
    operators: list[VelaOperator]


class VelaRefusal(_Section):
    """An operator Vela could not run on the NPU: Vela's message and Vela's documented constraints for it
    (``slmc.npu.vela_constraints``: Vela 5.2's Regor names the operator, not the failed check)."""

    partition: int
    layer: str
    tosa_operators: list[str]
    operator: str | None = Field(None, description="the operator Vela named (its internal op name), if it named one")
    tosa_operator: str | None = Field(None, description="the graph's TOSA operator that Vela's operator name matches")
    supported_by_vela: bool | None = Field(
        None, description="whether Vela's supported-operators report lists the TOSA operator for this accelerator "
                          "(false: never supported; true: a constraint in vela_constraints is not met; null: not known)")
    vela_constraints: list[str] = Field(
        default_factory=list, description="Vela's constraints for the operator on this accelerator family, from "
                                          "`vela --supported-ops-report`")
    vela_message: str | None = Field(None, description="Vela's own message, verbatim")
    reason: str = Field(description="Vela's message with the operator's support and constraints on this accelerator")


class NpuPartitionTools(_Section):
    """One partition through the TOSA tools and Vela."""

    index: int
    layer: str
    rows: int = Field(description="rows (tokens) of the TOSA graph: the shape Vela compiled")
    tosa_file: str
    tosa_operators: list[str]
    vela_file: str | None = Field(None, description="Vela's output (TFLite carrying the Ethos-U command stream)")
    vela: VelaSummary | None = None
    slmc_estimated_cycles: int = Field(description="slmc's roofline estimate at the same rows (slmc.npu.report)")
    vela_to_slmc_cycles: float | None = Field(None, description="Vela's cycles_total / slmc's estimate")


class NpuToolchainTotals(_Section):
    """Sums over the partitions Vela compiled, and the MAC fraction on the NPU."""

    vela_cycles: int
    vela_inference_time_s: float
    slmc_estimated_cycles: int
    vela_to_slmc_cycles: float | None
    max_sram_used_bytes: int
    npu_macs: int = Field(description="MACs per token of the partitions Vela compiled")
    model_macs: int = Field(description="MACs per token of every linear-like op and attention matmul (slmc.npu.macs)")
    attention_macs: int = Field(0, description="of model_macs: the attention matmuls' (activation x activation, on "
                                               "the CPU), at attention_context_tokens keys")
    attention_context_tokens: int | None = Field(
        None, description="the keys a token attends to in attention_macs: the partition report's totals.tokens (the "
                          "calibration samples' sequence length, at which the partitions are compiled and verified)")
    npu_mac_fraction: float = Field(description="npu_macs / model_macs")


class NpuToolchain(_Section):
    """TOSA lowering and Vela compilation of the NPU partitions."""

    tosa_tools: str = Field(description="tosa-tools version (serializer and reference model)")
    tosa_profile: str
    tosa_version: str
    vela: str | None = Field(None, description="ethos-u-vela version; null: the target names no Vela configuration")
    accelerator_config: str | None = None
    system_config: str | None = None
    memory_mode: str | None = None
    partitions: list[NpuPartitionTools]
    refusals: list[VelaRefusal] = Field(default_factory=list)
    totals: NpuToolchainTotals | None = None
