"""The benchmarked models: the trained fixture LM and real SLM shapes at real size with random weights.

Random-weight checkpoints (seed 0) are written once with ``save_pretrained`` under
``<cache>/slmc/bench-models/<name>`` and loaded through ``slmc.models.huggingface.load_hf_model``,
the same path a downloaded checkpoint takes. Shapes follow the published configs:
SmolLM-135M (HuggingFaceTB/SmolLM-135M), Qwen2.5-0.5B (Qwen/Qwen2.5-0.5B), GPT-2 124M (openai gpt2).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from slmc.errors import ModelError
from slmc.models import FIXTURE_DIR

NO_SPECIAL_IDS = dict(bos_token_id=None, eos_token_id=None, pad_token_id=None)
CONFIGS: dict[str, tuple[str, str, dict[str, Any]]] = {
    "smollm-135m": ("LlamaConfig", "LlamaForCausalLM", dict(
        hidden_size=576, intermediate_size=1536, num_hidden_layers=30, num_attention_heads=9, num_key_value_heads=3,
        vocab_size=49152, max_position_embeddings=2048, rms_norm_eps=1e-5, tie_word_embeddings=True,
        rope_theta=10000.0)),
    "qwen2.5-0.5b": ("Qwen2Config", "Qwen2ForCausalLM", dict(
        hidden_size=896, intermediate_size=4864, num_hidden_layers=24, num_attention_heads=14, num_key_value_heads=2,
        vocab_size=151936, max_position_embeddings=32768, rms_norm_eps=1e-6, tie_word_embeddings=True,
        rope_theta=1000000.0)),
    "gpt2-124m": ("GPT2Config", "GPT2LMHeadModel", dict(
        vocab_size=50257, n_positions=1024, n_embd=768, n_layer=12, n_head=12)),
}
BENCH_MODELS = ("fixture-lm", *CONFIGS)


def checkpoint_dir(name: str) -> Path:
    cache = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(cache) / "slmc" / "bench-models" / name


def write_checkpoint(name: str) -> Path:
    """The random-weight checkpoint of ``name`` (written on first use)."""
    import torch
    import transformers

    folder = checkpoint_dir(name)
    if not ((folder / "config.json").is_file() and any(folder.glob("*.safetensors"))):
        config_class, model_class, fields = CONFIGS[name]
        torch.manual_seed(0)
        model = getattr(transformers, model_class)(getattr(transformers, config_class)(**fields, **NO_SPECIAL_IDS))
        folder.mkdir(parents=True, exist_ok=True)
        model.save_pretrained(folder)
    if not (folder / "tokenizer.json").is_file():
        write_bench_tokenizer(folder / "tokenizer.json", CONFIGS[name][2]["vocab_size"])
    return folder


def write_bench_tokenizer(path: Path, vocab_size: int) -> None:
    """A tokenizer covering every id of a random-weight model: fixture-lm's byte-level BPE (ids 0-4095,
    eos id 0) plus placeholder tokens ``<|bench_N|>`` up to ``vocab_size``. The native runner needs a
    tokenizer to open an artifact and to print what it generated; the benchmark feeds token ids."""
    import json

    source = json.loads((FIXTURE_DIR / "tokenizer.json").read_text())
    vocab = source["model"]["vocab"]
    for i in range(len(vocab), vocab_size):
        vocab[f"<|bench_{i}|>"] = i
    path.write_text(json.dumps(source))


def hf_folder(name: str) -> Path:
    """The Hugging Face folder (config.json, safetensors) benchmark model ``name`` is loaded from."""
    if name == "fixture-lm":
        return FIXTURE_DIR
    if name not in CONFIGS:
        raise ModelError(f"unknown benchmark model '{name}'; known: {', '.join(BENCH_MODELS)}")
    return write_checkpoint(name)


def bench_model(name: str, max_context: int) -> Any:
    """The ``ModelSpec`` of benchmark model ``name`` (``ModelError`` for an unknown name)."""
    from slmc.frontend.model_source import load_model
    from slmc.models.huggingface import load_hf_model

    if name == "fixture-lm":
        return load_model("fixture-lm")
    if name not in CONFIGS:
        raise ModelError(f"unknown benchmark model '{name}'; known: {', '.join(BENCH_MODELS)}")
    spec = load_hf_model(write_checkpoint(name), max_context=max_context)
    spec.name = name
    return spec


def linear_elements(module: Any) -> int:
    """Elements of every matmul weight (``nn.Linear`` and GPT-2's ``Conv1D``), tied heads counted once per use."""
    import torch

    total = 0
    for sub in module.modules():
        if isinstance(sub, torch.nn.Linear) or type(sub).__name__ == "Conv1D":
            total += sub.weight.numel()
    return total
