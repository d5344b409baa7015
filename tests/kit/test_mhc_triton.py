"""The Triton kernels of mHC (labfolio.kit.mhc_kernels / mhc_triton) against the eager reference.

Without a GPU the kernels run in triton's interpreter (TRITON_INTERPRET=1, set here before the
kernels are imported), on CPU tensors; with one they are compiled and run on CUDA. The
interpreter is slow, so every shape is tiny, chosen to hit partial token and channel blocks and
padded stream counts. The tests skip only when triton is not installed, and fail then in CI.
"""

import copy
import os
import subprocess
import sys
import warnings

import pytest

torch = pytest.importorskip("torch")

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

try:
    import triton  # noqa: F401
except ImportError:
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        pytest.fail("triton is not installed in CI: the mHC kernel tests must run there", pytrace=False)
    pytest.skip("triton is not installed", allow_module_level=True)

import torch.nn.functional as F  # noqa: E402
from torch import nn  # noqa: E402

from labfolio.kit import mhc_fused  # noqa: E402
from labfolio.kit import mhc_kernels, mhc_triton  # noqa: E402
from labfolio.kit.connections import ConnectionConfig, ConnectionWarning  # noqa: E402
from labfolio.kit.mhc import ManifoldHyperConnection  # noqa: E402
from labfolio.kit.mhc_fused import materialize  # noqa: E402
from labfolio.kit.models import GPT, GPTConfig  # noqa: E402
from labfolio.kit.sinkhorn import doubly_stochastic_errors, sinkhorn  # noqa: E402

INTERPRETED = mhc_kernels.INTERPRET
DEVICE = "cpu" if INTERPRETED else "cuda"
WIDTH = 72  # the pre kernels' channel chunks are 32 (n ≤ 8): full chunks and a partial one
POST_WIDTH = 300  # the post-mix chunks are 256 forward, 128 backward at n = 4: full chunks and a partial one
ITERS = 5  # Sinkhorn iterations where the count is not the point (the interpreter is slow)


def test_kernels_run_where_the_tests_can_check_them():
    # A CPU-only run must be in interpreter mode, or every kernel test below would fail to launch.
    assert INTERPRETED or torch.cuda.is_available()


def relative_error(a, b):
    return ((a.double() - b.double()).norm() / b.double().norm().clamp_min(1e-300)).item()


def randn(*shape, seed, dtype=torch.float32, scale=1.0):
    generator = torch.Generator().manual_seed(seed)
    return (scale * torch.randn(*shape, generator=generator)).to(dtype).to(DEVICE)


def leaf(tensor):
    return tensor.detach().clone().requires_grad_(True)


# --- post-branch mix -----------------------------------------------------------------------------


def eager_post_mix(x, h_res, h_post, f):
    """The reference's formula in float64: H_res·X + H_postᵀ ⊗ F."""
    return torch.einsum("btij,btjc->btic", h_res.double(), x.double()) + h_post.double()[..., None] * f.double()[:, :, None, :]


@pytest.mark.parametrize(("dtype", "streams_count", "tolerance"), [
    (torch.float32, 4, 1e-6), (torch.float32, 3, 1e-6), (torch.float32, 8, 1e-6), (torch.bfloat16, 4, 5e-3),
])
def test_post_mix_kernel_matches_the_eager_mix_and_every_gradient(dtype, streams_count, tolerance):
    batch, seq, n = 3, 3, streams_count  # 9 tokens: full 2-token blocks and a partial one
    x = leaf(randn(batch, seq, n, POST_WIDTH, seed=0, dtype=dtype))
    h_res = leaf(torch.rand(batch, seq, n, n, generator=torch.Generator().manual_seed(1)).to(DEVICE))
    h_post = leaf(2 * torch.rand(batch, seq, n, generator=torch.Generator().manual_seed(2)).to(DEVICE))
    f = leaf(randn(batch, seq, POST_WIDTH, seed=3, dtype=dtype))
    grad_out = randn(batch, seq, n, POST_WIDTH, seed=4, dtype=dtype)

    out = mhc_triton.post_mix(x, h_res, h_post, f, dtype)
    assert out.dtype == dtype and out.shape == x.shape
    reference = eager_post_mix(x, h_res, h_post, f)
    # bf16: the output is rounded once to bf16 (2^-9 relative), from an fp32 sum
    assert relative_error(out, reference) < tolerance
    grads = torch.autograd.grad(out, (x, h_res, h_post, f), grad_out)
    reference_grads = torch.autograd.grad(reference, (x, h_res, h_post, f), grad_out.double())
    for name, grad, expected in zip(("x", "h_res", "h_post", "f"), grads, reference_grads, strict=True):
        assert grad.dtype == (dtype if name in ("x", "f") else torch.float32), name
        # coefficient gradients are fp32 sums over the channels even for bf16 streams
        limit = tolerance if name in ("x", "f") else 1e-5
        assert relative_error(grad, expected) < limit, name


def test_post_mix_kernel_reads_a_broadcast_state_and_static_coefficients_and_sums_their_gradients():
    # The first connection reads the expanded embedding (stride 0 over streams); static mhc uses
    # one (n, n) H_res for every token, so its gradient is the sum over tokens.
    n = 4
    embedding = leaf(randn(2, 5, POST_WIDTH, seed=5))
    h_res = leaf(torch.rand(n, n, generator=torch.Generator().manual_seed(6)).to(DEVICE))
    h_post = leaf(torch.rand(n, generator=torch.Generator().manual_seed(7)).to(DEVICE))
    f = leaf(randn(2, 5, POST_WIDTH, seed=8))
    state = embedding.unsqueeze(-2).expand(2, 5, n, POST_WIDTH)
    out = mhc_triton.post_mix(state, h_res, h_post, f, torch.float32)
    reference = eager_post_mix(state, h_res.expand(2, 5, n, n), h_post.expand(2, 5, n), f)
    assert relative_error(out, reference) < 1e-6
    grad_out = randn(2, 5, n, POST_WIDTH, seed=9)
    grads = torch.autograd.grad(out, (embedding, h_res, h_post, f), grad_out)
    reference_grads = torch.autograd.grad(reference, (embedding, h_res, h_post, f), grad_out.double())
    for grad, expected in zip(grads, reference_grads, strict=True):
        assert grad.shape == expected.shape
        assert relative_error(grad, expected) < 1e-6


def random_mix(batch, seq, n, width, seed, dtype):
    generator = torch.Generator().manual_seed(seed)
    h_res = torch.rand(batch, seq, n, n, generator=generator).to(DEVICE)
    h_post = 2 * torch.rand(batch, seq, n, generator=generator).to(DEVICE)
    return leaf(h_res), leaf(h_post), leaf(randn(batch, seq, width, seed=seed + 1, dtype=dtype))


@pytest.mark.parametrize(("dtype", "streams_count"), [
    (torch.float32, 4), (torch.float32, 3), (torch.float32, 8), (torch.bfloat16, 4),
])
def test_post_mix_pair_equals_two_single_mixes_bit_for_bit_and_matches_the_eager_gradients(dtype, streams_count):
    batch, seq, n = 3, 3, streams_count
    x = leaf(randn(batch, seq, n, POST_WIDTH, seed=50, dtype=dtype))
    first, second = random_mix(batch, seq, n, POST_WIDTH, 51, dtype), random_mix(batch, seq, n, POST_WIDTH, 53, dtype)
    out = mhc_triton.post_mix_pair(x, first, second, dtype)
    # The middle state is rounded to the storage dtype in registers exactly as a stored one.
    two_calls = mhc_triton.post_mix(mhc_triton.post_mix(x, *first, dtype), *second, dtype)
    assert out.dtype == dtype and torch.equal(out, two_calls)
    middle = eager_post_mix(x, *first)
    # The stored middle state's values (the single-mix kernel's, held to the eager mix by the
    # test above; the interpreter truncates to bf16 where a GPU rounds) with a float64 gradient.
    middle = middle + (mhc_triton.post_mix(x, *first, dtype).double() - middle).detach()
    reference = eager_post_mix(middle, *second)
    low = dtype == torch.bfloat16
    # bf16: two roundings (the interpreter truncates to bf16, a GPU rounds to nearest)
    assert relative_error(out, reference) < (1e-2 if low else 1e-6)
    inputs = (x, *first, *second)
    grad_out = randn(batch, seq, n, POST_WIDTH, seed=55, dtype=dtype)
    grads = torch.autograd.grad(out, inputs, grad_out)
    reference_grads = torch.autograd.grad(reference, inputs, grad_out.double())
    names = ("x", "h_res_a", "h_post_a", "f_a", "h_res_m", "h_post_m", "f_m")
    for name, tensor, grad, expected in zip(names, inputs, grads, reference_grads, strict=True):
        assert grad.dtype == tensor.dtype and grad.shape == tensor.shape, name
        # the middle gradient stays fp32 between the two mixes; only outputs are rounded
        limit = 1e-2 if low and name in ("x", "f_a", "f_m") else (1e-5 if low else 1e-6)
        assert relative_error(grad, expected) < limit, name


@pytest.mark.parametrize("pair", [False, True])
def test_post_mix_gradients_do_not_depend_on_the_tiles_or_on_splitting_channels_over_programs(monkeypatch, pair):
    # 9 tokens in blocks of 2 (a partial block), 300 channels in chunks of 64 over 3 programs per
    # token block (the programs sum 2, 2 and 1 chunks): the fp32 partial sums add up to the
    # gradients of the default one-program-per-token tiles.
    n, dtype = 4, torch.float32
    x = leaf(randn(3, 3, n, POST_WIDTH, seed=60, dtype=dtype))
    mixes = (random_mix(3, 3, n, POST_WIDTH, 61, dtype), random_mix(3, 3, n, POST_WIDTH, 63, dtype))

    def run():
        out = mhc_triton.post_mix_pair(x, *mixes, dtype) if pair else mhc_triton.post_mix(x, *mixes[0], dtype)
        inputs = (x, *mixes[0], *(mixes[1] if pair else ()))
        return out, torch.autograd.grad(out, inputs, randn(*out.shape, seed=65))

    out, grads = run()
    monkeypatch.setitem(mhc_kernels.TILE_OVERRIDES, "post_mix", mhc_kernels.Tiles(2, 64, 4))
    monkeypatch.setitem(mhc_kernels.TILE_OVERRIDES, "post_mix_backward", mhc_kernels.Tiles(2, 64, 4, 3))
    tiled_out, tiled_grads = run()
    # bit-equal in the interpreter; on sm_90 the compiler contracts multiply-adds into FMAs
    # differently for different tile shapes, which moves the last bit of some fp32 outputs
    assert relative_error(tiled_out, out) < 1e-6
    for grad, tiled in zip(grads, tiled_grads, strict=True):
        assert relative_error(tiled, grad) < 1e-6


def test_the_kernel_mixes_of_a_long_pending_chain_match_the_torch_mixes():
    # Chains longer than a pair (RECOMPUTE_SEGMENT > 2) run as pairs and a last single mix.
    n, dtype = 4, torch.float32
    base = randn(1, 3, n, WIDTH, seed=70)
    mixes = tuple(random_mix(1, 3, n, WIDTH, 71 + 2 * k, dtype) for k in range(3))
    flat = tuple(t.detach() for mix in mixes for t in mix)
    kernel_state = mhc_fused._apply_mixes(base, dtype, True, flat)
    torch_state = mhc_fused._apply_mixes(base, dtype, False, flat)
    assert relative_error(kernel_state, torch_state) < 1e-6


def test_tile_overrides_parse_and_reject_shapes_the_kernels_cannot_take():
    parsed = mhc_kernels.parse_tiles(" pre=32x32x8 ; post_mix_backward=1x128x4x2")
    assert parsed == {"pre": mhc_kernels.Tiles(32, 32, 8), "post_mix_backward": mhc_kernels.Tiles(1, 128, 4, 2)}
    for bad in ("pre=8x32x8", "post_mix=2x100x4", "sinkhorn=1x1x1", "post_mix=2x64"):
        with pytest.raises(ValueError):
            mhc_kernels.parse_tiles(bad)
    # every default is a shape the parser accepts
    for kernel in mhc_kernels.KERNELS:
        for n, width in ((2, 64), (3, 768), (4, 2048), (8, 768)):
            tiles = mhc_kernels.default_tiles(kernel, width, n, 16384)
            text = f"{kernel}={tiles.block_t}x{tiles.block_c}x{tiles.warps}x{tiles.split}"
            assert mhc_kernels.parse_tiles(text) == {kernel: tiles}


# --- pre-branch side: projection, coefficients, Sinkhorn, branch input ---------------------------


def pre_inputs(n, dtype, seed=10):
    columns = 2 * n + n * n
    x = leaf(randn(2, 9, n, WIDTH, seed=seed, dtype=dtype))
    phi = leaf(randn(n * WIDTH, columns, seed=seed + 1, scale=(n * WIDTH) ** -0.5))
    bias = leaf(randn(columns, seed=seed + 2))
    gates = leaf(0.5 + torch.rand(3, generator=torch.Generator().manual_seed(seed + 3)).to(DEVICE))
    return x, phi, bias, gates


def eager_pre(x, phi, bias, gates, iters, tau, phi_dtype):
    """The reference layer's coefficients and branch input, in float64 from the same values.

    ``phi_dtype`` is the dtype φ enters the projection in (the streams' dtype when they are bf16).
    """
    batch, seq, n, width = x.shape
    flat = x.double().reshape(batch, seq, n * width)
    projected = F.rms_norm(flat, (n * width,), eps=1e-6) @ phi.to(phi_dtype).double()
    pre, post, res = projected.split([n, n, n * n], dim=-1)
    pre_bias, post_bias, res_bias = bias.double().split([n, n, n * n])
    gates = gates.double()
    h_pre = torch.sigmoid(gates[0] * pre + pre_bias)
    h_post = 2 * torch.sigmoid(gates[1] * post + post_bias)
    h_res = sinkhorn((gates[2] * res + res_bias).reshape(batch, seq, n, n), iters, tau)
    branch_input = (h_pre[..., None] * x.double()).sum(dim=-2)
    return branch_input, h_pre[..., None, :], h_res, h_post


@pytest.mark.parametrize(("dtype", "streams_count", "iters", "tau"), [
    (torch.float32, 4, 20, 1.0), (torch.float32, 3, ITERS, 0.7), (torch.float32, 8, ITERS, 1.0),
    (torch.bfloat16, 4, ITERS, 1.0),
])
def test_pre_kernel_matches_the_reference_coefficients_branch_input_and_every_gradient(dtype, streams_count, iters, tau):
    x, phi, bias, gates = pre_inputs(streams_count, dtype)
    outputs = mhc_triton.pre_branch(x, phi, bias, gates, iters, tau, 1e-6)
    references = eager_pre(x, phi, bias, gates, iters, tau, phi_dtype=dtype)
    low = dtype == torch.bfloat16
    # bf16: the branch input is rounded to bf16; the coefficients differ from float64 only by the
    # fp32 accumulation of the bf16 products
    for name, out, expected, limit in zip(
        ("branch_input", "h_pre", "h_res", "h_post"), outputs, references, (5e-3 if low else 1e-6, 1e-5, 1e-5, 1e-5),
        strict=True,
    ):
        assert out.shape == expected.shape, name
        assert out.dtype == (dtype if name == "branch_input" else torch.float32), name
        assert relative_error(out, expected) < limit, name
    # Sinkhorn: rows are normalised last (exact to rounding); columns carry the same convergence
    # error as the reference's float64 iteration
    row_error, column_error = doubly_stochastic_errors(outputs[2])
    reference_row_error, reference_column_error = doubly_stochastic_errors(references[2])
    assert row_error < 1e-6
    assert abs(column_error - reference_column_error) < 1e-6

    generator = torch.Generator().manual_seed(20)
    grad_outs = [torch.randn(r.shape, generator=generator).to(DEVICE) for r in references]
    grad_outs[0] = grad_outs[0].to(dtype)
    grad_outs[1] = torch.zeros_like(grad_outs[1])  # h_pre only feeds the branch input in the layer
    inputs = (x, phi, bias, gates)
    grads = torch.autograd.grad(outputs, inputs, grad_outs)
    reference_grads = torch.autograd.grad(references, inputs, [g.double() for g in grad_outs])
    # bf16: the state gradient is rounded to bf16 and φ's products take bf16 operands
    for name, grad, expected in zip(("x", "phi", "bias", "gates"), grads, reference_grads, strict=True):
        assert grad.dtype == inputs[("x", "phi", "bias", "gates").index(name)].dtype, name
        assert relative_error(grad, expected) < (1e-2 if low else 2e-5), name


def test_pre_kernel_passes_on_a_gradient_given_to_h_pre():
    x, phi, bias, gates = pre_inputs(4, torch.float32, seed=30)
    _, h_pre, _, _ = mhc_triton.pre_branch(x, phi, bias, gates, ITERS, 1.0, 1e-6)
    _, reference_h_pre, _, _ = eager_pre(x, phi, bias, gates, ITERS, 1.0, torch.float32)
    grad_out = randn(*h_pre.shape, seed=31)
    grads = torch.autograd.grad(h_pre, (x, phi, bias, gates), grad_out)
    reference_grads = torch.autograd.grad(reference_h_pre, (x, phi, bias, gates), grad_out.double())
    for grad, expected in zip(grads, reference_grads, strict=True):
        assert relative_error(grad, expected) < 2e-5


def test_pre_kernel_sinkhorn_matches_the_reference_on_logits_far_from_the_identity():
    # Large logits (spread ~20 / τ): Sinkhorn is far from converged after 20 iterations and its
    # gradient is dominated by the iterations, not the exp.
    x, phi, bias, gates = pre_inputs(4, torch.float32, seed=40)
    with torch.no_grad():
        bias.mul_(6)
    _, _, h_res, _ = mhc_triton.pre_branch(x, phi, bias, gates, 20, 0.5, 1e-6)
    _, _, reference, _ = eager_pre(x, phi, bias, gates, 20, 0.5, torch.float32)
    assert relative_error(h_res, reference) < 1e-5
    assert abs(doubly_stochastic_errors(h_res)[1] - doubly_stochastic_errors(reference)[1]) < 1e-5
    grad_out = randn(*h_res.shape, seed=41)
    (grad_bias,) = torch.autograd.grad(h_res, (bias,), grad_out)
    (reference_grad_bias,) = torch.autograd.grad(reference, (bias,), grad_out.double())
    assert relative_error(grad_bias, reference_grad_bias) < 1e-4


# --- the layer -----------------------------------------------------------------------------------


def mhc_config(**overrides) -> ConnectionConfig:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConnectionWarning)
        return ConnectionConfig(connection="mhc", **overrides)


def perturb(module: nn.Module, seed: int) -> None:
    """Move connection parameters off their init, so that no gradient is zero by symmetry."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, parameter in module.named_parameters():
            if name.endswith("_gate"):
                parameter.copy_(0.5 + torch.rand((), generator=generator))
            elif name.endswith("_bias"):
                parameter.add_(torch.randn(parameter.shape, generator=generator).to(parameter.device))


class PreNormBranch(nn.Module):
    def __init__(self, width: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(width)
        self.linear = nn.Linear(width, width)

    def forward(self, x):
        return self.linear(torch.tanh(self.norm(x)))


def run_layer(impl, dynamic=True, streams_count=4, autocast=False, seed=0):
    torch.manual_seed(seed)
    module = ManifoldHyperConnection(mhc_config(mhc_impl=impl, dynamic=dynamic, streams=streams_count,
                                                sinkhorn_iters=ITERS), WIDTH, 1).to(DEVICE)
    perturb(module, seed=1)
    branch = PreNormBranch(WIDTH).to(DEVICE)
    streams = leaf(randn(2, 9, streams_count, WIDTH, seed=2))
    with torch.autocast(device_type=DEVICE, dtype=torch.bfloat16, enabled=autocast):
        out = materialize(module(streams, branch))
    out.float().backward(randn(*out.shape, seed=3))
    grads = {f"connection.{n}": p.grad for n, p in module.named_parameters()}
    grads |= {f"branch.{n}": p.grad for n, p in branch.named_parameters()}
    grads["streams"] = streams.grad
    return out.detach(), grads, module.recorded


@pytest.mark.parametrize(("dynamic", "streams_count"), [(True, 4), (True, 2), (False, 4)])
def test_triton_mhc_layer_matches_the_reference_output_every_gradient_and_sinkhorn_errors(dynamic, streams_count):
    out, grads, recorded = run_layer("triton", dynamic, streams_count)
    ref_out, ref_grads, ref_recorded = run_layer("eager", dynamic, streams_count)
    assert relative_error(out, ref_out) < 2e-6
    assert grads.keys() == ref_grads.keys()
    for name in ref_grads:
        assert relative_error(grads[name], ref_grads[name]) < 2e-5, name
    for field in ("h_pre", "h_post", "h_res"):
        assert getattr(recorded, field).shape == getattr(ref_recorded, field).shape, field
        assert relative_error(getattr(recorded, field), getattr(ref_recorded, field)) < 2e-6, field
    errors = [e.item() for e in doubly_stochastic_errors(recorded.h_res)]
    reference_errors = [e.item() for e in doubly_stochastic_errors(ref_recorded.h_res)]
    assert errors[0] < 1e-6
    assert errors[1] == pytest.approx(reference_errors[1], abs=1e-6)


def test_triton_mhc_under_bf16_autocast_matches_the_torch_fast_path_with_bf16_streams():
    out, grads, recorded = run_layer("triton", autocast=True)
    fast_out, fast_grads, _ = run_layer("fast", autocast=True)
    ref_out, ref_grads, _ = run_layer("eager", autocast=True)
    assert out.dtype == fast_out.dtype == torch.bfloat16
    assert recorded.h_res.dtype == recorded.h_pre.dtype == recorded.h_post.dtype == torch.float32
    # same bf16 storage, same fp32 coefficients: the two fast paths differ by a few bf16 roundings
    assert relative_error(out, fast_out) < 5e-3
    assert relative_error(out, ref_out) < 1e-2
    for name in ref_grads:
        assert relative_error(grads[name], fast_grads[name]) < 3e-2, name
        assert relative_error(grads[name], ref_grads[name]) < 5e-2, name


def test_triton_mhc_gpt_matches_the_reference_loss_gradients_and_diagnostics():
    results = {}
    idx = torch.randint(0, 256, (2, 8), generator=torch.Generator().manual_seed(4)).to(DEVICE)
    for impl in ("eager", "triton"):
        torch.manual_seed(0)
        connection = mhc_config(mhc_impl=impl, sinkhorn_iters=ITERS)
        model = GPT(GPTConfig(block_size=8, depth=2, width=16, heads=2, connection=connection)).to(DEVICE)
        perturb(model, seed=5)
        _, loss = model(idx, idx)
        loss.backward()
        results[impl] = (loss.detach(), {n: p.grad for n, p in model.named_parameters()}, model.diagnostics())
    (ref_loss, ref_grads, ref_diag), (loss, grads, diag) = results["eager"], results["triton"]
    assert relative_error(loss, ref_loss) < 1e-6
    # The first connection sees identical streams, so its H_res gradient is rounding noise:
    # compare every gradient relative to the larger of its own norm and a floor under all genuine ones.
    floor = 1e-5 * torch.stack([g.norm() for g in ref_grads.values()]).max()
    for name in ref_grads:
        difference = (grads[name] - ref_grads[name]).norm()
        assert difference <= 1e-4 * torch.maximum(ref_grads[name].norm(), floor), name
    assert diag.keys() == ref_diag.keys()
    assert diag["sinkhorn_row_err"] < 1e-6
    assert diag["sinkhorn_col_err_raw"] == pytest.approx(ref_diag["sinkhorn_col_err_raw"], abs=1e-6)
    for name in ref_diag:
        assert diag[name] == pytest.approx(ref_diag[name], rel=1e-4, abs=1e-6), name


def test_triton_mhc_compiles_as_one_graph_with_the_kernels_as_opaque_ops_and_matches_eager():
    torch.manual_seed(0)
    module = ManifoldHyperConnection(mhc_config(mhc_impl="triton", sinkhorn_iters=ITERS), WIDTH, 1).to(DEVICE)
    perturb(module, seed=1)
    branch = PreNormBranch(WIDTH).to(DEVICE)

    def step(streams):
        return materialize(module(streams, branch))

    compiled = torch.compile(step, backend="aot_eager", fullgraph=True)
    streams = leaf(randn(2, 9, 4, WIDTH, seed=2))
    eager_out = step(streams)
    (eager_grad,) = torch.autograd.grad(eager_out.square().sum(), streams)
    compiled_out = compiled(streams)
    (compiled_grad,) = torch.autograd.grad(compiled_out.square().sum(), streams)
    torch._dynamo.reset()
    assert relative_error(compiled_out, eager_out) < 1e-6
    assert relative_error(compiled_grad, eager_grad) < 1e-5


# --- which path runs -----------------------------------------------------------------------------


def _kernel_calls(monkeypatch):
    calls = []
    for name in ("post_mix", "post_mix_pair", "pre_branch"):
        original = getattr(mhc_triton, name)
        monkeypatch.setattr(mhc_triton, name, lambda *a, _original=original, _name=name, **k: calls.append(_name) or _original(*a, **k))
    return calls


@pytest.mark.parametrize(("impl", "dtype", "expected"), [
    # a segment's last mix rebuilds the state of its first as a pair; its other mix runs alone
    ("triton", torch.float32, ["pre_branch", "post_mix", "post_mix_pair"]),
    ("triton", torch.float64, []),  # float64 streams: the torch fast path
    ("fast", torch.float32, []),
])
def test_mhc_impl_triton_runs_the_kernels_where_they_apply(monkeypatch, impl, dtype, expected):
    calls = _kernel_calls(monkeypatch)
    module = ManifoldHyperConnection(mhc_config(mhc_impl=impl, sinkhorn_iters=ITERS), WIDTH, 0).to(DEVICE).to(dtype)
    state = randn(1, 3, 4, WIDTH, seed=0, dtype=dtype)
    for _ in range(mhc_fused.RECOMPUTE_SEGMENT):
        state = module(state, lambda x: 2 * x)
    assert sorted(set(calls)) == sorted(expected)


def test_backward_reruns_the_pre_kernel_only_for_a_state_it_rebuilds(monkeypatch):
    # a segment's first connection reads the stored state, which backward keeps anyway: its pre
    # kernel runs once; the second reads a state rebuilt from the first's mix, so its checkpoint
    # runs the pre kernel again in backward instead of keeping that state
    calls = _kernel_calls(monkeypatch)
    module = ManifoldHyperConnection(mhc_config(mhc_impl="triton", sinkhorn_iters=ITERS), WIDTH, 0).to(DEVICE)
    state = leaf(randn(1, 3, 4, WIDTH, seed=0))
    for _ in range(mhc_fused.RECOMPUTE_SEGMENT):
        state = module(state, lambda x: 2 * x)
    assert calls.count("pre_branch") == mhc_fused.RECOMPUTE_SEGMENT
    materialize(state).sum().backward()
    assert calls.count("pre_branch") == 2 * mhc_fused.RECOMPUTE_SEGMENT - 1


def test_a_model_running_the_kernels_deep_copies():
    # EMA and checkpoint averaging copy whole models; the layer must hold nothing uncopyable.
    module = ManifoldHyperConnection(mhc_config(mhc_impl="triton"), WIDTH, 0)
    assert module.kernels_available
    copy.deepcopy(module)


def test_auto_on_cpu_is_the_reference_and_does_not_load_the_kernels(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    module = ManifoldHyperConnection(mhc_config(mhc_impl="auto"), WIDTH, 0)
    assert not module.kernels_available
    assert isinstance(module(randn(1, 3, 4, WIDTH, seed=0).cpu(), lambda x: 2 * x), torch.Tensor)


def test_triton_impl_without_triton_warns_and_runs_the_torch_fast_path():
    code = (
        "import sys, warnings; sys.modules['triton'] = None\n"
        "import torch\n"
        "from labfolio.kit.connections import ConnectionConfig\n"
        "from labfolio.kit.mhc import ManifoldHyperConnection\n"
        "from labfolio.kit.mhc_fused import materialize\n"
        "with warnings.catch_warnings(record=True) as caught:\n"
        "    warnings.simplefilter('always')\n"
        "    module = ManifoldHyperConnection(ConnectionConfig(connection='mhc', mhc_impl='triton'), 8, 0)\n"
        "assert not module.kernels_available\n"
        "assert any('triton does not import' in str(w.message) for w in caught)\n"
        "out = materialize(module(torch.randn(1, 2, 4, 8), lambda x: 2 * x))\n"
        "print(tuple(out.shape))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "(1, 2, 4, 8)"


# --- compiled for a GPU without one --------------------------------------------------------------

_COMPILE_FOR_SM90 = r"""
import sys
import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource
from labfolio.kit import mhc_kernels as K
from labfolio.kit import mhc_mix_kernels as M

assert not K.INTERPRET
STREAM_POINTERS = {"x_ptr", "out_ptr", "grad_out_ptr", "grad_x_ptr", "phi_ptr", "branch_ptr", "grad_branch_ptr",
                   "f_a_ptr", "f_m_ptr", "grad_f_a_ptr", "grad_f_m_ptr"}
SCALARS = {"tau": "fp32", "eps": "fp32"}


def compile_for_sm90(kernel, constants, warps, dtype):
    signature = {}
    for name in kernel.arg_names:
        if name in constants:
            signature[name] = "constexpr"
        elif name.endswith("_ptr"):
            signature[name] = "*" + (dtype if name in STREAM_POINTERS else "fp32")
        else:
            signature[name] = SCALARS.get(name, "i32")
    try:
        source = ASTSource(fn=kernel, signature=signature, constexprs=constants)
    except TypeError as exc:  # another triton's compile API: nothing to say about our kernels
        print("SKIP", exc)
        sys.exit(0)
    triton.compile(source, target=GPUTarget("cuda", 90, 32), options={"num_warps": warps})


# bf16 at n = 4 with the tiles of both benchmark widths, fp32 at a padded n = 3, and n = 8.
for dtype, n, width in (("bf16", 4, 768), ("bf16", 4, 2048), ("fp32", 3, 768), ("bf16", 8, 768)):
    padded = K.padded_streams(n)
    for name in K.KERNELS:
        tiles = K.default_tiles(name, width, n, 16384)
        if name.startswith("post_mix"):
            kernel = M._post_mix_kernel if name == "post_mix" else M._post_mix_backward_kernel
            for two_mixes in (False, True):
                constants = dict(N_STREAMS=n, NP=triton.next_power_of_2(n), TWO_MIXES=two_mixes,
                                 BLOCK_T=tiles.block_t, BLOCK_C=tiles.block_c)
                if name == "post_mix_backward":
                    constants["SPLIT"] = 2  # any split compiles the same loop; 2 checks the strided start
                compile_for_sm90(kernel, constants, tiles.warps, dtype)
        else:
            kernel = K._pre_kernel if name == "pre" else K._pre_backward_kernel
            constants = dict(N_STREAMS=n, NP=padded, PHI_COLUMNS=32 + padded * padded, LOW_PRECISION=dtype == "bf16",
                             WIDEN=False, BLOCK_T=tiles.block_t, BLOCK_C=tiles.block_c)
            compile_for_sm90(kernel, constants, tiles.warps, dtype)
print("COMPILED")
"""


def test_every_kernel_compiles_for_an_sm90_gpu_in_bf16_and_in_fp32_with_a_padded_stream_count():
    # The interpreter accepts code that the compiler rejects; compiling (no GPU needed) catches it.
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env["TRITON_DEFAULT_FP_FUSION"] = "1"
    result = subprocess.run([sys.executable, "-c", _COMPILE_FOR_SM90], capture_output=True, text=True, env=env,
                            check=False, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    if result.stdout.startswith("SKIP"):
        pytest.skip(f"this triton's compile API differs: {result.stdout.strip()}")
    assert result.stdout.strip().endswith("COMPILED")


# --- compiled on a GPU (skipped without one; run on the device) ----------------------------------


@pytest.mark.skipif(not torch.cuda.is_available() or INTERPRETED, reason="needs a CUDA device and compiled kernels")
def test_triton_mhc_gpt_compiled_per_block_under_bf16_autocast_matches_the_reference():
    results = {}
    idx = torch.randint(0, 256, (4, 64), generator=torch.Generator().manual_seed(9)).cuda()
    for impl in ("eager", "triton"):
        torch.manual_seed(0)
        model = GPT(GPTConfig(block_size=64, depth=4, width=128, heads=4, connection=mhc_config(mhc_impl=impl)))
        perturb(model, seed=8)
        model = model.cuda()
        if impl == "triton":
            for block in model.blocks:
                block.compile()
        with torch.autocast(device_type="cuda", dtype=torch.bfloat16):
            _, loss = model(idx, idx)
        loss.backward()
        results[impl] = (loss.detach().float(), {n: p.grad.float() for n, p in model.named_parameters()},
                         model.diagnostics())
    torch._dynamo.reset()
    (ref_loss, ref_grads, ref_diag), (loss, grads, diag) = results["eager"], results["triton"]
    # bf16 stream storage and bf16 projection operands, as the torch fast path's CUDA test allows
    assert relative_error(loss, ref_loss) < 1e-3
    floor = 1e-3 * torch.stack([g.norm() for g in ref_grads.values()]).max()
    for name in ref_grads:
        difference = (grads[name] - ref_grads[name]).norm()
        assert difference <= 8e-2 * torch.maximum(ref_grads[name].norm(), floor), name
    assert diag["sinkhorn_row_err"] < 1e-6
    assert diag["sinkhorn_col_err_raw"] == pytest.approx(ref_diag["sinkhorn_col_err_raw"], rel=1e-2)
