"""The update shared by HC and mHC: X' = H_res·X + H_postᵀ·F(H_pre·X).

Both connections only differ in how they produce the three coefficient tensors; this module owns
what they do with them, so the two cannot drift apart. Conventions used everywhere in the kit:

- the residual state is ``streams`` of shape (B, T, n, C);
- with ``m`` fractions (frac-connections, hc only) each stream is cut into m slices of C/m, giving
  K = n·m *slots* of width c = C/m, ordered stream-major: slot k is (stream k // m, fraction k % m);
- ``h_pre``  (..., m, K): branch-input fraction f is the sum over slots k of h_pre[f, k]·slot_k;
- ``h_res``  (..., K, K): destination-major, new slot i is the sum over k of h_res[i, k]·slot_k;
- ``h_post`` (..., K):    slot k receives h_post[k]·(fraction k % m of the branch output).

The leading ``...`` is either empty (static coefficients, shared by all tokens) or (B, T)
(dynamic, one set per token).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

__all__ = [
    "RecordedCoefficients",
    "apply_hyper_connection",
    "coefficient_dtype",
    "weighted_slot_sum",
]


def coefficient_dtype(streams: torch.Tensor) -> torch.dtype:
    """Coefficients are float32 for float32/bf16/fp16 streams, float64 for float64 streams."""
    return torch.float64 if streams.dtype == torch.float64 else torch.float32


@dataclass
class RecordedCoefficients:
    """Detached coefficients of the most recent forward pass, kept for ``diagnostics()``.

    They are references to tensors the forward pass computed anyway, so keeping them costs no
    kernel and no host sync; they are replaced on every forward.
    """

    kind: str  # "hc" or "mhc"
    h_pre: torch.Tensor  # (..., m, K)
    h_post: torch.Tensor  # (..., K)
    h_res: torch.Tensor  # (..., K, K), destination-major
    gates: torch.Tensor | None  # (g,) learned gate scalars, None in static mode


def weighted_slot_sum(weights: torch.Tensor, slots: torch.Tensor) -> torch.Tensor:
    """out[..., d, :] = Σ_k weights[..., d, k] · slots[..., k, :], in float32 or better.

    weights: (D, K) or (B, T, D, K); slots: (B, T, K, c) → (B, T, D, c).

    Written as K broadcast multiply-adds rather than a matmul on purpose: a float32 matmul on GPU
    may run in TF32 and silently round the residual stream to 10 mantissa bits, and a weight of
    exactly 1 on a single slot must return that slot bit for bit (the n = 1 reduction to a plain
    residual depends on it). K is small (≤ 16 in practice), and torch.compile fuses the loop.
    """
    num_slots = slots.shape[-2]
    assert weights.shape[-1] == num_slots, (
        f"weights mix {weights.shape[-1]} slots but the state has {num_slots}"
    )
    out = weights[..., :, 0, None] * slots[..., 0, None, :]
    for k in range(1, num_slots):
        out = out + weights[..., :, k, None] * slots[..., k, None, :]
    return out


def apply_hyper_connection(
    streams: torch.Tensor,
    branch: Callable[[torch.Tensor], torch.Tensor],
    h_pre: torch.Tensor,
    h_res: torch.Tensor,
    h_post: torch.Tensor,
    num_fracs: int,
) -> torch.Tensor:
    """One wrapped branch: streams (B, T, n, C) → (B, T, n, C), same dtype as ``streams``.

    The mixing runs with autocast disabled, in float32 (coefficients are float32 and promote the
    stream dtype); only ``branch`` runs under the caller's autocast.
    """
    assert streams.dim() == 4, f"expected streams (B, T, n, C), got shape {tuple(streams.shape)}"
    batch, seq, num_streams, width = streams.shape
    assert width % num_fracs == 0, f"width {width} is not divisible by num_fracs {num_fracs}"
    num_slots, slot_width = num_streams * num_fracs, width // num_fracs
    slots = streams.reshape(batch, seq, num_slots, slot_width)
    dtype = streams.dtype

    with torch.autocast(device_type=streams.device.type, enabled=False):
        branch_input = weighted_slot_sum(h_pre, slots)  # (B, T, m, c)
        branch_input = branch_input.reshape(batch, seq, width).to(dtype)

    branch_output = branch(branch_input)  # (B, T, C), under the caller's autocast
    assert branch_output.shape == (batch, seq, width), (
        f"branch must map (B, T, C) to (B, T, C); got {tuple(branch_output.shape)} "
        f"for input {(batch, seq, width)}"
    )

    with torch.autocast(device_type=streams.device.type, enabled=False):
        mixed = weighted_slot_sum(h_res, slots)  # (B, T, K, c)
        # Slot k takes fraction k % m of the branch output: broadcast the m fractions over the
        # n streams, which matches the stream-major slot order.
        fractions = branch_output.reshape(batch, seq, 1, num_fracs, slot_width)
        fractions = fractions.expand(batch, seq, num_streams, num_fracs, slot_width)
        fractions = fractions.reshape(batch, seq, num_slots, slot_width)
        out = mixed + h_post[..., None] * fractions
    return out.to(dtype).reshape(batch, seq, num_streams, width)
