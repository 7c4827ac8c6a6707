"""Hugging Face checkpoints: the trained fixture (Llama) and a random Qwen2, against transformers itself."""

import json

import numpy as np
import pytest
import torch
import transformers
from safetensors.torch import save_file

import slmc
from slmc.errors import ModelError
from slmc.models import FIXTURE_DIR
from slmc.models.causal_lm import eager_step, generate_greedy
from slmc.models.huggingface import load_hf_model

# Our cache-contract implementation vs transformers' eager model, fp32.
# Measured on the fixture: prefill logits max abs error 7.6e-6; identical greedy tokens.
ATOL = 1e-4


def _hf_logits(model_cls, folder, ids):
    hf = model_cls.from_pretrained(str(folder), local_files_only=True).eval()
    with torch.no_grad():
        return hf, hf(ids).logits


def _ours(spec, ids):
    k, v = spec.kv_cache.empty()
    with torch.no_grad():
        return spec.module(ids, torch.from_numpy(k), torch.from_numpy(v))[0]


def test_fixture_matches_transformers_prefill_and_greedy_decode():
    spec = load_hf_model(FIXTURE_DIR)
    ids = torch.tensor([spec.tokenizer.encode("import os\nimport sys\n\ndef main(argv):\n")])
    hf, ref = _hf_logits(transformers.LlamaForCausalLM, FIXTURE_DIR, ids)
    assert torch.max(torch.abs(_ours(spec, ids) - ref)).item() <= ATOL
    ours = generate_greedy(eager_step(spec.module), spec.kv_cache, ids[0].tolist(), 16)
    theirs = hf.generate(ids, max_new_tokens=16, do_sample=False)[0, ids.shape[1]:].tolist()
    assert ours.tokens == theirs


def test_qwen2_random_config_matches_transformers(tmp_path):
    config = transformers.Qwen2Config(vocab_size=256, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128)
    torch.manual_seed(0)
    transformers.Qwen2ForCausalLM(config).save_pretrained(tmp_path)
    spec = load_hf_model(tmp_path)
    assert spec.module.config.attention_bias  # Qwen2 has q/k/v biases
    ids = torch.randint(0, 256, (1, 11), generator=torch.Generator().manual_seed(1))
    _, ref = _hf_logits(transformers.Qwen2ForCausalLM, tmp_path, ids)
    assert torch.max(torch.abs(_ours(spec, ids) - ref)).item() <= ATOL
    result = slmc.compile(str(tmp_path), out=tmp_path / "out")  # a checkpoint folder is a model reference
    assert result.verification["passed"] and result.verification["decode"]["same_tokens"]
    logits = slmc.load(result.artifact).run_numpy(ids.numpy(), *spec.kv_cache.empty())[0]
    assert np.max(np.abs(logits - ref.numpy())) <= 1e-3


def test_default_compile_is_the_fixture_and_verifies(tmp_path):
    result = slmc.compile(out=tmp_path / "fixture")
    v = result.verification
    assert result.manifest["model"]["name"] == "fixture-lm" and result.manifest["model"]["parameters"] == 4851968 + 16  # + rotary inv_freq
    assert v["passed"] and v["artifact_vs_eager"]["max_abs_error"] <= 1e-4  # measured 1.9e-5
    assert v["decode"]["steps"] == 16 and v["decode"]["same_tokens"]
    model = slmc.load(result.artifact)
    tokens = generate_greedy(model.step, model.kv_cache, model.tokenizer.encode("def read_config(path):"), 24).tokens
    text = model.tokenizer.decode(tokens)
    assert '"""' in text or "return" in text or "self" in text  # Python-like continuation


def _write(folder, config, weights=None):
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps(config))
    if weights is not None:
        save_file(weights, str(folder / "model.safetensors"))
    return folder


def test_loader_errors(tmp_path):
    with pytest.raises(ModelError, match="config.json is missing"):
        load_hf_model(tmp_path / "nothing")
    config = json.loads((FIXTURE_DIR / "config.json").read_text())
    with pytest.raises(ModelError, match="model_type 'bert' is not supported; supported: llama, qwen2"):
        load_hf_model(_write(tmp_path / "bert", {**config, "model_type": "bert"}))
    pickled = _write(tmp_path / "pickled", config)
    (pickled / "pytorch_model.bin").write_bytes(b"not unpickled")
    with pytest.raises(ModelError, match="never unpickles"):
        load_hf_model(pickled)
    with pytest.raises(ModelError, match="do not match config.json"):
        load_hf_model(_write(tmp_path / "mismatch", config, {"lm_head.weight": torch.zeros(3, 3)}))
    broken = _write(tmp_path / "broken", config)
    (broken / "model.safetensors").write_bytes(b"\x00" * 16)
    with pytest.raises(ModelError, match="not a readable safetensors file"):
        load_hf_model(broken)
