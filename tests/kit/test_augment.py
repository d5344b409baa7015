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


@pytest.mark.parametrize("per_image_level", [False, True], ids=["float_level", "per_image_levels"])
def test_a_round_compiles_as_one_graph_and_matches_eager(per_image_level):
    images = quantised_images(batch=len(RAND_AUGMENT_OPS))
    choice = torch.arange(len(RAND_AUGMENT_OPS))  # every operation once
    sign = torch.tensor([1.0, -1.0] * (len(RAND_AUGMENT_OPS) // 2))
    # per image, levels that give solarize and posterize different thresholds and bit depths
    level = torch.linspace(0.1, 1.0, len(RAND_AUGMENT_OPS)) if per_image_level else 0.7
    knobs = {"prob": 0.5, "magnitude_std": 0.5} if per_image_level else {}
    compiled = torch.compile(augment.apply_round, backend="aot_eager", fullgraph=True)
    expected = augment.apply_round(images, choice, sign, level)
    assert torch.allclose(compiled(images, choice, sign, level), expected, atol=1e-6)
    generator_state = torch.Generator().manual_seed(5)
    again = rand_augment(images, 2, 7, generator_state, apply=compiled, **knobs)
    eager = rand_augment(images, 2, 7, torch.Generator().manual_seed(5), **knobs)
    assert torch.allclose(again, eager, atol=1e-6)


def rand_augment_before_the_knobs(images, ops, magnitude, generator):
    """`rand_augment` as it was before `prob` and `magnitude_std`, to pin their default path."""
    level = magnitude / 10.0
    for _ in range(ops):
        choice = torch.randint(0, len(RAND_AUGMENT_OPS), (images.shape[0],), generator=generator)
        sign = torch.randint(0, 2, (images.shape[0],), generator=generator).to(images.dtype) * 2 - 1
        images = augment.apply_round(images, choice, sign, level)
    return images


def fingerprint(tensor):
    """The sum and three fixed random projections of `tensor`: they move with any real change of it,
    but hardly with the last-bit differences between torch's CPU kernel builds (the plain and AVX2
    builds of the geometric resample differ by ~1e-6 per pixel, so a hash of the bytes would not
    travel between machines)."""
    generator = torch.Generator().manual_seed(0)
    weights = torch.rand((3, *tensor.shape), generator=generator, dtype=torch.float64) * 2 - 1
    values = tensor.double()
    return [float(values.sum())] + [float((values * w).sum()) for w in weights]


def test_default_knobs_draw_no_extra_numbers_and_give_the_rounds_from_before_the_knobs():
    images = quantised_images(batch=48)
    for ops, magnitude, seed in ((1, 9, 0), (2, 9, 3), (3, 5.5, 11)):
        generator, reference = torch.Generator().manual_seed(seed), torch.Generator().manual_seed(seed)
        out = rand_augment(images, ops, magnitude, generator, prob=1.0, magnitude_std=0.0)
        assert torch.equal(out, rand_augment_before_the_knobs(images, ops, magnitude, reference))
        # the generator is left where the old draws left it, so later draws from it are unchanged
        assert torch.equal(generator.get_state(), reference.get_state())


def test_float_level_rounds_give_the_outputs_recorded_before_per_image_levels():
    # fingerprints of the outputs recorded before `prob`, `magnitude_std` and per-image levels
    # existed; kernel builds move them by ~1e-5, a changed operation by far more than 1e-3
    images = quantised_images(batch=64, seed=7)
    recorded_runs = {
        (2, 9, 3): [24064.777287, -13.905826, 28.366029, -14.251477],
        (3, 5.5, 11): [23237.523459, 44.002901, -69.189947, -61.30888],
    }
    for (ops, magnitude, seed), recorded in recorded_runs.items():
        out = rand_augment(images, ops, magnitude, torch.Generator().manual_seed(seed))
        assert fingerprint(out) == pytest.approx(recorded, abs=1e-3), (ops, magnitude, seed)
    count = len(RAND_AUGMENT_OPS)
    every_op = quantised_images(batch=2 * count, seed=4)
    choice = torch.arange(2 * count) % count  # every operation with either sign
    sign = torch.tensor([1.0, -1.0] * count)
    recorded_rounds = {
        0.35: [10613.798666, 20.732688, -25.546541, -36.964003],
        0.7: [10728.482666, 41.277815, -15.901464, -36.99262],
        1.0: [11109.99116, 41.289093, -14.804576, -43.641492],
    }
    for level, recorded in recorded_rounds.items():
        out = augment.apply_round(every_op, choice, sign, level)
        assert fingerprint(out) == pytest.approx(recorded, abs=1e-3), level


def test_rand_augment_with_prob_zero_leaves_every_image_unchanged():
    images = quantised_images(batch=32)
    out = rand_augment(images, 3, 9, torch.Generator().manual_seed(0), prob=0.0, magnitude_std=0.5)
    assert torch.equal(out, images)


def test_rand_augment_with_prob_half_changes_about_half_the_images_and_keeps_the_rest_exact():
    images = quantised_images(batch=512, size=8, seed=2)
    # one round: the operations and signs are the first draws either way, so each image is either
    # what prob=1 makes of it or untouched
    everything = rand_augment(images, 1, 9, torch.Generator().manual_seed(4))
    half = rand_augment(images, 1, 9, torch.Generator().manual_seed(4), prob=0.5)
    applied = (half == everything).flatten(1).all(dim=1)
    untouched = (half == images).flatten(1).all(dim=1)
    assert torch.all(applied | untouched)
    changeable = (everything != images).flatten(1).any(dim=1)  # the drawn op changes the image
    fraction = float((applied & changeable).sum()) / float(changeable.sum())
    # about 475 changeable images: 0.1 is over four binomial standard deviations
    assert abs(fraction - 0.5) < 0.1, fraction


def test_magnitude_std_jitters_the_level_per_image_and_clips_it_to_zero_to_ten():
    width = 32
    ramp = torch.arange(width, dtype=torch.float32).div(width - 1).expand(256, 3, 8, width).contiguous()
    levels = []

    def translate_right(images, choice, sign, level):
        levels.append(level)
        shift_x = torch.full_like(choice, RAND_AUGMENT_OPS.index("translate_x"))
        return augment.apply_round(images, shift_x, torch.ones_like(sign), level)

    out = rand_augment(ramp, 1, 5, torch.Generator().manual_seed(0), apply=translate_right, magnitude_std=3.0)
    (level,) = levels
    assert level.shape == (256,)
    # clipped at both ends, and otherwise spread around the magnitude
    assert float(level.min()) == 0.0 and float(level.max()) == 1.0
    assert 0.05 < float((level == 0).float().mean()) + float((level == 1).float().mean()) < 0.2
    assert abs(float(level.mean()) - 0.5) < 0.05
    # the first column now shows the ramp where the shift came from: each image moved by its own level
    shift_px = out[:, 0, 0, 0] * (width - 1)
    assert torch.allclose(shift_px, level * augment._MAX_TRANSLATE * width, atol=1e-3)
    assert len(shift_px.unique()) > 200
    assert float(shift_px.min()) >= 0.0 and float(shift_px.max()) <= augment._MAX_TRANSLATE * width + 1e-3


def test_per_image_levels_give_each_image_what_its_own_float_level_gives():
    count = len(RAND_AUGMENT_OPS)
    images = quantised_images(batch=4 * count, seed=5)
    choice = torch.arange(4 * count) % count
    sign = torch.tensor([1.0, -1.0] * (2 * count))
    # levels across the posterize bit depths and solarize thresholds
    level = torch.rand(4 * count, generator=torch.Generator().manual_seed(6))
    batched = augment.apply_round(images, choice, sign, level)
    for i in range(4 * count):
        alone = augment.apply_round(images[i : i + 1], choice[i : i + 1], sign[i : i + 1], float(level[i]))
        assert torch.allclose(batched[i : i + 1], alone, atol=1e-6), RAND_AUGMENT_OPS[int(choice[i])]
    # a level tensor that is the same for every image is the float level
    constant = augment.apply_round(images, choice, sign, torch.full((4 * count,), 0.7))
    assert torch.equal(constant, augment.apply_round(images, choice, sign, 0.7))


@pytest.mark.parametrize(
    ("knobs", "message"),
    [
        ({"prob": -0.1}, r"prob must be in \[0, 1\]"),
        ({"prob": 1.5}, r"prob must be in \[0, 1\]"),
        ({"prob": float("nan")}, r"prob must be in \[0, 1\]"),
        ({"magnitude_std": -0.5}, "magnitude_std must be finite and >= 0"),
        ({"magnitude_std": float("inf")}, "magnitude_std must be finite and >= 0"),
        ({"magnitude_std": float("nan")}, "magnitude_std must be finite and >= 0"),
    ],
)
def test_rand_augment_rejects_prob_outside_zero_to_one_and_a_negative_or_infinite_magnitude_std(knobs, message):
    with pytest.raises(ValueError, match=message):
        rand_augment(quantised_images(), 2, 9, **knobs)


def mix_batch_before_mix_prob(images, labels, num_classes, rng, mixup_alpha, cutmix_alpha, cutmix_prob, smoothing):
    """`mix_batch` as it was before `mix_prob`, to pin its default path."""
    targets = soft_targets(labels, num_classes, smoothing)
    use_cutmix = cutmix_alpha > 0 and (mixup_alpha == 0 or rng.random() < cutmix_prob)
    weight = float(rng.beta(cutmix_alpha, cutmix_alpha) if use_cutmix else rng.beta(mixup_alpha, mixup_alpha))
    partner = images.flip(0)
    if use_cutmix:
        height, width = images.shape[-2:]
        cut = math.sqrt(1.0 - weight)
        box_h, box_w = int(height * cut), int(width * cut)
        centre_y, centre_x = int(rng.integers(height)), int(rng.integers(width))
        top, bottom = max(centre_y - box_h // 2, 0), min(centre_y + box_h // 2, height)
        left, right = max(centre_x - box_w // 2, 0), min(centre_x + box_w // 2, width)
        mixed = images.clone()
        mixed[:, :, top:bottom, left:right] = partner[:, :, top:bottom, left:right]
        weight = 1.0 - (bottom - top) * (right - left) / (height * width)
    else:
        mixed = images * weight + partner * (1.0 - weight)
    return mixed, targets * weight + targets.flip(0) * (1.0 - weight)


def test_mix_prob_one_draws_and_mixes_exactly_as_before_mix_prob():
    images = quantised_images(batch=8)
    labels = torch.arange(8) % 4
    for alphas in ((0.8, 0.0), (0.0, 1.0), (0.8, 1.0)):
        rng, reference = np.random.default_rng(0), np.random.default_rng(0)
        for _ in range(10):  # one stream across batches, as in training
            mixed, targets = mix_batch(images, labels, 4, rng, *alphas, 0.5, 0.1, mix_prob=1.0)
            expected_mixed, expected_targets = mix_batch_before_mix_prob(
                images, labels, 4, reference, *alphas, 0.5, 0.1
            )
            assert torch.equal(mixed, expected_mixed) and torch.equal(targets, expected_targets)
        assert rng.bit_generator.state == reference.bit_generator.state


def test_mix_prob_zero_returns_the_batch_unmixed_with_its_smoothed_targets():
    images = quantised_images(batch=8)
    labels = torch.arange(8) % 4
    for seed in range(5):
        mixed, targets = mix_batch(images, labels, 4, np.random.default_rng(seed), 0.8, 1.0, 0.5, 0.1, mix_prob=0.0)
        assert torch.equal(mixed, images)
        assert torch.equal(targets, soft_targets(labels, 4, 0.1))


def test_mix_prob_half_mixes_about_half_the_batches():
    images = quantised_images(batch=4)
    labels = torch.arange(4)
    rng = np.random.default_rng(1)
    mixed = sum(
        not torch.equal(mix_batch(images, labels, 4, rng, 0.8, 1.0, 0.5, mix_prob=0.5)[0], images) for _ in range(400)
    )
    assert 160 < mixed < 240, mixed  # 400 batches: four binomial standard deviations either side


@pytest.mark.parametrize("mix_prob", [-0.1, 1.01, float("nan")])
def test_mix_batch_rejects_mix_prob_outside_zero_to_one(mix_prob):
    with pytest.raises(ValueError, match=r"mix_prob must be in \[0, 1\]"):
        mix_batch(quantised_images(), torch.arange(6) % 3, 3, np.random.default_rng(0), 0.8, mix_prob=mix_prob)
