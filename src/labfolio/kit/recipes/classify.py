"""Train the ViT on digits or CIFAR-10/100 and record it with labfolio.

    python -m labfolio.kit.recipes.classify --dataset=cifar10 --data-dir=data --connection=mhc
    python -m labfolio.kit.recipes.classify --smoke            # tiny, CPU, seconds

Logged metrics (fixed names, so rules and notebooks can rely on them):

- every ``log_every`` steps: ``train/loss``, ``lr``, ``grad_norm`` (before clipping), ``epoch``;
- every ``diag_every`` steps: the model's connection diagnostics as ``diag/<name>``;
- every ``eval_every`` epochs and at the end: ``test/loss`` (plain cross-entropy), ``test/acc``,
  ``test/knn_acc`` (cosine k-NN on the pooled embedding), ``test/silhouette``, ``test/eff_rank``;
- at the end: a 2-D projection of the test embeddings as an image artifact and, when enabled,
  the same test metrics for the averaged weights under ``avg/test/...``.

The whole dataset lives on the device as uint8; batches are augmented there: crop and flip
(`random_crop_flip`), then, when configured, RandAugment, random erasing and MixUp/CutMix
(`labfolio.kit.augment`), with stochastic depth in the model (``drop_path``).
"""

from __future__ import annotations

import contextlib
import copy
import math
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F

import labfolio
from labfolio import metrics
from labfolio.kit.augment import apply_round, mix_batch, rand_augment, random_erase
from labfolio.kit.averaging import EMA, LastKAverage
from labfolio.kit.data import (
    ImageDataset,
    channel_stats,
    epoch_batches,
    load_image_dataset,
    normalize,
    random_crop_flip,
)
from labfolio.kit.losses import smoothed_cross_entropy, soft_cross_entropy
from labfolio.kit.models.vit import ViT, ViTConfig
from labfolio.kit.recipes.checkpoint import (
    checkpoint_path,
    logged_before,
    random_states,
    restore_random_states,
    restore_training,
    resume_point,
    save_checkpoint,
    training_state,
)
from labfolio.kit.recipes import (
    ConnectionFields,
    RecipeResult,
    TrackingFields,
    autocast,
    compile_for_training,
    connection_config,
    make_optimizer,
    parse_config,
    resolve_device,
    schedule_for,
    seed_everything,
    start_run,
)
from labfolio.kit.recipes.profiling import log_step_profile, step_profiler
from labfolio.kit.recipes.train_step import check_graph_step, make_train_step

__all__ = ["ClassifyConfig", "SMOKE", "train", "main"]


@dataclass
class ClassifyConfig(ConnectionFields, TrackingFields):
    # data
    dataset: str = "cifar10"  # digits | cifar10 | cifar100 | a path to a CIFAR tarball/folder or JPEG tree
    data_dir: str = ""  # folder searched for named datasets ("" = $LABFOLIO_DATA_DIR, else ./data)
    cache_dir: str = ""  # cache for decoded JPEG trees ("" = $LABFOLIO_CACHE_DIR, else ~/.cache/labfolio)
    download: bool = False  # fetch the official CIFAR tarball (MD5-checked) if it is missing
    augment: Literal["auto", "none", "crop", "flip", "crop+flip"] = "auto"  # auto: crop+flip, none for digits
    crop_padding: int = 4  # zero padding before the random crop, in pixels
    augment_chunk: int = 0  # augment this many images at once (whole batches; 0 = per batch): pays on CUDA only
    randaugment_ops: int = 0  # RandAugment operations per training image (0 = off)
    randaugment_magnitude: float = 9.0  # their strength, 0-10
    randaugment_prob: float = 1.0  # chance that an image gets each drawn operation (timm's default is 0.5)
    randaugment_magnitude_std: float = 0.0  # per-image Gaussian jitter of the magnitude (timm's: 0.5)
    erase_prob: float = 0.0  # random erasing: chance that an image gets a noise rectangle
    mixup_alpha: float = 0.0  # MixUp Beta(alpha, alpha) mixing (0 = off)
    cutmix_alpha: float = 0.0  # CutMix Beta(alpha, alpha) box size (0 = off)
    cutmix_prob: float = 0.5  # with both on: the share of batches that use CutMix instead of MixUp
    mix_prob: float = 1.0  # the share of batches that MixUp/CutMix mixes at all
    # model
    patch_size: int = 4  # 4x4 patches: 64 tokens on 32x32 images
    depth: int = 6  # transformer blocks
    width: int = 192  # model dimension (ViT-Tiny)
    heads: int = 3  # attention heads; must divide width
    mlp_ratio: float = 4.0  # MLP hidden size = mlp_ratio * width
    pool: Literal["cls", "mean"] = "cls"  # embedding: class token or mean of patch tokens
    dropout: float = 0.0  # attention, branch and embedding dropout
    drop_path: float = 0.0  # stochastic depth rate of the last block (rises linearly from 0 at the first)
    # optimisation
    epochs: int = 50  # passes over the training set
    max_steps: int = 0  # stop after this many optimizer steps (0 = run every epoch)
    batch_size: int = 256  # images per optimizer step
    lr: float = 1e-3  # peak learning rate
    final_lr: float = 0.0  # learning rate the schedule decays to
    schedule: Literal["constant", "linear", "cosine", "cosine_warmup", "wsd"] = "cosine_warmup"  # LR shape
    warmup_steps: int | None = None  # linear warmup steps (None = warmup_fraction of the run)
    warmup_fraction: float = 0.05  # warmup length as a fraction of the run, if warmup_steps is None
    decay_fraction: float = 0.2  # wsd: cooldown length as a fraction of the run
    decay_shape: Literal["linear", "cosine", "1-sqrt"] = "1-sqrt"  # wsd: cooldown shape
    weight_decay: float = 0.05  # AdamW decay on matrix weights only
    beta1: float = 0.9  # AdamW first-moment decay
    beta2: float = 0.999  # AdamW second-moment decay
    label_smoothing: float = 0.1  # training loss only; test/loss is plain cross-entropy
    grad_clip: float = 1.0  # max global grad norm (0 = no clipping)
    ema_decay: float = 0.0  # evaluate an EMA of the weights with this decay (0 = off)
    average_last: int = 0  # also evaluate the mean of the last K weight snapshots (0 = off)
    average_every: int = 100  # steps between those snapshots
    # evaluation and logging
    log_every: int = 10  # steps between train/loss, lr, grad_norm points
    diag_every: int = 50  # steps between connection diagnostics (0 = never)
    eval_every: int = 1  # epochs between test evaluations (the last epoch is always evaluated)
    eval_batch_size: int = 1024  # images per evaluation forward pass
    knn_k: int = 20  # neighbours for test/knn_acc
    knn_train_samples: int = 10000  # training images in the kNN bank (a fixed subset)
    silhouette_samples: int = 2000  # test points sampled for test/silhouette
    projection: Literal["auto", "umap", "pacmap", "pca"] = "auto"  # 2-D map of the test embeddings
    projection_samples: int = 2000  # test points in that map
    out_dir: str = ""  # also keep the PNGs here ("" = only the copy in the labfolio store)
    # runtime
    seed: int = 0  # seeds init, data order, augmentation
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    amp: bool = True  # bf16 autocast on CUDA (CPU always runs fp32)
    compile: bool = False  # torch.compile the model (and RandAugment) on CUDA
    compile_unit: Literal["block", "model"] = "block"  # compile each block (fast to compile) or the whole model
    compile_mode: Literal["default", "reduce-overhead", "max-autotune-no-cudagraphs"] = "default"  # torch.compile mode
    cuda_graph_step: bool = False  # replay the whole step (forward, backward, clip, AdamW) as one CUDA graph
    threads: int = 0  # torch CPU threads (0 = torch's default)
    checkpoint_every: int = 0  # epochs between resumable checkpoints in the store (0 = none)
    resume: str = ""  # run id to continue from its checkpoint ("" = $LABFOLIO_RESUME, else a new run)
    profile_steps: int = 0  # time this many steps, then profile as many more (labfolio.kit.recipes.profiling)
    profile_start: int = 100  # the first timed step: after compilation, away from an evaluation

    def __post_init__(self) -> None:
        for name in ("epochs", "batch_size", "log_every", "eval_every", "eval_batch_size", "knn_k",
                     "average_every", "patch_size", "depth", "width", "heads"):
            if getattr(self, name) < 1:
                raise labfolio.ConfigError(f"{name} must be >= 1, got {getattr(self, name)}")
        for name in ("max_steps", "augment_chunk", "diag_every", "average_last", "crop_padding", "threads", "grad_clip",
                     "checkpoint_every", "profile_steps", "profile_start"):
            if getattr(self, name) < 0:
                raise labfolio.ConfigError(f"{name} must be >= 0, got {getattr(self, name)}")
        for name in ("randaugment_ops", "mixup_alpha", "cutmix_alpha"):
            if getattr(self, name) < 0:
                raise labfolio.ConfigError(f"{name} must be >= 0, got {getattr(self, name)}")
        if not 0.0 <= self.randaugment_magnitude <= 10.0:
            raise labfolio.ConfigError(f"randaugment_magnitude must be in [0, 10], got {self.randaugment_magnitude}")
        if self.randaugment_magnitude_std < 0:
            raise labfolio.ConfigError(f"randaugment_magnitude_std must be >= 0, got {self.randaugment_magnitude_std}")
        for name in ("erase_prob", "cutmix_prob", "randaugment_prob", "mix_prob"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise labfolio.ConfigError(f"{name} must be in [0, 1], got {getattr(self, name)}")
        if not 0.0 <= self.drop_path < 1.0:
            raise labfolio.ConfigError(f"drop_path must be in [0, 1), got {self.drop_path}")
        if not 0.0 <= self.ema_decay < 1.0:
            raise labfolio.ConfigError(f"ema_decay must be in [0, 1), got {self.ema_decay}")
        check_graph_step(self.cuda_graph_step, self.compile_mode)


SMOKE: dict[str, Any] = {
    "dataset": "digits",
    "patch_size": 4,  # 4 tokens per 8x8 digit: learns in tens of steps
    "pool": "mean",
    "depth": 2,
    "width": 32,
    "heads": 2,
    "epochs": 3,
    "batch_size": 64,
    "lr": 3e-3,
    "log_every": 1,
    "diag_every": 5,
    "knn_k": 5,
    "silhouette_samples": 500,
    "projection": "pca",
    "projection_samples": 500,
    "device": "cpu",
    "compile": False,
}


def _augment(cfg: ClassifyConfig, dataset: ImageDataset) -> tuple[bool, bool]:
    """(crop, flip) for this dataset; "auto" skips both on digits, whose classes are not mirror-symmetric."""
    choice = cfg.augment
    if choice == "auto":
        choice = "none" if dataset.name == "digits" else "crop+flip"
    return "crop" in choice, "flip" in choice


def _mixes(cfg: ClassifyConfig) -> bool:
    return cfg.mixup_alpha > 0 or cfg.cutmix_alpha > 0


def _augmented(
    cfg: ClassifyConfig, images: torch.Tensor, scale: tuple[torch.Tensor, torch.Tensor], crop: bool, flip: bool,
    generator: torch.Generator, augment_round=apply_round,
) -> torch.Tensor:
    """uint8 images -> normalised model inputs, each image augmented on its own (crop, flip,
    RandAugment, random erasing). Everything runs on the images' device."""
    if crop or flip:
        images = random_crop_flip(images, cfg.crop_padding if crop else 0, flip, generator)
    unit = images.to(torch.float32) / 255.0
    if cfg.randaugment_ops:
        unit = rand_augment(unit, cfg.randaugment_ops, cfg.randaugment_magnitude, generator, augment_round,
                            prob=cfg.randaugment_prob, magnitude_std=cfg.randaugment_magnitude_std)
    mean, std = scale
    return random_erase((unit - mean) / std, cfg.erase_prob, generator)


def _with_targets(
    cfg: ClassifyConfig, inputs: torch.Tensor, labels: torch.Tensor, num_classes: int, mix_rng: np.random.Generator,
) -> tuple[torch.Tensor, torch.Tensor]:
    """A batch's targets: class ids, or (B, classes) soft targets when MixUp/CutMix is on (which
    mixes the batch with itself, so it never spans a chunk)."""
    if not _mixes(cfg):
        return inputs, labels
    return mix_batch(inputs, labels, num_classes, mix_rng, cfg.mixup_alpha, cfg.cutmix_alpha,
                     cfg.cutmix_prob, cfg.label_smoothing, mix_prob=cfg.mix_prob)


def _epoch_training_batches(
    cfg: ClassifyConfig, images: torch.Tensor, labels: torch.Tensor, num_classes: int,
    scale: tuple[torch.Tensor, torch.Tensor], crop: bool, flip: bool, order_generator: torch.Generator,
    generator: torch.Generator, mix_rng: np.random.Generator, augment_round=apply_round,
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """One epoch of (model input, targets) batches, in a fresh shuffled order.

    With ``augment_chunk`` set, the images of that many whole batches are augmented in one go, when
    the first of them is asked for: a small model's step is bound by kernel launches, and
    RandAugment's few dozen kernels then run once per chunk instead of once per batch. Each image
    is still augmented on its own, so only the random stream differs from batch-at-a-time.
    Lazy, so a step asks for its batch inside the profiler's timing and nothing is drawn for a
    batch that is never trained on. On CPU chunks are slower, not faster: there nothing waits on
    launches, and a chunk's intermediates outgrow the caches (benchmarks/bench_augment.py).
    """
    batch_size = min(cfg.batch_size, len(images))
    batches = list(epoch_batches(len(images), batch_size, order_generator))
    per_chunk = max(1, cfg.augment_chunk // batch_size) if cfg.augment_chunk else 1
    for first in range(0, len(batches), per_chunk):
        chunk = batches[first : first + per_chunk]
        indices = torch.cat(chunk).to(images.device, non_blocking=True)
        inputs = _augmented(cfg, images[indices], scale, crop, flip, generator, augment_round)
        chunk_labels = labels[indices]
        for start in range(0, len(indices), batch_size):
            yield _with_targets(cfg, inputs[start : start + batch_size], chunk_labels[start : start + batch_size],
                                num_classes, mix_rng)


def _batch_loss(
    cfg: ClassifyConfig, step_model: torch.nn.Module, inputs: torch.Tensor, targets: torch.Tensor
) -> torch.Tensor:
    logits, _ = step_model(inputs)
    if targets.dim() == 2:  # MixUp/CutMix targets, smoothed already
        return soft_cross_entropy(logits, targets)
    return smoothed_cross_entropy(logits, targets, cfg.label_smoothing)


def _build_model(cfg: ClassifyConfig, dataset: ImageDataset) -> tuple[ViT, ViTConfig]:
    channels, height, width = dataset.image_shape
    if height != width:
        raise labfolio.ConfigError(f"the ViT needs square images, {cfg.dataset} has {height}x{width}")
    if height % cfg.patch_size:
        raise labfolio.ConfigError(
            f"patch_size={cfg.patch_size} does not divide the {height}x{width} images of {cfg.dataset}"
        )
    model_config = ViTConfig(
        image_size=height,
        patch_size=cfg.patch_size,
        in_channels=channels,
        num_classes=len(dataset.classes),
        depth=cfg.depth,
        width=cfg.width,
        heads=cfg.heads,
        mlp_ratio=cfg.mlp_ratio,
        pool=cfg.pool,
        dropout=cfg.dropout,
        drop_path=cfg.drop_path,
        connection=connection_config(cfg),
    )
    return ViT(model_config), model_config


@torch.no_grad()
def _embed(
    model: ViT, images: torch.Tensor, labels: torch.Tensor, stats: tuple, cfg: ClassifyConfig,
    device: torch.device,
) -> tuple[float, float, np.ndarray]:
    """(mean cross-entropy, accuracy, embeddings as float32 numpy) over a split, in eval mode."""
    was_training = model.training
    model.eval()
    loss_sum = torch.zeros((), dtype=torch.float64, device=device)
    correct = torch.zeros((), dtype=torch.int64, device=device)
    embeddings = []
    for start in range(0, len(images), cfg.eval_batch_size):
        batch = normalize(images[start : start + cfg.eval_batch_size], *stats)
        targets = labels[start : start + cfg.eval_batch_size]
        with autocast(device, cfg.amp):
            logits, embedding = model(batch)
        loss_sum += F.cross_entropy(logits.float(), targets, reduction="sum").double()
        correct += (logits.argmax(dim=-1) == targets).sum()
        embeddings.append(embedding.float())
    model.train(was_training)
    count = len(images)
    return loss_sum.item() / count, correct.item() / count, torch.cat(embeddings).cpu().numpy()


def _evaluate(
    model: ViT, dataset: ImageDataset, bank: torch.Tensor, tensors: dict[str, torch.Tensor],
    stats: tuple, cfg: ClassifyConfig, device: torch.device,
) -> tuple[dict[str, float], np.ndarray]:
    """Test metrics of the model's current weights, and the test embeddings."""
    test_loss, test_acc, test_emb = _embed(model, tensors["test_images"], tensors["test_labels"], stats, cfg, device)
    _, _, bank_emb = _embed(model, tensors["train_images"][bank], tensors["train_labels"][bank], stats, cfg, device)
    test_labels = dataset.test.labels.numpy()
    results = {
        "test/loss": test_loss,
        "test/acc": test_acc,
        "test/knn_acc": metrics.knn_acc(bank_emb, dataset.train.labels[bank.cpu()].numpy(), test_emb,
                                        test_labels, k=cfg.knn_k),
        "test/eff_rank": metrics.effective_rank(test_emb),
    }
    if not np.isfinite(test_emb).all():
        raise FloatingPointError(f"test embeddings hold NaN/Inf (test/loss={test_loss}): training diverged")
    try:
        results["test/silhouette"] = metrics.silhouette(test_emb, test_labels, cfg.silhouette_samples, seed=0)
    except ValueError:
        pass  # fewer than two classes in the sample: the score is undefined, so it is not logged
    return results, test_emb


def _projection_png(test_emb: np.ndarray, dataset: ImageDataset, cfg: ClassifyConfig, folder: Path) -> Path:
    count = min(cfg.projection_samples, len(test_emb))
    keep = np.sort(np.random.default_rng(0).choice(len(test_emb), size=count, replace=False))
    method = metrics.projection_method(cfg.projection)
    points = metrics.project_2d(test_emb[keep], method=method, seed=0)
    coarse = dataset.test.coarse_labels
    return metrics.scatter_png(
        points,
        dataset.test.labels.numpy()[keep],
        folder / "test_embedding.png",
        class_names=dataset.classes,
        superclass=None if coarse is None else coarse.numpy()[keep],
        superclass_names=dataset.coarse_classes,
        title=f"{dataset.name} · {cfg.connection} · test embedding ({method}, {count} points)",
    )


def train(cfg: ClassifyConfig) -> RecipeResult:
    """Train and evaluate as `cfg` says, logging to a new labfolio run; returns its headline numbers."""
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    device = resolve_device(cfg.device)
    dataset = load_image_dataset(cfg.dataset, data_dir=cfg.data_dir or None, download=cfg.download,
                                 cache_dir=cfg.cache_dir or None)
    seed_everything(cfg.seed)
    model, model_config = _build_model(cfg, dataset)
    model.to(device)
    crop, flip = _augment(cfg, dataset)
    stats = channel_stats(dataset.train.images)
    scale = tuple(torch.tensor(values, dtype=torch.float32, device=device)[:, None, None] for values in stats)
    tensors = {
        "train_images": dataset.train.images.to(device),
        "train_labels": dataset.train.labels.to(device),
        "test_images": dataset.test.images.to(device),
        "test_labels": dataset.test.labels.to(device),
    }
    n_train = len(dataset.train)
    # the kNN bank is the same images in every run of a study, whatever the training seed
    bank = torch.randperm(n_train, generator=torch.Generator().manual_seed(0))[: cfg.knn_train_samples]
    bank = bank.sort().values.to(device)

    steps_per_epoch = n_train // cfg.batch_size if n_train >= cfg.batch_size else 1
    total_steps = cfg.epochs * steps_per_epoch
    if cfg.max_steps:
        total_steps = min(total_steps, cfg.max_steps)
    schedule = schedule_for(cfg, total_steps)
    optimizer = make_optimizer(model, cfg.lr, cfg.weight_decay, (cfg.beta1, cfg.beta2), device,
                               capturable=cfg.cuda_graph_step)
    ema = EMA(model, cfg.ema_decay) if cfg.ema_decay else None
    snapshots = LastKAverage(cfg.average_last, cfg.average_every) if cfg.average_last else None
    step_model = compile_for_training(model, cfg.compile, cfg.compile_unit, device, cfg.compile_mode)
    train_step = make_train_step(model, partial(_batch_loss, cfg, step_model), optimizer, cfg.grad_clip, device,
                                 cfg.amp, graph=cfg.cuda_graph_step)
    order_generator = torch.Generator().manual_seed(cfg.seed)
    augment_generator = torch.Generator(device=device).manual_seed(cfg.seed + 1)
    mix_rng = np.random.default_rng(cfg.seed + 2)
    # a RandAugment round is ~60 small kernels: on a small ViT they cost a fifth of the step
    # unless compiled into a few (compiled lazily, after compile_for_training's cache reset)
    augment_round = torch.compile(apply_round) if cfg.compile and device.type == "cuda" else apply_round
    num_classes = len(dataset.classes)
    profiler = step_profiler(cfg.profile_steps, cfg.profile_start, total_steps, device)

    resume_id, state = resume_point(cfg.resume)
    run = start_run(cfg, model_config, batch_size=cfg.batch_size,
                    **({"run_id": resume_id, "resume": "must"} if resume_id else {}))
    saved_at = checkpoint_path(run) if cfg.checkpoint_every or resume_id else None
    artifacts: list[str] = []
    logged_losses: list[torch.Tensor] = []
    earlier_losses: list[float] = []  # logged before the last checkpoint (as numbers)
    final: dict[str, float] = {}
    step, start_epoch = 0, 0
    if state is not None:
        restore_training(state, model, optimizer, ema, snapshots)
        restore_random_states(state["random"], order_generator, augment_generator, numpy_rng=mix_rng)
        step, start_epoch = int(state["step"]), int(state["epoch"])
        earlier_losses, final = list(state["logged_losses"]), dict(state["final"])
    with run, tempfile.TemporaryDirectory(prefix="labfolio-classify-") as scratch:
        out_folder = Path(cfg.out_dir) if cfg.out_dir else Path(scratch)
        run.summary["model/parameters"] = sum(p.numel() for p in model.parameters())
        print(f"classify: {dataset.name} ({n_train} train / {len(dataset.test)} test, {len(dataset.classes)} "
              f"classes) · ViT {cfg.depth}x{cfg.width} · {cfg.connection} · {total_steps} steps on {device} "
              f"· run {run.id}" + (f" · resumed at epoch {start_epoch} step {step}" if resume_id else ""),
              flush=True)
        started = time.perf_counter()
        epochs = math.ceil(total_steps / steps_per_epoch)
        for epoch in range(start_epoch, epochs):
            batches = _epoch_training_batches(
                cfg, tensors["train_images"], tensors["train_labels"], num_classes, scale, crop, flip,
                order_generator, augment_generator, mix_rng, augment_round)
            for _ in range(steps_per_epoch):
                if step >= total_steps:
                    break
                profiler.before_step(step)
                inputs, targets = next(batches)
                lr = schedule(step)
                loss, grad_norm = train_step(inputs, targets, lr)
                if ema is not None:
                    ema.update(model)
                if snapshots is not None:
                    snapshots.maybe_add(step + 1, model)
                profile = profiler.after_step(step)
                if profile is not None:
                    log_step_profile(run, profile, step, out_folder / run.id, artifacts if cfg.out_dir else None)
                # a resumed run replays from its checkpoint: skip what the killed attempt logged
                if step % cfg.log_every == 0 and not logged_before(run, "train/loss", step):
                    loss_value = loss.detach()
                    logged_losses.append(loss_value)
                    run.log({"train/loss": loss_value, "lr": lr, "grad_norm": grad_norm,
                             "epoch": epoch + (step % steps_per_epoch) / steps_per_epoch}, step=step)
                if cfg.diag_every and step % cfg.diag_every == 0 and step >= run.first_step:
                    diagnostics = model.diagnostics()
                    if diagnostics:
                        run.log({f"diag/{name}": value for name, value in diagnostics.items()}, step=step)
                step += 1
            last_epoch = epoch == epochs - 1
            if (epoch + 1) % cfg.eval_every == 0 or last_epoch:
                # with an EMA, the averaged weights are what gets evaluated (swapped in, then back)
                with ema.applied_to(model) if ema is not None else contextlib.nullcontext():
                    results, test_emb = _evaluate(model, dataset, bank, tensors, stats, cfg, device)
                results["epoch"] = epoch + 1.0
                if not logged_before(run, "test/acc", step - 1):
                    run.log(results, step=step - 1)
                final.update(results)
                print(f"  epoch {epoch + 1}/{epochs} step {step} · test acc {results['test/acc']:.4f} "
                      f"· knn {results['test/knn_acc']:.4f} · loss {results['test/loss']:.4f} "
                      f"· eff rank {metrics.format_effective_rank(results['test/eff_rank'], cfg.width)} "
                      f"· {time.perf_counter() - started:.1f}s", flush=True)
                if last_epoch:
                    png = _projection_png(test_emb, dataset, cfg, out_folder / run.id)
                    run.log_artifact(png, kind="image")
                    if cfg.out_dir:
                        artifacts.append(str(png))
                    run.summary["test/eff_rank_of_width"] = metrics.format_effective_rank(
                        results["test/eff_rank"], cfg.width)
            if saved_at is not None and cfg.checkpoint_every and (epoch + 1) % cfg.checkpoint_every == 0 \
                    and not last_epoch and step < total_steps:
                earlier_losses += torch.stack(logged_losses).tolist() if logged_losses else []
                logged_losses.clear()
                save_checkpoint(saved_at, {
                    **training_state(model, optimizer, ema, snapshots),
                    "random": random_states(order_generator, augment_generator, numpy_rng=mix_rng),
                    "step": step, "epoch": epoch + 1, "logged_losses": earlier_losses, "final": final,
                })
        if snapshots is not None and len(snapshots):
            averaged_model = copy.deepcopy(model)
            averaged_model.load_state_dict(snapshots.average())
            averaged, _ = _evaluate(averaged_model, dataset, bank, tensors, stats, cfg, device)
            averaged = {f"avg/{key}": value for key, value in averaged.items()}
            run.log(averaged, step=step - 1)
            final.update(averaged)
        train_loss = earlier_losses + (torch.stack(logged_losses).tolist() if logged_losses else [])
        if train_loss:
            final["train/loss"] = train_loss[-1]
    if saved_at is not None:
        saved_at.unlink(missing_ok=True)  # the run finished: there is nothing left to resume
    return RecipeResult(run_id=run.id, final=final, train_loss=train_loss, artifacts=artifacts)


def main(argv: Sequence[str] | None = None) -> int:
    try:
        cfg = parse_config(ClassifyConfig, argv, SMOKE, prog="python -m labfolio.kit.recipes.classify",
                           description=(__doc__ or "").splitlines()[0])
        result = train(cfg)
    except labfolio.LabfolioError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    shown = ", ".join(f"{key}={value:.4f}" for key, value in sorted(result.final.items()))
    print(f"classify: run {result.run_id} finished: {shown}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
