"""slmc.backend.torch_export_fixes: exported HF decoders (and the minimal repros) build and run in TVM 0.27."""

from __future__ import annotations

import os

os.environ["HF_HUB_OFFLINE"] = "1"  # tiny random configs only; nothing may download

import numpy as np
import pytest
import torch

import transformers  # noqa: E402
import tvm  # noqa: E402
from tvm import relax  # noqa: E402
from tvm.relax.frontend.torch import from_exported_program  # noqa: E402

from slmc.backend.torch_export_fixes import fix_exported_program  # noqa: E402
from slmc.backend.relax_pipeline import build_pipeline  # noqa: E402
from slmc.spec.target import load_target  # noqa: E402

HOST = load_target("host")
SEQ = torch.export.Dim("seq", min=2, max=64)
ATOL = 1e-3  # measured: <= 2.4e-7 for all four families


def _relax_pipeline() -> tvm.transform.Pass:
    """slmc's own build pipeline for the host: what ships."""
    return build_pipeline(HOST, HOST.tvm_target())


def _build_vm(ep: torch.export.ExportedProgram) -> relax.VirtualMachine:
    mod = from_exported_program(ep, keep_params_as_input=False)
    ex = tvm.compile(mod, target=HOST.tvm_target(), relax_pipeline=_relax_pipeline())
    return relax.VirtualMachine(ex, tvm.cpu())


def _run(vm: relax.VirtualMachine, *inputs: torch.Tensor) -> np.ndarray:
    out = vm["main"](*[tvm.runtime.tensor(x.numpy()) for x in inputs])
    return out[0].numpy()


# --------------------------------------------------------------------------- HF decoders

_COMMON = dict(
    vocab_size=256,
    hidden_size=64,
    num_hidden_layers=2,
    num_attention_heads=4,
    intermediate_size=128,
    max_position_embeddings=128,
    use_cache=False,
)


def _config(config_class, attention: str, **kwargs):
    config = config_class(**kwargs)
    config._attn_implementation = attention  # "sdpa" (transformers' default) or "eager"
    return config


def _llama(attention: str):
    config = _config(transformers.LlamaConfig, attention, num_key_value_heads=2, **_COMMON)
    return transformers.LlamaForCausalLM(config)


def _qwen2(attention: str):
    config = _config(transformers.Qwen2Config, attention, num_key_value_heads=2, **_COMMON)
    return transformers.Qwen2ForCausalLM(config)


def _phi3(attention: str):
    config = _config(
        transformers.Phi3Config, attention,
        num_key_value_heads=2, pad_token_id=0, bos_token_id=1, eos_token_id=2, **_COMMON,
    )
    return transformers.Phi3ForCausalLM(config)


def _gpt2(attention: str):
    config = _config(
        transformers.GPT2Config, attention,
        vocab_size=256, n_embd=64, n_layer=2, n_head=4, n_positions=128,
        bos_token_id=1, eos_token_id=2, use_cache=False,
    )
    return transformers.GPT2LMHeadModel(config)


@pytest.mark.parametrize(
    ("build", "attention"),
    [(_llama, "sdpa"), (_qwen2, "sdpa"), (_gpt2, "sdpa"), (_phi3, "sdpa"), (_llama, "eager")],
    ids=["llama", "qwen2", "gpt2", "phi3", "llama-eager"],
)
def test_hf_decoder_with_dynamic_seq_builds_and_matches_eager(build, attention):
    torch.manual_seed(0)
    model = build(attention).eval()
    assert model.config._attn_implementation == attention
    example = torch.randint(0, 256, (1, 8))
    with torch.no_grad():
        ep = torch.export.export(model, (example,), dynamic_shapes=({1: SEQ},))

    fixed, notes = fix_exported_program(ep)

    assert fixed is not ep
    assert any("cumsum" in note for note in notes)
    assert any("aten.diff" in note for note in notes)
    vm = _build_vm(fixed)
    for seq_len in (8, 13):
        input_ids = torch.randint(0, 256, (1, seq_len))
        with torch.no_grad():
            expected = model(input_ids).logits.numpy()
        got = _run(vm, input_ids)
        assert got.shape == expected.shape
        assert np.abs(got - expected).max() <= ATOL


def test_unfixed_hf_decoder_still_fails_to_build():
    """Guards the premise: if TVM starts building these graphs, the rewrites can go."""
    torch.manual_seed(0)
    model = _llama("sdpa").eval()
    with torch.no_grad():
        ep = torch.export.export(model, (torch.randint(0, 256, (1, 8)),))
    with pytest.raises(tvm.error.InternalError, match="kDLFloat"):
        _build_vm(ep)


# --------------------------------------------------------------------------- minimal repros


class _CumsumOfBool(torch.nn.Module):
    def forward(self, x):
        return torch.cumsum(x != 1, -1)


class _PackedSequenceIds(torch.nn.Module):
    """transformers.masking_utils.find_packed_sequence_indices."""

    def forward(self, x):
        return (torch.diff(x, dim=-1, prepend=x[:, :1] - 1) != 1).cumsum(-1)


class _DiffTwiceWithAppend(torch.nn.Module):
    def forward(self, x):
        return torch.diff(x, n=2, dim=1, append=x[:, -2:] * 3)


class _DiffOfBool(torch.nn.Module):
    def forward(self, x):
        return torch.diff(x > 3, dim=1)


class _BoolComparisons(torch.nn.Module):
    def forward(self, x):
        a, b = x > 3, x.flip(-1) > 3
        return torch.stack([a == b, a != True, a < b, a >= b], 0)  # noqa: E712


@pytest.mark.parametrize(
    "module", [_CumsumOfBool, _PackedSequenceIds, _DiffTwiceWithAppend, _DiffOfBool, _BoolComparisons]
)
@pytest.mark.parametrize("dynamic", [False, True], ids=["static", "dynamic"])
def test_minimal_repro_builds_and_matches_eager(module, dynamic):
    model = module()
    example = torch.tensor([[0, 1, 2, 5, 6, 9, 10, 11]])
    shapes = {"dynamic_shapes": ({1: torch.export.Dim("s", min=3, max=64)},)} if dynamic else {}
    ep = torch.export.export(model, (example,), **shapes)

    fixed, notes = fix_exported_program(ep)

    assert notes or module in (_DiffTwiceWithAppend, _DiffOfBool)  # static diffs build as is
    vm = _build_vm(fixed)
    for seq_len in (8, 5) if dynamic else (8,):
        x = torch.sort(torch.randint(0, 12, (1, seq_len)), dim=-1).values
        expected = model(x)
        assert torch.equal(fixed.module()(x), expected)
        got = _run(vm, x)
        assert got.dtype == np.dtype(str(expected.dtype).removeprefix("torch."))
        np.testing.assert_array_equal(got, expected.numpy())


# --------------------------------------------------------------------------- no-op and idempotence


class _Mlp(torch.nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.up = torch.nn.Linear(16, 32)
        self.down = torch.nn.Linear(32, 16)

    def forward(self, x):
        return self.down(torch.relu(self.up(x)))


@pytest.mark.parametrize("dynamic", [False, True], ids=["static", "dynamic"])
def test_model_without_mask_ops_is_left_unchanged(dynamic):
    shapes = {"dynamic_shapes": ({0: torch.export.Dim("batch", min=1, max=8)},)} if dynamic else {}
    ep = torch.export.export(_Mlp(), (torch.randn(2, 16),), **shapes)

    fixed, notes = fix_exported_program(ep)

    assert fixed is ep
    assert notes == []


def test_fix_is_idempotent_and_leaves_input_untouched():
    ep = torch.export.export(_PackedSequenceIds(), (torch.arange(8).reshape(1, 8),),
                             dynamic_shapes=({1: torch.export.Dim("s", min=2, max=64)},))
    before = ep.graph_module.code

    fixed, _ = fix_exported_program(ep)
    again, notes = fix_exported_program(fixed)

    assert ep.graph_module.code == before
    assert again is fixed and notes == []


# --------------------------------------------------------------------------- relax.full


# --------------------------------------------------------------------------- integer powers


class _Powers(torch.nn.Module):
    """GELU's tanh approximation (``gelu_new``: ``x ** 3``) and other powers."""

    def forward(self, x):
        return torch.stack([x + 0.044715 * torch.pow(x, 3.0), x ** 5, x ** 2, x.abs() ** 2.5], 0)


def test_integer_powers_become_products_and_tvm_logs_nothing(capfd):
    ep = torch.export.export(_Powers(), (torch.randn(2, 8),))

    fixed, notes = fix_exported_program(ep)

    assert [n.split(":")[1].strip()[:9] for n in notes] == ["pow(x, 3)", "pow(x, 5)"]  # x ** 2 and ** 2.5 stay
    capfd.readouterr()
    vm = _build_vm(fixed)
    assert "Detected pow" not in capfd.readouterr().err  # TVM's raw warning on pow with y >= 3
    x = torch.linspace(-3, 3, 16).reshape(2, 8)  # negative bases too
    np.testing.assert_allclose(_run(vm, x), _Powers()(x).numpy(), rtol=1e-6, atol=1e-6)


class _LogOfIntegers(torch.nn.Module):
    """DeBERTa-v2's ``make_log_bucket_position``: the log of integer distances divided by an integer."""

    def forward(self, x):
        return torch.log(x.abs() / 8 + 1) + torch.sqrt(x.abs())


def test_float_math_of_integer_tensors_builds_and_matches_eager():
    model = _LogOfIntegers()
    ep = torch.export.export(model, (torch.arange(-4, 4).reshape(1, 8),))

    fixed, notes = fix_exported_program(ep)

    assert len(notes) == 2 and all("input cast to torch.float32" in n for n in notes), notes
    x = torch.arange(-6, 2).reshape(1, 8)
    np.testing.assert_allclose(_run(_build_vm(fixed), x), model(x).numpy(), rtol=1e-6)
