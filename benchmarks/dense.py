"""Dense: the stochastic transformer's architecture with plain linear layers and no masks.

The true floor of a training step: the Floor benchmark still samples and
differentiates one mask a layer; this model has none. It is built from the
preset's configuration with torch alone (no package code), so it measures
the same model at every commit: token embedding + learned positions;
``n_layer`` pre-LayerNorm blocks of causal multi-head attention (q, k, v, o
as ``nn.Linear``) and a GELU MLP; a final LayerNorm and an LM head.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F


class DenseAttention(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.n_head = config.n_head
        d = config.d_model
        self.q, self.k, self.v, self.o = (nn.Linear(d, d) for _ in range(4))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, time, width = x.shape

        def heads(y):
            return y.view(batch, time, self.n_head, width // self.n_head).transpose(1, 2)

        y = F.scaled_dot_product_attention(heads(self.q(x)), heads(self.k(x)), heads(self.v(x)), is_causal=True)
        return self.o(y.transpose(1, 2).reshape(batch, time, width))


class DenseBlock(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.ln_attn = nn.LayerNorm(config.d_model)
        self.attn = DenseAttention(config)
        self.ln_mlp = nn.LayerNorm(config.d_model)
        self.mlp = nn.Sequential(
            nn.Linear(config.d_model, config.d_ff), nn.GELU(), nn.Linear(config.d_ff, config.d_model)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.ln_attn(x))
        return x + self.mlp(self.ln_mlp(x))


class DenseTransformer(nn.Module):
    """Logits [B, T, vocab] of token ids [B, T]; ``config`` is a preset's ``ModelConfig``."""

    def __init__(self, config):
        super().__init__()
        self.token_embedding = nn.Embedding(config.vocab_size, config.d_model)
        self.position_embedding = nn.Embedding(config.seq_len, config.d_model)
        self.blocks = nn.ModuleList(DenseBlock(config) for _ in range(config.n_layer))
        self.ln_final = nn.LayerNorm(config.d_model)
        self.head = nn.Linear(config.d_model, config.vocab_size, bias=False)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        positions = torch.arange(tokens.shape[1], device=tokens.device)
        x = self.token_embedding(tokens) + self.position_embedding(positions)
        for block in self.blocks:
            x = block(x)
        return self.head(self.ln_final(x))


def build_dense(config, seed: int = 0) -> DenseTransformer:
    """A ``DenseTransformer`` with torch's default initialisation from ``seed``; the caller's RNG does not move."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return DenseTransformer(config)
