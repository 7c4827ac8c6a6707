"""The benchmarked models: the trained fixture LM and real SLM shapes at real size with random weights.

Random-weight checkpoints (seed 0) are written once with ``save_pretrained`` under
``<cache>/slmc/bench-models/<name>`` and loaded through ``slmc.models.huggingface.load_hf_model``,
the same path a downloaded checkpoint takes. Shapes follow the published configs (``config.json`` of
the Hugging Face repository named): SmolLM-135M (HuggingFaceTB/SmolLM-135M), Qwen2.5-0.5B
(Qwen/Qwen2.5-0.5B), GPT-2 124M (openai-community/gpt2), Qwen3-0.6B (Qwen/Qwen3-0.6B) and Gemma-3-270M
(google/gemma-3-270m). Every field that differs from the transformers config class's default is
given, so the shape does not move when transformers changes a default.
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
    # Qwen/Qwen3-0.6B config.json: QK-norm (every Qwen3), head_dim 128 != hidden/heads, GQA 16/8, tied head,
    # no sliding window (use_sliding_window false). Qwen3Config's defaults are an 8B-like shape: all set here.
    "qwen3-0.6b": ("Qwen3Config", "Qwen3ForCausalLM", dict(
        hidden_size=1024, intermediate_size=3072, num_hidden_layers=28, num_attention_heads=16, num_key_value_heads=8,
        head_dim=128, vocab_size=151936, max_position_embeddings=40960, rms_norm_eps=1e-6, tie_word_embeddings=True,
        use_sliding_window=False, rope_parameters={"rope_type": "default", "rope_theta": 1000000.0})),
    # google/gemma-3-270m config.json: MQA (4 heads, 1 KV head) of head_dim 256, local layers with a 512-token
    # window and every 6th layer global (rope_local_base_freq 10000 on local, rope_theta 1e6 on global
    # layers), QK-norm, query_pre_attn_scalar 256, scaled embeddings, tied head, vocab 262144 (Gemma3TextConfig's
    # default 262208 is the multimodal models' vocabulary).
    "gemma-3-270m": ("Gemma3TextConfig", "Gemma3ForCausalLM", dict(
        hidden_size=640, intermediate_size=2048, num_hidden_layers=18, num_attention_heads=4, num_key_value_heads=1,
        head_dim=256, vocab_size=262144, max_position_embeddings=32768, rms_norm_eps=1e-6, tie_word_embeddings=True,
        query_pre_attn_scalar=256, sliding_window=512, hidden_activation="gelu_pytorch_tanh",
        layer_types=["full_attention" if (i + 1) % 6 == 0 else "sliding_attention" for i in range(18)],
        rope_parameters={"sliding_attention": {"rope_type": "default", "rope_theta": 10000.0},
                         "full_attention": {"rope_type": "default", "rope_theta": 1000000.0}})),
}
# Parameters of the published checkpoints (tied embedding counted once), checked by the tests.
PUBLISHED_PARAMETERS = {"smollm-135m": 134_515_008, "qwen2.5-0.5b": 494_032_768, "gpt2-124m": 124_439_808,
                        "qwen3-0.6b": 596_049_920, "gemma-3-270m": 268_098_176}
BENCH_MODELS = ("fixture-lm", *CONFIGS)


def checkpoint_dir(name: str) -> Path:
    cache = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(cache) / "slmc" / "bench-models" / name


def build_module(name: str) -> Any:
    """The transformers model of shape ``name`` with freshly initialised weights (on the current default
    device: under ``torch.device("meta")`` it allocates nothing)."""
    import transformers

    config_class, model_class, fields = CONFIGS[name]
    return getattr(transformers, model_class)(getattr(transformers, config_class)(**fields, **NO_SPECIAL_IDS))


def write_checkpoint(name: str) -> Path:
    """The random-weight checkpoint of ``name`` (written on first use)."""
    import torch

    folder = checkpoint_dir(name)
    if not ((folder / "config.json").is_file() and any(folder.glob("*.safetensors"))):
        torch.manual_seed(0)
        model = build_module(name)
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


def head_elements(module: Any) -> int:
    """Elements of the output head's weight (the transformers model's ``get_output_embeddings``, found inside
    ``module`` or its wrapper): the matmul a prompt's first token needs at its last position only (an engine that
    computes only the last logits, as slmc's resident runtime and llama.cpp do, runs it once per prompt).
    ``ModelError`` when ``module`` holds no transformers model with an output head."""
    for sub in module.modules():
        head = sub.get_output_embeddings() if callable(getattr(sub, "get_output_embeddings", None)) else None
        if head is not None:
            return int(head.weight.numel())
    raise ModelError(f"{type(module).__name__} holds no transformers model with an output head "
                     "(get_output_embeddings): the prefill bound cannot tell the head from the body")
