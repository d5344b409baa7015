import math

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from labfolio.kit import augment  # noqa: E402
from labfolio.kit.augment import RAND_AUGMENT_OPS, mix_batch, rand_augment, random_erase, soft_targets  # noqa: E402
from labfolio.kit.losses import smoothed_cross_entropy, soft_cross_entropy  # noqa: E402
from labfolio.kit.models.vit import drop_branch  # noqa: E402


def quantised_images(batch=6, channels=3, size=16, seed=0):
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (batch, channels, size, size), generator=generator).float() / 255.0


def apply_op(name, images, level, sign=1.0):
    choice = torch.full((images.shape[0],), RAND_AUGMENT_OPS.index(name))
    return augment.apply_round(images, choice, torch.full((images.shape[0],), sign), level)


@pytest.mark.parametrize("name", [n for n in RAND_AUGMENT_OPS if n not in ("autocontrast", "equalize")])
def test_every_magnitude_dependent_operation_is_the_identity_at_level_zero(name):
    images = quantised_images()
    assert torch.allclose(apply_op(name, images, 0.0), images, atol=1e-6)


@pytest.mark.parametrize("name", RAND_AUGMENT_OPS)
def test_every_operation_keeps_shape_and_the_unit_range(name):
    images = quantised_images()
    out = apply_op(name, images, 1.0, sign=-1.0)
    assert out.shape == images.shape and out.dtype == images.dtype
    assert float(out.min()) >= 0.0 and float(out.max()) <= 1.0


def test_translate_moves_pixels_by_the_promised_shift_and_fills_grey():
    images = quantised_images(size=32)
    # a shift of 8 px of 32 is 0.5 in normalised units: level * 0.45 * 2 = 0.5
    out = apply_op("translate_x", images, 0.5 / 0.9)
    assert torch.allclose(out[..., :24], images[..., 8:], atol=1e-5)
    assert torch.allclose(out[..., 24:], torch.full_like(out[..., 24:], 0.5), atol=1e-5)


def test_brightness_scales_and_solarize_inverts_above_the_threshold():
    images = quantised_images()
    assert torch.allclose(apply_op("brightness", images, 1.0, sign=-1.0), images * 0.1, atol=1e-6)
    solarized = apply_op("solarize", images, 0.5)
    expected = torch.where(images * 255 >= 128, 1 - images, images)
    assert torch.equal(solarized, expected)


def test_equalize_spreads_a_narrow_histogram_over_the_full_range():
    narrow = (100 + torch.randint(0, 20, (2, 3, 16, 16), generator=torch.Generator().manual_seed(1))).float() / 255
    out = apply_op("equalize", narrow, 0.5)
    assert float(out.amin()) == 0.0 and float(out.amax()) == 1.0
    # equalisation is monotone: the order of pixel values within a channel is kept
    flat_in, flat_out = narrow[0, 0].flatten(), out[0, 0].flatten()
    order = flat_in.argsort()
    assert torch.all(flat_out[order][1:] >= flat_out[order][:-1])


def test_rand_augment_is_reproducible_for_a_seeded_generator_and_varies_per_image():
    images = quantised_images(batch=32)
    first = rand_augment(images, 2, 9, torch.Generator().manual_seed(3))
    second = rand_augment(images, 2, 9, torch.Generator().manual_seed(3))
    assert torch.equal(first, second)
    changed = (first != images).flatten(1).any(dim=1)
    assert 0 < int(changed.sum()) <= 32  # images drawn an identity op twice stay as they were
    assert torch.equal(rand_augment(images, 0, 9), images)
    with pytest.raises(ValueError, match="magnitude"):
        rand_augment(images, 1, 11)


def test_random_erase_replaces_one_rectangle_of_two_to_thirty_three_percent_per_image():
    images = torch.zeros(64, 3, 32, 32)
    erased = random_erase(images, 1.0, torch.Generator().manual_seed(0))
    changed = (erased != 0).any(dim=1)  # (B, H, W)
    for mask in changed:
        rows, cols = mask.any(dim=1).nonzero().flatten(), mask.any(dim=0).nonzero().flatten()
        box = (rows.max() - rows.min() + 1) * (cols.max() - cols.min() + 1)
        assert int(mask.sum()) == int(box)  # one solid rectangle
        assert 0.015 <= float(box) / 1024 <= 0.34
    assert torch.equal(random_erase(images, 0.0), images)


def test_mixup_mixes_images_and_targets_with_the_same_weight():
    images = quantised_images(batch=8)
    labels = torch.arange(8) % 4
    rng = np.random.default_rng(0)
    mixed, targets = mix_batch(images, labels, 4, rng, mixup_alpha=0.8)
    weight = np.random.default_rng(0).beta(0.8, 0.8)
    assert torch.allclose(mixed, images * weight + images.flip(0) * (1 - weight), atol=1e-6)
    assert torch.allclose(targets.sum(dim=1), torch.ones(8))
    assert torch.allclose(targets[0, labels[0]], torch.tensor(weight, dtype=torch.float32), atol=1e-6)


def test_cutmix_targets_weigh_each_label_by_the_area_it_contributes():
    images = torch.zeros(4, 1, 32, 32)
    images[2:] = 1.0  # the reverse partners of images 0 and 1 are all ones
    labels = torch.tensor([0, 1, 2, 3])
    for seed in range(10):
        mixed, targets = mix_batch(images, labels, 4, np.random.default_rng(seed), cutmix_alpha=1.0)
        from_partner = float(mixed[0].mean())
        assert math.isclose(float(targets[0, 3]), from_partner, abs_tol=1e-6)
        assert math.isclose(float(targets[0, 0]), 1 - from_partner, abs_tol=1e-6)


def test_soft_cross_entropy_of_smoothed_one_hot_targets_equals_label_smoothing():
    logits = torch.randn(16, 10, generator=torch.Generator().manual_seed(0))
    labels = torch.randint(0, 10, (16,), generator=torch.Generator().manual_seed(1))
    expected = smoothed_cross_entropy(logits, labels, 0.1)
    assert torch.allclose(soft_cross_entropy(logits, soft_targets(labels, 10, 0.1)), expected, atol=1e-6)


def test_drop_branch_zeroes_whole_samples_rescales_the_rest_and_is_off_in_eval():
    x = torch.ones(4000, 3, 5)
    torch.manual_seed(0)
    dropped = drop_branch(x, 0.25, training=True)
    per_sample = dropped[:, 0, 0]
    assert set(per_sample.unique().tolist()) <= {0.0, float(torch.tensor(1 / 0.75))}
    assert torch.all(dropped == per_sample[:, None, None])
    assert abs(float(dropped.mean()) - 1.0) < 0.05
    assert torch.equal(drop_branch(x, 0.25, training=False), x)


def test_a_round_compiles_as_one_graph_and_matches_eager():
    images = quantised_images(batch=len(RAND_AUGMENT_OPS))
    choice = torch.arange(len(RAND_AUGMENT_OPS))  # every operation once
    sign = torch.tensor([1.0, -1.0] * (len(RAND_AUGMENT_OPS) // 2))
    compiled = torch.compile(augment.apply_round, backend="aot_eager", fullgraph=True)
    expected = augment.apply_round(images, choice, sign, 0.7)
    assert torch.allclose(compiled(images, choice, sign, 0.7), expected, atol=1e-6)
    generator_state = torch.Generator().manual_seed(5)
    again = rand_augment(images, 2, 7, generator_state, apply=compiled)
    assert torch.allclose(again, rand_augment(images, 2, 7, torch.Generator().manual_seed(5)), atol=1e-6)
