import math

import pytest

torch = pytest.importorskip("torch")

import torch.nn.functional as F  # noqa: E402

from labfolio.kit.losses import CircleLoss, circle_loss, smoothed_cross_entropy  # noqa: E402


def test_smoothed_cross_entropy_matches_torch_for_every_smoothing():
    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(32, 10, generator=generator)
    targets = torch.randint(0, 10, (32,), generator=generator)
    for eps in (0.0, 0.1, 0.3):
        ours = smoothed_cross_entropy(logits, targets, eps)
        reference = F.cross_entropy(logits, targets, label_smoothing=eps)
        assert torch.allclose(ours, reference, atol=1e-6), eps


def test_smoothed_cross_entropy_accepts_sequence_shaped_logits():
    logits = torch.randn(2, 5, 7)
    targets = torch.randint(0, 7, (2, 5))
    expected = F.cross_entropy(logits.reshape(-1, 7), targets.reshape(-1), label_smoothing=0.1)
    assert torch.allclose(smoothed_cross_entropy(logits, targets, 0.1), expected, atol=1e-6)


def test_smoothing_bounds_the_loss_of_a_perfect_prediction_away_from_zero():
    logits = torch.full((4, 10), -1e4)
    targets = torch.arange(4)
    logits[torch.arange(4), targets] = 1e4
    assert smoothed_cross_entropy(logits, targets, 0.0).item() == pytest.approx(0.0, abs=1e-6)
    assert smoothed_cross_entropy(logits, targets, 0.1).item() > 100


def test_smoothed_cross_entropy_is_fp32_under_bf16_inputs():
    logits = torch.randn(8, 5).bfloat16()
    loss = smoothed_cross_entropy(logits, torch.zeros(8, dtype=torch.long), 0.1)
    assert loss.dtype == torch.float32


def test_label_smoothing_outside_zero_one_is_rejected():
    with pytest.raises(ValueError, match="label_smoothing"):
        smoothed_cross_entropy(torch.randn(2, 3), torch.zeros(2, dtype=torch.long), 1.0)


def reference_circle_loss(embeddings, labels, margin, gamma):
    """Eq. 4/6 of Sun et al. 2020, written anchor by anchor with explicit sums."""
    normed = F.normalize(embeddings.double(), dim=1)
    total, count = 0.0, 0
    for i in range(len(labels)):
        sp = [float(normed[i] @ normed[j]) for j in range(len(labels)) if j != i and labels[j] == labels[i]]
        sn = [float(normed[i] @ normed[j]) for j in range(len(labels)) if labels[j] != labels[i]]
        if not sp or not sn:
            continue
        neg = sum(math.exp(gamma * max(s + margin, 0) * (s - margin)) for s in sn)
        pos = sum(math.exp(-gamma * max(1 + margin - s, 0) * (s - (1 - margin))) for s in sp)
        total += math.log(1 + neg * pos)
        count += 1
    return total / count


def test_circle_loss_matches_the_paper_formula():
    generator = torch.Generator().manual_seed(1)
    embeddings = torch.randn(12, 6, generator=generator)
    labels = torch.tensor([0, 0, 0, 1, 1, 1, 2, 2, 3, 3, 3, 4])  # class 4 has no positive
    ours = circle_loss(embeddings, labels, margin=0.25, gamma=8.0)
    assert ours.item() == pytest.approx(reference_circle_loss(embeddings, labels, 0.25, 8.0), rel=1e-5)


def test_circle_loss_is_small_for_tight_separated_clusters_and_large_for_mixed_ones():
    torch.manual_seed(0)
    directions = torch.eye(4)
    labels = torch.arange(4).repeat_interleave(5)
    separated = directions[labels] + 0.01 * torch.randn(20, 4)
    mixed = directions[labels.flip(0) % 2] + 0.01 * torch.randn(20, 4)
    assert circle_loss(separated, labels).item() < 1e-3
    assert circle_loss(mixed, labels).item() > 10


def test_circle_loss_gradient_pulls_positives_together():
    embeddings = torch.tensor([[1.0, 0.0], [0.6, 0.8], [-1.0, 0.1]], requires_grad=True)
    labels = torch.tensor([0, 0, 1])
    loss = CircleLoss(margin=0.25, gamma=32)(embeddings, labels)
    loss.backward()
    assert torch.isfinite(embeddings.grad).all()
    with torch.no_grad():
        stepped = F.normalize(embeddings - 0.01 * embeddings.grad, dim=1)
    before = F.normalize(embeddings.detach(), dim=1)
    assert stepped[0] @ stepped[1] > before[0] @ before[1]


def test_circle_loss_without_any_pair_says_what_the_batch_needs():
    with pytest.raises(ValueError, match="positive and a negative"):
        circle_loss(torch.randn(3, 4), torch.tensor([0, 1, 2]))
