"""Vision Transformer for small images (CIFAR-sized), with swappable connections.

Images are cut into non-overlapping patches, linearly embedded, given learned positions and,
optionally, a class token. Pre-norm blocks with bidirectional attention follow; each attention
and MLP branch goes through the configured connection (residual, hc or mhc), or one connection
wraps each whole block with ``wrap="block"``. The forward pass returns the logits and the pooled
embedding, which the recipes use for kNN accuracy, silhouette and effective rank.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from labfolio.kit.connections import ConnectionConfig, StreamAdapter, connection_diagnostics, make_connection

__all__ = ["ViT", "ViTConfig"]


@dataclass
class ViTConfig:
    image_size: int = 32  # square input side in pixels (CIFAR-10/100)
    patch_size: int = 4  # 4×4 patches → 64 tokens on 32×32 images
    in_channels: int = 3  # RGB
    num_classes: int = 10  # CIFAR-10
    depth: int = 6  # transformer blocks
    width: int = 192  # model dimension C (ViT-Tiny width)
    heads: int = 3  # attention heads; must divide width
    mlp_ratio: float = 4.0  # MLP hidden size = mlp_ratio · width
    pool: Literal["cls", "mean"] = "cls"  # class-token output, or the mean over patch tokens
    dropout: float = 0.0  # on attention weights, branch outputs and embeddings
    drop_path: float = 0.0  # stochastic depth: branch-drop rate of the last block, rising linearly from 0
    connection: ConnectionConfig = field(default_factory=ConnectionConfig)  # residual | hc | mhc

    def __post_init__(self) -> None:
        assert self.image_size % self.patch_size == 0, (
            f"image_size {self.image_size} must be divisible by patch_size {self.patch_size}"
        )
        assert self.width % self.heads == 0, f"width {self.width} must be divisible by heads {self.heads}"
        assert self.pool in ("cls", "mean"), f"pool must be 'cls' or 'mean', got {self.pool!r}"
        assert self.depth > 0 and self.num_classes > 0, (
            f"depth and num_classes must be positive, got {self.depth}, {self.num_classes}"
        )
        assert 0.0 <= self.dropout < 1.0, f"dropout must be in [0, 1), got {self.dropout}"
        assert 0.0 <= self.drop_path < 1.0, f"drop_path must be in [0, 1), got {self.drop_path}"
        assert isinstance(self.connection, ConnectionConfig), (
            f"connection must be a ConnectionConfig, got {type(self.connection).__name__}"
        )

    @property
    def num_patches(self) -> int:
        return (self.image_size // self.patch_size) ** 2


class SelfAttention(nn.Module):
    def __init__(self, config: ViTConfig) -> None:
        super().__init__()
        self.heads = config.heads
        self.dropout = config.dropout
        self.qkv = nn.Linear(config.width, 3 * config.width)
        self.proj = nn.Linear(config.width, config.width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, seq, width = x.shape
        q, k, v = self.qkv(x).split(width, dim=-1)  # 3 × (B, T, C)
        q, k, v = (t.view(batch, seq, self.heads, width // self.heads).transpose(1, 2) for t in (q, k, v))
        y = F.scaled_dot_product_attention(q, k, v, dropout_p=self.dropout if self.training else 0.0)
        return self.proj(y.transpose(1, 2).reshape(batch, seq, width))  # (B, T, C)


class MLP(nn.Module):
    def __init__(self, config: ViTConfig) -> None:
        super().__init__()
        hidden = int(config.mlp_ratio * config.width)
        self.up = nn.Linear(config.width, hidden)
        self.down = nn.Linear(hidden, config.width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down(F.gelu(self.up(x)))


def drop_branch(x: torch.Tensor, rate: float, training: bool) -> torch.Tensor:
    """Stochastic depth: zero the branch output of a random `rate` of the samples, rescale the rest.

    Under hc/mhc a dropped branch still leaves H_res to mix the streams, so the sample sees the
    connection without that branch, which is what dropping a residual branch means there too.
    """
    if rate == 0.0 or not training:
        return x
    keep = 1.0 - rate
    mask = torch.rand((x.shape[0],) + (1,) * (x.dim() - 1), device=x.device) < keep
    return x * mask.to(x.dtype) / keep


class Block(nn.Module):
    """Pre-norm block; the connection modules decide how branches meet the residual state."""

    def __init__(self, config: ViTConfig, index: int) -> None:
        super().__init__()
        self.norm_attn = nn.LayerNorm(config.width)
        self.attn = SelfAttention(config)
        self.norm_mlp = nn.LayerNorm(config.width)
        self.mlp = MLP(config)
        self.dropout = nn.Dropout(config.dropout)
        self.drop_path = config.drop_path * index / max(config.depth - 1, 1)
        self.wrap = config.connection.wrap
        if self.wrap == "branch":
            self.attn_connection = make_connection(config.connection, config.width, layer_index=2 * index)
            self.mlp_connection = make_connection(config.connection, config.width, layer_index=2 * index + 1)
        else:
            self.block_connection = make_connection(config.connection, config.width, layer_index=index)

    def attention_branch(self, x: torch.Tensor) -> torch.Tensor:  # (B, T, C) -> (B, T, C)
        return drop_branch(self.dropout(self.attn(self.norm_attn(x))), self.drop_path, self.training)

    def mlp_branch(self, x: torch.Tensor) -> torch.Tensor:  # (B, T, C) -> (B, T, C)
        return drop_branch(self.dropout(self.mlp(self.norm_mlp(x))), self.drop_path, self.training)

    def whole_block_branch(self, x: torch.Tensor) -> torch.Tensor:
        # The block's update block(x) − x, keeping the inner residual between attention and MLP,
        # so the outer connection adds the identity path exactly once.
        attended = self.attention_branch(x)
        return attended + self.mlp_branch(x + attended)

    def forward(self, state: torch.Tensor) -> torch.Tensor:
        # state: (B, T, C) for residual, (B, T, n, C) for hc/mhc; only connections look inside.
        if self.wrap == "branch":
            state = self.attn_connection(state, self.attention_branch)
            return self.mlp_connection(state, self.mlp_branch)
        return self.block_connection(state, self.whole_block_branch)


class ViT(nn.Module):
    def __init__(self, config: ViTConfig) -> None:
        super().__init__()
        self.config = config
        self.patch_embedding = nn.Conv2d(
            config.in_channels, config.width, kernel_size=config.patch_size, stride=config.patch_size
        )
        num_tokens = config.num_patches + (1 if config.pool == "cls" else 0)
        self.class_token = nn.Parameter(torch.zeros(1, 1, config.width)) if config.pool == "cls" else None
        self.position_embedding = nn.Parameter(torch.zeros(1, num_tokens, config.width))
        self.embedding_dropout = nn.Dropout(config.dropout)
        self.streams = StreamAdapter(config.connection, config.width)
        self.blocks = nn.ModuleList(Block(config, index) for index in range(config.depth))
        self.final_norm = nn.LayerNorm(config.width)  # after the stream reduction
        self.head = nn.Linear(config.width, config.num_classes)

        # Only Linear weights, positions and the class token are re-initialised; connection
        # parameters keep the papers' inits set by their own constructors.
        self.apply(self._init_weights)
        nn.init.trunc_normal_(self.position_embedding, std=0.02)
        if self.class_token is not None:
            nn.init.trunc_normal_(self.class_token, std=0.02)

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, nn.Linear):
            nn.init.trunc_normal_(module.weight, std=0.02)
            if module.bias is not None:
                nn.init.zeros_(module.bias)

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """images (B, C_in, H, W) → logits (B, num_classes) and pooled embedding (B, width)."""
        config = self.config
        expected = (config.in_channels, config.image_size, config.image_size)
        assert images.dim() == 4 and tuple(images.shape[1:]) == expected, (
            f"images must be (B, {expected[0]}, {expected[1]}, {expected[2]}), got {tuple(images.shape)}"
        )
        x = self.patch_embedding(images)  # (B, C, H/p, W/p)
        x = x.flatten(2).transpose(1, 2)  # (B, N, C)
        if self.class_token is not None:
            x = torch.cat([self.class_token.expand(x.shape[0], -1, -1).to(x.dtype), x], dim=1)  # (B, 1 + N, C)
        x = self.embedding_dropout(x + self.position_embedding)
        state = self.streams.expand(x)  # (B, T, C) or (B, T, n, C)
        for block in self.blocks:
            state = block(state)
        x = self.final_norm(self.streams.reduce(state))  # (B, T, C)
        embedding = x[:, 0] if config.pool == "cls" else x.mean(dim=1)  # (B, C)
        return self.head(embedding), embedding

    def diagnostics(self) -> dict[str, float]:
        """hc/mhc diagnostics of the most recent forward pass ({} for residual)."""
        return connection_diagnostics(self)

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())
