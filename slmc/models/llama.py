"""Llama-family decoders (Llama, SmolLM/TinyLlama-style configs, Qwen2) under slmc's cache contract.

The computation of Hugging Face's ``LlamaForCausalLM`` / ``Qwen2ForCausalLM`` (Touvron et al., 2023:
pre-norm RMSNorm, rotary position embeddings (Su et al., 2021) with the "rotate half" layout,
grouped-query attention (Ainslie et al., 2023), SiLU-gated MLP), written against the explicit KV
cache of ``slmc.models.causal_lm`` so that one ``torch.export`` graph serves prefill and decode.
Module and parameter names equal the checkpoint's, so ``model.safetensors`` loads as it is; the
tests check the logits against transformers' own implementation.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from slmc.models.causal_lm import KVCacheSpec, sink_causal_mask


@dataclass(frozen=True)
class LlamaConfig:
    vocab_size: int
    hidden_size: int
    intermediate_size: int
    num_hidden_layers: int
    num_attention_heads: int
    num_key_value_heads: int
    head_dim: int
    rms_norm_eps: float
    rope_theta: float
    max_position_embeddings: int
    attention_bias: bool = False
    tie_word_embeddings: bool = False

    @classmethod
    def from_hf(cls, config: dict[str, Any]) -> LlamaConfig:
        """From a ``config.json`` dict; ``KeyError``/``ValueError`` for missing or unsupported fields."""
        heads = int(config["num_attention_heads"])
        rope = config.get("rope_parameters") or config.get("rope_scaling") or {}
        if rope.get("rope_type", rope.get("type", "default")) != "default":
            raise ValueError(f"rope type {rope.get('rope_type', rope.get('type'))!r} is not supported (only 'default')")
        model_type = config.get("model_type")
        return cls(
            vocab_size=int(config["vocab_size"]),
            hidden_size=int(config["hidden_size"]),
            intermediate_size=int(config["intermediate_size"]),
            num_hidden_layers=int(config["num_hidden_layers"]),
            num_attention_heads=heads,
            num_key_value_heads=int(config.get("num_key_value_heads") or heads),
            head_dim=int(config.get("head_dim") or config["hidden_size"] // heads),
            rms_norm_eps=float(config["rms_norm_eps"]),
            rope_theta=float(rope.get("rope_theta", config.get("rope_theta", 10000.0))),
            max_position_embeddings=int(config["max_position_embeddings"]),
            attention_bias=bool(config.get("attention_bias", model_type == "qwen2")),
            tie_word_embeddings=bool(config.get("tie_word_embeddings", False)),
        )


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.weight * (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps))


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


class Attention(nn.Module):
    def __init__(self, cfg: LlamaConfig):
        super().__init__()
        self.heads, self.kv_heads, self.head_dim = cfg.num_attention_heads, cfg.num_key_value_heads, cfg.head_dim
        self.q_proj = nn.Linear(cfg.hidden_size, self.heads * self.head_dim, bias=cfg.attention_bias)
        self.k_proj = nn.Linear(cfg.hidden_size, self.kv_heads * self.head_dim, bias=cfg.attention_bias)
        self.v_proj = nn.Linear(cfg.hidden_size, self.kv_heads * self.head_dim, bias=cfg.attention_bias)
        self.o_proj = nn.Linear(self.heads * self.head_dim, cfg.hidden_size, bias=False)

    def _split(self, x: torch.Tensor, heads: int) -> torch.Tensor:
        b, t, _ = x.shape
        return x.view(b, t, heads, self.head_dim).transpose(1, 2)

    def _repeat_kv(self, x: torch.Tensor) -> torch.Tensor:
        b, h, s, d = x.shape
        groups = self.heads // self.kv_heads
        return x[:, :, None].expand(b, h, groups, s, d).reshape(b, h * groups, s, d)

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, past_k: torch.Tensor,
                past_v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        b, t, _ = x.shape
        q = self._split(self.q_proj(x), self.heads)
        k = self._split(self.k_proj(x), self.kv_heads)
        q = q * cos + rotate_half(q) * sin
        k = torch.cat([past_k, k * cos + rotate_half(k) * sin], dim=2)
        v = torch.cat([past_v, self._split(self.v_proj(x), self.kv_heads)], dim=2)
        scores = (q @ self._repeat_kv(k).transpose(-1, -2)) * (self.head_dim**-0.5)
        attn = F.softmax(scores + sink_causal_mask(t, past_k.shape[2], x.device), dim=-1)
        out = (attn @ self._repeat_kv(v)).transpose(1, 2).reshape(b, t, self.heads * self.head_dim)
        return self.o_proj(out), k, v


class MLP(nn.Module):
    def __init__(self, cfg: LlamaConfig):
        super().__init__()
        self.gate_proj = nn.Linear(cfg.hidden_size, cfg.intermediate_size, bias=False)
        self.up_proj = nn.Linear(cfg.hidden_size, cfg.intermediate_size, bias=False)
        self.down_proj = nn.Linear(cfg.intermediate_size, cfg.hidden_size, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class DecoderLayer(nn.Module):
    def __init__(self, cfg: LlamaConfig):
        super().__init__()
        self.input_layernorm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.self_attn = Attention(cfg)
        self.post_attention_layernorm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.mlp = MLP(cfg)

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, past_k: torch.Tensor,
                past_v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        h, k, v = self.self_attn(self.input_layernorm(x), cos, sin, past_k, past_v)
        x = x + h
        return x + self.mlp(self.post_attention_layernorm(x)), k, v


class Backbone(nn.Module):
    def __init__(self, cfg: LlamaConfig):
        super().__init__()
        self.embed_tokens = nn.Embedding(cfg.vocab_size, cfg.hidden_size)
        self.layers = nn.ModuleList(DecoderLayer(cfg) for _ in range(cfg.num_hidden_layers))
        self.norm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)


class LlamaCausalLM(nn.Module):
    """(ids [1,T], past keys/values [L,1,H_kv,P,D]) -> (logits, keys, values); see ``slmc.models.causal_lm``."""

    def __init__(self, cfg: LlamaConfig):
        super().__init__()
        self.config = cfg
        self.model = Backbone(cfg)
        self.lm_head = nn.Linear(cfg.hidden_size, cfg.vocab_size, bias=False)
        if cfg.tie_word_embeddings:
            self.lm_head.weight = self.model.embed_tokens.weight
        inv_freq = 1.0 / (cfg.rope_theta ** (torch.arange(0, cfg.head_dim, 2, dtype=torch.int64).float() / cfg.head_dim))
        self.register_buffer("inv_freq", inv_freq, persistent=False)

    def _rotary(self, tokens: int, past: int) -> tuple[torch.Tensor, torch.Tensor]:
        # New tokens sit at past - 1 ... (slot 0 of the cache is the sink). The offset is computed
        # as a tensor: adding the symbolic scalar ``past - 1`` to a tensor makes TVM 0.27's
        # FuseTIR fail ("VarRemapGet(source) == nullptr"), and a float tensor + symbolic int
        # does not import at all.
        offset = torch.ones(past, dtype=torch.int64).sum() - 1
        positions = (torch.arange(tokens) + offset).to(torch.float32)
        freqs = positions[:, None] * self.inv_freq[None, :]
        emb = torch.cat((freqs, freqs), dim=-1)
        return emb.cos()[None, None], emb.sin()[None, None]

    def forward(self, input_ids: torch.Tensor, past_keys: torch.Tensor, past_values: torch.Tensor) -> tuple[torch.Tensor, ...]:
        x = self.model.embed_tokens(input_ids)
        cos, sin = self._rotary(input_ids.shape[1], past_keys.shape[3])
        keys, values = [], []
        for i, layer in enumerate(self.model.layers):
            x, k, v = layer(x, cos, sin, past_keys[i], past_values[i])
            keys.append(k)
            values.append(v)
        return self.lm_head(self.model.norm(x)), torch.stack(keys), torch.stack(values)

    def cache_spec(self, max_context: int) -> KVCacheSpec:
        cfg = self.config
        return KVCacheSpec(cfg.num_hidden_layers, cfg.num_key_value_heads, cfg.head_dim, max_context)
