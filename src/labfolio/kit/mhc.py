"""Manifold-constrained hyper-connections (mHC; DeepSeek, arXiv 2512.24880).

Same update as HC, X' = H_res·X + H_postᵀ·F(H_pre·X), with each coefficient constrained:

- H_pre = σ(·) ∈ (0, 1)ⁿ and H_post = 2σ(·) ∈ (0, 2)ⁿ;
- H_res = Sinkhorn–Knopp(·): doubly stochastic, so it neither amplifies nor loses the residual
  signal however many layers are stacked (see ``labfolio.kit.sinkhorn``).

The logits come from the flattened n·C vector of the streams, RMS-normalised (no gain: a gain
would be absorbed by φ, and the paper's fused kernel divides by the RMS after the projection):

    logits_pre  = α_pre  · (x̃ φ_pre)  + b_pre        (n)
    logits_post = α_post · (x̃ φ_post) + b_post       (n)
    logits_res  = α_res  · (x̃ φ_res)  + b_res        (n×n), H_res = Sinkhorn(logits_res / τ)

Static mode keeps only the biases. Init follows the paper: b_pre = −3 except +3 on the home
stream (``layer_index mod n``), b_post = 0, b_res = 6I − 3, α = 0.01. In general
b_res = o·(J − 2I) with o = ``hres_offdiag_init`` (−3 by default: diagonal +3, off-diagonal −3),
giving H_res diagonal ≈ 0.9926 and H_pre ≈ 0.953 on the home stream at n = 4.

φ starts small and random, not zero: with φ = 0 the gates α would get exactly zero gradient at
step 0 (their gradient is proportional to x̃φ), the "parameters that never learn" failure.

With n = 1 the Sinkhorn projection of a 1×1 matrix is exactly 1, so the identity path is exactly
the residual one and the layer computes x + h_post·F(h_pre·x) with scalar gains h_pre = σ(·) and
h_post = 2σ(·) (≈ 0.953 and 1 at init). Because each branch starts with a scale-invariant norm,
F(h_pre·x) equals F(x) up to the norm's eps; the layer is a residual block with learned scalar
branch gains, not bit-identical to x + F(x).

This module is the eager reference. ``mhc_impl="fast"`` runs the same layer through
``labfolio.kit.mhc_fused`` (bf16 streams under autocast, float32 coefficients, no saved float32
copies, Sinkhorn recomputed in backward); tests hold the two to the same outputs and gradients.
``mhc_impl="triton"`` is the fast path with its mixing, coefficients and Sinkhorn in Triton
kernels (``labfolio.kit.mhc_triton``) wherever they can run (CUDA, or under TRITON_INTERPRET=1),
and the plain-torch fast path elsewhere; ``"auto"`` is triton on CUDA when triton imports, the
torch fast path on CUDA without it, and the reference on CPU and with one stream.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import nn

from labfolio.kit.mhc_fused import PendingStreams, fast_mhc_forward, kernels_importable, materialize
from labfolio.kit.sinkhorn import sinkhorn
from labfolio.kit.stream_mixing import RecordedCoefficients, apply_hyper_connection, coefficient_dtype

if TYPE_CHECKING:
    from labfolio.kit.connections import ConnectionConfig

__all__ = ["ManifoldHyperConnection", "mhc_parameter_count"]

_GATE_INIT = 0.01  # paper: α_pre = α_post = α_res = 0.01
_HOME_PRE_BIAS = 3.0  # σ(3) ≈ 0.953 on the home stream, σ(−3) ≈ 0.047 elsewhere
_NORM_EPS = 1e-6


def mhc_parameter_count(streams: int, width: int, dynamic: bool) -> int:
    """Closed-form parameter count of one ManifoldHyperConnection."""
    static = streams + streams + streams * streams  # b_pre, b_post, b_res
    if not dynamic:
        return static
    return static + streams * width * (streams * streams + 2 * streams) + 3  # φ and three α


def _base(streams: torch.Tensor | PendingStreams) -> torch.Tensor:
    return streams.base if isinstance(streams, PendingStreams) else streams


class ManifoldHyperConnection(nn.Module):
    """mHC around one branch: ``forward(streams (B,T,n,C), branch) -> streams (B,T,n,C)``."""

    def __init__(self, config: ConnectionConfig, width: int, layer_index: int) -> None:
        super().__init__()
        assert config.connection == "mhc", f"ManifoldHyperConnection needs connection='mhc', got {config}"
        assert config.num_fracs == 1, "ConnectionConfig rejects num_fracs > 1 for mhc"
        num_streams = config.streams
        self.num_streams = num_streams
        self.dynamic = config.dynamic
        self.sinkhorn_iters = config.sinkhorn_iters
        self.sinkhorn_tau = config.sinkhorn_tau
        self.impl = config.mhc_impl
        self.layer_index = layer_index
        self.home_stream = layer_index % num_streams

        pre_bias = torch.full((num_streams,), -_HOME_PRE_BIAS)
        pre_bias[self.home_stream] = _HOME_PRE_BIAS
        self.pre_bias = nn.Parameter(pre_bias)  # b_pre (n,)
        self.post_bias = nn.Parameter(torch.zeros(num_streams))  # b_post (n,): 2σ(0) = 1
        offdiag = config.hres_offdiag_init
        res_bias = torch.full((num_streams, num_streams), offdiag)
        res_bias.fill_diagonal_(-offdiag)
        self.res_bias = nn.Parameter(res_bias)  # b_res (n, n) = o·(J − 2I)

        if config.dynamic:
            flat_width = num_streams * width
            outputs = 2 * num_streams + num_streams * num_streams
            # std 1/sqrt(nC): x̃ has unit RMS, so x̃φ starts as N(0, 1) and α·x̃φ as ~0.01.
            self.phi = nn.Parameter(torch.randn(flat_width, outputs) / math.sqrt(flat_width))
            self.pre_gate = nn.Parameter(torch.tensor(_GATE_INIT))  # α_pre
            self.post_gate = nn.Parameter(torch.tensor(_GATE_INIT))  # α_post
            self.res_gate = nn.Parameter(torch.tensor(_GATE_INIT))  # α_res
        self.recorded: RecordedCoefficients | None = None
        # Resolved once here, not in forward, so that compiled graphs see a constant. False: the
        # torch fast path does everything (triton missing, or not asked for).
        self.kernels_available = False
        if self.impl == "triton" or (self.impl == "auto" and num_streams > 1 and torch.cuda.is_available()):
            self.kernels_available = kernels_importable()
            if not self.kernels_available and self.impl == "triton":
                warnings.warn(
                    "mhc_impl='triton' but triton does not import here: this layer runs the plain-torch "
                    "fast path (mhc_impl='fast') instead. Install triton to use the kernels.",
                    RuntimeWarning,
                    stacklevel=3,
                )

    def runs_fast_path(self, device_type: str) -> bool:
        """Whether forward on this device takes a fast path (torch or Triton) instead of the reference."""
        if self.impl in ("fast", "triton"):
            return True
        # auto: the fast paths on CUDA, but not with one stream, where the reference is a residual
        # add with two scalar gains that torch.compile fuses whole: in the reference study's ViT
        # it ran faster than the kernels (400 s against 487 s per 50-epoch run, residual 311 s,
        # 8 runs sharing an H200)
        return self.impl == "auto" and device_type == "cuda" and self.num_streams > 1

    def uses_kernels(self, streams: torch.Tensor) -> bool:
        """Whether forward on this state runs the Triton kernels (else the torch fast path or the reference)."""
        if not self.kernels_available or self.impl == "fast":
            return False
        if self.impl == "auto" and streams.device.type != "cuda":
            return False
        from labfolio.kit.mhc_triton import kernels_usable

        return kernels_usable(streams, self.num_streams)

    def coefficients(self, streams: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(h_pre (..., 1, n), h_res (..., n, n), h_post (..., n)), float32 (float64 streams: float64)."""
        n = self.num_streams
        dtype = coefficient_dtype(streams)
        with torch.autocast(device_type=streams.device.type, enabled=False):
            pre_logits = self.pre_bias.to(dtype)
            post_logits = self.post_bias.to(dtype)
            res_logits = self.res_bias.to(dtype)
            if self.dynamic:
                batch, seq = streams.shape[:2]
                flat = streams.to(dtype).reshape(batch, seq, -1)  # (B, T, nC)
                normed = F.rms_norm(flat, (flat.shape[-1],), eps=_NORM_EPS)
                projected = normed @ self.phi.to(dtype)  # (B, T, 2n + n²)
                pre_term, post_term, res_term = projected.split([n, n, n * n], dim=-1)
                pre_logits = self.pre_gate.to(dtype) * pre_term + pre_logits
                post_logits = self.post_gate.to(dtype) * post_term + post_logits
                res_logits = self.res_gate.to(dtype) * res_term.reshape(batch, seq, n, n) + res_logits
            h_pre = torch.sigmoid(pre_logits).unsqueeze(-2)  # (..., 1, n)
            h_post = 2 * torch.sigmoid(post_logits)  # (..., n)
        h_res = sinkhorn(res_logits, self.sinkhorn_iters, self.sinkhorn_tau)  # (..., n, n)
        return h_pre, h_res, h_post

    def forward(
        self, streams: torch.Tensor | PendingStreams, branch: Callable[[torch.Tensor], torch.Tensor]
    ) -> torch.Tensor | PendingStreams:
        # The fast path may hand on a PendingStreams (a stored state plus mixes it rebuilds in
        # backward); the reference always works on, and returns, the plain tensor.
        base = _base(streams)
        if self.runs_fast_path(base.device.type):
            shape = base.shape
            assert len(shape) == 4 and shape[2] == self.num_streams, (
                f"mhc expects streams (B, T, {self.num_streams}, C), got {tuple(shape)}; "
                "expand the input with StreamAdapter.expand first"
            )
            return fast_mhc_forward(self, streams, branch, self.uses_kernels(base))
        streams = materialize(streams)
        assert streams.dim() == 4 and streams.shape[2] == self.num_streams, (
            f"mhc expects streams (B, T, {self.num_streams}, C), got {tuple(streams.shape)}; "
            "expand the input with StreamAdapter.expand first"
        )
        h_pre, h_res, h_post = self.coefficients(streams)
        gates = (
            torch.stack([self.pre_gate, self.post_gate, self.res_gate]).detach() if self.dynamic else None
        )
        self.recorded = RecordedCoefficients("mhc", h_pre.detach(), h_post.detach(), h_res.detach(), gates)
        return apply_hyper_connection(streams, branch, h_pre, h_res, h_post, num_fracs=1)

    def extra_repr(self) -> str:
        return (
            f"streams={self.num_streams}, dynamic={self.dynamic}, sinkhorn_iters={self.sinkhorn_iters}, "
            f"sinkhorn_tau={self.sinkhorn_tau}, impl={self.impl}, layer_index={self.layer_index}, home_stream={self.home_stream}"
        )
