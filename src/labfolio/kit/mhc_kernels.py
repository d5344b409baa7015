"""Triton kernels for the mHC layer's memory-bound parts, and the launchers that call them.

Importing this module needs triton; ``labfolio.kit.mhc_triton`` wraps the launchers into torch ops
with hand-written backward passes, and nothing else imports this module. Layouts (N = B·T tokens,
n ≤ 8 streams, C channels):

- streams ``x`` (N, n, C), any strides (the first connection reads a stride-0 broadcast view),
  bf16, fp16 or fp32, always widened to fp32 in registers;
- coefficients are fp32 and contiguous: ``h_pre`` (N, n), ``h_post`` (N, n), ``h_res`` (N, n, n)
  (destination-major, as in ``labfolio.kit.stream_mixing``);
- the projection φ (n·C, 2n + n²) and the bias (2n + n²) are handed to the kernels padded by
  ``pad_phi`` to 32 + NP² columns, [pre | post | res] at column offsets 0, 16 and 32, with the
  res block laid out as an NP×NP matrix (NP = n rounded up to a power of two, at least 4), so
  that each block is a valid ``tl.dot`` operand and the res block reshapes to (NP, NP) in
  registers. Padded columns are zero and padded matrix entries are masked out of Sinkhorn.

Arithmetic is always fp32 in registers. The only low-precision math is the φ projection, whose
``tl.dot`` takes bf16/fp16 operands when the streams are bf16/fp16 (fp32 accumulation, as an
autocast linear does) and exact fp32 (no TF32) otherwise. Under ``TRITON_INTERPRET=1`` the
interpreter cannot do arithmetic on bf16 values, so there the dot operands are widened first: the
products are the same (bf16 values are exact in fp32), only the accumulation order can differ.

One program handles ``BLOCK_T`` tokens; ``Tiles`` and ``default_tiles`` say how many, per width
and stream count, and ``LABFOLIO_MHC_TILES`` overrides them (see ``parse_tiles``). The pre kernels
reduce over all n·C inputs inside one program; the post-mix kernels (``labfolio.kit.mhc_mix_kernels``)
split the channels over a second grid axis, their backward summing the per-program fp32 partial
coefficient gradients afterwards (no atomics).

Traffic per token, in units of the bf16 state S = n·C·2 bytes (a branch tensor is S/n, 0.25 S at
n = 4; coefficients, ≤ 0.02 S, are left out). φ is re-read once per program: PHI_COLUMNS / BLOCK_T
state sizes per token, mostly from L2 (48 / 16 = 3 S at first, 48 / 64 = 0.75 S with the tiles
the H200 sweep chose, at n = 4):

    kernel (one call)        reads                          writes        passes over the state
    pre                      2 S (2nd pass mostly L2) + φ   0.25 S        2 reads
    pre_backward             2 S + 0.5 S grad branch + φ    S             2 reads, 1 write
    φ gradient (torch mm)    S                              –             1 read
    post_mix, one mix        S + 0.25 S                     S             1 read, 1 write
    post_mix, pair (new)     S + 0.5 S                      S             1 read, 1 write
    post_mix backward, one   2 S + 0.25 S                   S + 0.25 S    2 reads, 1 write
    post_mix backward, pair  2 S + 0.5 S                    S + 0.5 S     2 reads, 1 write
    autograd add of two dX   2 S                            S

One transformer block (attention then MLP connection, ``RECOMPUTE_SEGMENT`` = 2: X₀ is stored,
X₁ is rebuilt, X₂ is the next block's X₀), n = 4, in S per token:

    before (two single mixes in a checkpoint at the segment's end)
      forward   pre(X₀) 2 + [mlp checkpoint: mix X₀→X₁ 2.25, pre(X₁) 2]
                + [segment checkpoint: mix X₀→X₁ 2.25, mix X₁→X₂ 2.25]                     = 10.75
      backward  segment recompute 4.5 + two mix backwards 7
                + mlp checkpoint: recompute 4.25, pre_backward 3, φ 1, mix backward 3.5
                + attention checkpoint: recompute 2, pre_backward 3, φ 1
                + two adds of the three dX₀ contributions 6                                   = 35.25
      total 46 S per block
    then (the segment's two mixes are one pair op, not checkpointed: it saves only its inputs)
      forward   2 + 4.25 + pair X₀→X₂ 2.5                                                  = 8.75
      backward  pair backward 4 + 11.75 (mlp checkpoint) + 6 (attention) + 6 (adds)         = 27.75
      total 36.5 S per block (−21 %), and half the φ re-reads
    now (the attention connection reads the stored X₀, which backward keeps anyway, so it has
    no checkpoint and its pre kernel is not rerun)
      forward   8.75
      backward  4 + 11.75 (mlp checkpoint) + 4 (attention: pre_backward 3, φ 1) + 6 (adds)  = 25.75
      total 34.5 S per block (−25 %)

What still moves more than it must (≈ 20 S per block would need the rest): the mlp checkpoint
recomputes the pre kernel only to regain (N, 2n + n²) projections and 1/RMS (2 S); X₁ is rebuilt
twice, in forward and in the mlp checkpoint's recompute, and A's mix is differentiated twice, once
inside the pair and once in the mlp checkpoint (3.5 S); and X₀'s three gradient contributions
(pair, mlp checkpoint, attention checkpoint) are added by autograd (6 S) instead of by the last
kernel that writes one.
"""

from __future__ import annotations

import os
from typing import NamedTuple

import torch
import triton
import triton.language as tl

__all__ = [
    "INTERPRET",
    "KERNELS",
    "PHI_BLOCK",
    "TILES_ENV",
    "TILE_OVERRIDES",
    "Tiles",
    "default_tiles",
    "launch_pre",
    "launch_pre_backward",
    "pad_phi",
    "padded_streams",
    "parse_tiles",
    "tiles_for",
]

PHI_BLOCK = 16  # columns of φ's pre and post blocks: the smallest tl.dot operand width
_RES_OFFSET = 2 * PHI_BLOCK
INTERPRET = os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


# --------------------------------------------------------------------------- tile shapes


class Tiles(NamedTuple):
    """One kernel's launch shape: tokens per program, channels per chunk, warps, channel split."""

    block_t: int
    block_c: int
    warps: int
    split: int = 1  # programs per token block along the channels (post_mix_backward only)


KERNELS = ("post_mix", "post_mix_backward", "pre", "pre_backward")
TILES_ENV = "LABFOLIO_MHC_TILES"
# Set by tests and the benchmark's kernel sweep, and from LABFOLIO_MHC_TILES at import:
# a kernel named here runs with these tiles at every width.
TILE_OVERRIDES: dict[str, Tiles] = {}
_TARGET_PROGRAMS = 2048  # ~16 resident 4-warp programs on each of an H100/H200's 132 SMs


def default_tiles(kernel: str, width: int, num_streams: int, num_tokens: int) -> Tiles:
    """The tile shape a kernel launches with unless overridden.

    Up to 4 streams (NP ≤ 4), the fastest tiles of the kernel sweep on an H200
    (``bench_connections.py --kernel-sweep``, bf16, 16,384 tokens, measured at n = 4 and taken
    for n = 2 and 3 as well), the same at widths 768 and 2048: the pre kernels at 64 tokens × 64
    channels with 4 warps (2.9-3.3× faster forward and 2.1-2.3× backward than the 32 × 32, 8-warp
    tiles chosen from register counts before), and the post-mix kernels at 2 tokens per program
    (backward 1.7× faster at 256 channels). Timed alone, each kernel; the whole step with these
    tiles has not been compared with the old ones in one call.
    At 8 streams, unmeasured, the tiles chosen from ptxas's register counts for sm_90 stay:

    - post-mix kernels hold (T, NP, NP, C) fp32 products in registers, so their channel chunk
      shrinks with NP²: forward 4096 / NP² channels, backward 2048 / NP² (n = 8: 32), one token
      per program and 4 warps.
    - pre kernels read all of φ once per program: PHI_COLUMNS / BLOCK_T times the bytes of their
      tokens' state; 16 tokens × 32 channels with 8 warps at n = 8 (16 × 64 spilled there).

    The post-mix backward splits the channels over as many programs per token block as it takes
    to launch ~2048 programs: 1 from 4096 tokens on at 2 tokens per program.
    """
    assert kernel in KERNELS, f"unknown kernel {kernel!r}; one of {KERNELS}"
    np_ = triton.next_power_of_2(num_streams)
    measured = np_ <= 4
    if kernel == "post_mix":
        return Tiles(2 if measured else 1, max(32, min(512, 4096 // (np_ * np_))), 4)
    if kernel == "post_mix_backward":
        block_t = 2 if measured else 1
        block_c = max(32, min(512, (4096 if measured else 2048) // (np_ * np_)))
        programs = triton.cdiv(max(num_tokens, 1), block_t)
        split = max(1, min(triton.cdiv(width, block_c), triton.cdiv(_TARGET_PROGRAMS, programs)))
        return Tiles(block_t, block_c, 4, split)
    return Tiles(64, 64, 4) if measured else Tiles(16, 32, 8)


def tiles_for(kernel: str, width: int, num_streams: int, num_tokens: int) -> Tiles:
    """``TILE_OVERRIDES[kernel]`` if set, else ``default_tiles``."""
    return TILE_OVERRIDES.get(kernel) or default_tiles(kernel, width, num_streams, num_tokens)


def parse_tiles(text: str) -> dict[str, Tiles]:
    """``"pre=32x64x8;post_mix_backward=2x128x4x2"``: kernel=TOKENSxCHANNELSxWARPS[xSPLIT], ``;``-separated."""
    parsed = {}
    for item in filter(None, (part.strip() for part in text.split(";"))):
        kernel, _, shape = item.partition("=")
        kernel = kernel.strip()
        if kernel not in KERNELS:
            raise ValueError(f"{TILES_ENV}: unknown kernel {kernel!r} in {item!r}; one of {KERNELS}")
        numbers = [int(value) for value in shape.lower().split("x")]
        if len(numbers) not in (3, 4) or min(numbers) < 1:
            raise ValueError(f"{TILES_ENV}: {item!r} is not kernel=TOKENSxCHANNELSxWARPS[xSPLIT]")
        tiles = Tiles(*numbers)
        for name in ("block_t", "block_c", "warps"):
            value = getattr(tiles, name)
            if value & (value - 1):
                raise ValueError(f"{TILES_ENV}: {name} must be a power of two in {item!r}")
        if kernel.startswith("pre") and tiles.block_t < 16:
            raise ValueError(f"{TILES_ENV}: the pre kernels need at least 16 tokens (tl.dot), got {item!r}")
        parsed[kernel] = tiles
    return parsed


TILE_OVERRIDES.update(parse_tiles(os.environ.get(TILES_ENV, "")))


def padded_streams(num_streams: int) -> int:
    """NP: n rounded up to a power of two and to at least 4, so that NP² ≥ 16 (a tl.dot width)."""
    assert 1 <= num_streams <= 8, f"the mHC kernels handle 1 to 8 streams, got {num_streams}"
    return max(4, triton.next_power_of_2(num_streams))


def pad_phi(phi: torch.Tensor, num_streams: int, dtype: torch.dtype) -> torch.Tensor:
    """φ (F, 2n + n²) or a bias (2n + n²,) scattered into the padded column layout, in ``dtype``.

    Slice copies on the device: an index tensor built on the host would cost a host-to-device
    copy, which waits for the stream, on every call.
    """
    n, np_ = num_streams, padded_streams(num_streams)
    leading = phi.shape[:-1]
    padded = phi.new_zeros((*leading, _RES_OFFSET + np_ * np_), dtype=dtype)
    padded[..., :n] = phi[..., :n]
    padded[..., PHI_BLOCK : PHI_BLOCK + n] = phi[..., n : 2 * n]
    res_block = padded[..., _RES_OFFSET:].unflatten(-1, (np_, np_))
    res_block[..., :n, :n] = phi[..., 2 * n :].unflatten(-1, (n, n))
    return padded


# --------------------------------------------------------------------------- pre-branch side


@triton.jit
def _dot(a, b, LOW_PRECISION: tl.constexpr, WIDEN: tl.constexpr):
    """a @ b with fp32 accumulation: in a's low-precision dtype, or exact fp32 (no TF32)."""
    if LOW_PRECISION and not WIDEN:
        return tl.dot(a, b)
    return tl.dot(a.to(tl.float32), b.to(tl.float32), input_precision="ieee")


@triton.jit
def _sinkhorn_step(matrix, row_ok, COLUMNS: tl.constexpr):
    """One normalisation of (T, NP, NP) matrices: columns (sum over rows, axis 1) or rows (axis 2)."""
    if COLUMNS:
        sums = tl.sum(matrix, axis=1)
        sums = tl.where(row_ok[None, :], sums, 1.0)  # padded columns are all zero
        return matrix / sums[:, None, :], sums
    sums = tl.sum(matrix, axis=2)
    sums = tl.where(row_ok[None, :], sums, 1.0)
    return matrix / sums[:, :, None], sums


@triton.jit
def _coefficient_logits(pre_raw, post_raw, res_raw, inv_rms, bias_ptr, gates_ptr, NP: tl.constexpr):
    """Per-token logits from the raw projections x·φ: α·(x·φ)·r + b for pre, post and res."""
    block = tl.arange(0, 16)
    res_columns = tl.arange(0, NP * NP)
    pre_gate, post_gate, res_gate = tl.load(gates_ptr), tl.load(gates_ptr + 1), tl.load(gates_ptr + 2)
    pre_proj = pre_raw * inv_rms[:, None]
    post_proj = post_raw * inv_rms[:, None]
    res_proj = res_raw * inv_rms[:, None]
    pre_logits = pre_gate * pre_proj + tl.load(bias_ptr + block)[None, :]
    post_logits = post_gate * post_proj + tl.load(bias_ptr + 16 + block)[None, :]
    res_logits = res_gate * res_proj + tl.load(bias_ptr + 32 + res_columns)[None, :]
    return pre_proj, post_proj, res_proj, pre_logits, post_logits, res_logits


@triton.jit
def _sinkhorn_start(res_logits, tau, N_STREAMS: tl.constexpr, NP: tl.constexpr, BLOCK_T: tl.constexpr):
    """exp(logits/τ − max) as (T, NP, NP) with padded entries 0, and the mask of real entries."""
    rows = tl.arange(0, NP)
    row_ok = rows < N_STREAMS
    entry_ok = row_ok[:, None] & row_ok[None, :]
    scaled = tl.reshape(res_logits, (BLOCK_T, NP, NP)) / tau
    scaled = tl.where(entry_ok[None, :, :], scaled, float("-inf"))
    # As in the reference: the max shift only prevents overflow and carries no gradient.
    shift = tl.max(tl.max(scaled, axis=2), axis=1)
    exp_matrix = tl.exp(scaled - shift[:, None, None])
    exp_matrix = tl.where(entry_ok[None, :, :], exp_matrix, 0.0)
    return exp_matrix, row_ok, entry_ok


@triton.jit
def _stream_column(values, stream):
    """values[:, stream] of a (T, 16) block, as (T,)."""
    return tl.sum(tl.where(tl.arange(0, 16)[None, :] == stream, values, 0.0), axis=1)


@triton.jit
def _pre_kernel(
    x_ptr, phi_ptr, bias_ptr, gates_ptr,
    branch_ptr, h_pre_ptr, h_post_ptr, h_res_ptr, proj_ptr, inv_rms_ptr,
    num_tokens, width, tau, eps, iters,
    stride_xt, stride_xs, stride_xc,
    N_STREAMS: tl.constexpr, NP: tl.constexpr, PHI_COLUMNS: tl.constexpr,
    LOW_PRECISION: tl.constexpr, WIDEN: tl.constexpr, BLOCK_T: tl.constexpr, BLOCK_C: tl.constexpr,
):
    # Pass 1 over the state: x·φ (three dots) and Σx²; then the coefficients and Sinkhorn in
    # registers; pass 2 over the state: the branch input Σ_i h_pre[i]·x[i].
    tokens = tl.program_id(0) * BLOCK_T + tl.arange(0, BLOCK_T)
    token_ok = tokens < num_tokens
    tokens = tokens.to(tl.int64)
    block = tl.arange(0, 16)
    res_columns = tl.arange(0, NP * NP)
    pre_raw = tl.zeros((BLOCK_T, 16), dtype=tl.float32)
    post_raw = tl.zeros((BLOCK_T, 16), dtype=tl.float32)
    res_raw = tl.zeros((BLOCK_T, NP * NP), dtype=tl.float32)
    square_sum = tl.zeros((BLOCK_T,), dtype=tl.float32)
    for stream in tl.static_range(N_STREAMS):
        for start in range(0, width, BLOCK_C):
            channels = start + tl.arange(0, BLOCK_C)
            channel_ok = channels < width
            x = tl.load(
                x_ptr + tokens[:, None] * stride_xt + stream * stride_xs + channels[None, :] * stride_xc,
                mask=token_ok[:, None] & channel_ok[None, :], other=0.0,
            )
            wide = x.to(tl.float32)
            square_sum += tl.sum(wide * wide, axis=1)
            phi_rows = phi_ptr + (stream * width + channels)[:, None] * PHI_COLUMNS
            phi_pre = tl.load(phi_rows + block[None, :], mask=channel_ok[:, None], other=0.0)
            phi_post = tl.load(phi_rows + 16 + block[None, :], mask=channel_ok[:, None], other=0.0)
            phi_res = tl.load(phi_rows + 32 + res_columns[None, :], mask=channel_ok[:, None], other=0.0)
            pre_raw += _dot(x, phi_pre, LOW_PRECISION, WIDEN)
            post_raw += _dot(x, phi_post, LOW_PRECISION, WIDEN)
            res_raw += _dot(x, phi_res, LOW_PRECISION, WIDEN)
    inv_rms = tl.rsqrt(square_sum / (N_STREAMS * width) + eps)
    pre_proj, post_proj, res_proj, pre_logits, post_logits, res_logits = _coefficient_logits(
        pre_raw, post_raw, res_raw, inv_rms, bias_ptr, gates_ptr, NP
    )
    h_pre = tl.sigmoid(pre_logits)
    h_post = 2 * tl.sigmoid(post_logits)
    matrix, row_ok, entry_ok = _sinkhorn_start(res_logits, tau, N_STREAMS, NP, BLOCK_T)
    for _ in range(iters):
        matrix, _sums = _sinkhorn_step(matrix, row_ok, True)
        matrix, _sums = _sinkhorn_step(matrix, row_ok, False)

    # Coefficients and the normalised projection (what backward needs), unpadded.
    n_cols = 2 * N_STREAMS + N_STREAMS * N_STREAMS
    stream_ok = token_ok[:, None] & (block < N_STREAMS)[None, :]
    small = tokens[:, None] * N_STREAMS + block[None, :]
    tl.store(h_pre_ptr + small, h_pre, mask=stream_ok)
    tl.store(h_post_ptr + small, h_post, mask=stream_ok)
    rows = tl.arange(0, NP)
    matrix_offsets = tokens[:, None, None] * (N_STREAMS * N_STREAMS) + rows[None, :, None] * N_STREAMS + rows[None, None, :]
    tl.store(h_res_ptr + matrix_offsets, matrix, mask=token_ok[:, None, None] & entry_ok[None, :, :])
    proj_rows = proj_ptr + tokens[:, None] * n_cols
    tl.store(proj_rows + block[None, :], pre_proj, mask=stream_ok)
    tl.store(proj_rows + N_STREAMS + block[None, :], post_proj, mask=stream_ok)
    res_i, res_j = res_columns // NP, res_columns % NP
    res_ok = (res_i < N_STREAMS) & (res_j < N_STREAMS)
    tl.store(
        proj_rows + 2 * N_STREAMS + (res_i * N_STREAMS + res_j)[None, :], res_proj,
        mask=token_ok[:, None] & res_ok[None, :],
    )
    tl.store(inv_rms_ptr + tokens, inv_rms, mask=token_ok)

    for start in range(0, width, BLOCK_C):
        channels = start + tl.arange(0, BLOCK_C)
        tc_ok = token_ok[:, None] & (channels < width)[None, :]
        acc = tl.zeros((BLOCK_T, BLOCK_C), dtype=tl.float32)
        for stream in tl.static_range(N_STREAMS):
            x = tl.load(
                x_ptr + tokens[:, None] * stride_xt + stream * stride_xs + channels[None, :] * stride_xc,
                mask=tc_ok, other=0.0,
            ).to(tl.float32)
            acc += _stream_column(h_pre, stream)[:, None] * x
        tl.store(branch_ptr + tokens[:, None] * width + channels[None, :], acc.to(branch_ptr.dtype.element_ty), mask=tc_ok)


@triton.jit
def _pre_backward_kernel(
    grad_branch_ptr, grad_h_pre_ptr, grad_h_post_ptr, grad_h_res_ptr,
    x_ptr, phi_ptr, bias_ptr, gates_ptr, proj_ptr, inv_rms_ptr,
    grad_x_ptr, grad_logits_ptr, scratch_ptr,
    num_tokens, width, tau, iters,
    stride_xt, stride_xs, stride_xc,
    N_STREAMS: tl.constexpr, NP: tl.constexpr, PHI_COLUMNS: tl.constexpr,
    LOW_PRECISION: tl.constexpr, WIDEN: tl.constexpr, BLOCK_T: tl.constexpr, BLOCK_C: tl.constexpr,
):
    tokens = tl.program_id(0) * BLOCK_T + tl.arange(0, BLOCK_T)
    token_ok = tokens < num_tokens
    tokens = tokens.to(tl.int64)
    block = tl.arange(0, 16)
    res_columns = tl.arange(0, NP * NP)
    n_cols = 2 * N_STREAMS + N_STREAMS * N_STREAMS
    stream_ok = token_ok[:, None] & (block < N_STREAMS)[None, :]
    small = tokens[:, None] * N_STREAMS + block[None, :]
    res_i, res_j = res_columns // NP, res_columns % NP
    res_ok = token_ok[:, None] & ((res_i < N_STREAMS) & (res_j < N_STREAMS))[None, :]
    res_unpadded = 2 * N_STREAMS + (res_i * N_STREAMS + res_j)[None, :]

    # Pass 1: grad_h_pre[i] = Σ_c grad_branch[c]·x[i, c], plus any gradient on h_pre itself.
    # Products are accumulated per (token, stream, channel lane) and reduced across the
    # program's threads once, after the loop, not once per chunk and stream.
    streams = tl.arange(0, NP)
    stream_rows_ok = token_ok[:, None] & (streams < N_STREAMS)[None, :]
    products = tl.zeros((BLOCK_T, NP, BLOCK_C), dtype=tl.float32)
    for start in range(0, width, BLOCK_C):
        channels = start + tl.arange(0, BLOCK_C)
        channel_ok = channels < width
        tc_ok = token_ok[:, None] & channel_ok[None, :]
        grad_branch = tl.load(grad_branch_ptr + tokens[:, None] * width + channels[None, :], mask=tc_ok, other=0.0)
        x = tl.load(
            x_ptr + tokens[:, None, None] * stride_xt + streams[None, :, None] * stride_xs
            + channels[None, None, :] * stride_xc,
            mask=stream_rows_ok[:, :, None] & channel_ok[None, None, :], other=0.0,
        )
        products += grad_branch.to(tl.float32)[:, None, :] * x.to(tl.float32)
    per_stream = tl.sum(products, axis=2)  # (T, NP) → the (T, 16) block layout of the coefficients
    grad_h_pre = tl.sum(tl.where(block[None, None, :] == streams[None, :, None], per_stream[:, :, None], 0.0), axis=1)
    grad_h_pre += tl.load(grad_h_pre_ptr + small, mask=stream_ok, other=0.0)

    # The coefficients again, from the saved normalised projection (inv_rms = 1 undoes nothing).
    proj_rows = proj_ptr + tokens[:, None] * n_cols
    pre_proj = tl.load(proj_rows + block[None, :], mask=stream_ok, other=0.0)
    post_proj = tl.load(proj_rows + N_STREAMS + block[None, :], mask=stream_ok, other=0.0)
    res_proj = tl.load(proj_rows + res_unpadded, mask=res_ok, other=0.0)
    inv_rms = tl.load(inv_rms_ptr + tokens, mask=token_ok, other=1.0)
    ones = tl.full((BLOCK_T,), 1.0, dtype=tl.float32)
    _, _, _, pre_logits, post_logits, res_logits = _coefficient_logits(
        pre_proj, post_proj, res_proj, ones, bias_ptr, gates_ptr, NP
    )
    h_pre = tl.sigmoid(pre_logits)
    grad_pre_logits = grad_h_pre * h_pre * (1 - h_pre)
    post_sigmoid = tl.sigmoid(post_logits)
    grad_h_post = tl.load(grad_h_post_ptr + small, mask=stream_ok, other=0.0)
    grad_post_logits = 2 * grad_h_post * post_sigmoid * (1 - post_sigmoid)

    # Sinkhorn backward by replay: run the iterations again, keeping each normalisation's sums
    # (per program, in ``scratch``), then walk back from the result, rebuilding each iteration's
    # matrices by multiplying its sums back in and differentiating its two normalisations.
    exp_matrix, row_ok, entry_ok = _sinkhorn_start(res_logits, tau, N_STREAMS, NP, BLOCK_T)
    rows = tl.arange(0, NP)
    sums_offsets = tokens[:, None] * (iters * 2 * NP) + rows[None, :]
    sums_ok = token_ok[:, None] & (rows < NP)[None, :]
    matrix = exp_matrix
    for iteration in range(0, iters):
        matrix, column_sums = _sinkhorn_step(matrix, row_ok, True)
        tl.store(scratch_ptr + sums_offsets + iteration * 2 * NP, column_sums, mask=sums_ok)
        matrix, row_sums = _sinkhorn_step(matrix, row_ok, False)
        tl.store(scratch_ptr + sums_offsets + iteration * 2 * NP + NP, row_sums, mask=sums_ok)
    tl.debug_barrier()  # the sums are read back below by other threads of this program
    matrix_offsets = tokens[:, None, None] * (N_STREAMS * N_STREAMS) + rows[None, :, None] * N_STREAMS + rows[None, None, :]
    grad = tl.load(grad_h_res_ptr + matrix_offsets, mask=token_ok[:, None, None] & entry_ok[None, :, :], other=0.0)
    for back in range(0, iters):
        iteration = iters - 1 - back
        column_sums = tl.load(scratch_ptr + sums_offsets + iteration * 2 * NP, mask=sums_ok, other=1.0)
        row_sums = tl.load(scratch_ptr + sums_offsets + iteration * 2 * NP + NP, mask=sums_ok, other=1.0)
        # out = m / s with s = Σ_axis m:  ∂L/∂m = (g − Σ_axis g·out) / s
        grad = (grad - tl.sum(grad * matrix, axis=2)[:, :, None]) / row_sums[:, :, None]
        column_normalised = matrix * row_sums[:, :, None]
        grad = (grad - tl.sum(grad * column_normalised, axis=1)[:, None, :]) / column_sums[:, None, :]
        grad = tl.where(entry_ok[None, :, :], grad, 0.0)
        matrix = column_normalised * column_sums[:, None, :]
    grad_res_logits = tl.reshape(grad * exp_matrix / tau, (BLOCK_T, NP * NP))

    logit_rows = grad_logits_ptr + tokens[:, None] * n_cols
    tl.store(logit_rows + block[None, :], grad_pre_logits, mask=stream_ok)
    tl.store(logit_rows + N_STREAMS + block[None, :], grad_post_logits, mask=stream_ok)
    tl.store(logit_rows + res_unpadded, grad_res_logits, mask=res_ok)

    # Gradient of the raw projection x·φ (logits = α·(x·φ)·r + b) and of r = rsqrt(mean(x²) + eps):
    # ∂r/∂x = −r³·x/F, so the norm's share is −(Σ_d g_d·proj_d)·r²/F · x with g the proj gradient.
    pre_gate, post_gate, res_gate = tl.load(gates_ptr), tl.load(gates_ptr + 1), tl.load(gates_ptr + 2)
    grad_pre_proj = pre_gate * grad_pre_logits
    grad_post_proj = post_gate * grad_post_logits
    grad_res_proj = res_gate * grad_res_logits
    projection_dot = (
        tl.sum(grad_pre_proj * pre_proj, axis=1) + tl.sum(grad_post_proj * post_proj, axis=1)
        + tl.sum(grad_res_proj * res_proj, axis=1)
    )
    norm_coeff = -projection_dot * inv_rms * inv_rms / (N_STREAMS * width)
    dtype = phi_ptr.dtype.element_ty
    grad_pre_raw = (grad_pre_proj * inv_rms[:, None]).to(dtype)
    grad_post_raw = (grad_post_proj * inv_rms[:, None]).to(dtype)
    grad_res_raw = (grad_res_proj * inv_rms[:, None]).to(dtype)

    # Pass 2: grad_x[i, c] = (g_raw·φᵀ)[i, c] + norm_coeff·x[i, c] + h_pre[i]·grad_branch[c].
    for stream in tl.static_range(N_STREAMS):
        h_pre_stream = _stream_column(h_pre, stream)
        for start in range(0, width, BLOCK_C):
            channels = start + tl.arange(0, BLOCK_C)
            channel_ok = channels < width
            tc_ok = token_ok[:, None] & channel_ok[None, :]
            phi_columns = phi_ptr + (stream * width + channels)[None, :] * PHI_COLUMNS  # (1, C) rows of φ
            phi_pre_t = tl.load(phi_columns + block[:, None], mask=channel_ok[None, :], other=0.0)
            phi_post_t = tl.load(phi_columns + 16 + block[:, None], mask=channel_ok[None, :], other=0.0)
            phi_res_t = tl.load(phi_columns + 32 + res_columns[:, None], mask=channel_ok[None, :], other=0.0)
            acc = _dot(grad_pre_raw, phi_pre_t, LOW_PRECISION, WIDEN)
            acc += _dot(grad_post_raw, phi_post_t, LOW_PRECISION, WIDEN)
            acc += _dot(grad_res_raw, phi_res_t, LOW_PRECISION, WIDEN)
            x = tl.load(
                x_ptr + tokens[:, None] * stride_xt + stream * stride_xs + channels[None, :] * stride_xc,
                mask=tc_ok, other=0.0,
            ).to(tl.float32)
            grad_branch = tl.load(grad_branch_ptr + tokens[:, None] * width + channels[None, :], mask=tc_ok, other=0.0)
            acc += norm_coeff[:, None] * x + h_pre_stream[:, None] * grad_branch.to(tl.float32)
            tl.store(
                grad_x_ptr + tokens[:, None] * (N_STREAMS * width) + stream * width + channels[None, :],
                acc.to(grad_x_ptr.dtype.element_ty), mask=tc_ok,
            )


def _phi_dtype(x: torch.Tensor) -> torch.dtype:
    """φ enters the projection in the streams' dtype when they are bf16/fp16, else in fp32."""
    return x.dtype if x.dtype in (torch.bfloat16, torch.float16) else torch.float32


def _check_streams(x: torch.Tensor) -> tuple[int, int, int]:
    assert x.dim() == 3, f"the mHC kernels take streams as (N, n, C), got shape {tuple(x.shape)}"
    assert x.dtype in (torch.float32, torch.bfloat16, torch.float16), f"unsupported stream dtype {x.dtype}"
    return x.shape


def _pre_meta(x: torch.Tensor, kernel: str) -> dict:
    num_tokens, num_streams, width = x.shape
    np_ = padded_streams(num_streams)
    tiles = tiles_for(kernel, width, num_streams, num_tokens)
    return dict(
        N_STREAMS=num_streams, NP=np_, PHI_COLUMNS=_RES_OFFSET + np_ * np_,
        LOW_PRECISION=x.dtype in (torch.bfloat16, torch.float16), WIDEN=INTERPRET,
        BLOCK_T=tiles.block_t, BLOCK_C=tiles.block_c, num_warps=tiles.warps,
    )


def launch_pre(
    x: torch.Tensor, phi_padded: torch.Tensor, bias_padded: torch.Tensor, gates: torch.Tensor,
    iters: int, tau: float, eps: float, branch_dtype: torch.dtype,
) -> tuple[torch.Tensor, ...]:
    """The branch input and the coefficients of one dynamic mHC connection.

    x (N, n, C); φ (n·C, 2n + n²) and the bias (2n + n²,) [pre | post | res, row-major] padded by
    ``pad_phi``, fp32; gates (3,) = (α_pre, α_post, α_res). Returns (branch input (N, C) in
    ``branch_dtype``, h_pre (N, n), h_post (N, n), h_res (N, n, n), proj (N, 2n + n²) = RMSNorm(x)·φ,
    inv_rms (N,)), all but the branch input fp32.
    """
    num_tokens, num_streams, width = _check_streams(x)
    meta = _pre_meta(x, "pre")
    phi_padded = phi_padded.to(_phi_dtype(x)).contiguous()
    bias_padded = bias_padded.to(torch.float32).contiguous()
    columns = 2 * num_streams + num_streams * num_streams
    device = x.device
    branch = torch.empty((num_tokens, width), dtype=branch_dtype, device=device)
    h_pre = torch.empty((num_tokens, num_streams), dtype=torch.float32, device=device)
    h_post = torch.empty((num_tokens, num_streams), dtype=torch.float32, device=device)
    h_res = torch.empty((num_tokens, num_streams, num_streams), dtype=torch.float32, device=device)
    proj = torch.empty((num_tokens, columns), dtype=torch.float32, device=device)
    inv_rms = torch.empty((num_tokens,), dtype=torch.float32, device=device)
    grid = (triton.cdiv(num_tokens, meta["BLOCK_T"]),)
    _pre_kernel[grid](
        x, phi_padded, bias_padded, gates.to(torch.float32).contiguous(),
        branch, h_pre, h_post, h_res, proj, inv_rms,
        num_tokens, width, float(tau), float(eps), int(iters),
        x.stride(0), x.stride(1), x.stride(2), **meta,
    )
    return branch, h_pre, h_post, h_res, proj, inv_rms


def launch_pre_backward(
    grad_branch: torch.Tensor, grad_h_pre: torch.Tensor, grad_h_post: torch.Tensor, grad_h_res: torch.Tensor,
    x: torch.Tensor, phi_padded: torch.Tensor, bias_padded: torch.Tensor, gates: torch.Tensor,
    proj: torch.Tensor, inv_rms: torch.Tensor, iters: int, tau: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(grad_x in x's dtype, grad_logits (N, 2n + n²) fp32) of ``launch_pre``'s outputs.

    The logit gradients give the bias, gate and φ gradients with token sums and one matmul,
    which the caller does in torch.
    """
    num_tokens, num_streams, width = _check_streams(x)
    meta = _pre_meta(x, "pre_backward")
    phi_padded = phi_padded.to(_phi_dtype(x)).contiguous()
    bias_padded = bias_padded.to(torch.float32).contiguous()
    columns = 2 * num_streams + num_streams * num_streams
    grad_x = torch.empty((num_tokens, num_streams, width), dtype=x.dtype, device=x.device)
    grad_logits = torch.empty((num_tokens, columns), dtype=torch.float32, device=x.device)
    # Each normalisation's sums, written and read back by the program that owns the token.
    scratch = torch.empty((num_tokens, iters, 2, meta["NP"]), dtype=torch.float32, device=x.device)
    grid = (triton.cdiv(num_tokens, meta["BLOCK_T"]),)
    _pre_backward_kernel[grid](
        grad_branch.contiguous(), grad_h_pre.to(torch.float32).contiguous(),
        grad_h_post.to(torch.float32).contiguous(), grad_h_res.to(torch.float32).contiguous(),
        x, phi_padded, bias_padded, gates.to(torch.float32).contiguous(), proj.contiguous(), inv_rms.contiguous(),
        grad_x, grad_logits, scratch,
        num_tokens, width, float(tau), int(iters),
        x.stride(0), x.stride(1), x.stride(2), **meta,
    )
    return grad_x, grad_logits
