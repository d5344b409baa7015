"""Strong image augmentation for whole batches on the training device: RandAugment, random
erasing, and MixUp/CutMix with the soft targets they imply.

Small ViTs trained from scratch on CIFAR-sized data overfit without strong augmentation (the
published small-data ViT recipes all use RandAugment or AutoAugment, MixUp/CutMix, random
erasing and stochastic depth). Per-image augmentation in CPU data loaders
would be the bottleneck for a model this small, so everything here works on a (B, C, H, W) batch
that already lives on the GPU, with a different random operation and sign per image, and no
host synchronisation (nothing reads a device value back, so the CPU keeps queueing work).

- `rand_augment`: on images in [0, 1]; each image gets `ops` operations drawn uniformly from
  `RAND_AUGMENT_OPS`, applied at one magnitude (0–10) with a random sign per image. Geometric
  operations of one round are folded into a single per-image affine resample; colour operations
  are computed for the batch and selected per image. `prob` applies each drawn operation to an
  image only with that probability and `magnitude_std` jitters the magnitude per image (clipped
  to 0–10), because every operation at the full magnitude is much heavier than timm's widely used
  recipe, which applies each operation with p = 0.5 and jitters the magnitude with std 0.5.
- `random_erase`: on normalised images; per image, with probability `prob`, one rectangle (2–33%
  of the area, aspect ratio 0.3–3.3) is replaced by standard-normal noise.
- `mix_batch`: MixUp or CutMix of the batch with its reverse, one mixing weight per batch drawn on
  the CPU (a Beta sample, so no device read), and the matching soft targets with label smoothing.
  `mix_prob` mixes only that fraction of batches (the rest keep their images and smoothed targets),
  so a lighter recipe can mix less often than timm's default of every batch.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F

__all__ = ["RAND_AUGMENT_OPS", "apply_round", "mix_batch", "rand_augment", "random_erase", "soft_targets"]

# The RandAugment operation set (Cubuk et al. 2020) for small images.
RAND_AUGMENT_OPS = (
    "identity",
    "autocontrast",
    "equalize",
    "rotate",
    "solarize",
    "color",
    "posterize",
    "contrast",
    "brightness",
    "sharpness",
    "shear_x",
    "shear_y",
    "translate_x",
    "translate_y",
)
_GEOMETRIC = ("rotate", "shear_x", "shear_y", "translate_x", "translate_y")
_MAX_ROTATE_DEGREES = 30.0
_MAX_SHEAR = 0.3
_MAX_TRANSLATE = 0.45  # fraction of the image side
_MAX_ENHANCE = 0.9  # colour, contrast, brightness and sharpness factors span 1 ± 0.9
_FILL = 0.5  # grey where a geometric operation uncovers the image


def _grey(images: torch.Tensor) -> torch.Tensor:
    """(B, C, H, W) -> (B, 1, H, W) luma (ITU-R 601), or the image itself when it has one channel."""
    if images.shape[1] != 3:
        return images.mean(dim=1, keepdim=True)
    weights = images.new_tensor([0.299, 0.587, 0.114])[None, :, None, None]
    return (images * weights).sum(dim=1, keepdim=True)


def _blend(degenerate: torch.Tensor, images: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """PIL's ImageEnhance: factor 0 gives `degenerate`, 1 the image, above 1 extrapolates."""
    return (degenerate + factor[:, None, None, None] * (images - degenerate)).clamp(0.0, 1.0)


def _autocontrast(images: torch.Tensor) -> torch.Tensor:
    low = images.amin(dim=(2, 3), keepdim=True)
    high = images.amax(dim=(2, 3), keepdim=True)
    span = high - low
    # flat channels stay as they are, as in PIL
    return torch.where(span > 0, (images - low) / span.clamp_min(1e-8), images)


def _equalize(images: torch.Tensor) -> torch.Tensor:
    """Per-image, per-channel histogram equalisation on the 256 uint8 levels."""
    batch, channels, height, width = images.shape
    levels = (images * 255.0).round().long().clamp(0, 255).reshape(batch * channels, height * width)
    histogram = torch.zeros(batch * channels, 256, device=images.device, dtype=images.dtype)
    histogram.scatter_add_(1, levels, torch.ones_like(levels, dtype=images.dtype))
    cdf = histogram.cumsum(dim=1)
    # the first occupied level maps to 0, so the darkest pixels stay black
    cdf_min = torch.where(histogram > 0, cdf, torch.full_like(cdf, float(height * width))).amin(dim=1, keepdim=True)
    denominator = (height * width - cdf_min).clamp_min(1.0)
    lookup = ((cdf - cdf_min) / denominator).clamp(0.0, 1.0)
    equalized = lookup.gather(1, levels).reshape(batch, channels, height, width)
    # a channel with a single level cannot be equalised: keep it
    return torch.where((denominator > 0.5).reshape(batch, channels, 1, 1), equalized, images)


def _smooth(images: torch.Tensor) -> torch.Tensor:
    """PIL's SMOOTH kernel on the interior; the one-pixel border keeps the original values."""
    channels = images.shape[1]
    kernel = images.new_tensor([[1.0, 1.0, 1.0], [1.0, 5.0, 1.0], [1.0, 1.0, 1.0]]) / 13.0
    kernel = kernel.expand(channels, 1, 3, 3)
    blurred = F.conv2d(images, kernel, groups=channels)
    out = images.clone()
    out[:, :, 1:-1, 1:-1] = blurred
    return out


def _posterize(images: torch.Tensor, bits: torch.Tensor) -> torch.Tensor:
    step = torch.pow(2.0, 8.0 - bits.to(images.dtype))[:, None, None, None]
    return torch.floor((images * 255.0).round() / step) * step / 255.0


def _geometric_theta(
    choice: torch.Tensor, signed_level: torch.Tensor, height: int, width: int
) -> torch.Tensor:
    """(B, 2, 3) inverse affine maps in affine_grid's normalised coordinates, identity for images
    whose drawn operation is not geometric."""
    batch = choice.shape[0]
    theta = torch.zeros(batch, 2, 3, device=choice.device, dtype=signed_level.dtype)
    theta[:, 0, 0] = 1.0
    theta[:, 1, 1] = 1.0
    angle = signed_level * math.radians(_MAX_ROTATE_DEGREES)
    is_op = {name: choice == RAND_AUGMENT_OPS.index(name) for name in _GEOMETRIC}
    cos, sin = torch.cos(angle), torch.sin(angle)
    rotate = is_op["rotate"]
    theta[:, 0, 0] = torch.where(rotate, cos, theta[:, 0, 0])
    theta[:, 0, 1] = torch.where(rotate, -sin * height / width, theta[:, 0, 1])
    theta[:, 1, 0] = torch.where(rotate, sin * width / height, theta[:, 1, 0])
    theta[:, 1, 1] = torch.where(rotate, cos, theta[:, 1, 1])
    shear = signed_level * _MAX_SHEAR
    theta[:, 0, 1] = torch.where(is_op["shear_x"], shear * height / width, theta[:, 0, 1])
    theta[:, 1, 0] = torch.where(is_op["shear_y"], shear * width / height, theta[:, 1, 0])
    shift = signed_level * _MAX_TRANSLATE * 2.0  # normalised coordinates span 2 per image side
    theta[:, 0, 2] = torch.where(is_op["translate_x"], shift, theta[:, 0, 2])
    theta[:, 1, 2] = torch.where(is_op["translate_y"], shift, theta[:, 1, 2])
    return theta


def apply_round(
    images: torch.Tensor, choice: torch.Tensor, sign: torch.Tensor, level: float | torch.Tensor
) -> torch.Tensor:
    """Apply operation `choice[i]` at `level` (0–1) with `sign[i]` (±1) to image i.

    `level` is one float for the batch, or a (B,) tensor with one level per image (on the images'
    device). Pure and free of host reads, so ``torch.compile(apply_round)`` fuses its ~60 small
    kernels into a few; `rand_augment` takes the compiled version through `apply`.
    """
    batch, _channels, height, width = images.shape
    per_image = isinstance(level, torch.Tensor)
    if per_image:
        level = level.to(sign.dtype).expand(batch)
    signed_level = sign * level  # (B,)

    theta = _geometric_theta(choice, signed_level, height, width)
    grid = F.affine_grid(theta, list(images.shape), align_corners=False)
    # pad with grey: shift by the fill so that zero padding lands on it
    out = F.grid_sample(images - _FILL, grid, mode="bilinear", padding_mode="zeros", align_corners=False) + _FILL
    # the identity grid resamples pixel centres exactly; keep the untouched images bit-exact anyway
    is_geometric = torch.zeros_like(choice, dtype=torch.bool)
    for name in _GEOMETRIC:
        is_geometric |= choice == RAND_AUGMENT_OPS.index(name)
    out = torch.where(is_geometric[:, None, None, None], out, images)

    factor = 1.0 + signed_level * _MAX_ENHANCE
    # PIL's solarize threshold on the 0-255 scale: 256 at level 0 (nothing inverted), 0 at level 1;
    # posterize keeps 8 bits at level 0 and 4 at level 1
    if per_image:
        # one threshold and bit depth per image, rounded on the device so nothing is read back
        solarize_threshold = (256.0 * (1.0 - level))[:, None, None, None]
        posterize_bits = 8.0 - torch.round(level * 4.0)
    else:
        solarize_threshold = 256.0 * (1.0 - level)
        posterize_bits = torch.full_like(factor, float(8 - round(level * 4)))
    grey = _grey(out)
    colour_ops = {
        "autocontrast": lambda: _autocontrast(out),
        "equalize": lambda: _equalize(out),
        "solarize": lambda: torch.where(out * 255.0 >= solarize_threshold, 1.0 - out, out),
        "color": lambda: _blend(grey.expand_as(out), out, factor),
        "posterize": lambda: _posterize(out, posterize_bits),
        "contrast": lambda: _blend(grey.mean(dim=(1, 2, 3), keepdim=True).expand_as(out), out, factor),
        "brightness": lambda: _blend(torch.zeros_like(out), out, factor),
        "sharpness": lambda: _blend(_smooth(out), out, factor),
    }
    result = out
    for name, compute in colour_ops.items():
        selected = (choice == RAND_AUGMENT_OPS.index(name))[:, None, None, None]
        result = torch.where(selected, compute(), result)
    return result


def rand_augment(
    images: torch.Tensor, ops: int, magnitude: float, generator: torch.Generator | None = None,
    apply: Callable[[torch.Tensor, torch.Tensor, torch.Tensor, float | torch.Tensor], torch.Tensor] = apply_round,
    prob: float = 1.0,
    magnitude_std: float = 0.0,
) -> torch.Tensor:
    """RandAugment on a batch in [0, 1]: `ops` rounds, each drawing one operation per image.

    images: (B, C, H, W) floating point in [0, 1]; returns the same shape and dtype, in [0, 1].
    magnitude: 0–10 (10 = the strongest setting of every operation). Random numbers come from
    `generator` (on the images' device), so a seeded generator makes the result reproducible.
    `apply` does one round given the drawn operations (`apply_round`, or a compiled copy of it).
    prob: in each round, each image gets its drawn operation with this probability and is otherwise
    left exactly as it was (timm's RandAugment uses 0.5).
    magnitude_std: in each round, each image's magnitude is `magnitude` plus Gaussian noise of this
    standard deviation, clipped to [0, 10] (timm's "mstd0.5" is 0.5).
    At the defaults (1 and 0) no extra numbers are drawn, so the result is the same as without
    the two knobs for the same generator state.
    """
    assert images.ndim == 4 and images.is_floating_point(), (
        f"images must be floating point (B, C, H, W) in [0, 1], got {images.dtype} {tuple(images.shape)}"
    )
    if not 0.0 <= magnitude <= 10.0:
        raise ValueError(f"magnitude must be in [0, 10], got {magnitude}")
    if ops < 0:
        raise ValueError(f"ops must be >= 0, got {ops}")
    if not 0.0 <= prob <= 1.0:
        raise ValueError(f"prob must be in [0, 1], got {prob}")
    if not 0.0 <= magnitude_std < math.inf:
        raise ValueError(f"magnitude_std must be finite and >= 0, got {magnitude_std}")
    if prob == 0.0:
        return images
    batch, device = images.shape[0], images.device
    level = magnitude / 10.0
    out = images
    for _ in range(ops):
        choice = torch.randint(0, len(RAND_AUGMENT_OPS), (batch,), generator=generator, device=device)
        sign = torch.randint(0, 2, (batch,), generator=generator, device=device).to(images.dtype) * 2 - 1
        # the knobs draw numbers only when they are off their defaults, so that seeded runs from
        # before they existed reproduce bit for bit
        round_level: float | torch.Tensor = level
        if magnitude_std > 0.0:
            noise = torch.randn(batch, generator=generator, device=device)
            round_level = (magnitude + magnitude_std * noise).clamp(0.0, 10.0) / 10.0
        if prob < 1.0:
            applied = torch.rand(batch, generator=generator, device=device) < prob
            out = torch.where(applied[:, None, None, None], apply(out, choice, sign, round_level), out)
        else:
            out = apply(out, choice, sign, round_level)
    return out


def random_erase(images: torch.Tensor, prob: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """Random erasing (Zhong et al. 2020) on normalised images: per image, with probability `prob`,
    one rectangle of 2–33% of the area becomes standard-normal noise."""
    if not 0.0 <= prob <= 1.0:
        raise ValueError(f"prob must be in [0, 1], got {prob}")
    if prob == 0.0:
        return images
    batch, _channels, height, width = images.shape
    device, dtype = images.device, images.dtype

    def uniform(low: float, high: float) -> torch.Tensor:
        return low + (high - low) * torch.rand(batch, generator=generator, device=device)

    area = uniform(0.02, 1.0 / 3.0) * height * width
    aspect = torch.exp(uniform(math.log(0.3), math.log(1.0 / 0.3)))
    box_h = torch.sqrt(area * aspect).clamp(1, height).floor()
    box_w = torch.sqrt(area / aspect).clamp(1, width).floor()
    top = torch.floor(uniform(0.0, 1.0) * (height - box_h + 1))
    left = torch.floor(uniform(0.0, 1.0) * (width - box_w + 1))
    erase = torch.rand(batch, generator=generator, device=device) < prob
    rows = torch.arange(height, device=device)[None, :]
    cols = torch.arange(width, device=device)[None, :]
    in_rows = (rows >= top[:, None]) & (rows < (top + box_h)[:, None])  # (B, H)
    in_cols = (cols >= left[:, None]) & (cols < (left + box_w)[:, None])  # (B, W)
    mask = (in_rows[:, :, None] & in_cols[:, None, :] & erase[:, None, None])[:, None]  # (B, 1, H, W)
    noise = torch.randn(images.shape, generator=generator, device=device, dtype=dtype)
    return torch.where(mask, noise, images)


def soft_targets(labels: torch.Tensor, num_classes: int, label_smoothing: float = 0.0) -> torch.Tensor:
    """(B,) class ids -> (B, num_classes) float32 targets smoothed towards the uniform distribution."""
    onehot = F.one_hot(labels, num_classes).to(torch.float32)
    return onehot * (1.0 - label_smoothing) + label_smoothing / num_classes


def mix_batch(
    images: torch.Tensor,
    labels: torch.Tensor,
    num_classes: int,
    rng: np.random.Generator,
    mixup_alpha: float = 0.0,
    cutmix_alpha: float = 0.0,
    cutmix_prob: float = 0.5,
    label_smoothing: float = 0.0,
    mix_prob: float = 1.0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """MixUp (Zhang et al. 2018) or CutMix (Yun et al. 2019) of the batch with its reverse.

    images: (B, C, H, W) floating point; labels: (B,) class ids. With both alphas set, CutMix is
    chosen with probability `cutmix_prob`, else MixUp. The mixing weight is a Beta(alpha, alpha)
    draw from `rng` (the CPU, one per batch); CutMix's weight is the kept area after the box is
    clipped to the image. The batch is mixed with probability `mix_prob` (drawn from `rng`), else
    returned as it is with its smoothed targets. Returns the mixed images and (B, num_classes) soft
    targets.
    """
    if mixup_alpha < 0 or cutmix_alpha < 0:
        raise ValueError(f"mixup_alpha and cutmix_alpha must be >= 0, got {mixup_alpha}, {cutmix_alpha}")
    if not 0.0 <= mix_prob <= 1.0:
        raise ValueError(f"mix_prob must be in [0, 1], got {mix_prob}")
    targets = soft_targets(labels, num_classes, label_smoothing)
    if mixup_alpha == 0 and cutmix_alpha == 0:
        return images, targets
    # no draw at mix_prob 1, so that seeded runs from before the knob see the same rng stream
    if mix_prob < 1.0 and rng.random() >= mix_prob:
        return images, targets
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
