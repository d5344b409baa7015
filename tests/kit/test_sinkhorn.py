import pytest

torch = pytest.importorskip("torch")

from labfolio.kit.sinkhorn import doubly_stochastic_errors, sinkhorn  # noqa: E402


def test_sinkhorn_output_is_nonnegative():
    generator = torch.Generator().manual_seed(0)
    logits = 5 * torch.randn(64, 4, 4, generator=generator)
    assert (sinkhorn(logits) >= 0).all()


def test_sinkhorn_rows_sum_to_one_exactly_in_fp64():
    # Rows are normalised last, so only rounding separates them from 1, whatever the logits.
    generator = torch.Generator().manual_seed(1)
    for n in (2, 4, 8):
        logits = 3 * torch.randn(128, n, n, dtype=torch.float64, generator=generator)
        matrix = sinkhorn(logits, iters=20)
        assert torch.allclose(matrix.sum(-1), torch.ones(128, n, dtype=torch.float64), rtol=0, atol=1e-14)


def test_sinkhorn_columns_sum_to_one_within_1e_5_at_20_iterations_for_standard_normal_logits():
    generator = torch.Generator().manual_seed(2)
    logits = torch.randn(256, 4, 4, dtype=torch.float64, generator=generator)
    column_error = (sinkhorn(logits, iters=20).sum(-2) - 1).abs().amax(-1)  # (256,)
    assert column_error.median() < 1e-10
    # A few nearly-decomposable matrices converge slowly; that tail is what the logged
    # sinkhorn_col_err_raw diagnostic is for. More iterations close it.
    assert (column_error < 1e-5).double().mean() >= 0.98
    assert (sinkhorn(logits, iters=60).sum(-2) - 1).abs().max() < 1e-5


def test_sinkhorn_of_uniform_logits_is_uniform_matrix():
    for n in (1, 2, 3, 4, 8):
        for value in (0.0, -7.5, 1000.0):
            matrix = sinkhorn(torch.full((n, n), value), iters=3)
            assert torch.allclose(matrix, torch.full((n, n), 1.0 / n), rtol=0, atol=1e-7)


def test_sinkhorn_is_permutation_equivariant():
    generator = torch.Generator().manual_seed(3)
    logits = torch.randn(5, 5, dtype=torch.float64, generator=generator)
    rows = torch.randperm(5, generator=generator)
    columns = torch.randperm(5, generator=generator)
    permuted_then_projected = sinkhorn(logits[rows][:, columns])
    projected_then_permuted = sinkhorn(logits)[rows][:, columns]
    assert torch.allclose(permuted_then_projected, projected_then_permuted, rtol=0, atol=1e-14)


def test_sinkhorn_gradient_matches_finite_differences_in_fp64():
    generator = torch.Generator().manual_seed(4)
    logits = torch.randn(2, 3, 3, dtype=torch.float64, generator=generator, requires_grad=True)
    assert torch.autograd.gradcheck(lambda x: sinkhorn(x, iters=6, tau=0.7), (logits,))


def test_product_of_sinkhorn_outputs_stays_doubly_stochastic():
    generator = torch.Generator().manual_seed(5)
    product = torch.eye(4, dtype=torch.float64)
    for _ in range(24):
        # Enough iterations that each factor is doubly stochastic to fp64 precision.
        factor = sinkhorn(torch.randn(4, 4, dtype=torch.float64, generator=generator), iters=300)
        product = factor @ product
    row_error, column_error = doubly_stochastic_errors(product)
    assert (product >= 0).all()
    assert row_error < 1e-12 and column_error < 1e-12


def test_sinkhorn_runs_in_float32_under_bf16_autocast():
    generator = torch.Generator().manual_seed(6)
    logits = torch.randn(32, 4, 4, generator=generator).to(torch.bfloat16)
    with torch.autocast(device_type="cpu", dtype=torch.bfloat16):
        matrix = sinkhorn(logits)
    assert matrix.dtype == torch.float32
    row_error, _ = doubly_stochastic_errors(matrix)
    assert row_error < 1e-6


def test_sinkhorn_does_not_overflow_for_large_logits_over_small_temperature():
    logits = torch.full((4, 4), -8.0)
    logits.fill_diagonal_(8.0)
    matrix = sinkhorn(logits, tau=0.05)  # exp(160) would overflow float32 without the max shift
    assert torch.isfinite(matrix).all()
    assert torch.equal(matrix, torch.eye(4))


def test_doubly_stochastic_errors_measure_row_and_column_deviation():
    matrix = torch.tensor([[0.5, 0.7], [0.5, 0.3]])  # rows 1.2 / 0.8, columns 1.0 / 1.0
    row_error, column_error = doubly_stochastic_errors(matrix)
    assert row_error.item() == pytest.approx(0.2)
    assert column_error.item() == pytest.approx(0.0, abs=1e-7)


@pytest.mark.parametrize(
    ("logits", "kwargs", "message"),
    [
        (torch.zeros(3, 4), {}, "square"),
        (torch.zeros(3, 3), {"tau": 0.0}, "positive temperature"),
        (torch.zeros(3, 3), {"iters": 0}, "iters >= 1"),
    ],
)
def test_sinkhorn_rejects_bad_input_with_a_clear_message(logits, kwargs, message):
    with pytest.raises((ValueError, AssertionError), match=message):
        sinkhorn(logits, **kwargs)


def test_sinkhorn_of_a_1x1_matrix_is_exactly_one_with_zero_gradient_after_any_number_of_iterations():
    logits = torch.randn(8, 5, 1, 1, dtype=torch.float32, requires_grad=True)
    for iters in (1, 20):
        matrix = sinkhorn(logits, iters=iters, tau=0.7)
        assert torch.equal(matrix, torch.ones_like(matrix))
        (gradient,) = torch.autograd.grad(matrix.sum(), logits)
        assert torch.equal(gradient, torch.zeros_like(gradient))
