"""The fast path of mHC (``mhc_impl="fast"``): the eager reference's function, laid out for speed.

``labfolio.kit.mhc`` is the reference: every step is a separate, readable tensor op, and
autograd keeps whatever it needs. That costs memory and bandwidth that the mHC layer does not
need. This module computes the same layer, X' = H_res·X + H_postᵀ·F(H_pre·X), with the same
parameters and init, but:

- **Streams are stored in the autocast dtype** (bf16 under bf16 autocast) while every
  coefficient stays float32 (float64 for float64 streams): the n-stream state is the largest
  tensor of the layer, so its dtype sets most of the layer's memory and traffic. Without
  autocast the streams keep their dtype, and the fast path is the reference up to rounding.
- **Project, then divide by the RMS.** RMSNorm(x)·φ = (x·φ)·rsqrt(mean(x²) + eps), so the
  normalised n·C vector is never materialised; the reference keeps it (float32, the size of the
  whole state) for φ's gradient. ``rms_projection`` saves only the stream state, which the
  mixing saves anyway, and the (N, 2n + n²) projection.
- **Sinkhorn is recomputed in backward.** Autograd through 20 iterations keeps 40 (N, n, n)
  float32 intermediates per layer; ``sinkhorn_recompute`` keeps only the logits and
  differentiates the iterations by hand, replaying them in backward.
- **No fp32 copy of the state is ever saved:** the mixes multiply the stored streams by float32
  coefficients, so autograd keeps a reference to the bf16 state and the small coefficients.
- **Stream states are recomputed in backward.** The state X_l is needed in backward (for H_res's,
  H_pre's and φ's gradients) but it is cheap to rebuild from the state before it: X_{l+1} =
  H_res·X_l + H_postᵀ·F_l is one pointwise pass over tensors that are kept anyway (the branch
  output F_l, needed for H_post's gradient, is n times smaller than a state). So a connection
  hands on a ``PendingStreams``: the last stored state plus the mixes not yet applied to it, and
  only every ``RECOMPUTE_SEGMENT``-th connection stores a state. Everything a connection derives
  from a rebuilt state (coefficients, Sinkhorn, branch input) runs inside one activation
  checkpoint whose inputs are the stored state and the pending mixes, so no other state is kept
  for backward; a connection that reads the stored state itself needs no checkpoint. Models
  never look inside the state they pass between blocks; ``StreamAdapter.reduce`` materialises
  it at the end.

Everything here is plain torch: it runs on CPU, where the tests compare it with the reference,
and under ``torch.compile`` every step between the two matmuls is pointwise or a reduction over
n ≤ 8 entries, which inductor unrolls and fuses. ``mhc_impl="triton"`` runs this same scheme with
``use_kernels=True``: the coefficients, Sinkhorn and branch input of a dynamic connection and
every H_res·X + H_postᵀ·F mix go through the Triton kernels of ``labfolio.kit.mhc_triton``, a
segment's two mixes as one pair op, which saves only its inputs and so needs no checkpoint.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, NamedTuple

import torch
from torch.utils.checkpoint import checkpoint

from labfolio.kit.stream_mixing import RecordedCoefficients, coefficient_dtype, weighted_slot_sum
from labfolio.kit.sinkhorn import sinkhorn_compute_dtype

if TYPE_CHECKING:
    from labfolio.kit.mhc import ManifoldHyperConnection

__all__ = [
    "RECOMPUTE_SEGMENT",
    "PendingStreams",
    "fast_mhc_forward",
    "kernels_importable",
    "materialize",
    "rms_projection",
    "sinkhorn_recompute",
    "stream_storage_dtype",
]

_NORM_EPS = 1e-6  # the reference's RMSNorm eps (labfolio.kit.mhc)
# Connections per stored state: 2 stores one state per block with wrap="branch" (n·C·2 bytes per
# token in bf16) and rebuilds the other in backward with one extra mix; longer segments save
# less memory per step but rebuild longer chains, each of them once per connection.
RECOMPUTE_SEGMENT = 2
_LOW_PRECISION = (torch.bfloat16, torch.float16)


def stream_storage_dtype(streams: torch.Tensor) -> torch.dtype:
    """The dtype the fast path stores streams in: the autocast dtype if autocast is on, else theirs."""
    device_type = streams.device.type
    if streams.dtype != torch.float64 and torch.is_autocast_enabled(device_type):
        return torch.get_autocast_dtype(device_type)
    return streams.dtype


# --------------------------------------------------------------------------- coefficient projection


class _RMSProjection(torch.autograd.Function):
    """y = (x · φ) · r with r = rsqrt(mean(x²) + eps); x (N, F) any float dtype, φ (F, D) float32/64.

    The matmul runs in x's dtype when x is bf16/fp16 (fp32 accumulation, as every autocast
    linear does) and in φ's dtype otherwise; r and y are always in φ's dtype.
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor, phi: torch.Tensor, eps: float) -> torch.Tensor:
        compute = phi.dtype
        inv_rms = torch.rsqrt(x.to(compute).square().mean(dim=-1, keepdim=True) + eps)  # (N, 1)
        raw = _matmul(x, phi)  # (N, D) in φ's dtype
        ctx.save_for_backward(x, phi, inv_rms, raw)
        return raw * inv_rms

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        x, phi, inv_rms, raw = ctx.saved_tensors
        grad = grad.to(phi.dtype)
        grad_raw = grad * inv_rms  # (N, D)
        grad_phi = _matmul(x.transpose(0, 1), grad_raw) if ctx.needs_input_grad[1] else None
        grad_x = None
        if ctx.needs_input_grad[0]:
            # ∂r/∂x = −r³·x/F, so the norm's share is −(Σ_d g_d·raw_d)·r³/F · x.
            num_features = x.shape[-1]
            norm_coeff = -(grad * raw).sum(dim=-1, keepdim=True) * inv_rms.pow(3) / num_features  # (N, 1)
            # In x's dtype when x is bf16/fp16, like the forward matmul.
            grad_x = _matmul(grad_raw.to(x.dtype), phi.transpose(0, 1)) + norm_coeff * x.to(phi.dtype)
            grad_x = grad_x.to(x.dtype)
        return grad_x, grad_phi, None


def _matmul(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """a @ b in the low-precision dtype if either operand is bf16/fp16, else in the wider one; result in the wider."""
    wide = b.dtype if b.dtype not in _LOW_PRECISION else a.dtype
    low = next((t.dtype for t in (a, b) if t.dtype in _LOW_PRECISION), None)
    if low is None:
        return a.to(wide) @ b.to(wide)
    # bf16 operands with fp32 accumulation: a float32 copy of the (N, n·C) state would cost more
    # traffic than the whole matmul, and the result is rounded once, to bf16, before it is widened.
    return (a.to(low) @ b.to(low)).to(wide)


def rms_projection(x: torch.Tensor, phi: torch.Tensor, eps: float = _NORM_EPS) -> torch.Tensor:
    """RMSNorm(x) @ φ without materialising RMSNorm(x): x (N, F), φ (F, D) → (N, D) in φ's dtype."""
    assert x.dim() == 2 and phi.dim() == 2 and x.shape[1] == phi.shape[0], (
        f"rms_projection needs x (N, F) and phi (F, D), got {tuple(x.shape)} and {tuple(phi.shape)}"
    )
    return _RMSProjection.apply(x, phi, eps)


# --------------------------------------------------------------------------- Sinkhorn


def _sinkhorn_iterates(scaled: torch.Tensor, iters: int, keep: bool):
    """The reference's iteration (exp, then column and row normalisation) from max-shifted logits."""
    matrix = scaled.exp()
    exp_matrix = matrix
    kept = []
    for _ in range(iters):
        col_sums = matrix.sum(dim=-2, keepdim=True)
        matrix = matrix / col_sums
        if keep:
            kept.append((matrix, col_sums, -2))
        row_sums = matrix.sum(dim=-1, keepdim=True)
        matrix = matrix / row_sums
        if keep:
            kept.append((matrix, row_sums, -1))
    return matrix, exp_matrix, kept


class _SinkhornRecompute(torch.autograd.Function):
    @staticmethod
    def forward(ctx, logits: torch.Tensor, iters: int, tau: float) -> torch.Tensor:
        scaled = logits / tau
        # As in the reference: the max shift only prevents overflow and carries no gradient.
        scaled = scaled - scaled.amax(dim=(-2, -1), keepdim=True)
        ctx.save_for_backward(scaled)
        ctx.iters, ctx.tau = iters, tau
        return _sinkhorn_iterates(scaled, iters, keep=False)[0]

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        (scaled,) = ctx.saved_tensors
        _, exp_matrix, kept = _sinkhorn_iterates(scaled, ctx.iters, keep=True)
        for normalised, sums, axis in reversed(kept):
            # out = m / s with s = Σ_axis m:  ∂L/∂m = (g − Σ_axis g·out) / s
            grad = (grad - (grad * normalised).sum(dim=axis, keepdim=True)) / sums
        return grad * exp_matrix / ctx.tau, None, None


def sinkhorn_recompute(logits: torch.Tensor, iters: int = 20, tau: float = 1.0) -> torch.Tensor:
    """``labfolio.kit.sinkhorn.sinkhorn`` with the same forward, saving only the logits for backward.

    Float32 (float64 for float64 input) whatever autocast says, like the reference.
    """
    compute_dtype = sinkhorn_compute_dtype(logits, iters, tau)
    with torch.autocast(device_type=logits.device.type, enabled=False):
        return _SinkhornRecompute.apply(logits.to(compute_dtype), iters, tau)


# --------------------------------------------------------------------------- stream states


def kernels_importable() -> bool:
    """Whether ``labfolio.kit.mhc_triton`` (and so triton) imports here; else the plain-torch path is used."""
    try:
        from labfolio.kit import mhc_triton  # noqa: F401
    except ImportError:
        return False
    return True


class PendingStreams(NamedTuple):
    """A stream state (B, T, n, C) kept as a stored state plus mixes not applied to it yet.

    Each mix is (h_res (B, T, n, n) or (n, n), h_post (B, T, n) or (n,), branch output (B, T, C)),
    applied in order as X ← H_res·X + H_postᵀ·F and rounded to ``storage`` (by the Triton
    post-mix kernel when ``use_kernels``).
    """

    base: torch.Tensor  # (B, T, n, C)
    mixes: tuple[tuple[torch.Tensor, torch.Tensor, torch.Tensor], ...]
    storage: torch.dtype
    use_kernels: bool = False


def _apply_mixes(
    base: torch.Tensor, storage: torch.dtype, use_kernels: bool, flat_mixes: tuple[torch.Tensor, ...]
) -> torch.Tensor:
    """The state after the mixes; ``flat_mixes`` is (h_res, h_post, F) repeated. Same rounding as storing each."""
    state = base
    with torch.autocast(device_type=base.device.type, enabled=False):
        if use_kernels:
            from labfolio.kit.mhc_triton import post_mix, post_mix_pair

            # Two mixes per kernel: the state between them is rounded in registers, never stored.
            for index in range(0, len(flat_mixes) - 3, 6):
                state = post_mix_pair(state, flat_mixes[index : index + 3], flat_mixes[index + 3 : index + 6], storage)
            if len(flat_mixes) % 6:
                state = post_mix(state, *flat_mixes[-3:], storage)
            return state
        for index in range(0, len(flat_mixes), 3):
            h_res, h_post, branch_output = flat_mixes[index : index + 3]
            mixed = weighted_slot_sum(h_res, state)  # (B, T, n, C) float32
            state = (mixed + h_post[..., None] * branch_output[:, :, None, :]).to(storage)
    return state


def _flatten(mixes: tuple[tuple[torch.Tensor, torch.Tensor, torch.Tensor], ...]) -> tuple[torch.Tensor, ...]:
    return tuple(tensor for mix in mixes for tensor in mix)


def materialize(state: torch.Tensor | PendingStreams) -> torch.Tensor:
    """The (B, T, n, C) tensor of a stream state, applying its pending mixes (plain autograd)."""
    if isinstance(state, torch.Tensor):
        return state
    if not state.mixes:
        return state.base
    return _apply_mixes(state.base, state.storage, state.use_kernels, _flatten(state.mixes))


# --------------------------------------------------------------------------- the layer


def fast_mhc_coefficients(
    module: ManifoldHyperConnection, streams: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Same as ``ManifoldHyperConnection.coefficients``: (h_pre (..., 1, n), h_res (..., n, n), h_post (..., n))."""
    n = module.num_streams
    dtype = coefficient_dtype(streams)
    with torch.autocast(device_type=streams.device.type, enabled=False):
        pre_logits = module.pre_bias.to(dtype)
        post_logits = module.post_bias.to(dtype)
        res_logits = module.res_bias.to(dtype)
        if module.dynamic:
            batch, seq = streams.shape[:2]
            flat = streams.reshape(batch * seq, -1)  # (B·T, nC), still in the storage dtype
            projected = rms_projection(flat, module.phi.to(dtype)).reshape(batch, seq, -1)  # (B, T, 2n + n²)
            pre_term, post_term, res_term = projected.split([n, n, n * n], dim=-1)
            pre_logits = module.pre_gate.to(dtype) * pre_term + pre_logits
            post_logits = module.post_gate.to(dtype) * post_term + post_logits
            res_logits = module.res_gate.to(dtype) * res_term.reshape(batch, seq, n, n) + res_logits
        h_pre = torch.sigmoid(pre_logits).unsqueeze(-2)  # (..., 1, n)
        h_post = 2 * torch.sigmoid(post_logits)  # (..., n)
    h_res = sinkhorn_recompute(res_logits, module.sinkhorn_iters, module.sinkhorn_tau)  # (..., n, n)
    return h_pre, h_res, h_post


def _kernel_coefficients_and_branch_input(
    module: ManifoldHyperConnection, streams: torch.Tensor, storage: torch.dtype
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """The pre-branch Triton kernel: coefficients, Sinkhorn and the branch input in one pass."""
    from labfolio.kit.mhc_triton import pre_branch

    bias = torch.cat([module.pre_bias, module.post_bias, module.res_bias.reshape(-1)]).float()
    gates = torch.stack([module.pre_gate, module.post_gate, module.res_gate]).float()
    with torch.autocast(device_type=streams.device.type, enabled=False):
        branch_input, h_pre, h_res, h_post = pre_branch(
            streams, module.phi.float(), bias, gates, module.sinkhorn_iters, module.sinkhorn_tau, _NORM_EPS, storage
        )
    return h_pre, h_res, h_post, branch_input


def _coefficients_and_branch_input(
    module: ManifoldHyperConnection, base: torch.Tensor, storage: torch.dtype, use_kernels: bool,
    *flat_mixes: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Everything one connection derives from its state, rebuilt from ``base`` and the pending mixes."""
    streams = _apply_mixes(base, storage, use_kernels, flat_mixes) if flat_mixes else base
    if use_kernels and module.dynamic:
        return _kernel_coefficients_and_branch_input(module, streams, storage)
    batch, seq, _, width = streams.shape
    h_pre, h_res, h_post = fast_mhc_coefficients(module, streams)
    with torch.autocast(device_type=streams.device.type, enabled=False):
        # float32 coefficients times stored streams: the products promote to float32, and
        # nothing of the state is kept beyond what the checkpoint holds.
        branch_input = weighted_slot_sum(h_pre, streams).reshape(batch, seq, width).to(storage)  # (B, T, C)
    return h_pre, h_res, h_post, branch_input


def fast_mhc_forward(
    module: ManifoldHyperConnection,
    state: torch.Tensor | PendingStreams,
    branch: Callable[[torch.Tensor], torch.Tensor],
    use_kernels: bool = False,
) -> torch.Tensor | PendingStreams:
    """One mHC-wrapped branch: a (B, T, n, C) state in, the next state out (maybe still pending).

    The state is stored in ``stream_storage_dtype`` of the first state the chain saw. With
    ``use_kernels`` (the caller checked ``mhc_triton.kernels_usable``) the Triton kernels do the
    mixing and the dynamic coefficients.
    """
    if isinstance(state, PendingStreams):
        base, mixes, storage, _ = state
    else:
        base, mixes, storage = state, (), stream_storage_dtype(state)
    batch, seq, _, width = base.shape
    flat_mixes = _flatten(mixes)
    if torch.is_grad_enabled() and flat_mixes:
        # Only the checkpoint's inputs (the stored state, the pending mixes) are kept for backward:
        # the state rebuilt from them is not. With no pending mix the state is the stored base,
        # which backward keeps anyway, and the ops save only it and coefficient-sized tensors, so
        # a checkpoint would only run them (the pre-branch kernel included) twice.
        h_pre, h_res, h_post, branch_input = checkpoint(
            _coefficients_and_branch_input, module, base, storage, use_kernels, *flat_mixes, use_reentrant=False
        )
    else:
        h_pre, h_res, h_post, branch_input = _coefficients_and_branch_input(
            module, base, storage, use_kernels, *flat_mixes
        )
    gates = torch.stack([module.pre_gate, module.post_gate, module.res_gate]).detach() if module.dynamic else None
    module.recorded = RecordedCoefficients("mhc", h_pre.detach(), h_post.detach(), h_res.detach(), gates)

    branch_output = branch(branch_input)  # (B, T, C), under the caller's autocast
    assert branch_output.shape == (batch, seq, width), (
        f"branch must map (B, T, C) to (B, T, C); got {tuple(branch_output.shape)} "
        f"for input {(batch, seq, width)}"
    )
    mixes = mixes + ((h_res, h_post, branch_output),)
    if len(mixes) < RECOMPUTE_SEGMENT:
        return PendingStreams(base, mixes, storage, use_kernels)
    flat_mixes = _flatten(mixes)
    if torch.is_grad_enabled() and not (use_kernels and len(mixes) <= 2):
        # Stored: it is the next segment's base. The states between are rebuilt in backward.
        return checkpoint(_apply_mixes, base, storage, use_kernels, flat_mixes, use_reentrant=False)
    # The kernels apply up to two mixes in one op that saves only its inputs (the base and the
    # mixes, kept anyway) and rebuilds the middle state in its own backward: a checkpoint
    # would only run it twice.
    return _apply_mixes(base, storage, use_kernels, flat_mixes)
