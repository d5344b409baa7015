"""Hyper-connections (HC; Zhu et al., arXiv 2409.19606) with frac-connections (arXiv 2503.14125).

HC replaces the residual x + F(x) by n parallel streams mixed by learned weights:
X' = H_res·X + H_postᵀ·F(H_pre·X). Nothing constrains H_res, which is what mHC later fixes.

- Static coefficients are per-layer parameters initialised to a pre-norm residual: H_pre is
  one-hot on the *home* stream ``layer_index mod n``, H_res = I and H_post = 1. With identical
  streams at the input, every stream then follows x + F(x) exactly.
- Dynamic mode adds input-dependent terms ``scale · tanh(norm(slot) · W)`` computed from each
  slot's own features (the source slot decides where its content goes), with W = 0 and the scale
  = 0.01 at init, so dynamic HC starts as static HC.
- ``num_fracs = m > 1`` cuts every stream into m fractions of width C/m (frac-connections): the
  branch input is the concatenation of m mixed fractions, and fraction f of the branch output is
  written back into fraction f of every stream. m = 1 is plain HC.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import nn

from labfolio.kit.stream_mixing import RecordedCoefficients, apply_hyper_connection, coefficient_dtype

if TYPE_CHECKING:
    from labfolio.kit.connections import ConnectionConfig

__all__ = ["HyperConnection", "hc_parameter_count"]

_DYNAMIC_SCALE_INIT = 0.01  # HC paper: s_α = s_β = 0.01 so dynamic terms start negligible
_NORM_EPS = 1e-6


def hc_parameter_count(streams: int, width: int, num_fracs: int, dynamic: bool) -> int:
    """Closed-form parameter count of one HyperConnection."""
    slots, slot_width = streams * num_fracs, width // num_fracs
    static = slots * num_fracs + slots * slots + slots  # H_pre (m×K), H_res (K×K), H_post (K)
    if not dynamic:
        return static
    # norm gain (c) + projection c×(m + K + 1) + the two scales s_α, s_β
    return static + slot_width + slot_width * (num_fracs + slots + 1) + 2


class HyperConnection(nn.Module):
    """HC around one branch: ``forward(streams (B,T,n,C), branch) -> streams (B,T,n,C)``."""

    def __init__(self, config: ConnectionConfig, width: int, layer_index: int) -> None:
        super().__init__()
        assert config.connection == "hc", f"HyperConnection needs connection='hc', got {config}"
        if width % config.num_fracs != 0:
            raise ValueError(
                f"hc with num_fracs={config.num_fracs} splits width {width} into equal fractions; "
                f"pick num_fracs dividing {width}"
            )
        self.num_streams = config.streams
        self.num_fracs = config.num_fracs
        self.dynamic = config.dynamic
        self.layer_index = layer_index
        self.home_stream = layer_index % config.streams
        num_slots, slot_width = config.streams * config.num_fracs, width // config.num_fracs

        # Pre-norm-residual init: branch fraction f reads fraction f of the home stream.
        static_pre = torch.zeros(config.num_fracs, num_slots)
        for fraction in range(config.num_fracs):
            static_pre[fraction, self.home_stream * config.num_fracs + fraction] = 1.0
        self.static_pre = nn.Parameter(static_pre)  # (m, K)
        self.static_res = nn.Parameter(torch.eye(num_slots))  # (K, K), destination-major
        self.static_post = nn.Parameter(torch.ones(num_slots))  # (K,)

        if config.dynamic:
            self.norm_weight = nn.Parameter(torch.ones(slot_width))  # (c,)
            # One projection for all three dynamic terms, columns [pre (m) | res (K) | post (1)];
            # zero init makes dynamic HC start exactly as static HC.
            self.dynamic_proj = nn.Parameter(torch.zeros(slot_width, config.num_fracs + num_slots + 1))
            self.alpha_scale = nn.Parameter(torch.tensor(_DYNAMIC_SCALE_INIT))  # s_α: pre and res
            self.beta_scale = nn.Parameter(torch.tensor(_DYNAMIC_SCALE_INIT))  # s_β: post
        self.recorded: RecordedCoefficients | None = None

    def coefficients(self, streams: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(h_pre (..., m, K), h_res (..., K, K), h_post (..., K)), float32 (float64 streams: float64)."""
        dtype = coefficient_dtype(streams)
        static_pre, static_res, static_post = (
            p.to(dtype) for p in (self.static_pre, self.static_res, self.static_post)
        )
        if not self.dynamic:
            return static_pre, static_res, static_post
        batch, seq, num_streams, width = streams.shape
        num_slots, slot_width = num_streams * self.num_fracs, width // self.num_fracs
        with torch.autocast(device_type=streams.device.type, enabled=False):
            slots = streams.to(dtype).reshape(batch, seq, num_slots, slot_width)
            normed = F.rms_norm(slots, (slot_width,), self.norm_weight.to(dtype), _NORM_EPS)
            projected = torch.tanh(normed @ self.dynamic_proj.to(dtype))  # (B, T, K, m + K + 1)
            pre_term, res_term, post_term = projected.split([self.num_fracs, num_slots, 1], dim=-1)
            alpha, beta = self.alpha_scale.to(dtype), self.beta_scale.to(dtype)
            # Rows of the dynamic terms are source slots; transpose into the destination-major
            # layout the mixing uses.
            h_pre = static_pre + alpha * pre_term.transpose(-1, -2)  # (B, T, m, K)
            h_res = static_res + alpha * res_term.transpose(-1, -2)  # (B, T, K, K)
            h_post = static_post + beta * post_term.squeeze(-1)  # (B, T, K)
        return h_pre, h_res, h_post

    def forward(self, streams: torch.Tensor, branch: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:
        assert streams.dim() == 4 and streams.shape[2] == self.num_streams, (
            f"hc expects streams (B, T, {self.num_streams}, C), got {tuple(streams.shape)}; "
            "expand the input with StreamAdapter.expand first"
        )
        h_pre, h_res, h_post = self.coefficients(streams)
        gates = torch.stack([self.alpha_scale, self.beta_scale]).detach() if self.dynamic else None
        self.recorded = RecordedCoefficients("hc", h_pre.detach(), h_post.detach(), h_res.detach(), gates)
        return apply_hyper_connection(streams, branch, h_pre, h_res, h_post, self.num_fracs)

    def extra_repr(self) -> str:
        return (
            f"streams={self.num_streams}, num_fracs={self.num_fracs}, dynamic={self.dynamic}, "
            f"layer_index={self.layer_index}, home_stream={self.home_stream}"
        )
