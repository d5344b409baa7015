"""Triton kernels for the mHC post-branch mix X' = H_res·X + H_postᵀ ⊗ F, one or two mixes at once.

The layouts, dtypes and the pass-count table are in ``labfolio.kit.mhc_kernels``' docstring;
``labfolio.kit.mhc_triton`` wraps these launchers into torch ops. A *pair* applies two mixes in
a row, X₂ = M(A(X₀)), with X₁ = A(X₀) rounded to the output dtype in registers exactly as if it
had been stored, and never written: the fast path's recompute scheme stores one state per two
connections, so rebuilding the segment's next stored state (and differentiating it) is one
pass over X₀ instead of a write and a read of X₁ per mix.

Backward computes, per token and channel chunk, the mix gradients in registers (through X₁ for
a pair: its gradient stays fp32 between the two mixes) and writes the state gradient once. The
coefficient gradients are sums over channels; each program sums its own channel chunks, and with
``split`` > 1 programs per token block along the channels (more programs for wide, short runs)
their fp32 partial sums are added in torch afterwards, in a fixed order, so results do not
depend on scheduling (no atomics).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from labfolio.kit.mhc_kernels import tiles_for

__all__ = ["launch_post_mix", "launch_post_mix_backward"]

Mix = tuple[torch.Tensor, torch.Tensor, torch.Tensor]  # (h_res (N, n, n), h_post (N, n), f (N, C))


@triton.jit
def _load_coefficients(h_res_ptr, h_post_ptr, tokens, token_ok, N_STREAMS: tl.constexpr, NP: tl.constexpr):
    """h_res (T, NP, NP) destination-major and h_post (T, NP), zero outside the n real streams."""
    rows = tl.arange(0, NP)
    row_ok = rows < N_STREAMS
    ti_ok = token_ok[:, None] & row_ok[None, :]
    h_post = tl.load(h_post_ptr + tokens[:, None] * N_STREAMS + rows[None, :], mask=ti_ok, other=0.0)
    matrix_offsets = tokens[:, None, None] * (N_STREAMS * N_STREAMS) + rows[None, :, None] * N_STREAMS + rows[None, None, :]
    h_res = tl.load(h_res_ptr + matrix_offsets, mask=ti_ok[:, :, None] & row_ok[None, None, :], other=0.0)
    return h_res, h_post


@triton.jit
def _mix(h_res, h_post, state, f):
    """Σ_j h_res[:, i, j]·state[:, j] + h_post[:, i]·f, all fp32: (T, NP, NP), (T, NP), (T, NP, C), (T, C)."""
    return tl.sum(h_res[:, :, :, None] * state[:, None, :, :], axis=2) + h_post[:, :, None] * f[:, None, :]


@triton.jit
def _store_coefficient_sums(grad_h_res_ptr, grad_h_post_ptr, grad_h_res, grad_h_post, part, num_tokens, tokens,
                            token_ok, N_STREAMS: tl.constexpr, NP: tl.constexpr):
    """This program's channel sums into slot ``part`` of the (split, N, n, n) and (split, N, n) buffers."""
    rows = tl.arange(0, NP)
    row_ok = rows < N_STREAMS
    ti_ok = token_ok[:, None] & row_ok[None, :]
    base = part.to(tl.int64) * num_tokens
    tl.store(grad_h_post_ptr + (base + tokens[:, None]) * N_STREAMS + rows[None, :], grad_h_post, mask=ti_ok)
    matrix_offsets = (base + tokens[:, None, None]) * (N_STREAMS * N_STREAMS) + rows[None, :, None] * N_STREAMS + rows[None, None, :]
    tl.store(grad_h_res_ptr + matrix_offsets, grad_h_res, mask=ti_ok[:, :, None] & row_ok[None, None, :])


@triton.jit
def _post_mix_kernel(
    x_ptr, h_res_a_ptr, h_post_a_ptr, f_a_ptr, h_res_m_ptr, h_post_m_ptr, f_m_ptr, out_ptr,
    num_tokens, width,
    stride_xt, stride_xs, stride_xc, stride_fat, stride_fac, stride_fmt, stride_fmc,
    N_STREAMS: tl.constexpr, NP: tl.constexpr, TWO_MIXES: tl.constexpr, BLOCK_T: tl.constexpr, BLOCK_C: tl.constexpr,
):
    # out = A(x), or M(A(x)) with A(x) rounded to the output dtype in between: one read of x and
    # the branch outputs, one write of the result.
    tokens = tl.program_id(0) * BLOCK_T + tl.arange(0, BLOCK_T)
    channels = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)
    rows = tl.arange(0, NP)
    token_ok, channel_ok, row_ok = tokens < num_tokens, channels < width, rows < N_STREAMS
    tokens = tokens.to(tl.int64)
    tc_ok = token_ok[:, None] & channel_ok[None, :]
    state_ok = (token_ok[:, None] & row_ok[None, :])[:, :, None] & channel_ok[None, None, :]
    x = tl.load(
        x_ptr + tokens[:, None, None] * stride_xt + rows[None, :, None] * stride_xs + channels[None, None, :] * stride_xc,
        mask=state_ok, other=0.0,
    ).to(tl.float32)
    f_a = tl.load(f_a_ptr + tokens[:, None] * stride_fat + channels[None, :] * stride_fac, mask=tc_ok, other=0.0)
    h_res, h_post = _load_coefficients(h_res_a_ptr, h_post_a_ptr, tokens, token_ok, N_STREAMS, NP)
    out = _mix(h_res, h_post, x, f_a.to(tl.float32)).to(out_ptr.dtype.element_ty)
    if TWO_MIXES:
        f_m = tl.load(f_m_ptr + tokens[:, None] * stride_fmt + channels[None, :] * stride_fmc, mask=tc_ok, other=0.0)
        h_res, h_post = _load_coefficients(h_res_m_ptr, h_post_m_ptr, tokens, token_ok, N_STREAMS, NP)
        out = _mix(h_res, h_post, out.to(tl.float32), f_m.to(tl.float32)).to(out_ptr.dtype.element_ty)
    out_ptrs = out_ptr + tokens[:, None, None] * (N_STREAMS * width) + rows[None, :, None] * width + channels[None, None, :]
    tl.store(out_ptrs, out, mask=state_ok)


@triton.jit
def _post_mix_backward_kernel(
    grad_out_ptr, x_ptr, h_res_a_ptr, h_post_a_ptr, f_a_ptr, h_res_m_ptr, h_post_m_ptr, f_m_ptr,
    grad_x_ptr, grad_f_a_ptr, grad_f_m_ptr,
    grad_h_res_a_ptr, grad_h_post_a_ptr, grad_h_res_m_ptr, grad_h_post_m_ptr,
    num_tokens, width,
    stride_xt, stride_xs, stride_xc, stride_fat, stride_fac, stride_fmt, stride_fmc,
    N_STREAMS: tl.constexpr, NP: tl.constexpr, TWO_MIXES: tl.constexpr, SPLIT: tl.constexpr,
    BLOCK_T: tl.constexpr, BLOCK_C: tl.constexpr,
):
    # For one mix out = H·x + p⊗f with upstream gradient g:
    #   grad_x[j] = Σ_i H[i, j]·g[i];  grad_f = Σ_i p[i]·g[i];
    #   grad_H[i, j] = Σ_c g[i, c]·x[j, c];  grad_p[i] = Σ_c g[i, c]·f[c]  (fp32 sums).
    # A pair rebuilds x₁ = A(x) (rounded as stored), differentiates M with g, then A with grad_x₁.
    part = tl.program_id(1)
    tokens = tl.program_id(0) * BLOCK_T + tl.arange(0, BLOCK_T)
    rows = tl.arange(0, NP)
    token_ok, row_ok = tokens < num_tokens, rows < N_STREAMS
    tokens = tokens.to(tl.int64)
    ti_ok = token_ok[:, None] & row_ok[None, :]
    h_res_a, h_post_a = _load_coefficients(h_res_a_ptr, h_post_a_ptr, tokens, token_ok, N_STREAMS, NP)
    grad_h_res_a = tl.zeros((BLOCK_T, NP, NP), dtype=tl.float32)
    grad_h_post_a = tl.zeros((BLOCK_T, NP), dtype=tl.float32)
    if TWO_MIXES:
        h_res_m, h_post_m = _load_coefficients(h_res_m_ptr, h_post_m_ptr, tokens, token_ok, N_STREAMS, NP)
        grad_h_res_m = tl.zeros((BLOCK_T, NP, NP), dtype=tl.float32)
        grad_h_post_m = tl.zeros((BLOCK_T, NP), dtype=tl.float32)
    # Program ``part`` of SPLIT takes every SPLIT-th chunk: neighbouring programs read
    # neighbouring chunks at the same time.
    for start in range(part * BLOCK_C, width, SPLIT * BLOCK_C):
        channels = start + tl.arange(0, BLOCK_C)
        channel_ok = channels < width
        tc_ok = token_ok[:, None] & channel_ok[None, :]
        state_ok = ti_ok[:, :, None] & channel_ok[None, None, :]
        state_offsets = tokens[:, None, None] * (N_STREAMS * width) + rows[None, :, None] * width + channels[None, None, :]
        x = tl.load(
            x_ptr + tokens[:, None, None] * stride_xt + rows[None, :, None] * stride_xs + channels[None, None, :] * stride_xc,
            mask=state_ok, other=0.0,
        ).to(tl.float32)
        f_a = tl.load(f_a_ptr + tokens[:, None] * stride_fat + channels[None, :] * stride_fac, mask=tc_ok, other=0.0)
        f_a = f_a.to(tl.float32)
        grad = tl.load(grad_out_ptr + state_offsets, mask=state_ok, other=0.0).to(tl.float32)  # (T, NP, C)
        if TWO_MIXES:
            middle = _mix(h_res_a, h_post_a, x, f_a).to(x_ptr.dtype.element_ty).to(tl.float32)
            f_m = tl.load(f_m_ptr + tokens[:, None] * stride_fmt + channels[None, :] * stride_fmc, mask=tc_ok, other=0.0)
            grad_h_post_m += tl.sum(grad * f_m.to(tl.float32)[:, None, :], axis=2)
            grad_h_res_m += tl.sum(grad[:, :, None, :] * middle[:, None, :, :], axis=3)
            grad_f_m = tl.sum(h_post_m[:, :, None] * grad, axis=1)
            tl.store(grad_f_m_ptr + tokens[:, None] * width + channels[None, :],
                     grad_f_m.to(grad_f_m_ptr.dtype.element_ty), mask=tc_ok)
            grad = tl.sum(h_res_m[:, :, :, None] * grad[:, :, None, :], axis=1)  # grad of x₁, fp32
        grad_h_post_a += tl.sum(grad * f_a[:, None, :], axis=2)
        grad_h_res_a += tl.sum(grad[:, :, None, :] * x[:, None, :, :], axis=3)
        grad_f_a = tl.sum(h_post_a[:, :, None] * grad, axis=1)
        tl.store(grad_f_a_ptr + tokens[:, None] * width + channels[None, :],
                 grad_f_a.to(grad_f_a_ptr.dtype.element_ty), mask=tc_ok)
        grad_x = tl.sum(h_res_a[:, :, :, None] * grad[:, :, None, :], axis=1)
        tl.store(grad_x_ptr + state_offsets, grad_x.to(grad_x_ptr.dtype.element_ty), mask=state_ok)
    _store_coefficient_sums(grad_h_res_a_ptr, grad_h_post_a_ptr, grad_h_res_a, grad_h_post_a, part, num_tokens,
                            tokens, token_ok, N_STREAMS, NP)
    if TWO_MIXES:
        _store_coefficient_sums(grad_h_res_m_ptr, grad_h_post_m_ptr, grad_h_res_m, grad_h_post_m, part, num_tokens,
                                tokens, token_ok, N_STREAMS, NP)


def _check_mixes(x: torch.Tensor, mixes: tuple[Mix, ...]) -> tuple[int, int, int]:
    assert x.dim() == 3, f"the mHC kernels take streams as (N, n, C), got shape {tuple(x.shape)}"
    assert x.dtype in (torch.float32, torch.bfloat16, torch.float16), f"unsupported stream dtype {x.dtype}"
    assert len(mixes) in (1, 2), f"the post-mix kernels apply one or two mixes, got {len(mixes)}"
    return x.shape


def _kernel_mixes(mixes: tuple[Mix, ...]) -> tuple[Mix, Mix]:
    """(first, second) with contiguous coefficients; one mix is passed twice (the second unused)."""
    prepared = tuple((h_res.contiguous(), h_post.contiguous(), f) for h_res, h_post, f in mixes)
    return prepared[0], prepared[-1]


def launch_post_mix(x: torch.Tensor, mixes: tuple[Mix, ...], out_dtype: torch.dtype) -> torch.Tensor:
    """The state after one or two mixes H_res·X + H_postᵀ ⊗ F: x (N, n, C) → (N, n, C) in ``out_dtype``.

    Each mix is (h_res (N, n, n), h_post (N, n) fp32, f (N, C)); a middle state is rounded to
    ``out_dtype`` as if stored.
    """
    num_tokens, num_streams, width = _check_mixes(x, mixes)
    (h_res_a, h_post_a, f_a), (h_res_m, h_post_m, f_m) = _kernel_mixes(mixes)
    tiles = tiles_for("post_mix", width, num_streams, num_tokens)
    out = torch.empty((num_tokens, num_streams, width), dtype=out_dtype, device=x.device)
    grid = (triton.cdiv(num_tokens, tiles.block_t), triton.cdiv(width, tiles.block_c))
    _post_mix_kernel[grid](
        x, h_res_a, h_post_a, f_a, h_res_m, h_post_m, f_m, out, num_tokens, width,
        x.stride(0), x.stride(1), x.stride(2), f_a.stride(0), f_a.stride(1), f_m.stride(0), f_m.stride(1),
        N_STREAMS=num_streams, NP=triton.next_power_of_2(num_streams), TWO_MIXES=len(mixes) == 2,
        BLOCK_T=tiles.block_t, BLOCK_C=tiles.block_c, num_warps=tiles.warps,
    )
    return out


def launch_post_mix_backward(
    grad_out: torch.Tensor, x: torch.Tensor, mixes: tuple[Mix, ...]
) -> tuple[torch.Tensor, tuple[tuple[torch.Tensor, torch.Tensor, torch.Tensor], ...]]:
    """(grad_x in x's dtype, per mix (grad_h_res fp32, grad_h_post fp32, grad_f in f's dtype))."""
    num_tokens, num_streams, width = _check_mixes(x, mixes)
    (h_res_a, h_post_a, f_a), (h_res_m, h_post_m, f_m) = _kernel_mixes(mixes)
    tiles = tiles_for("post_mix_backward", width, num_streams, num_tokens)
    split = max(1, min(tiles.split, triton.cdiv(width, tiles.block_c)))
    device, n = x.device, num_streams
    grad_out = grad_out.contiguous()
    grad_x = torch.empty((num_tokens, n, width), dtype=x.dtype, device=device)
    grad_fs = [torch.empty((num_tokens, width), dtype=f.dtype, device=device) for _, _, f in mixes]
    grad_h_res = [torch.empty((split, num_tokens, n, n), dtype=torch.float32, device=device) for _ in mixes]
    grad_h_post = [torch.empty((split, num_tokens, n), dtype=torch.float32, device=device) for _ in mixes]
    grid = (triton.cdiv(num_tokens, tiles.block_t), split)
    _post_mix_backward_kernel[grid](
        grad_out, x, h_res_a, h_post_a, f_a, h_res_m, h_post_m, f_m,
        grad_x, grad_fs[0], grad_fs[-1], grad_h_res[0], grad_h_post[0], grad_h_res[-1], grad_h_post[-1],
        num_tokens, width,
        x.stride(0), x.stride(1), x.stride(2), f_a.stride(0), f_a.stride(1), f_m.stride(0), f_m.stride(1),
        N_STREAMS=n, NP=triton.next_power_of_2(n), TWO_MIXES=len(mixes) == 2, SPLIT=split,
        BLOCK_T=tiles.block_t, BLOCK_C=tiles.block_c, num_warps=tiles.warps,
    )
    # The partial sums of the ``split`` programs, added in a fixed order.
    per_mix = tuple(
        (res.sum(dim=0) if split > 1 else res[0], post.sum(dim=0) if split > 1 else post[0], grad_f)
        for res, post, grad_f in zip(grad_h_res, grad_h_post, grad_fs, strict=True)
    )
    return grad_x, per_mix
