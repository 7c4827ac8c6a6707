"""TVM kernels of the quantized ops vs their eager reference (slmc.quantization.tvm_kernels).

Tolerance: 1e-4 absolute on outputs of magnitude ~10 (measured: <= 2e-5, float32 summation order).
"""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch
import tvm
from tvm import relax

from slmc.graph.ir import ModelSpec, trace
from slmc.backend.lowering import build, to_relax
from slmc.quantization.formats import QuantFormat, quantize_rtn
from slmc.quantization.ops import quantize_activations
from slmc.quantization.tvm_kernels import KERNEL_ATTR
from slmc.schedules import cpu_params
from slmc.schedules.quantized_matmul import QuantizedMatmul

TOLERANCE = 1e-4


def _scale_code_arg(fmt: QuantFormat) -> tuple[int, ...]:
    return () if fmt.packed_scale_bits is None else (fmt.packed_scale_bits,)


CODES6 = dict(scale_codes=True, scale_code_bits=6)


def _frozen(t: torch.Tensor | None) -> torch.nn.Parameter | None:
    return None if t is None else torch.nn.Parameter(t, requires_grad=False)


class QLinear(torch.nn.Module):
    def __init__(self, fmt: QuantFormat, out_features: int = 48, in_features: int = 64, bias: bool = True,
                 input_scale: bool = False):
        super().__init__()
        gen = torch.Generator().manual_seed(0)
        q = quantize_rtn(torch.randn(out_features, in_features, generator=gen), fmt)
        self.qweight, self.scales, self.zeros = _frozen(q.packed()), _frozen(q.stored_scales()), _frozen(q.zeros)
        self.row_scales = _frozen(q.row_scales)  # scale codes: applied after the op, as passes/quantize.py does
        self.bias = _frozen(torch.randn(out_features, generator=gen)) if bias else None
        self.input_scale = _frozen(torch.rand(in_features, generator=gen) + 0.5) if input_scale else None
        self.fmt, self.group = fmt, fmt.group(in_features)

    def forward(self, x):
        y = torch.ops.slmc.quantized_linear(x, self.qweight, self.scales, self.zeros, self.bias, self.input_scale,
                                            self.fmt.bits, self.group, *_scale_code_arg(self.fmt))
        return torch.relu(y if self.row_scales is None else y * self.row_scales.float())


class QEmbedding(torch.nn.Module):
    def __init__(self, fmt: QuantFormat):
        super().__init__()
        q = quantize_rtn(torch.randn(100, 64, generator=torch.Generator().manual_seed(1)), fmt)
        self.qweight, self.scales, self.zeros = _frozen(q.packed()), _frozen(q.stored_scales()), _frozen(q.zeros)
        self.fmt = fmt

    def forward(self, ids):  # scale codes: the codes times the rows' dequantized values, exact in float32
        return torch.ops.slmc.quantized_embedding(ids, self.qweight, self.scales, self.zeros, self.fmt.bits, self.fmt.group(64),
                                                  *_scale_code_arg(self.fmt))


class W8A8(torch.nn.Module):
    def __init__(self, smooth: bool):
        super().__init__()
        gen = torch.Generator().manual_seed(2)
        w = torch.randn(40, 64, generator=gen)
        scales = w.abs().amax(1) / 127
        self.qweight = _frozen(torch.round(w / scales.unsqueeze(1)).to(torch.int8))
        self.weight_scales = _frozen(scales)
        self.bias = _frozen(torch.randn(40, generator=gen))
        self.input_scale = _frozen(torch.rand(64, generator=gen) + 0.5) if smooth else None

    def forward(self, x):
        return torch.ops.slmc.w8a8_linear(x, self.qweight, self.weight_scales, self.bias, self.input_scale, 0.05)


def _compile_and_compare(module: torch.nn.Module, make_input, sizes, host_target, axis: int = -2) -> tuple[float, tvm.IRModule]:
    dim = torch.export.Dim("n", min=1, max=64)
    first = make_input(4)  # sizes above 1 stay symbolic in torch.export
    spec = ModelSpec(module, (first,), ({axis % first.ndim: dim},))
    program = to_relax(trace(spec))
    vm = relax.VirtualMachine(build(program, host_target), tvm.cpu())
    worst = 0.0
    for n in sizes:
        x = make_input(n)
        out = vm["main"](tvm.runtime.tensor(x.numpy()), *[tvm.runtime.tensor(w) for w in program.weights])
        out = out[0] if not hasattr(out, "numpy") else out
        worst = max(worst, float(np.abs(out.numpy() - module(x).numpy()).max()))
    return worst, program.module


@pytest.mark.parametrize("fmt", [QuantFormat(4, 32, True), QuantFormat(4, 16, False), QuantFormat(8, None, True),
                                 QuantFormat(8, 32, False), QuantFormat(4, 8, False, **CODES6)], ids=lambda f: f.describe())
def test_quantized_linear_kernel_matches_eager(fmt, host_target):
    module = QLinear(fmt, input_scale=fmt.bits == 4)
    err, mod = _compile_and_compare(module, lambda n: torch.randn(1, n, 64), [1, 7, 33], host_target)
    assert err <= TOLERANCE  # measured: 1.9e-5
    kernels = [gv.name_hint for gv, f in mod.functions.items() if isinstance(f, tvm.tirx.PrimFunc)
               and f.attrs is not None and KERNEL_ATTR in f.attrs]
    assert kernels and all(name.startswith("slmc_qlinear") for name in kernels)


@pytest.mark.parametrize("out_features", [48, 40], ids=["tiled", "transposed"])
def test_packed_6bit_scale_codes_kernel_matches_eager(out_features, host_target):
    """6-bit scale codes packed four per three bytes (8 groups: two words, every shift; 2 groups: a padded word),
    unpacked by the group-factored kernel (48 outputs: tiles of 16) and the transposed one (40: no tile width)."""
    for group in (8, 32):
        module = QLinear(QuantFormat(4, group, True, **CODES6), out_features=out_features, input_scale=True)
        assert module.scales.shape == (out_features, 6 if group == 8 else 3)
        err, mod = _compile_and_compare(module, lambda n: torch.randn(1, n, 64), [1, 7, 33], host_target)
        assert err <= TOLERANCE  # measured: <= 4.6e-5 (48 outputs, g32), 1.8e-5 (g8); transposed <= 5.7e-6
        kernel = next(f for gv, f in mod.functions.items() if gv.name_hint.startswith(f"slmc_qlinear_int4_g{group}_sym_s6"))
        if out_features == 48:  # the packed bytes, tiled [N/16, 3 * ceil(G / 4), 16] (prepacked), are what the kernel reads
            assert f'T.Buffer((T.int64(3), T.int64({6 if group == 8 else 3}), T.int64(16)), "uint8")' in kernel.script()


def test_quantized_linear_without_bias_2d_input(host_target):
    module = QLinear(QuantFormat(4, 32, True), bias=False)
    err, _ = _compile_and_compare(module, lambda n: torch.randn(n, 64), [1, 5], host_target)
    assert err <= TOLERANCE


def test_kernel_reads_packed_weights_only(host_target):
    """No float32 [N, K] buffer exists in the lowered kernel: the weight is dequantized in the reduction
    (decode) or one [group, tile] block at a time (prefill)."""
    module = QLinear(QuantFormat(4, 32, True), bias=False)
    _, mod = _compile_and_compare(module, lambda n: torch.randn(1, n, 64), [2], host_target)
    kernel = next(f for gv, f in mod.functions.items() if gv.name_hint.startswith("slmc_qlinear"))
    text = kernel.script()
    assert 'T.Buffer((T.int64(3), T.int64(8), T.int64(16)), "uint32")' in text  # prepacked tiles [N/16, K/8, 16] of words
    assert 'T.Buffer((T.int64(3), T.int64(2), T.int64(16)), "float16")' in text  # (slmc.schedules.prepack)
    scheduled = QuantizedMatmul(cpu_params(host_target)).apply(kernel, host_target.tvm_target(), False).mod
    lower = tvm.transform.Sequential([tvm.s_tir.transform.LowerInitBlock(),
                                      tvm.s_tir.transform.PlanAndUpdateBufferAllocationLocation(),
                                      tvm.s_tir.transform.ConvertBlocksToOpaque(),
                                      tvm.s_tir.transform.CompactBufferAllocation()])
    lowered = lower(scheduled)["main"].script()
    codes = next(line for line in lowered.splitlines() if "unpacked_codes_local = T." in line)
    assert "((T.int64(1), T.int64(32), T.int64(16))" in codes  # one group of one tile, unpacked once for all rows
    allocated = set(re.findall(r"(\w+) = T.(?:sblock_)?alloc_buffer", lowered))
    # prefill's unpacked block ("local": 8 KB, a workspace per chunk); the dots of prefill and decode and decode's
    # accumulator in STACK_SCOPE ("global" under 1 KB: on the stack; prefill's were "local" before session 11)
    assert allocated == {"unpacked_codes_local", "group_dot", "dequant_matmul_global", "group_sum"}


@pytest.mark.parametrize("fmt", [QuantFormat(4, 32, True), QuantFormat(8, None, False), QuantFormat(4, 8, True, **CODES6)],
                         ids=lambda f: f.describe())
def test_quantized_embedding_kernel_matches_eager(fmt, host_target):
    err, _ = _compile_and_compare(QEmbedding(fmt), lambda n: torch.arange(n).reshape(1, n) % 100, [1, 9], host_target, axis=-1)
    assert err == 0.0  # a gather of dequantized rows: exact


class W4A8Embedding(torch.nn.Module):
    """A table stored as ``w4a8_linear``'s weight (paired int4 codes, float16 scales per 32 inputs; ``codes6``: 6-bit
    scale codes packed four per three bytes over 5 groups, the last word one code and padding, as a tied head
    with ``scale_code_bits: 6`` stores them; its row scales multiply outside the op)."""

    def __init__(self, rows: int, codes6: bool = False):
        super().__init__()
        from slmc.quantization.formats import pack_scale_codes
        from slmc.quantization.w4a8_layout import pack_paired

        gen = torch.Generator().manual_seed(3)
        groups = 5 if codes6 else 2
        self.qweight = _frozen(pack_paired(torch.randint(1, 16, (rows, 32 * groups), generator=gen)))
        self.scales = _frozen(pack_scale_codes(torch.randint(1, 64, (rows, groups), generator=gen), 6) if codes6
                              else (torch.rand(rows, groups, generator=gen) + 0.1).to(torch.float16))
        self.trailing = (6,) if codes6 else ()

    def forward(self, ids):
        return torch.ops.slmc.w4a8_embedding(ids, self.qweight, self.scales, 32, *self.trailing)


@pytest.mark.parametrize("rows,codes6", [(96, False), (100, False), (96, True), (100, True)],
                         ids=["tiled", "plain", "tiled-codes6", "plain-codes6"])
def test_w4a8_embedding_kernel_matches_eager(rows, codes6, host_target):
    """The gather reads the head's layout: tiles ``[N/16, K/8, 16, 4]`` when 16 divides the rows, else ``[N, K/2]``;
    with packed 6-bit scale codes it unpacks them as the head's kernel does (``scale_code_te.group_scale``)."""
    err, mod = _compile_and_compare(W4A8Embedding(rows, codes6), lambda n: torch.arange(n).reshape(1, n) * 7 % rows,
                                    [1, 9], host_target, axis=-1)
    assert err == 0.0  # a gather of dequantized rows: exact
    kernel = next(f for gv, f in mod.functions.items() if gv.name_hint.startswith("slmc_w4a8_embedding_g32"))
    inputs = 160 if codes6 else 64
    codes = (f"(T.int64(6), T.int64({inputs // 8}), T.int64(16), T.int64(4))" if rows == 96
             else f"(T.int64(100), T.int64({inputs // 2}))")
    assert f'T.Buffer({codes}, "uint8")' in kernel.script()


@pytest.mark.parametrize("smooth", [False, True])
def test_w8a8_kernel_matches_eager(smooth, host_target):
    err, _ = _compile_and_compare(W8A8(smooth), lambda n: torch.randn(1, n, 64), [1, 6], host_target)
    assert err <= TOLERANCE  # measured: ~4e-6: eager and kernel multiply by the same float32 reciprocal


def test_activation_codes_saturate_and_round_half_to_even():
    x = torch.tensor([0.025, 0.075, 100.0, -100.0])
    assert quantize_activations(x, None, 0.05).tolist() == [0.0, 2.0, 127.0, -127.0]  # 0.5 -> 0, 1.5 -> 2
