"""Tensor intrinsics for one int8 weight tile: ``C[16] += W[16, 4] . x[4]``, int32 lanes.

The description is the body of ``slmc.quantization.tvm_kernels``' tiled ``w8a8_linear`` matmul:
one tile is 16 output channels x 4 consecutive inputs, stored contiguously (64 bytes), and the 4
activation codes are broadcast to every channel; ``C`` is the kernel's accumulator in registers.
Implementations, by the target's int8 dot-product feature (``compute.int8_dot`` of the descriptor):

- ``avx512_vnni``: ``vpdpbusd zmm`` multiplies unsigned by signed bytes (groups of 4 summed into
  int32). The weights are the unsigned operand with their sign bit flipped (``w ^ 0x80 = w + 128``,
  one ``xor`` per 64 bytes), the codes the signed one, and ``128 * (x0 + x1 + x2 + x3)`` (one more
  ``vpdpbusd`` of ``0x80`` bytes with the codes: the same for every tile of a row and step, so LLVM
  computes it once for the unrolled tiles) is subtracted: exactly the signed int32 sum.
- ``avx_vnni``: the same on two ``ymm`` halves (VEX-encoded ``vpdpbusd``, Alder Lake, Zen 5).
- ``dotprod`` (Armv8.2-A): four ``sdot`` (signed x signed bytes, groups of 4): no correction.

``NONNEGATIVE_INTRINSICS``: the same tile for weights known to lie in ``[0, 127]`` (w4a8's unsigned int4
codes, ``slmc.quantization.w4a8_kernel``): ``vpdpbusd`` takes them as its unsigned operand unchanged (no
flip, no offset); ``sdot`` is the one above.

Intel 64 and IA-32 Architectures Software Developer's Manual, VPDPBUSD; Arm Architecture Reference
Manual for A-profile, SDOT (vector).
"""

from __future__ import annotations

from dataclasses import dataclass

from tvm import tirx
from tvm.s_tir import TensorIntrin
from tvm.target import Target
from tvm.target.codegen import target_has_features
from tvm.script import tirx as T

from slmc.schedules.row_matmul import STACK_SCOPE

@T.prim_func(s_tir=True)
def _tile_desc(a: T.handle, b: T.handle, c: T.handle) -> None:
    A = T.match_buffer(a, (4,), "int8", offset_factor=1)
    B = T.match_buffer(b, (16, 4), "int8", offset_factor=1)
    C = T.match_buffer(c, (16,), "int32", offset_factor=1, scope=STACK_SCOPE)
    with T.sblock("root"):
        T.reads(C[0:16], A[0:4], B[0:16, 0:4])
        T.writes(C[0:16])
        for i, k in T.grid(16, 4):
            with T.sblock("update"):
                vi, vk = T.axis.remap("SR", [i, k])
                C[vi] = C[vi] + T.Cast("int32", A[vk]) * T.Cast("int32", B[vi, vk])


def _vpdpbusd_tile(lanes: int, nonnegative: bool = False) -> tirx.PrimFunc:
    """The tile on ``vpdpbusd`` over ``lanes`` int32 lanes (16: one zmm, AVX-512 VNNI; 8: two ymm halves, AVX-VNNI).
    ``nonnegative``: for weights in ``[0, 127]`` (w4a8's unsigned int4 codes), the unsigned operand as they are,
    with no sign flip and no ``128 * sum(x)`` offset."""
    intrinsic, bytes_, words = f"llvm.x86.avx512.vpdpbusd.{32 * lanes}", f"int8x{4 * lanes}", f"int32x{lanes}"

    @T.prim_func(s_tir=True)
    def tile(a: T.handle, b: T.handle, c: T.handle) -> None:
        A = T.match_buffer(a, (4,), "int8", offset_factor=1)
        B = T.match_buffer(b, (16, 4), "int8", offset_factor=1)
        C = T.match_buffer(c, (16,), "int32", offset_factor=1, scope=STACK_SCOPE)
        with T.sblock("root"):
            T.reads(C[0:16], A[0:4], B[0:16, 0:4])
            T.writes(C[0:16])
            # meta_var: the expression at each use. A plain assignment is a mutable variable, which TVM 0.27 lowers to a
            # "local" buffer: a TVMBackendAllocWorkspace per tile call site's loop entry (once per chunk of a GEMV)
            codes = T.meta_var(T.reinterpret(T.broadcast(T.reinterpret(A.vload([0], "int8x4"), dtype="int32"), lanes),
                                             dtype=bytes_))
            if nonnegative:  # a Python constant: the parser keeps one branch
                for part in T.unroll(16 // lanes):
                    C[T.ramp(part * lanes, 1, lanes)] = T.call_llvm_pure_intrin(
                        words, intrinsic, C.vload([part * lanes], words), B.vload([part * lanes, 0], bytes_), codes)
            else:
                flip = T.broadcast(T.int8(-128), 4 * lanes)
                offset = T.call_llvm_pure_intrin(words, intrinsic, T.broadcast(T.int32(0), lanes), flip, codes)
                for part in T.unroll(16 // lanes):
                    C[T.ramp(part * lanes, 1, lanes)] = T.call_llvm_pure_intrin(
                        words, intrinsic, C.vload([part * lanes], words),
                        T.bitwise_xor(B.vload([part * lanes, 0], bytes_), flip), codes) - offset

    return tile


@T.prim_func(s_tir=True)
def _tile_sdot(a: T.handle, b: T.handle, c: T.handle) -> None:
    A = T.match_buffer(a, (4,), "int8", offset_factor=1)
    B = T.match_buffer(b, (16, 4), "int8", offset_factor=1)
    C = T.match_buffer(c, (16,), "int32", offset_factor=1, scope=STACK_SCOPE)
    with T.sblock("root"):
        T.reads(C[0:16], A[0:4], B[0:16, 0:4])
        T.writes(C[0:16])
        codes = T.meta_var(T.reinterpret(T.broadcast(T.reinterpret(A.vload([0], "int8x4"), dtype="int32"), 4),
                                         dtype="int8x16"))  # as in _vpdpbusd_tile: no buffer
        for quarter in T.unroll(4):
            C[T.ramp(quarter * 4, 1, 4)] = T.call_llvm_pure_intrin(
                T.llvm_lookup_intrinsic_id("llvm.aarch64.neon.sdot.v4i32.v16i8"), C.vload([quarter * 4], "int32x4"),
                B.vload([quarter * 4, 0], "int8x16"), codes, dtype="int32x4")


INTRINSICS = {  # descriptor feature -> registered intrinsic name, in order of preference
    "avx512_vnni": "slmc_int8_tile_avx512_vnni",
    "avx_vnni": "slmc_int8_tile_avx_vnni",
    "dotprod": "slmc_int8_tile_sdot",
}
_IMPLEMENTATIONS = {"avx512_vnni": _vpdpbusd_tile(16), "avx_vnni": _vpdpbusd_tile(8), "dotprod": _tile_sdot}
NONNEGATIVE_INTRINSICS = {  # the same tile for weights known to lie in [0, 127] (w4a8's unsigned int4 codes)
    "avx512_vnni": "slmc_int8_tile_avx512_vnni_nonnegative",
    "avx_vnni": "slmc_int8_tile_avx_vnni_nonnegative",
    "dotprod": INTRINSICS["dotprod"],  # sdot is signed x signed: bytes below 128 need nothing else
}
_NONNEGATIVE_IMPLEMENTATIONS = {"avx512_vnni": _vpdpbusd_tile(16, nonnegative=True), "avx_vnni": _vpdpbusd_tile(8, nonnegative=True)}
LLVM_FEATURES = {"avx512_vnni": "avx512vnni", "avx_vnni": "avxvnni", "dotprod": "dotprod"}  # what LLVM must enable
# (vector registers per 16 int32 accumulator lanes, vector registers of the ISA)
REGISTERS = {"avx512_vnni": (1, 32), "avx_vnni": (2, 16), "dotprod": (4, 32)}

for _feature, _name in INTRINSICS.items():
    TensorIntrin.register(_name, _tile_desc, _IMPLEMENTATIONS[_feature], override=True)
for _feature, _implementation in _NONNEGATIVE_IMPLEMENTATIONS.items():
    TensorIntrin.register(NONNEGATIVE_INTRINSICS[_feature], _tile_desc, _implementation, override=True)


@dataclass(frozen=True)
class TileChoice:
    """The tile implementation for a target: ``intrinsic`` ``None`` means int32 vectors."""

    feature: str | None
    intrinsic: str | None
    vectors_per_row: int
    registers: int
    missing: str | None = None  # a feature the descriptor lists that the LLVM target lacks

    @property
    def nonnegative_intrinsic(self) -> str | None:
        """The tile for weights in ``[0, 127]`` (``NONNEGATIVE_INTRINSICS``), ``None`` for int32 vectors."""
        return None if self.feature is None else NONNEGATIVE_INTRINSICS[self.feature]


def tile_choice(features: list[str] | tuple[str, ...], target: Target, vector_bits: int = 512) -> TileChoice:
    """The first of the descriptor's ``features`` slmc has a tile for (``INTRINSICS`` order) that the
    LLVM target enables (else int32 vectors of ``vector_bits``: a listed feature LLVM lacks would
    abort code generation, so it is reported in ``missing`` instead)."""
    missing = None
    for feature, name in INTRINSICS.items():
        if feature not in features:
            continue
        if not target_has_features(LLVM_FEATURES[feature], target):
            missing = missing or feature
            continue
        return TileChoice(feature, name, *REGISTERS[feature], missing=missing)
    registers = 16 if vector_bits == 256 else 32  # AVX2: 16 ymm; AVX-512: 32 zmm; NEON: 32 (SSE's 16 not modelled)
    return TileChoice(None, None, max(1, 512 // vector_bits), registers, missing)
