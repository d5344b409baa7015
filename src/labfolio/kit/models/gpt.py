"""Byte-level GPT: a decoder-only transformer over raw bytes, with swappable connections.

The vocabulary is the 256 byte values, so no tokenizer is involved and the validation loss in
nats converts directly to bits per byte (loss / ln 2). Pre-norm blocks, causal
``scaled_dot_product_attention``, learned positions, and an output head tied to the token
embedding. Every attention and MLP branch goes through the configured connection (residual, hc or
mhc); with ``wrap="block"`` one connection wraps the whole block instead.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from labfolio.kit.connections import ConnectionConfig, StreamAdapter, connection_diagnostics, make_connection

__all__ = ["GPT", "GPTConfig"]


@dataclass
class GPTConfig:
    vocab_size: int = 256  # one token per byte value; val loss / ln 2 is bits per byte
    block_size: int = 256  # longest context in tokens (size of the position table)
    depth: int = 6  # transformer blocks
    width: int = 384  # model dimension C
    heads: int = 6  # attention heads; must divide width
    mlp_ratio: float = 4.0  # MLP hidden size = mlp_ratio · width, as in GPT-2
    dropout: float = 0.0  # on attention weights and branch outputs; 0 for small-data sanity runs
    connection: ConnectionConfig = field(default_factory=ConnectionConfig)  # residual | hc | mhc

    def __post_init__(self) -> None:
        assert self.width % self.heads == 0, f"width {self.width} must be divisible by heads {self.heads}"
        assert self.vocab_size > 0 and self.block_size > 0 and self.depth > 0, (
            f"vocab_size, block_size and depth must be positive, got {self.vocab_size}, "
            f"{self.block_size}, {self.depth}"
        )
        assert 0.0 <= self.dropout < 1.0, f"dropout must be in [0, 1), got {self.dropout}"
        assert isinstance(self.connection, ConnectionConfig), (
            f"connection must be a ConnectionConfig, got {type(self.connection).__name__}"
        )


class CausalSelfAttention(nn.Module):
    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        self.heads = config.heads
        self.dropout = config.dropout
        self.qkv = nn.Linear(config.width, 3 * config.width, bias=False)
        self.proj = nn.Linear(config.width, config.width, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, seq, width = x.shape
        q, k, v = self.qkv(x).split(width, dim=-1)  # 3 × (B, T, C)
        q, k, v = (t.view(batch, seq, self.heads, width // self.heads).transpose(1, 2) for t in (q, k, v))
        y = F.scaled_dot_product_attention(
            q, k, v, is_causal=True, dropout_p=self.dropout if self.training else 0.0
        )  # (B, heads, T, C/heads)
        return self.proj(y.transpose(1, 2).reshape(batch, seq, width))


class MLP(nn.Module):
    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        hidden = int(config.mlp_ratio * config.width)
        self.up = nn.Linear(config.width, hidden, bias=False)
        self.down = nn.Linear(hidden, config.width, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down(F.gelu(self.up(x)))


class Block(nn.Module):
    """Pre-norm block; the connection modules decide how branches meet the residual state."""

    def __init__(self, config: GPTConfig, index: int) -> None:
        super().__init__()
        self.norm_attn = nn.LayerNorm(config.width)
        self.attn = CausalSelfAttention(config)
        self.norm_mlp = nn.LayerNorm(config.width)
        self.mlp = MLP(config)
        self.dropout = nn.Dropout(config.dropout)
        self.wrap = config.connection.wrap
        if self.wrap == "branch":
            self.attn_connection = make_connection(config.connection, config.width, layer_index=2 * index)
            self.mlp_connection = make_connection(config.connection, config.width, layer_index=2 * index + 1)
        else:
            self.block_connection = make_connection(config.connection, config.width, layer_index=index)

    def attention_branch(self, x: torch.Tensor) -> torch.Tensor:  # (B, T, C) -> (B, T, C)
        return self.dropout(self.attn(self.norm_attn(x)))

    def mlp_branch(self, x: torch.Tensor) -> torch.Tensor:  # (B, T, C) -> (B, T, C)
        return self.dropout(self.mlp(self.norm_mlp(x)))

    def whole_block_branch(self, x: torch.Tensor) -> torch.Tensor:
        # The block's update block(x) − x, with the usual inner residual between attention and
        # MLP, so that the outer connection adds the identity path exactly once.
        attended = self.attention_branch(x)
        return attended + self.mlp_branch(x + attended)

    def forward(self, state: torch.Tensor) -> torch.Tensor:
        # state: (B, T, C) for residual, (B, T, n, C) for hc/mhc; only connections look inside.
        if self.wrap == "branch":
            state = self.attn_connection(state, self.attention_branch)
            return self.mlp_connection(state, self.mlp_branch)
        return self.block_connection(state, self.whole_block_branch)


class GPT(nn.Module):
    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        self.config = config
        self.token_embedding = nn.Embedding(config.vocab_size, config.width)
        self.position_embedding = nn.Embedding(config.block_size, config.width)
        self.embedding_dropout = nn.Dropout(config.dropout)
        self.streams = StreamAdapter(config.connection, config.width)
        self.blocks = nn.ModuleList(Block(config, index) for index in range(config.depth))
        self.final_norm = nn.LayerNorm(config.width)  # after the stream reduction
        self.lm_head = nn.Linear(config.width, config.vocab_size, bias=False)
        self.lm_head.weight = self.token_embedding.weight  # weight tying

        # Only Linear/Embedding weights are re-initialised; connection parameters keep the
        # papers' inits set by their own constructors.
        self.apply(self._init_weights)
        # GPT-2: scale the projections that write into the residual path by 1/sqrt(#branches).
        for name, parameter in self.named_parameters():
            if name.endswith(("attn.proj.weight", "mlp.down.weight")):
                nn.init.normal_(parameter, mean=0.0, std=0.02 / math.sqrt(2 * config.depth))

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
        if isinstance(module, nn.Linear) and module.bias is not None:
            nn.init.zeros_(module.bias)

    def forward(
        self, idx: torch.Tensor, targets: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """idx (B, T) int64 bytes → logits (B, T, vocab) and mean cross-entropy if targets given."""
        assert idx.dim() == 2, f"idx must be (B, T), got shape {tuple(idx.shape)}"
        seq = idx.shape[1]
        assert seq <= self.config.block_size, (
            f"sequence length {seq} exceeds block_size {self.config.block_size}"
        )
        positions = torch.arange(seq, device=idx.device)
        x = self.embedding_dropout(self.token_embedding(idx) + self.position_embedding(positions))  # (B, T, C)
        state = self.streams.expand(x)  # (B, T, C) or (B, T, n, C)
        for block in self.blocks:
            state = block(state)
        x = self.final_norm(self.streams.reduce(state))  # (B, T, C)
        logits = self.lm_head(x)  # (B, T, vocab)
        if targets is None:
            return logits, None
        assert targets.shape == idx.shape, f"targets {tuple(targets.shape)} must match idx {tuple(idx.shape)}"
        loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), targets.reshape(-1), ignore_index=-1)
        return logits, loss

    def diagnostics(self) -> dict[str, float]:
        """hc/mhc diagnostics of the most recent forward pass ({} for residual)."""
        return connection_diagnostics(self)

    def num_parameters(self) -> int:
        """Trainable parameters, counting the tied embedding/head matrix once."""
        return sum(p.numel() for p in self.parameters())
