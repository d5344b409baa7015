"""The mHC layer's Triton kernels as torch ops with hand-written backward passes.

``mhc_impl="triton"`` is the fast path of ``labfolio.kit.mhc_fused`` (bf16 streams under autocast,
float32 coefficients, stream states rebuilt in backward) with its two memory-bound stretches
replaced by one kernel each, forward and backward (``labfolio.kit.mhc_kernels``):

- **pre-branch** (``mhc_pre``): one pass over the state computes the projection x·φ and Σx²,
  then, in registers, the RMS scaling, the gates and biases, σ / 2σ and all Sinkhorn iterations
  of each token's n×n matrix; a second pass writes the branch input Σ_i h_pre[i]·x[i]. Its
  backward recomputes the coefficients from the saved (N, 2n + n²) projection, differentiates
  Sinkhorn by replaying its iterations, and writes the state gradient (through the branch input,
  the projection and the RMS) in one more pass; φ's gradient is one matmul in torch.
- **post-branch** (``mhc_post_mix``): X' = H_res·X + H_postᵀ ⊗ F, reading the n streams and the
  branch output once and writing the n new streams once; its backward kernel writes the state
  and branch gradients and reduces the per-token coefficient gradients in fp32.
  ``mhc_post_mix_pair`` applies two mixes in one pass (the middle state rounded in registers,
  never stored), which is how the fast path rebuilds a segment's next stored state; its backward
  rebuilds the middle state and differentiates both mixes in one pass as well.

The ops are ``torch.library`` custom ops, so ``torch.compile`` keeps each as one opaque call
(with shapes from their fake implementations) and fuses what lies around them. Importing this
module needs triton; ``kernels_usable`` says whether a state can run through the kernels here
(CUDA, or any device under ``TRITON_INTERPRET=1``, as the tests do on CPU), and the layer falls
back to the plain-torch fast path where it cannot (no triton, float64 streams, n > 8).
"""

from __future__ import annotations

import functools

import torch
from torch import Tensor

from labfolio.kit import mhc_kernels as kernels
from labfolio.kit import mhc_mix_kernels as mix_kernels
from labfolio.kit.mhc_fused import _matmul

__all__ = ["MAX_KERNEL_STREAMS", "kernels_usable", "post_mix", "post_mix_pair", "pre_branch"]

MAX_KERNEL_STREAMS = 8
_KERNEL_DTYPES = (torch.float32, torch.bfloat16, torch.float16)


def kernels_usable(streams: Tensor, num_streams: int) -> bool:
    """Whether the kernels can run on this state: its device, its dtype and the stream count."""
    on_device = streams.device.type == "cuda" or kernels.INTERPRET
    return on_device and streams.dtype in _KERNEL_DTYPES and 1 <= num_streams <= MAX_KERNEL_STREAMS


# --------------------------------------------------------------------------- post-branch mix


@torch.library.custom_op("labfolio::mhc_post_mix", mutates_args=())
def _post_mix_op(x: Tensor, h_res: Tensor, h_post: Tensor, branch_output: Tensor, out_dtype: torch.dtype) -> Tensor:
    return mix_kernels.launch_post_mix(x, ((h_res, h_post, branch_output),), out_dtype)


@_post_mix_op.register_fake
def _(x, h_res, h_post, branch_output, out_dtype):
    return x.new_empty(x.shape, dtype=out_dtype)


@torch.library.custom_op("labfolio::mhc_post_mix_backward", mutates_args=())
def _post_mix_backward_op(
    grad_out: Tensor, x: Tensor, h_res: Tensor, h_post: Tensor, branch_output: Tensor
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    grad_x, ((grad_h_res, grad_h_post, grad_f),) = mix_kernels.launch_post_mix_backward(
        grad_out, x, ((h_res, h_post, branch_output),)
    )
    return grad_x, grad_h_res, grad_h_post, grad_f


@_post_mix_backward_op.register_fake
def _(grad_out, x, h_res, h_post, branch_output):
    return (
        x.new_empty(x.shape),
        h_res.new_empty(h_res.shape, dtype=torch.float32),
        h_post.new_empty(h_post.shape, dtype=torch.float32),
        branch_output.new_empty(branch_output.shape),
    )


def _post_mix_setup(ctx, inputs, output):
    x, h_res, h_post, branch_output, _ = inputs
    ctx.save_for_backward(x, h_res, h_post, branch_output)


def _post_mix_backward(ctx, grad_out):
    x, h_res, h_post, branch_output = ctx.saved_tensors
    grad_x, grad_h_res, grad_h_post, grad_branch = _post_mix_backward_op(grad_out, x, h_res, h_post, branch_output)
    return grad_x, grad_h_res, grad_h_post, grad_branch, None


_post_mix_op.register_autograd(_post_mix_backward, setup_context=_post_mix_setup)


@torch.library.custom_op("labfolio::mhc_post_mix_pair", mutates_args=())
def _post_mix_pair_op(
    x: Tensor, h_res_a: Tensor, h_post_a: Tensor, f_a: Tensor, h_res_m: Tensor, h_post_m: Tensor, f_m: Tensor,
    out_dtype: torch.dtype,
) -> Tensor:
    return mix_kernels.launch_post_mix(x, ((h_res_a, h_post_a, f_a), (h_res_m, h_post_m, f_m)), out_dtype)


@_post_mix_pair_op.register_fake
def _(x, h_res_a, h_post_a, f_a, h_res_m, h_post_m, f_m, out_dtype):
    return x.new_empty(x.shape, dtype=out_dtype)


@torch.library.custom_op("labfolio::mhc_post_mix_pair_backward", mutates_args=())
def _post_mix_pair_backward_op(
    grad_out: Tensor, x: Tensor, h_res_a: Tensor, h_post_a: Tensor, f_a: Tensor, h_res_m: Tensor, h_post_m: Tensor,
    f_m: Tensor,
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor]:
    grad_x, per_mix = mix_kernels.launch_post_mix_backward(
        grad_out, x, ((h_res_a, h_post_a, f_a), (h_res_m, h_post_m, f_m))
    )
    return (grad_x, *per_mix[0], *per_mix[1])


@_post_mix_pair_backward_op.register_fake
def _(grad_out, x, h_res_a, h_post_a, f_a, h_res_m, h_post_m, f_m):
    fp32 = dict(dtype=torch.float32)
    return (
        x.new_empty(x.shape),
        h_res_a.new_empty(h_res_a.shape, **fp32), h_post_a.new_empty(h_post_a.shape, **fp32), f_a.new_empty(f_a.shape),
        h_res_m.new_empty(h_res_m.shape, **fp32), h_post_m.new_empty(h_post_m.shape, **fp32), f_m.new_empty(f_m.shape),
    )


def _post_mix_pair_setup(ctx, inputs, output):
    ctx.save_for_backward(*inputs[:7])


def _post_mix_pair_backward(ctx, grad_out):
    return (*_post_mix_pair_backward_op(grad_out, *ctx.saved_tensors), None)


_post_mix_pair_op.register_autograd(_post_mix_pair_backward, setup_context=_post_mix_pair_setup)


def _flat_mix(mix: tuple[Tensor, Tensor, Tensor], batch: int, seq: int, num_streams: int) -> tuple[Tensor, Tensor, Tensor]:
    """(h_res (N, n, n), h_post (N, n) fp32, F (N, C)) of a mix with static or per-token coefficients."""
    h_res, h_post, branch_output = mix
    tokens = batch * seq
    h_res = h_res.to(torch.float32).expand(batch, seq, num_streams, num_streams).reshape(tokens, num_streams, num_streams)
    h_post = h_post.to(torch.float32).expand(batch, seq, num_streams).reshape(tokens, num_streams)
    return h_res, h_post, branch_output.reshape(tokens, branch_output.shape[-1])


def post_mix(streams: Tensor, h_res: Tensor, h_post: Tensor, branch_output: Tensor, out_dtype: torch.dtype) -> Tensor:
    """H_res·X + H_postᵀ ⊗ F rounded to ``out_dtype``: streams (B, T, n, C), F (B, T, C).

    h_res (B, T, n, n) or (n, n) and h_post (B, T, n) or (n,), float32 (static coefficients are
    broadcast over the tokens; their gradient is the token sum).
    """
    batch, seq, num_streams, width = streams.shape
    flat = _flat_mix((h_res, h_post, branch_output), batch, seq, num_streams)
    out = _post_mix_op(streams.reshape(batch * seq, num_streams, width), *flat, out_dtype)
    return out.reshape(batch, seq, num_streams, width)


def post_mix_pair(
    streams: Tensor, first: tuple[Tensor, Tensor, Tensor], second: tuple[Tensor, Tensor, Tensor],
    out_dtype: torch.dtype,
) -> Tensor:
    """``post_mix(post_mix(streams, *first, out_dtype), *second, out_dtype)`` in one pass over the state.

    Same values and gradients as the two calls (the middle state is rounded to ``out_dtype`` as
    if stored; its gradient stays fp32), but the middle state is neither written nor saved.
    """
    batch, seq, num_streams, width = streams.shape
    out = _post_mix_pair_op(
        streams.reshape(batch * seq, num_streams, width), *_flat_mix(first, batch, seq, num_streams),
        *_flat_mix(second, batch, seq, num_streams), out_dtype,
    )
    return out.reshape(batch, seq, num_streams, width)


# --------------------------------------------------------------------------- pre-branch side


@torch.library.custom_op("labfolio::mhc_pre", mutates_args=())
def _pre_op(
    x: Tensor, phi_padded: Tensor, bias_padded: Tensor, gates: Tensor, iters: int, tau: float, eps: float,
    branch_dtype: torch.dtype,
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor]:
    return kernels.launch_pre(x, phi_padded, bias_padded, gates, iters, tau, eps, branch_dtype)


@_pre_op.register_fake
def _(x, phi_padded, bias_padded, gates, iters, tau, eps, branch_dtype):
    tokens, num_streams, width = x.shape
    fp32 = dict(dtype=torch.float32)
    return (
        x.new_empty((tokens, width), dtype=branch_dtype),
        x.new_empty((tokens, num_streams), **fp32),
        x.new_empty((tokens, num_streams), **fp32),
        x.new_empty((tokens, num_streams, num_streams), **fp32),
        x.new_empty((tokens, 2 * num_streams + num_streams * num_streams), **fp32),
        x.new_empty((tokens,), **fp32),
    )


@torch.library.custom_op("labfolio::mhc_pre_backward", mutates_args=())
def _pre_backward_op(
    grad_branch: Tensor, grad_h_pre: Tensor, grad_h_post: Tensor, grad_h_res: Tensor,
    x: Tensor, phi_padded: Tensor, bias_padded: Tensor, gates: Tensor, proj: Tensor, inv_rms: Tensor,
    iters: int, tau: float,
) -> tuple[Tensor, Tensor]:
    return kernels.launch_pre_backward(
        grad_branch, grad_h_pre, grad_h_post, grad_h_res, x, phi_padded, bias_padded, gates, proj, inv_rms, iters, tau
    )


@_pre_backward_op.register_fake
def _(grad_branch, grad_h_pre, grad_h_post, grad_h_res, x, phi_padded, bias_padded, gates, proj, inv_rms, iters, tau):
    return x.new_empty(x.shape), proj.new_empty(proj.shape)


def _pre_setup(ctx, inputs, output):
    x, phi_padded, bias_padded, gates, iters, tau, _, branch_dtype = inputs
    *_, proj, inv_rms = output
    ctx.save_for_backward(x, phi_padded, bias_padded, gates, proj, inv_rms)
    ctx.iters, ctx.tau, ctx.branch_dtype = iters, tau, branch_dtype


def _pre_backward(ctx, grad_branch, grad_h_pre, grad_h_post, grad_h_res, _grad_proj, _grad_inv_rms):
    x, phi_padded, bias_padded, gates, proj, inv_rms = ctx.saved_tensors
    tokens, num_streams, width = x.shape
    # Outputs that fed nothing get no gradient; the kernel reads zeros for them.
    if grad_branch is None:
        grad_branch = torch.zeros((tokens, width), dtype=ctx.branch_dtype, device=x.device)
    zeros = functools.partial(torch.zeros, dtype=torch.float32, device=x.device)
    grad_h_pre = zeros((tokens, num_streams)) if grad_h_pre is None else grad_h_pre
    grad_h_post = zeros((tokens, num_streams)) if grad_h_post is None else grad_h_post
    grad_h_res = zeros((tokens, num_streams, num_streams)) if grad_h_res is None else grad_h_res
    grad_x, grad_logits = _pre_backward_op(
        grad_branch, grad_h_pre, grad_h_post, grad_h_res, x, phi_padded, bias_padded, gates, proj, inv_rms,
        ctx.iters, ctx.tau,
    )
    n = num_streams
    sizes = [n, n, n * n]
    # logits = α·proj + b per group: b's gradient is the token sum, α's the sum of grad·proj.
    grad_bias = grad_logits.sum(dim=0)
    grad_gates = torch.stack([
        (g * p).sum() for g, p in zip(grad_logits.split(sizes, dim=1), proj.split(sizes, dim=1), strict=True)
    ])
    gates32 = gates.to(torch.float32)
    gate_per_column = torch.cat([gates32[group].expand(size) for group, size in enumerate(sizes)])
    grad_raw = grad_logits * gate_per_column * inv_rms[:, None]  # gradient of x·φ (before 1/RMS)
    grad_phi = None
    if ctx.needs_input_grad[1]:
        # φ's gradient in the padded layout, zero in the padding: the padding feeds no output.
        grad_phi = _matmul(x.reshape(tokens, n * width).transpose(0, 1), grad_raw)
        grad_phi = kernels.pad_phi(grad_phi, n, phi_padded.dtype)
    grad_bias = kernels.pad_phi(grad_bias, n, bias_padded.dtype)
    return grad_x, grad_phi, grad_bias, grad_gates.to(gates.dtype), None, None, None, None


_pre_op.register_autograd(_pre_backward, setup_context=_pre_setup)


def pre_branch(
    streams: Tensor, phi: Tensor, bias: Tensor, gates: Tensor, iters: int, tau: float, eps: float,
    branch_dtype: torch.dtype | None = None,
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """(branch input (B, T, C), h_pre (B, T, 1, n), h_res (B, T, n, n), h_post (B, T, n)).

    The dynamic coefficients of one connection from streams (B, T, n, C): φ (n·C, 2n + n²), bias
    (2n + n²) = [b_pre | b_post | b_res row-major], gates (3,) = (α_pre, α_post, α_res), float32.
    The branch input is rounded to ``branch_dtype`` (default: the streams' dtype).
    """
    batch, seq, num_streams, width = streams.shape
    tokens = batch * seq
    # Padded outside the op, so that a compiled graph fuses the padding (and its backward).
    phi_padded = kernels.pad_phi(phi, num_streams, torch.float32)
    bias_padded = kernels.pad_phi(bias, num_streams, torch.float32)
    branch_input, h_pre, h_post, h_res, _, _ = _pre_op(
        streams.reshape(tokens, num_streams, width), phi_padded, bias_padded, gates, iters, tau, eps,
        streams.dtype if branch_dtype is None else branch_dtype,
    )
    return (
        branch_input.reshape(batch, seq, width),
        h_pre.reshape(batch, seq, 1, num_streams),
        h_res.reshape(batch, seq, num_streams, num_streams),
        h_post.reshape(batch, seq, num_streams),
    )
