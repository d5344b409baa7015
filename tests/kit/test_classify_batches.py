"""The classify recipe's training batches: augmenting a chunk of batches at once changes how many
kernels run, not what a batch holds."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
np = pytest.importorskip("numpy")

from labfolio.kit.recipes import classify, parse_config  # noqa: E402


def _config(*flags):
    return parse_config(classify.ClassifyConfig, ["--smoke", "--batch-size=8", *flags], classify.SMOKE, prog="t")


def _epoch(cfg, images, labels, seed=0, num_classes=10):
    scale = (torch.zeros(images.shape[1], 1, 1), torch.ones(images.shape[1], 1, 1))
    crop, flip = bool(cfg.crop_padding), True
    return list(classify._epoch_training_batches(
        cfg, images, labels, num_classes, scale, crop, flip, torch.Generator().manual_seed(seed),
        torch.Generator().manual_seed(seed + 1), np.random.default_rng(seed + 2)))


def _images(count=100):
    generator = torch.Generator().manual_seed(3)
    return torch.randint(0, 256, (count, 3, 8, 8), dtype=torch.uint8, generator=generator), torch.arange(count) % 10


def test_chunked_batches_without_random_operations_equal_the_batch_at_a_time_ones():
    images, labels = _images()
    plain = _epoch(_config("--crop-padding=0", "--augment=none"), images, labels)
    chunked = _epoch(_config("--crop-padding=0", "--augment=none", "--augment-chunk=24"), images, labels)
    assert len(plain) == len(chunked) == 100 // 8  # the same drop-last epoch
    for (plain_inputs, plain_targets), (chunk_inputs, chunk_targets) in zip(plain, chunked):
        assert torch.equal(plain_inputs, chunk_inputs)
        assert torch.equal(plain_targets, chunk_targets)


def test_each_image_of_a_chunk_is_augmented_on_its_own():
    one_image = torch.randint(0, 256, (1, 3, 8, 8), dtype=torch.uint8, generator=torch.Generator().manual_seed(5))
    images, labels = one_image.expand(64, -1, -1, -1).contiguous(), torch.zeros(64, dtype=torch.int64)
    cfg = _config("--randaugment-ops=2", "--erase-prob=0.5", "--augment-chunk=64")
    batches = _epoch(cfg, images, labels)
    inputs = torch.cat([batch for batch, _ in batches])
    distinct = {tuple(image.flatten().tolist()) for image in inputs}
    assert len(distinct) > 48  # 64 copies of one image come out as (nearly) 64 different images


def test_mixup_mixes_within_a_batch_even_when_its_chunk_holds_several():
    images, labels = _images(64)
    flags = ("--crop-padding=0", "--augment=none", "--augment-chunk=32")
    unmixed = _epoch(_config(*flags), images, labels)
    mixed = _epoch(_config(*flags, "--mixup-alpha=0.8"), images, labels)
    for (plain, _), (inputs, targets) in zip(unmixed, mixed):
        assert inputs.shape[0] == targets.shape[0] == 8
        # MixUp blends image i with image B-1-i of the same batch: inputs = w x + (1 - w) flip(x)
        partner = plain.flip(0)
        weight = ((inputs - partner) * (plain - partner)).sum() / ((plain - partner) ** 2).sum()
        assert 0.0 <= weight <= 1.0
        assert torch.allclose(inputs, weight * plain + (1 - weight) * partner, atol=1e-5)


def test_a_negative_augment_chunk_is_refused_with_its_name():
    with pytest.raises(Exception, match="augment_chunk must be >= 0"):
        _config("--augment-chunk=-1")
