import math
import warnings

import pytest

torch = pytest.importorskip("torch")

from labfolio.kit.connections import ConnectionConfig, ConnectionWarning  # noqa: E402
from labfolio.kit.models import GPT, ViT, GPTConfig, ViTConfig  # noqa: E402

CONNECTIONS = ["residual", "hc", "mhc"]


def connection(name: str, **overrides) -> ConnectionConfig:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConnectionWarning)
        return ConnectionConfig(connection=name, **overrides)


def tiny_gpt(name: str = "residual", seed: int = 0, **overrides) -> GPT:
    torch.manual_seed(seed)
    return GPT(GPTConfig(block_size=16, depth=2, width=32, heads=4, connection=connection(name, **overrides)))


def tiny_vit(name: str = "residual", seed: int = 0, pool: str = "cls", **overrides) -> ViT:
    torch.manual_seed(seed)
    config = ViTConfig(
        image_size=8, patch_size=4, in_channels=3, num_classes=5, depth=2, width=32, heads=4, pool=pool,
        connection=connection(name, **overrides),
    )
    return ViT(config)


def assert_all_gradients_finite(model):
    for name, parameter in model.named_parameters():
        assert parameter.grad is not None, f"{name} got no gradient"
        assert torch.isfinite(parameter.grad).all(), f"{name} has a non-finite gradient"


# --- GPT -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("wrap", ["branch", "block"])
@pytest.mark.parametrize("name", CONNECTIONS)
def test_gpt_forward_shapes_loss_and_backward_for_every_connection(name, wrap):
    model = tiny_gpt(name, wrap=wrap)
    idx = torch.randint(0, 256, (3, 16))
    logits, loss = model(idx, idx)
    assert logits.shape == (3, 16, 256)
    assert loss.shape == () and torch.isfinite(loss)
    assert abs(loss.item() - math.log(256)) < 0.5  # near-uniform predictions at init
    loss.backward()
    assert_all_gradients_finite(model)


def test_gpt_without_targets_returns_no_loss():
    logits, loss = tiny_gpt()(torch.randint(0, 256, (1, 5)))
    assert logits.shape == (1, 5, 256) and loss is None


@pytest.mark.parametrize("wrap", ["branch", "block"])
@pytest.mark.parametrize("name", CONNECTIONS)
def test_gpt_future_tokens_do_not_affect_past_logits(name, wrap):
    model = tiny_gpt(name, wrap=wrap).eval()
    idx = torch.randint(0, 256, (2, 16))
    changed = idx.clone()
    changed[:, 10:] = torch.randint(0, 256, (2, 6))
    with torch.no_grad():
        original, _ = model(idx)
        edited, _ = model(changed)
    assert torch.equal(original[:, :10], edited[:, :10])
    assert not torch.allclose(original[:, 10:], edited[:, 10:])


def test_gpt_output_head_is_tied_to_the_token_embedding():
    model = tiny_gpt("mhc")
    assert model.lm_head.weight is model.token_embedding.weight
    with_duplicates = sum(p.numel() for _, p in model.named_parameters(remove_duplicate=False))
    assert model.num_parameters() == with_duplicates - 256 * 32  # the shared matrix counts once


def test_gpt_rejects_sequences_longer_than_block_size():
    with pytest.raises(AssertionError, match="exceeds block_size 16"):
        tiny_gpt()(torch.randint(0, 256, (1, 17)))


def test_gpt_is_deterministic_for_a_fixed_seed_on_cpu():
    idx = torch.randint(0, 256, (2, 16))
    first = tiny_gpt("mhc", seed=3)(idx, idx)[1]
    second = tiny_gpt("mhc", seed=3)(idx, idx)[1]
    assert torch.equal(first, second)


def test_mhc_gpt_parameters_get_gradient_at_step_zero_except_the_first_h_res():
    # float64 so that "zero" below means mathematically zero, far under the real gradients.
    model = tiny_gpt("mhc").double()
    idx = torch.randint(0, 256, (2, 16))
    model(idx, idx)[1].backward()
    assert_all_gradients_finite(model)
    first = model.blocks[0].attn_connection
    for name, parameter in model.named_parameters():
        if "connection" not in name:
            continue
        size = parameter.grad.abs().max().item()
        if name.startswith("blocks.0.attn_connection.") and name.endswith(("res_bias", "res_gate")):
            # The first connection mixes n identical copies of the embedding: H_res·X does not
            # depend on a row-stochastic H_res then, so its gradient is exactly zero until the
            # streams differ (from step 1 on; all later connections already see distinct streams).
            assert size < 1e-14, name
        else:
            assert size > 1e-12, f"{name} gets no gradient at step 0"
    assert first.phi.grad[:, :8].abs().max() > 1e-12  # the H_pre/H_post columns of φ do learn


@pytest.mark.parametrize("name", CONNECTIONS)
def test_gpt_under_cpu_bf16_autocast_has_finite_loss_and_fp32_logits(name):
    model = tiny_gpt(name)
    idx = torch.randint(0, 256, (2, 16))
    with torch.autocast(device_type="cpu", dtype=torch.bfloat16):
        logits, loss = model(idx, idx)
    assert logits.dtype == torch.bfloat16  # the head runs under autocast
    assert torch.isfinite(logits.float()).all() and torch.isfinite(loss)
    loss.backward()
    assert_all_gradients_finite(model)


@pytest.mark.parametrize("name", ["hc", "mhc"])
def test_gpt_in_pure_bf16_keeps_bf16_streams_and_fp32_coefficients(name):
    model = tiny_gpt(name).to(torch.bfloat16)
    logits, loss = model(torch.randint(0, 256, (2, 16)), torch.randint(0, 256, (2, 16)))
    assert logits.dtype == torch.bfloat16 and torch.isfinite(loss)
    assert model.blocks[0].attn_connection.recorded.h_res.dtype == torch.float32


# --- ViT -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("pool", ["cls", "mean"])
@pytest.mark.parametrize("wrap", ["branch", "block"])
@pytest.mark.parametrize("name", CONNECTIONS)
def test_vit_returns_logits_and_pooled_embedding_for_every_connection(name, wrap, pool):
    model = tiny_vit(name, pool=pool, wrap=wrap)
    images = torch.randn(4, 3, 8, 8)
    logits, embedding = model(images)
    assert logits.shape == (4, 5) and embedding.shape == (4, 32)
    assert torch.allclose(model.head(embedding), logits)  # the embedding is what the head sees
    torch.nn.functional.cross_entropy(logits, torch.tensor([0, 1, 2, 3])).backward()
    assert_all_gradients_finite(model)


def test_vit_with_one_hc_stream_is_bitwise_the_residual_vit():
    residual = tiny_vit("residual")
    single_stream = tiny_vit("hc", seed=1, streams=1)
    single_stream.load_state_dict(residual.state_dict(), strict=False)
    images = torch.randn(2, 3, 8, 8)
    for ours, theirs in zip(single_stream(images), residual(images), strict=True):
        assert torch.equal(ours, theirs)


def test_vit_images_do_not_mix_across_the_batch():
    model = tiny_vit("mhc").eval()
    images = torch.randn(3, 3, 8, 8)
    with torch.no_grad():
        full, _ = model(images)
        alone, _ = model(images[1:2])
    assert torch.allclose(full[1:2], alone, atol=1e-5)


def test_vit_rejects_images_of_the_wrong_shape_with_the_expected_shape():
    with pytest.raises(AssertionError, match=r"images must be \(B, 3, 8, 8\)"):
        tiny_vit()(torch.randn(2, 3, 16, 16))


def test_vit_diagnostics_follow_the_connection():
    for name in CONNECTIONS:
        model = tiny_vit(name)
        model(torch.randn(2, 3, 8, 8))
        diagnostics = model.diagnostics()
        assert (diagnostics == {}) == (name == "residual")
        if name == "mhc":
            assert diagnostics["H_res_diag_mean"] == pytest.approx(0.9926, abs=2e-3)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"image_size": 10, "patch_size": 4}, "divisible by patch_size"),
        ({"width": 30, "heads": 4}, "divisible by heads"),
        ({"pool": "max"}, "pool must be"),
    ],
)
def test_bad_vit_config_is_rejected_with_a_clear_message(overrides, message):
    with pytest.raises(AssertionError, match=message):
        ViTConfig(**overrides)


def test_mhc_diagnostics_are_recorded_through_torch_compile_without_graph_breaks():
    from torch._dynamo.utils import counters

    model = tiny_gpt("mhc")
    idx = torch.randint(0, 256, (2, 16))
    model(idx, idx)
    eager_diagnostics = model.diagnostics()
    for module in model.modules():  # forget the eager pass: only the compiled one may fill these
        if hasattr(module, "recorded"):
            module.recorded = None
        if hasattr(module, "recorded_similarity"):
            module.recorded_similarity = None
    torch._dynamo.reset()
    counters.clear()
    try:
        torch.compile(model, backend="eager")(idx, idx)
        assert not counters["graph_break"], dict(counters["graph_break"])
    finally:
        torch._dynamo.reset()
    compiled_diagnostics = model.diagnostics()
    assert compiled_diagnostics.keys() == eager_diagnostics.keys()
    for name, value in eager_diagnostics.items():
        assert compiled_diagnostics[name] == pytest.approx(value, rel=1e-5, abs=1e-6), name
