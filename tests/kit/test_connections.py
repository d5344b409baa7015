import importlib.util
import math
import subprocess
import sys
import warnings
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

from torch import nn  # noqa: E402

from labfolio.kit.connections import (  # noqa: E402
    DIAGNOSTIC_NAMES,
    ConnectionConfig,
    ConnectionWarning,
    HyperConnection,
    ManifoldHyperConnection,
    ResidualConnection,
    StreamAdapter,
    connection_parameter_count,
    make_connection,
    stream_adapter_parameter_count,
)
from labfolio.kit.models import GPT, GPTConfig  # noqa: E402

REPO_ROOT = Path(__file__).resolve().parents[2]
WIDTH = 16


class PreNormBranch(nn.Module):
    """A branch shaped like the models' ones: scale-invariant norm, then a projection."""

    def __init__(self, width: int = WIDTH, seed: int = 0) -> None:
        super().__init__()
        torch.manual_seed(seed)
        self.norm = nn.LayerNorm(width)
        self.proj = nn.Linear(width, width)

    def forward(self, x):
        return self.proj(self.norm(x))


def config(connection: str, **overrides) -> ConnectionConfig:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConnectionWarning)
        return ConnectionConfig(connection=connection, **overrides)


def random_streams(batch=2, seq=3, streams=4, width=WIDTH, seed=0, dtype=torch.float32):
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(batch, seq, streams, width, generator=generator).to(dtype)


def identical_streams(x, streams):
    return StreamAdapter(config("mhc", streams=streams), x.shape[-1]).expand(x)


def tiny_gpt(connection: ConnectionConfig, seed: int = 0, depth: int = 2) -> GPT:
    torch.manual_seed(seed)
    return GPT(GPTConfig(block_size=8, depth=depth, width=WIDTH, heads=2, connection=connection))


# --- reduction to the residual ------------------------------------------------------------------


def test_residual_connection_is_x_plus_branch_exactly():
    x = torch.randn(2, 5, WIDTH)
    branch = PreNormBranch()
    assert torch.equal(ResidualConnection()(x, branch), x + branch(x))


@pytest.mark.parametrize("dynamic", [False, True])
@pytest.mark.parametrize("num_fracs", [1, 4])
def test_hc_with_one_stream_is_exactly_the_residual(dynamic, num_fracs):
    x = torch.randn(2, 5, WIDTH)
    branch = PreNormBranch()
    connection = HyperConnection(config("hc", streams=1, dynamic=dynamic, num_fracs=num_fracs), WIDTH, 3)
    out = connection(x[:, :, None, :], branch)
    assert torch.equal(out[:, :, 0, :], x + branch(x))


@pytest.mark.parametrize("wrap", ["branch", "block"])
def test_gpt_with_one_hc_stream_is_bitwise_the_residual_gpt(wrap):
    residual = tiny_gpt(ConnectionConfig(wrap=wrap))
    single_stream = tiny_gpt(config("hc", streams=1, wrap=wrap), seed=1)
    missing, unexpected = single_stream.load_state_dict(residual.state_dict(), strict=False)
    assert not unexpected and all("connection" in name for name in missing)
    idx = torch.randint(0, 256, (2, 8))
    assert torch.equal(single_stream(idx)[0], residual(idx)[0])


@pytest.mark.parametrize(("streams", "num_fracs"), [(4, 1), (2, 4)])
def test_hc_init_equals_pre_norm_residual_on_every_stream(streams, num_fracs):
    x = torch.randn(2, 5, WIDTH)
    branch = PreNormBranch()
    connection = HyperConnection(config("hc", streams=streams, num_fracs=num_fracs), WIDTH, layer_index=5)
    out = connection(identical_streams(x, streams), branch)
    for stream in range(streams):
        assert torch.equal(out[:, :, stream], x + branch(x))


def test_hc_gpt_at_init_matches_residual_gpt_for_four_streams():
    residual = tiny_gpt(ConnectionConfig())
    hc = tiny_gpt(config("hc", streams=4), seed=1)
    hc.load_state_dict(residual.state_dict(), strict=False)
    idx = torch.randint(0, 256, (2, 8))
    # Only the mean over four identical streams can round differently from x itself.
    assert torch.allclose(hc(idx)[0], residual(idx)[0], rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("dynamic", [False, True])
def test_mhc_with_one_stream_is_a_residual_with_scalar_branch_gains(dynamic):
    x = torch.randn(2, 5, WIDTH)
    branch = PreNormBranch()
    connection = ManifoldHyperConnection(config("mhc", streams=1, dynamic=dynamic), WIDTH, 0)
    out = connection(x[:, :, None, :], branch)[:, :, 0]
    recorded = connection.recorded
    assert torch.equal(recorded.h_res, torch.ones_like(recorded.h_res))  # Sinkhorn of 1×1 is exactly 1
    h_pre, h_post = recorded.h_pre[..., 0, :], recorded.h_post  # (..., 1) each
    assert torch.equal(out, x + h_post * branch(h_pre * x))
    # The branch opens with a scale-invariant norm, so the gain on its input nearly cancels.
    assert torch.allclose(out, x + h_post * branch(x), atol=1e-5)
    if not dynamic:
        assert torch.equal(h_post, torch.ones(1))  # 2σ(0) is exactly 1: the static init is x + F(x)


# --- the papers' formulas, written out per token in float64 ------------------------------------------


def reference_sinkhorn(logits, iters):
    matrix = logits.exp()
    for _ in range(iters):
        matrix = matrix / matrix.sum(0, keepdim=True)
        matrix = matrix / matrix.sum(1, keepdim=True)
    return matrix


def test_mhc_matches_the_paper_equations_token_by_token():
    n, width, tau, iters = 3, 8, 0.7, 7
    module = ManifoldHyperConnection(
        config("mhc", streams=n, sinkhorn_tau=tau, sinkhorn_iters=iters), width, layer_index=1
    ).double()
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for parameter in module.parameters():
            parameter.copy_(torch.randn(parameter.shape, generator=generator, dtype=torch.float64))
    branch = PreNormBranch(width).double()
    streams = torch.randn(2, 3, n, width, generator=generator, dtype=torch.float64)
    out = module(streams, branch)
    phi_pre, phi_post, phi_res = module.phi.split([n, n, n * n], dim=1)
    for b in range(2):
        for t in range(3):
            x = streams[b, t]  # (n, C)
            flat = x.reshape(1, -1)
            normed = flat / flat.pow(2).mean().add(1e-6).sqrt()
            h_pre = torch.sigmoid(module.pre_gate * (normed @ phi_pre) + module.pre_bias)  # (1, n)
            h_post = 2 * torch.sigmoid(module.post_gate * (normed @ phi_post) + module.post_bias)  # (1, n)
            res_logits = module.res_gate * (normed @ phi_res).reshape(n, n) + module.res_bias
            h_res = reference_sinkhorn(res_logits / tau, iters)
            expected = h_res @ x + h_post.T @ branch(h_pre @ x)  # X' = H_res X + H_postᵀ F(H_pre X)
            assert torch.allclose(out[b, t], expected, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("num_fracs", [1, 2])
def test_hc_matches_the_paper_equations_token_by_token(num_fracs):
    # HC paper: h0 = A_mᵀ H, H' = Bᵀ T(h0) + A_rᵀ H, with A_m, A_r, B = static + s·tanh(norm(H) W).
    # With m fractions the K = n·m slots play the role of HC's rows, and slot k takes fraction
    # k mod m of the branch output (frac-connections).
    n, width, m = 2, 8, num_fracs
    slots, slot_width = n * m, width // m
    module = HyperConnection(config("hc", streams=n, num_fracs=m), width, layer_index=1).double()
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for parameter in module.parameters():
            parameter.copy_(torch.randn(parameter.shape, generator=generator, dtype=torch.float64))
    branch = PreNormBranch(width).double()
    streams = torch.randn(2, 3, n, width, generator=generator, dtype=torch.float64)
    out = module(streams, branch)
    w_m, w_r, w_beta = module.dynamic_proj.split([m, slots, 1], dim=1)
    for b in range(2):
        for t in range(3):
            h = streams[b, t].reshape(slots, slot_width)  # HC's H: one row per slot
            h_bar = h / h.pow(2).mean(-1, keepdim=True).add(1e-6).sqrt() * module.norm_weight
            a_m = module.static_pre.T + module.alpha_scale * torch.tanh(h_bar @ w_m)  # (K, m)
            a_r = module.static_res.T + module.alpha_scale * torch.tanh(h_bar @ w_r)  # (K, K)
            beta = module.static_post + module.beta_scale * torch.tanh(h_bar @ w_beta)[:, 0]  # (K,)
            h0 = (a_m.T @ h).reshape(width)  # m mixed fractions, concatenated
            y = branch(h0[None])[0].reshape(m, slot_width)
            expected = beta[:, None] * y[torch.arange(slots) % m] + a_r.T @ h
            assert torch.allclose(out[b, t].reshape(slots, slot_width), expected, rtol=1e-10, atol=1e-10)


# --- doubly-stochastic H_res ----------------------------------------------------------------------


def zero_branch(x):
    return torch.zeros_like(x)


def perturbed_mhc(streams=4, iters=20, seed=0):
    connection = ManifoldHyperConnection(config("mhc", streams=streams, sinkhorn_iters=iters), WIDTH, 0)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():  # move far from the near-identity init so mixing is substantial
        connection.res_bias.copy_(torch.randn(streams, streams, generator=generator))
        connection.res_gate.fill_(1.0)
    return connection


def test_doubly_stochastic_h_res_leaves_identical_streams_unchanged():
    x = torch.randn(2, 5, WIDTH)
    connection = perturbed_mhc()
    out = connection(identical_streams(x, 4), zero_branch)
    assert connection.recorded.h_res.diagonal(dim1=-2, dim2=-1).max() < 0.9  # genuinely mixing
    for stream in range(4):
        assert torch.allclose(out[:, :, stream], x, rtol=0, atol=1e-6)


def test_doubly_stochastic_h_res_conserves_the_stream_sum():
    streams = random_streams()
    connection = perturbed_mhc(iters=200)  # converged columns: conservation is then exact up to rounding
    out = connection(streams, zero_branch)
    assert not torch.allclose(out, streams, atol=1e-2)
    assert torch.allclose(out.sum(dim=2), streams.sum(dim=2), rtol=0, atol=1e-5)


def test_unconstrained_hc_h_res_does_not_conserve_the_stream_sum():
    connection = HyperConnection(config("hc", dynamic=False), WIDTH, 0)
    with torch.no_grad():
        connection.static_res.add_(0.3)
    streams = random_streams()
    out = connection(streams, zero_branch)
    assert not torch.allclose(out.sum(dim=2), streams.sum(dim=2), atol=1e-2)


# --- inits -----------------------------------------------------------------------------------------


def test_mhc_paper_init_gives_h_res_diagonal_0_9926_and_home_h_pre_0_953():
    connection = ManifoldHyperConnection(config("mhc", streams=4, dynamic=False), WIDTH, layer_index=6)
    connection(random_streams(), zero_branch)
    h_res, h_pre, h_post = (connection.recorded.h_res, connection.recorded.h_pre[0], connection.recorded.h_post)
    diagonal = math.exp(3) / (math.exp(3) + 3 * math.exp(-3))
    assert diagonal == pytest.approx(0.9926, abs=1e-4)
    assert torch.allclose(h_res.diagonal(), torch.full((4,), diagonal), atol=1e-6)
    assert torch.allclose(h_res.sum(-1), torch.ones(4), atol=1e-6)
    home = 6 % 4
    assert h_pre[home].item() == pytest.approx(0.9526, abs=1e-4)
    others = torch.cat([h_pre[:home], h_pre[home + 1 :]])
    assert torch.allclose(others, torch.full((3,), 1 / (1 + math.exp(3))), atol=1e-6)
    assert torch.equal(h_post, torch.ones(4))


def test_mhc_dynamic_init_starts_within_the_gate_scale_of_the_paper_values():
    connection = ManifoldHyperConnection(config("mhc", streams=4), WIDTH, layer_index=0)
    connection(random_streams(), zero_branch)
    recorded = connection.recorded
    assert torch.allclose(recorded.gates, torch.full((3,), 0.01))
    assert (recorded.h_res.diagonal(dim1=-2, dim2=-1) - 0.9926).abs().max() < 2e-3
    assert (recorded.h_pre[..., 0, 0] - 0.9526).abs().max() < 2e-3
    assert (recorded.h_post - 1).abs().max() < 0.05


def test_hc_init_is_one_hot_pre_identity_res_and_unit_post():
    connection = HyperConnection(config("hc", streams=4, dynamic=True), WIDTH, layer_index=7)
    connection(random_streams(), zero_branch)
    recorded = connection.recorded
    expected_pre = torch.zeros(1, 4)
    expected_pre[0, 7 % 4] = 1.0
    # Dynamic terms start at exactly zero (W = 0), so every token sees the static init.
    assert torch.equal(recorded.h_pre, expected_pre.expand_as(recorded.h_pre))
    assert torch.equal(recorded.h_res, torch.eye(4).expand_as(recorded.h_res))
    assert torch.equal(recorded.h_post, torch.ones_like(recorded.h_post))
    assert torch.allclose(recorded.gates, torch.full((2,), 0.01))


# --- gradients -------------------------------------------------------------------------------------


@pytest.mark.parametrize("dynamic", [False, True])
def test_every_mhc_parameter_gets_a_finite_nonzero_gradient_at_step_zero(dynamic):
    connection = ManifoldHyperConnection(config("mhc", streams=4, dynamic=dynamic), WIDTH, 0)
    streams = random_streams()  # distinct streams, as every connection after the first sees
    out = connection(streams, PreNormBranch())
    (out * random_streams(seed=1)).sum().backward()
    for name, parameter in connection.named_parameters():
        assert torch.isfinite(parameter.grad).all(), name
        assert parameter.grad.abs().max() > 1e-5, f"{name} gets no gradient"


def test_underflowing_h_res_init_is_flagged_at_construction_and_really_gets_zero_gradient():
    with pytest.warns(ConnectionWarning, match=r"NEVER LEARN.*exp\(-320\)"):
        underflowing = ConnectionConfig(connection="mhc", hres_offdiag_init=-8.0, sinkhorn_tau=0.05)
    connection = ManifoldHyperConnection(underflowing, WIDTH, 0)
    out = connection(random_streams(), PreNormBranch())
    (out * random_streams(seed=1)).sum().backward()
    assert torch.equal(connection.recorded.h_res[0, 0], torch.eye(4))
    assert torch.count_nonzero(connection.res_bias.grad) == 0
    assert torch.count_nonzero(connection.res_gate.grad) == 0
    assert torch.count_nonzero(connection.phi.grad[:, 8:]) == 0  # the n² columns feeding H_res
    assert connection.pre_bias.grad.abs().max() > 0  # the rest of the layer still learns


def test_barely_learning_h_res_init_gets_a_milder_warning():
    with pytest.warns(ConnectionWarning, match=r"barely learn.*exp\(-50\)"):
        ConnectionConfig(connection="mhc", hres_offdiag_init=-0.5, sinkhorn_tau=0.02)


def test_paper_init_and_hc_configs_raise_no_warning():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ConnectionConfig(connection="mhc")
        ConnectionConfig(connection="hc", hres_offdiag_init=-8.0, sinkhorn_tau=0.05)  # unused by hc
        ConnectionConfig()


# --- config ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("connection", ["hc", "mhc"])
def test_a_single_stream_warns_loudly_and_still_runs(connection):
    with pytest.warns(ConnectionWarning, match="streams=1.*by accident"):
        single = ConnectionConfig(connection=connection, streams=1)
    model = tiny_gpt(single)
    logits, _ = model(torch.randint(0, 256, (1, 8)))
    assert torch.isfinite(logits).all()


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"connection": "mhc", "num_fracs": 2}, "only defined for connection='hc'"),
        ({"connection": "residual", "num_fracs": 2}, "only defined for connection='hc'"),
        ({"connection": "highway"}, "connection must be one of"),
        ({"connection": "hc", "wrap": "layer"}, "wrap must be one of"),
        ({"connection": "hc", "reduce": "max"}, "reduce must be one of"),
        ({"connection": "hc", "streams": 0}, "streams must be an integer >= 1"),
        ({"connection": "hc", "streams": 2.0}, "streams must be an integer >= 1"),
        ({"connection": "mhc", "sinkhorn_iters": 0}, "sinkhorn_iters must be an integer >= 1"),
        ({"connection": "mhc", "sinkhorn_tau": 0.0}, "sinkhorn_tau must be a positive"),
        ({"connection": "mhc", "hres_offdiag_init": float("nan")}, "hres_offdiag_init must be finite"),
    ],
)
def test_bad_connection_config_is_rejected_with_a_clear_message(overrides, message):
    with pytest.raises(ValueError, match=message):
        ConnectionConfig(**overrides)


def test_frac_connections_need_width_divisible_by_num_fracs():
    with pytest.raises(ValueError, match="num_fracs dividing 16"):
        HyperConnection(config("hc", num_fracs=3), WIDTH, 0)


# --- bf16 ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("connection", ["residual", "hc", "mhc"])
@pytest.mark.parametrize("stream_dtype", [torch.float32, torch.bfloat16])
def test_bf16_autocast_gives_no_nans_and_keeps_the_stream_dtype(connection, stream_dtype):
    module = make_connection(config(connection), WIDTH, layer_index=1)
    streams = random_streams(dtype=stream_dtype)
    if connection == "residual":
        streams = streams[:, :, 0]
    branch = PreNormBranch()
    with torch.autocast(device_type="cpu", dtype=torch.bfloat16):
        out = module(streams, branch)
    assert out.dtype == stream_dtype
    assert torch.isfinite(out).all()
    if connection == "mhc":
        assert module.recorded.h_res.dtype == torch.float32
        assert (module.recorded.h_res.sum(-1) - 1).abs().max() < 1e-6


# --- parameter counts ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("connection", "streams", "num_fracs", "dynamic", "expected"),
    [
        ("residual", 4, 1, True, 0),
        ("hc", 4, 1, False, 4 + 16 + 4),
        ("hc", 4, 1, True, 4 + 16 + 4 + 16 + 16 * (1 + 4 + 1) + 2),
        ("hc", 2, 4, True, 8 * 4 + 64 + 8 + 4 + 4 * (4 + 8 + 1) + 2),
        ("mhc", 4, 1, False, 4 + 4 + 16),
        ("mhc", 4, 1, True, 4 + 4 + 16 + 4 * 16 * (16 + 8) + 3),
        ("mhc", 2, 1, True, 2 + 2 + 4 + 2 * 16 * (4 + 4) + 3),
    ],
)
def test_connection_parameter_counts_match_the_formulas(connection, streams, num_fracs, dynamic, expected):
    cfg = config(connection, streams=streams, num_fracs=num_fracs, dynamic=dynamic)
    module = make_connection(cfg, WIDTH, layer_index=0)
    assert sum(p.numel() for p in module.parameters()) == expected
    assert connection_parameter_count(cfg, WIDTH) == expected


@pytest.mark.parametrize("wrap", ["branch", "block"])
@pytest.mark.parametrize("connection", ["hc", "mhc"])
def test_model_parameter_count_is_residual_plus_connections(wrap, connection):
    cfg = config(connection, wrap=wrap, reduce="learned")
    depth = 3
    connections_per_model = 2 * depth if wrap == "branch" else depth
    extra = connections_per_model * connection_parameter_count(cfg, WIDTH) + stream_adapter_parameter_count(cfg)
    residual = tiny_gpt(ConnectionConfig(wrap=wrap), depth=depth).num_parameters()
    assert tiny_gpt(cfg, depth=depth).num_parameters() == residual + extra


# --- stream adapter --------------------------------------------------------------------------------


def test_stream_reductions_mean_sum_and_learned_starting_as_mean():
    streams = random_streams()
    for reduce, expected in (("mean", streams.mean(2)), ("sum", streams.sum(2)), ("learned", streams.mean(2))):
        adapter = StreamAdapter(config("hc", reduce=reduce), WIDTH)
        assert torch.allclose(adapter.reduce(streams), expected, atol=1e-6)


def test_residual_stream_adapter_is_the_identity():
    adapter = StreamAdapter(ConnectionConfig(), WIDTH)
    x = torch.randn(2, 3, WIDTH)
    assert adapter.expand(x) is x and adapter.reduce(x) is x
    assert list(adapter.parameters()) == []


# --- diagnostics -----------------------------------------------------------------------------------


def test_mhc_diagnostics_emit_every_fixed_name_as_a_float():
    model = tiny_gpt(config("mhc"))
    model(torch.randint(0, 256, (2, 8)))
    diagnostics = model.diagnostics()
    per_layer = {f"amax_gain_{d}/layer{i}" for d in ("fwd", "bwd") for i in range(4)}
    assert set(diagnostics) == set(DIAGNOSTIC_NAMES) | per_layer
    assert all(isinstance(value, float) and math.isfinite(value) for value in diagnostics.values())
    assert diagnostics["H_res_diag_mean"] == pytest.approx(0.9926, abs=2e-3)
    assert diagnostics["sinkhorn_row_err"] < 1e-6
    assert diagnostics["gate_value"] == pytest.approx(0.01)
    assert diagnostics["stream_similarity"] > 0.99  # the streams start as copies
    assert diagnostics["amax_gain_fwd"] == pytest.approx(1.0, abs=1e-5)


def test_hc_diagnostics_omit_sinkhorn_errors_and_static_mode_omits_gates():
    model = tiny_gpt(config("hc", dynamic=False))
    model(torch.randint(0, 256, (2, 8)))
    diagnostics = model.diagnostics()
    assert "sinkhorn_row_err" not in diagnostics and "gate_value" not in diagnostics
    assert diagnostics["H_res_diag_mean"] == 1.0 and diagnostics["h_res_min"] == 0.0


def test_sinkhorn_mean_column_error_averages_over_tokens_what_the_raw_error_maxes():
    # one Sinkhorn iteration from a mixing init leaves the columns visibly off
    model = tiny_gpt(config("mhc", sinkhorn_iters=1, hres_offdiag_init=-0.5))
    model(torch.randint(0, 256, (2, 8)))
    diagnostics = model.diagnostics()
    matrices = [m.recorded.h_res.reshape(-1, 4, 4) for m in model.modules() if isinstance(m, ManifoldHyperConnection)]
    per_matrix = torch.cat([(h.sum(-2) - 1).abs().amax(-1) for h in matrices])
    assert diagnostics["sinkhorn_col_err_raw"] == pytest.approx(per_matrix.max().item(), rel=1e-5)
    assert diagnostics["sinkhorn_col_err_mean"] == pytest.approx(per_matrix.mean().item(), rel=1e-5)
    assert 0 < diagnostics["sinkhorn_col_err_mean"] <= diagnostics["sinkhorn_col_err_raw"]


def test_one_stream_mhc_omits_the_constant_h_res_diagnostics_and_keeps_its_gains():
    # H_res at n = 1 is [1] whatever the weights; logged, the H_res_diag_mean rule read it as
    # "streams never mix" on every streams: 1 run of the reference study.
    model = tiny_gpt(config("mhc", streams=1))
    model(torch.randint(0, 256, (2, 8)))
    diagnostics = model.diagnostics()
    constant = {"H_res_diag_mean", "h_res_min", "sinkhorn_row_err", "sinkhorn_col_err_raw",
                "sinkhorn_col_err_mean", "amax_gain_fwd", "amax_gain_bwd"}
    assert not constant & diagnostics.keys()
    assert not any(name.startswith("amax_gain") for name in diagnostics)
    assert {"H_pre_mean", "H_post_mean", "gate_value"} <= diagnostics.keys()


def test_residual_model_has_no_diagnostics():
    model = tiny_gpt(ConnectionConfig())
    model(torch.randint(0, 256, (1, 8)))
    assert model.diagnostics() == {}


def test_diagnostics_before_any_forward_pass_explain_what_to_do():
    with pytest.raises(RuntimeError, match="run the model once first"):
        tiny_gpt(config("mhc")).diagnostics()


def test_amax_gain_is_the_max_abs_row_and_column_sum_of_the_composite_h_res():
    model = tiny_gpt(config("hc", streams=2, dynamic=False), depth=1)
    matrices = [torch.tensor([[1.5, -0.5], [0.25, 1.0]]), torch.tensor([[0.5, 1.0], [2.0, 0.0]])]
    with torch.no_grad():
        model.blocks[0].attn_connection.static_res.copy_(matrices[0])
        model.blocks[0].mlp_connection.static_res.copy_(matrices[1])
    model(torch.randint(0, 256, (1, 8)))
    diagnostics = model.diagnostics()
    composite = matrices[1] @ matrices[0]  # [[1.0, 0.75], [3.0, -1.0]]
    assert diagnostics["amax_gain_fwd/layer0"] == pytest.approx(2.0)
    assert diagnostics["amax_gain_bwd/layer0"] == pytest.approx(1.75)
    assert diagnostics["amax_gain_fwd"] == pytest.approx(composite.abs().sum(-1).max().item())  # 4.0
    assert diagnostics["amax_gain_bwd"] == pytest.approx(composite.abs().sum(-2).max().item())  # 4.0
    assert diagnostics["h_res_min"] == pytest.approx(-0.5)


# --- packaging and benchmark ------------------------------------------------------------------------


def test_importing_the_kit_without_torch_names_the_extra_to_install():
    code = "import sys; sys.modules['torch'] = None; import labfolio.kit"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert result.returncode != 0
    assert "pip install 'labfolio[kit]'" in result.stderr


def test_connections_benchmark_runs_a_tiny_side_by_side_on_cpu(capsys):
    path = REPO_ROOT / "benchmarks" / "bench_connections.py"
    spec = importlib.util.spec_from_file_location("bench_connections", path)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    rows = bench.main(["--cpu-smoke", "--steps", "2", "--warmup", "1", "--no-peer"])
    assert [row["connection"] for row in rows] == ["residual", "hc", "mhc", "mhc-fast", "mhc-triton"]
    assert all(row["tokens_per_s"] > 0 for row in rows)
    # activation bytes saved for backward are measured on CPU too; mhc keeps more than residual
    saved = {row["connection"]: row["saved_gib"] for row in rows}
    assert saved["residual"] < saved["mhc-fast"] < saved["mhc"]
    output = capsys.readouterr().out
    assert "tokens/s" in output and "mhc-fast" in output and "saved GiB" in output


def test_the_connections_benchmark_profiles_each_row_when_asked(capsys):
    path = REPO_ROOT / "benchmarks" / "bench_connections.py"
    spec = importlib.util.spec_from_file_location("bench_connections", path)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    rows = bench.main(["--cpu-smoke", "--steps", "1", "--warmup", "1", "--no-peer", "--connections", "residual,mhc",
                       "--profile-steps", "1"])
    assert [row["connection"] for row in rows] == ["residual", "mhc"]
    # on CPU there is no device time; the host table still names the operators the step ran
    assert all(row["device_ms_per_step"] == 0 and "aten::" in row["profile_table"] for row in rows)
    assert "Top operators by host time (1 steps)" in capsys.readouterr().out


def test_the_tuned_table_takes_each_kernels_fastest_tiles_at_each_shape():
    path = REPO_ROOT / "benchmarks" / "bench_connections.py"
    spec = importlib.util.spec_from_file_location("bench_connections", path)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    from labfolio.kit.mhc_kernels import Tiles

    def row(shape, kernel, ms, tokens):
        return {"shape": shape, "kernel": kernel, "ms": ms,
                "tiles": {"block_t": tokens, "block_c": 64, "warps": 4, "split": 1}}

    rows = [row("gpt2s", "pre", 0.30, 16), row("gpt2s", "pre", 0.20, 32), row("gpt2s", "post_mix", 0.5, 1),
            row("wide", "pre", 0.10, 64), row("wide", "pre", 0.40, 16)]
    assert bench.fastest_tiles(rows) == {"gpt2s": {"pre": Tiles(32, 64, 4, 1), "post_mix": Tiles(1, 64, 4, 1)},
                                         "wide": {"pre": Tiles(64, 64, 4, 1)}}
    with pytest.raises(SystemExit):
        bench.parse_args(["--tuned-table"])


def test_the_benchmarks_graph_mode_steps_as_its_other_modes_do_on_cpu():
    # graph rows train through the recipes' step (a CUDA graph on CUDA, its eager step on CPU):
    # with no clipping it must take the very steps the plain rows take, or the rows compare
    # different training
    path = REPO_ROOT / "benchmarks" / "bench_connections.py"
    spec = importlib.util.spec_from_file_location("bench_connections", path)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    args = bench.parse_args(["--cpu-smoke", "--dtype", "fp32", "--modes", "graph", "--connections", "mhc-fast"])
    assert args.modes == ["graph"]
    device = torch.device("cpu")
    data = torch.randint(0, 256, (args.batch, args.seq + 1), generator=torch.Generator().manual_seed(0))
    idx, targets = data[:, :-1], data[:, 1:]
    losses = {}
    for how in ("plain", "recipe"):
        model = bench.build_model(args, "mhc-fast", args.shapes[0][1])
        optimizer = torch.optim.AdamW(model.parameters(), lr=3e-4, weight_decay=0.1)
        if how == "recipe":
            step, recipe_step = bench._recipe_step(model, model, optimizer, device, args, idx, targets)
            assert not recipe_step.graphed  # no CUDA here: the eager step
        else:
            def step():
                _, loss = model(idx, targets)
                loss.backward()
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
                return loss
        losses[how] = [step().item() for _ in range(3)]
    assert losses["plain"] == pytest.approx(losses["recipe"], rel=1e-6)
    assert losses["plain"][2] < losses["plain"][0]
    with pytest.raises(SystemExit):
        bench.parse_args(["--modes", "graphs"])
