"""How fast the classify recipe's training batches come, augmented one batch at a time or many
batches at once (``augment_chunk``), on the real code path (`classify._epoch_training_batches`).

    python benchmarks/bench_augment.py                    # CPU, and CUDA when there is one
    python benchmarks/bench_augment.py --images 8192 --repeats 3

A small ViT's step is bound by kernel launches (the step probe in examples/results/), and the
light recipe's augmentation (crop, flip, one RandAugment round on half the images, erasing on a
tenth, MixUp/CutMix on half the batches) is a few dozen small kernels per batch. With
``augment_chunk`` they run once per chunk of batches; MixUp/CutMix stays per batch. The figures are
batches per second of the generator alone, chunk sizes side by side in one process, and the ratio
to batch-at-a-time: compare ratios, not absolute numbers, on a noisy machine.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from labfolio.kit.recipes import classify, parse_config

LIGHT = ["--randaugment-ops=1", "--randaugment-magnitude=5", "--randaugment-prob=0.5", "--mix-prob=0.5",
         "--erase-prob=0.1", "--mixup-alpha=0.8", "--cutmix-alpha=1.0"]


def batches_per_second(device: torch.device, images: torch.Tensor, labels: torch.Tensor, batch_size: int,
                       chunk: int, repeats: int) -> float:
    cfg = parse_config(classify.ClassifyConfig, [*LIGHT, f"--batch-size={batch_size}", f"--augment-chunk={chunk}"],
                       {}, prog="bench")
    scale = (torch.full((3, 1, 1), 0.5, device=device), torch.full((3, 1, 1), 0.25, device=device))
    best = 0.0
    for repeat in range(repeats + 1):  # the first pass warms up (allocations, kernel caches)
        started = time.perf_counter()
        count = 0
        for inputs, _targets in classify._epoch_training_batches(
                cfg, images, labels, 10, scale, True, True, torch.Generator().manual_seed(repeat),
                torch.Generator(device=device).manual_seed(repeat), np.random.default_rng(repeat)):
            count += 1
        if device.type == "cuda":
            torch.cuda.synchronize()
        if repeat:
            best = max(best, count / (time.perf_counter() - started))
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=16384, help="images in the synthetic epoch")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=3, help="timed epochs per setting (the best counts)")
    args = parser.parse_args()
    devices = [torch.device("cpu")] + ([torch.device("cuda")] if torch.cuda.is_available() else [])
    generator = torch.Generator().manual_seed(0)
    for device in devices:
        images = torch.randint(0, 256, (args.images, 3, 32, 32), dtype=torch.uint8, generator=generator).to(device)
        labels = (torch.arange(args.images) % 10).to(device)
        print(f"{device.type}: {args.images} images of 32x32, batch {args.batch_size}, light augmentation")
        baseline = None
        for chunk in (0, 2048, 8192):
            rate = batches_per_second(device, images, labels, args.batch_size, chunk, args.repeats)
            baseline = baseline or rate
            label = "one batch at a time" if chunk == 0 else f"augment_chunk {chunk}"
            print(f"  {label:<22} {rate:8.1f} batches/s  {1000 / rate:6.2f} ms/batch  x{rate / baseline:.2f}")


if __name__ == "__main__":
    main()
