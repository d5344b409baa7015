"""Sinkhorn–Knopp projection onto doubly-stochastic matrices.

mHC (arXiv 2512.24880) constrains its residual mixing matrix H_res to the Birkhoff polytope: every
entry ≥ 0, every row and every column sums to 1. Such a matrix leaves identical streams unchanged
(rows sum to 1), conserves the sum over streams (columns sum to 1), and products of such matrices
stay doubly stochastic, so stacking many layers can neither blow up nor kill the residual signal.

The projection is the classic Sinkhorn–Knopp iteration: take ``exp(logits / tau)``, then
alternately normalise columns and rows. Rows are normalised last, so row sums are exact up to
rounding while column sums carry the remaining convergence error.

The computation always runs in float32 (float64 if the input is float64), even under bf16
autocast: bf16 coefficients give row sums that are hundreds of times worse, and that error
compounds over depth.
"""

from __future__ import annotations

import math

import torch

__all__ = [
    "FLOAT32_SMALLEST_NORMAL_LOG",
    "doubly_stochastic_errors",
    "sinkhorn",
    "sinkhorn_compute_dtype",
]

# exp(x) for x below this is subnormal or zero in float32; gradients through such entries are
# (or are flushed to) exactly zero.
FLOAT32_SMALLEST_NORMAL_LOG = math.log(torch.finfo(torch.float32).tiny)


def sinkhorn_compute_dtype(logits: torch.Tensor, iters: int, tau: float) -> torch.dtype:
    """Check Sinkhorn's arguments; the dtype it computes in (fp32, or fp64 for fp64 input)."""
    assert logits.dim() >= 2 and logits.shape[-1] == logits.shape[-2], (
        f"sinkhorn needs square matrices in the last two dims, got shape {tuple(logits.shape)}"
    )
    if iters < 1:
        raise ValueError(f"sinkhorn needs iters >= 1, got {iters}")
    if not tau > 0:
        raise ValueError(f"sinkhorn needs a positive temperature tau, got {tau}")
    return torch.float64 if logits.dtype == torch.float64 else torch.float32


def sinkhorn(logits: torch.Tensor, iters: int = 20, tau: float = 1.0) -> torch.Tensor:
    """Project ``logits`` (..., n, n) onto (approximately) doubly-stochastic matrices.

    Computes ``exp(logits / tau)`` and then ``iters`` rounds of column normalisation followed by
    row normalisation. Returns float32 (float64 for float64 input) whatever autocast says; callers
    cast the result where they use it.
    """
    compute_dtype = sinkhorn_compute_dtype(logits, iters, tau)
    with torch.autocast(device_type=logits.device.type, enabled=False):
        scaled = logits.to(compute_dtype) / tau
        # Sinkhorn's result is invariant to adding a constant to all logits, so subtracting the
        # per-matrix max only prevents exp overflow (e.g. +8 / 0.05 = 160 > 88.7); detached
        # because the shift carries no gradient information.
        scaled = scaled - scaled.amax(dim=(-2, -1), keepdim=True).detach()
        matrix = scaled.exp()
        # a positive 1×1 matrix is doubly stochastic after one normalisation (it is exactly 1, and
        # so is every later round): mHC with one stream would otherwise unroll `iters` useless
        # rounds per layer into every compiled graph
        rounds = 1 if logits.shape[-1] == 1 else iters
        for _ in range(rounds):
            matrix = matrix / matrix.sum(dim=-2, keepdim=True)
            matrix = matrix / matrix.sum(dim=-1, keepdim=True)
    return matrix


def doubly_stochastic_errors(matrix: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Max absolute deviation of row sums and of column sums from 1, over the whole batch.

    Returns two 0-dim tensors (no host sync). For ``sinkhorn`` output the row error is pure
    rounding (rows are normalised last) and the column error is the remaining convergence error.
    """
    assert matrix.dim() >= 2 and matrix.shape[-1] == matrix.shape[-2], (
        f"expected square matrices in the last two dims, got shape {tuple(matrix.shape)}"
    )
    row_error = (matrix.sum(dim=-1) - 1).abs().amax()
    column_error = (matrix.sum(dim=-2) - 1).abs().amax()
    return row_error, column_error
