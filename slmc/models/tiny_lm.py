"""The built-in ``tiny-lm``: a small decoder-only transformer over UTF-8 bytes.

Embedding, pre-norm blocks of RMSNorm (Zhang & Sennrich, 2019) + multi-head causal self-attention
+ SiLU MLP, a final RMSNorm and an LM head. Weights are random but seeded, so every machine builds
the same model; it exists to exercise the whole compile path without any download.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from slmc.graph.ir import ModelSpec
from slmc.graph import kv_cache
from slmc.graph.kv_cache import KVCacheSpec, sink_causal_mask
from slmc.data.tokenizer import ByteTokenizer


@dataclass(frozen=True)
class TinyLMConfig:
    vocab_size: int = 256
    hidden: int = 128
    heads: int = 4
    layers: int = 2
    mlp_ratio: int = 4
    max_seq_len: int = 256
    eps: float = 1e-6


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.weight * (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps))


class CausalSelfAttention(nn.Module):
    def __init__(self, cfg: TinyLMConfig):
        super().__init__()
        self.heads = cfg.heads
        self.head_dim = cfg.hidden // cfg.heads
        self.q_proj = nn.Linear(cfg.hidden, cfg.hidden, bias=False)
        self.k_proj = nn.Linear(cfg.hidden, cfg.hidden, bias=False)
        self.v_proj = nn.Linear(cfg.hidden, cfg.hidden, bias=False)
        self.o_proj = nn.Linear(cfg.hidden, cfg.hidden, bias=False)

    def _heads(self, x: torch.Tensor) -> torch.Tensor:
        b, t, _ = x.shape
        return x.view(b, t, self.heads, self.head_dim).transpose(1, 2)

    def forward(self, x: torch.Tensor, past_k: torch.Tensor, past_v: torch.Tensor) -> tuple[torch.Tensor, ...]:
        b, t, d = x.shape
        q = self._heads(self.q_proj(x))
        k = torch.cat([past_k, self._heads(self.k_proj(x))], dim=2)
        v = torch.cat([past_v, self._heads(self.v_proj(x))], dim=2)
        scores = (q @ k.transpose(-1, -2)) * (self.head_dim**-0.5)
        attn = F.softmax(scores + sink_causal_mask(t, past_k.shape[2], x.device), dim=-1)
        return self.o_proj((attn @ v).transpose(1, 2).reshape(b, t, d)), k, v


class MLP(nn.Module):
    def __init__(self, cfg: TinyLMConfig):
        super().__init__()
        self.up_proj = nn.Linear(cfg.hidden, cfg.hidden * cfg.mlp_ratio, bias=False)
        self.down_proj = nn.Linear(cfg.hidden * cfg.mlp_ratio, cfg.hidden, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(F.silu(self.up_proj(x)))


class Block(nn.Module):
    def __init__(self, cfg: TinyLMConfig):
        super().__init__()
        self.attn_norm = RMSNorm(cfg.hidden, cfg.eps)
        self.attn = CausalSelfAttention(cfg)
        self.mlp_norm = RMSNorm(cfg.hidden, cfg.eps)
        self.mlp = MLP(cfg)

    def forward(self, x: torch.Tensor, past_k: torch.Tensor, past_v: torch.Tensor) -> tuple[torch.Tensor, ...]:
        h, k, v = self.attn(self.attn_norm(x), past_k, past_v)
        x = x + h
        return x + self.mlp(self.mlp_norm(x)), k, v


class TinyLM(nn.Module):
    """The causal-LM contract of ``slmc.graph.kv_cache``: (ids, past keys, past values) -> (logits, keys, values)."""

    def __init__(self, cfg: TinyLMConfig):
        super().__init__()
        self.config = cfg
        self.embed = nn.Embedding(cfg.vocab_size, cfg.hidden)
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.layers))
        self.norm = RMSNorm(cfg.hidden, cfg.eps)
        self.lm_head = nn.Linear(cfg.hidden, cfg.vocab_size, bias=False)

    def forward(self, input_ids: torch.Tensor, past_keys: torch.Tensor, past_values: torch.Tensor) -> tuple[torch.Tensor, ...]:
        x = self.embed(input_ids)
        keys, values = [], []
        for i, block in enumerate(self.blocks):
            x, k, v = block(x, past_keys[i], past_values[i])
            keys.append(k)
            values.append(v)
        return self.lm_head(self.norm(x)), torch.stack(keys), torch.stack(values)

    def cache_spec(self) -> KVCacheSpec:
        cfg = self.config
        return KVCacheSpec(cfg.layers, cfg.heads, cfg.hidden // cfg.heads, cfg.max_seq_len)



def build(seed: int = 0, config: TinyLMConfig | None = None) -> ModelSpec:
    """``tiny-lm`` with seeded random weights, traced under the causal-LM cache contract."""
    cfg = config or TinyLMConfig()
    torch_state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    model = TinyLM(cfg).eval()
    torch.random.set_rng_state(torch_state)
    cache = model.cache_spec()
    return ModelSpec(
        module=model,
        example_inputs=kv_cache.example_inputs(cache, vocab=cfg.vocab_size, seed=seed),
        dynamic_shapes=kv_cache.dynamic_shapes(cache),
        name="tiny-lm",
        input_names=kv_cache.INPUT_NAMES,
        output_names=kv_cache.OUTPUT_NAMES,
        description="built-in byte-level transformer LM (2 layers, hidden 128, seeded random weights)",
        task="causal-lm",
        kv_cache=cache,
        tokenizer=ByteTokenizer(),
    )
