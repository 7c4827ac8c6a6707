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

from slmc.ir import ModelSpec


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
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps) * self.weight


class CausalSelfAttention(nn.Module):
    def __init__(self, cfg: TinyLMConfig):
        super().__init__()
        self.heads = cfg.heads
        self.head_dim = cfg.hidden // cfg.heads
        self.q_proj = nn.Linear(cfg.hidden, cfg.hidden, bias=False)
        self.k_proj = nn.Linear(cfg.hidden, cfg.hidden, bias=False)
        self.v_proj = nn.Linear(cfg.hidden, cfg.hidden, bias=False)
        self.o_proj = nn.Linear(cfg.hidden, cfg.hidden, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, d = x.shape
        q = self.q_proj(x).view(b, t, self.heads, self.head_dim).transpose(1, 2)
        k = self.k_proj(x).view(b, t, self.heads, self.head_dim).transpose(1, 2)
        v = self.v_proj(x).view(b, t, self.heads, self.head_dim).transpose(1, 2)
        scores = (q @ k.transpose(-1, -2)) * (self.head_dim**-0.5)
        mask = torch.triu(torch.full((t, t), float("-inf"), device=x.device), diagonal=1)
        attn = F.softmax(scores + mask, dim=-1)
        return self.o_proj((attn @ v).transpose(1, 2).reshape(b, t, d))


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

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.attn_norm(x))
        return x + self.mlp(self.mlp_norm(x))


class TinyLM(nn.Module):
    """Token ids ``[batch, seq]`` (int64) -> logits ``[batch, seq, vocab]`` (float32)."""

    def __init__(self, cfg: TinyLMConfig):
        super().__init__()
        self.config = cfg
        self.embed = nn.Embedding(cfg.vocab_size, cfg.hidden)
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.layers))
        self.norm = RMSNorm(cfg.hidden, cfg.eps)
        self.lm_head = nn.Linear(cfg.hidden, cfg.vocab_size, bias=False)

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        x = self.embed(input_ids)
        for block in self.blocks:
            x = block(x)
        return self.lm_head(self.norm(x))


def encode_bytes(text: str) -> list[int]:
    """The tokenizer of ``tiny-lm``: one token per UTF-8 byte."""
    return list(text.encode("utf-8"))


def build(seed: int = 0, config: TinyLMConfig | None = None) -> ModelSpec:
    """``tiny-lm`` with seeded random weights, traced with a dynamic sequence length (2..max)."""
    cfg = config or TinyLMConfig()
    generator = torch.Generator().manual_seed(seed)
    torch_state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    model = TinyLM(cfg).eval()
    torch.random.set_rng_state(torch_state)
    example = torch.randint(0, cfg.vocab_size, (1, 16), generator=generator)
    seq = torch.export.Dim("seq_len", min=2, max=cfg.max_seq_len)
    return ModelSpec(
        module=model,
        example_inputs=(example,),
        dynamic_shapes=({1: seq},),
        name="tiny-lm",
        input_names=("input_ids",),
        encode_text=encode_bytes,
        description="built-in byte-level transformer LM (2 layers, hidden 128, seeded random weights)",
    )
