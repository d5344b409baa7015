"""A labelled set of synthetic training curves for measuring the detectors both ways.

Every curve is generated from a fixed seed, so recall and false-positive rate are reproducible
numbers. Pathological curves carry the alert kind that must be found on a named metric; healthy
curves must raise no alert at all (any kind, any severity, any metric counts as a false positive).

Pathologies, each at several severities and noise levels:

- divergence: a training loss that jumps (1.5x to 10x) or ramps up and stays up; a validation
  loss that jumps at epoch 12; a grad norm that explodes (15x to 135x) and stays high;
- grad_spike: a single grad-norm spike (15x to 135x) that comes back;
- nan: a loss that turns NaN, a grad norm that hits Inf, an evaluation metric with one NaN;
- collapse: an accuracy that rises, then loses 35% to 80% of its gain, with no, slow or quick
  recovery;
- schedule_mismatch: an lr that never decays, that follows a cosine 2x, 3x or 10x too long (or a
  linear one 3x too long), a periodic cosine whose period is 0.3x or 0.5x the run, a WSD
  cooldown or step drops that never happen, an epoch-logged cosine twice too long, a decaying
  schedule (no shape given) that stays constant;
- plateau: an evaluation metric that stops improving after 10% to 30% of the run, or never
  improves;
- overfitting: a validation loss (or accuracy) that turns and worsens by 10% to 50% of its gain
  while the training metric keeps improving;
- representation_collapse: an effective rank that falls to 2% to 8% of the width (with and
  without the width in the config);
- stream_collapse: an mHC stream similarity that climbs from 0.1 to 0.5, 0.7 or 0.95.

Healthy curves: noisy losses with warmup bumps, early catapults (up to +80%), short and long
(20-50 step) spikes that recover, LR-drop steps and WSD cooldowns; cosine, linear, constant, step
and WSD schedules that match their configs, also written nanoGPT-style (decay_lr, warmup_iters,
lr_decay_iters), as a scheduler table without a cooldown length, or logged once per epoch; grad
norms that start high, drift and carry isolated spikes up to 4x; noisy per-batch training
accuracy; evaluation accuracies that keep improving (with LR-drop jumps); train/val pairs whose
gap grows while validation still improves; shrinking effective ranks; stream similarities that
stay low or fall.

A plateau is a metric stalled for at least half the run: a run that converges in its last few
evaluations is healthy, one that stopped improving a third of the way in is not.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from labfolio.analysis.alerts import Alert

__all__ = ["LabelledCurve", "DetectorScore", "labelled_curves", "score_detectors", "format_score"]

Series = dict[str, tuple[np.ndarray, np.ndarray]]
NOISE_LEVELS = (0.01, 0.03, 0.06)  # relative noise of training curves: low, mid, high


@dataclass(frozen=True)
class LabelledCurve:
    """One synthetic run: its series, its config, and what a detector should say about it."""

    name: str  # e.g. 'divergence/loss_jump/x2/noise0.03/seed1'
    label: str | None  # the alert kind that must be raised; None for a healthy curve
    metric: str | None  # the key it must be raised on
    series: Series
    config: dict[str, Any] = field(default_factory=dict)


# --- building blocks ------------------------------------------------------------------------------

def _lr_schedule(family: str, n: int, lr: float = 1e-3, warmup: int = 0, cooldown: float = 0.2,
                 floor: float = 0.0, milestones: Sequence[int] = (), gamma: float = 0.1,
                 shape: str = "linear") -> np.ndarray:
    """The lr at steps 0..n-1 (warmup reaches the peak on step warmup-1, decay ends on step n-1)."""
    steps = np.arange(n, dtype=float)
    peak_at = max(warmup - 1, 0)
    if family == "constant":
        value = np.full(n, lr)
    elif family == "step":
        value = lr * gamma ** np.searchsorted(np.asarray(milestones), steps, side="right")
    else:
        if family == "wsd":
            start = n - max(1, round(cooldown * n))
            q = np.clip((steps - (start - 1)) / (n - start), 0, 1)
            left = {"linear": 1 - q, "cosine": 0.5 * (1 + np.cos(np.pi * q)), "1-sqrt": 1 - np.sqrt(q)}[shape]
            value = np.where(steps < start, lr, floor * lr + (lr - floor * lr) * left)
        else:
            q = np.clip((steps - peak_at) / max(n - 1 - peak_at, 1), 0, 1)
            left = 0.5 * (1 + np.cos(np.pi * q)) if family == "cosine" else 1 - q
            value = floor * lr + (lr - floor * lr) * left
    if warmup:
        value = np.where(steps < warmup, lr * (steps + 1) / warmup, value)
    return value


def _decay(n: int, start: float, end: float, tau: float) -> np.ndarray:
    t = np.arange(n, dtype=float)
    return end + (start - end) * np.exp(-t / tau)


def _train_loss(rng: np.random.Generator, n: int, noise: float, *, bump: bool = False, spikes: int = 0,
                drops: Sequence[int] = (), cooldown_from: int | None = None) -> np.ndarray:
    loss = _decay(n, rng.uniform(2.0, 7.0), rng.uniform(0.2, 1.0), rng.uniform(0.1, 0.3) * n)
    if bump:  # the loss rises for a moment while the lr warms up
        centre, width = rng.uniform(0.02, 0.06) * n, rng.uniform(0.005, 0.02) * n
        loss *= 1 + rng.uniform(0.05, 0.2) * np.exp(-0.5 * ((np.arange(n) - centre) / width) ** 2)
    for drop in drops:  # LR-drop steps: the loss steps down and keeps going
        loss[drop:] *= rng.uniform(0.75, 0.9)
    if cooldown_from is not None:  # WSD cooldown: the loss falls faster at the end
        ramp = np.clip((np.arange(n) - cooldown_from) / (n - cooldown_from), 0, 1)
        loss *= 1 - rng.uniform(0.1, 0.2) * ramp
    loss *= 1 + noise * rng.standard_normal(n)
    for _ in range(spikes):  # short loss spikes that recover (common in LM training)
        at, length = int(rng.uniform(0.2, 0.9) * n), int(rng.integers(1, 10))
        loss[at:at + length] *= rng.uniform(1.3, 2.0)
    return loss


def _grad_norm(rng: np.random.Generator, n: int, noise: float, spikes: int = 3) -> np.ndarray:
    base = rng.uniform(0.5, 7.0)
    t = np.arange(n)
    drift = np.linspace(1.0, rng.uniform(0.7, 1.8), n)  # grad norm often grows late in training
    grad = base * drift * (1 + 3 * np.exp(-t / (0.02 * n))) * np.exp((0.15 + 3 * noise) * rng.standard_normal(n))
    for at in rng.choice(np.arange(int(0.1 * n), n), size=spikes, replace=False):
        grad[at] *= rng.uniform(2.0, 4.0)  # isolated spikes, at most 4x
    return grad


def _accuracy(rng: np.random.Generator, n: int, noise: float, *, tau: float | None = None,
              drops: Sequence[int] = ()) -> np.ndarray:
    low, high = rng.uniform(0.05, 0.2), rng.uniform(0.6, 0.95)
    tau = tau if tau is not None else rng.uniform(0.2, 0.45) * n
    acc = high - (high - low) * np.exp(-np.arange(n) / tau)
    for drop in drops:  # an LR drop lifts accuracy by part of what is left
        acc[drop:] += rng.uniform(0.3, 0.6) * (1.0 - acc[drop:]) * 0.5
    return np.clip(acc + noise * (high - low) * rng.standard_normal(n), 0, 1)


def _steps(n: int, every: int = 1) -> np.ndarray:
    return np.arange(n, dtype=float) * every


def _schedule_config(family: str, n: int, **extra: Any) -> dict[str, Any]:
    return {"optim": {"lr": 1e-3, "scheduler": family, **extra}, "train": {"total_steps": n},
            "seed": 0, "output_dir": "/tmp/run"}


# --- healthy curves -------------------------------------------------------------------------------

def _healthy_training(rng: np.random.Generator, noise: float, variant: str) -> tuple[Series, dict]:
    n = int(rng.integers(800, 1600))
    warmup = int(rng.uniform(0.01, 0.08) * n)
    family = {"cosine": "cosine", "wsd": "wsd", "step": "step", "constant": "constant", "linear": "linear"}[variant]
    extra: dict[str, Any] = {"warmup_steps": warmup}
    drops: Sequence[int] = ()
    cooldown_from = None
    if family == "step":
        drops = (n // 2, 3 * n // 4)
        extra.update(milestones=list(drops), gamma=0.1)
    if family == "wsd":
        extra.update(decay_fraction=0.2, shape="1-sqrt")
        cooldown_from = int(0.8 * n)
    if family == "cosine":
        extra["min_lr"] = 1e-4
    lr = _lr_schedule(family, n, warmup=warmup, milestones=drops, floor=0.1 if family == "cosine" else 0.0,
                      shape="1-sqrt")
    loss = _train_loss(rng, n, noise, bump=rng.random() < 0.6, spikes=int(rng.integers(0, 4)),
                       drops=drops, cooldown_from=cooldown_from)
    if rng.random() < 0.5:  # a catapult: a large early spike that the run recovers from
        centre, width = rng.uniform(0.02, 0.05) * n, rng.uniform(0.003, 0.01) * n
        loss *= 1 + rng.uniform(0.3, 0.8) * np.exp(-0.5 * ((np.arange(n) - centre) / width) ** 2)
    if rng.random() < 0.5:  # a longer late spike (tens of steps) that recovers
        at, length = int(rng.uniform(0.4, 0.9) * n), int(rng.integers(20, 50))
        loss[at:at + length] *= rng.uniform(1.2, 1.6)
    steps = _steps(n)
    batch_acc = np.clip(_accuracy(rng, n, 0.0) + rng.uniform(0.02, 0.05) * rng.standard_normal(n), 0, 1)
    series = {"train/loss": (steps, loss), "grad_norm": (steps, _grad_norm(rng, n, noise)), "lr": (steps, lr),
              "train/acc": (steps, batch_acc)}
    return series, _schedule_config(family, n, **extra)


def _healthy_other_configs(rng: np.random.Generator, noise: float, variant: str) -> tuple[Series, dict]:
    """Schedules described the way other codebases write them."""
    if variant == "nanogpt":  # decay_lr + warmup_iters + lr_decay_iters + min_lr
        n = int(rng.integers(1000, 2000))
        decay_end, warmup = int(rng.uniform(0.8, 1.0) * n), int(rng.uniform(0.02, 0.1) * n)
        steps = np.arange(n, dtype=float)
        q = np.clip((steps - warmup) / (decay_end - warmup), 0, 1)
        lr = 6e-5 + (6e-4 - 6e-5) * 0.5 * (1 + np.cos(np.pi * q))
        lr = np.where(steps < warmup, 6e-4 * (steps + 1) / warmup, lr)
        config = {"learning_rate": 6e-4, "max_iters": n, "decay_lr": True, "warmup_iters": warmup,
                  "lr_decay_iters": decay_end, "min_lr": 6e-5, "weight_decay": 0.1}
        every = 10
        return {"lr": (steps[::every], lr[::every]), "loss": (steps, _train_loss(rng, n, noise))}, config
    if variant == "epochs":  # a CIFAR script: cosine over epochs, lr logged once per epoch
        epochs = int(rng.integers(50, 300))
        lr = 0.1 * 0.5 * (1 + np.cos(np.pi * np.arange(epochs) / epochs))
        config = {"optimizer": {"name": "sgd", "lr": 0.1, "momentum": 0.9}, "scheduler": "cosine", "epochs": epochs}
        return {"lr": (_steps(epochs), lr), "val/acc": (_steps(epochs), _accuracy(rng, epochs, noise))}, config
    # a scheduler table without a cooldown length: WSD with the kit's defaults
    n = int(rng.integers(800, 1600))
    lr = _lr_schedule("wsd", n, warmup=int(0.02 * n), cooldown=rng.uniform(0.1, 0.4), shape="linear")
    config = {"scheduler": {"name": "wsd", "warmup_steps": int(0.02 * n)}, "total_steps": n, "lr": 1e-3}
    return {"lr": (_steps(n), lr), "train/loss": (_steps(n), _train_loss(rng, n, noise))}, config


def _healthy_evaluation(rng: np.random.Generator, noise: float, variant: str) -> tuple[Series, dict]:
    epochs = int(rng.integers(60, 200))
    drops = (epochs // 2, 3 * epochs // 4) if variant == "step" else ()
    steps = _steps(epochs, every=100)
    val_acc = _accuracy(rng, epochs, noise, drops=drops)
    train_acc = np.clip(val_acc + np.linspace(0.0, rng.uniform(0.05, 0.2), epochs), 0, 1)
    start, end = rng.uniform(1.5, 2.5), rng.uniform(0.3, 0.8)
    tau = rng.uniform(0.2, 0.4) * epochs
    val_loss = _decay(epochs, start, end, tau)
    for drop in drops:
        val_loss[drop:] *= rng.uniform(0.85, 0.95)
    val_loss = val_loss + noise * (start - end) * rng.standard_normal(epochs)
    # the generalisation gap grows, but validation keeps improving: not overfitting
    train_loss = _decay(epochs, start, end * rng.uniform(0.1, 0.5), tau * rng.uniform(0.5, 0.9))
    series = {"val/acc": (steps, val_acc), "train/acc": (steps, train_acc),
              "val/loss": (steps, val_loss), "train/loss": (steps, train_loss)}
    return series, {"epochs": epochs, "batch_size": 128, "seed": 1}


def _healthy_representation(rng: np.random.Generator, noise: float, with_width: bool) -> tuple[Series, dict]:
    evals, dim = int(rng.integers(20, 100)), int(rng.choice([64, 128, 256, 384]))
    rank = _decay(evals, rng.uniform(0.5, 0.8) * dim, rng.uniform(0.15, 0.4) * dim, rng.uniform(0.1, 0.4) * evals)
    rank *= 1 + noise * rng.standard_normal(evals)
    config = {"model": {"d_model": dim}} if with_width else {"model": {"layers": 4}}
    return {"test/eff_rank": (_steps(evals, 500), rank)}, config


def _healthy_streams(rng: np.random.Generator, noise: float, variant: str) -> tuple[Series, dict]:
    n = int(rng.integers(100, 400))
    if variant == "falling":  # streams start as copies and separate
        similarity = _decay(n, rng.uniform(0.8, 1.0), rng.uniform(0.05, 0.15), rng.uniform(0.05, 0.2) * n)
    else:
        similarity = np.full(n, rng.uniform(0.05, 0.3))
    similarity = similarity + (0.5 * noise + 0.01) * rng.standard_normal(n)
    return {"mhc/stream_similarity": (_steps(n, 10), similarity)}, {"connection": "mhc", "n_streams": 4}


# --- pathological curves --------------------------------------------------------------------------

def _loss_divergence(rng: np.random.Generator, noise: float, factor: float, ramp: bool) -> Series:
    n = int(rng.integers(800, 1600))
    loss = _train_loss(rng, n, noise, bump=True)
    at = int(rng.uniform(0.3, 0.8) * n)
    # a diverged run stops learning: the loss sits at the jumped level, drifting
    level = float(np.median(loss[at - 20:at])) * factor
    stuck = level * np.linspace(1.0, rng.uniform(0.85, 1.2), n - at) * (1 + noise * rng.standard_normal(n - at))
    if ramp:  # it climbs there over ~20 steps
        rise = np.clip(np.arange(n - at) / 20.0, 0, 1)
        stuck = loss[at:] + (stuck - loss[at:]) * rise
    loss[at:] = stuck
    steps = _steps(n)
    return {"train/loss": (steps, loss), "grad_norm": (steps, _grad_norm(rng, n, noise, spikes=0))}


def _val_divergence(rng: np.random.Generator, noise: float, factor: float) -> Series:
    epochs = 100
    val = _decay(epochs, 2.3, 0.5, 8.0) * (1 + noise * rng.standard_normal(epochs))
    # "a divergence at epoch 12": the loss jumps and stays there
    val[12:] = val[11] * factor * np.linspace(1.0, rng.uniform(0.85, 1.1), epochs - 12) * (
        1 + noise * rng.standard_normal(epochs - 12))
    return {"val/loss": (_steps(epochs), val)}


def _grad_explosion(rng: np.random.Generator, noise: float, factor: float, stays: bool) -> Series:
    n = int(rng.integers(800, 1600))
    grad = _grad_norm(rng, n, noise, spikes=2)
    at = int(rng.uniform(0.3, 0.8) * n)
    level = float(np.median(grad[at - 64:at]))  # "15x" means 15x the running median
    if stays:
        grad[at:] = level * factor * np.exp(0.3 * rng.standard_normal(n - at))
    else:
        grad[at] = level * factor
    steps = _steps(n)
    return {"grad_norm": (steps, grad), "train/loss": (steps, _train_loss(rng, n, noise))}


def _nan(rng: np.random.Generator, noise: float, variant: str) -> tuple[Series, str]:
    n = int(rng.integers(500, 1000))
    at = int(rng.uniform(0.2, 0.9) * n)
    steps = _steps(n)
    loss, grad = _train_loss(rng, n, noise), _grad_norm(rng, n, noise)
    if variant == "loss":
        loss[at:] = np.nan
        return {"train/loss": (steps, loss), "grad_norm": (steps, grad)}, "train/loss"
    if variant == "grad_norm":
        grad[at] = np.inf
        return {"train/loss": (steps, loss), "grad_norm": (steps, grad)}, "grad_norm"
    acc = _accuracy(rng, 50, noise)
    acc[int(rng.integers(5, 50))] = np.nan
    return {"train/loss": (steps, loss), "val/acc": (_steps(50, n // 50), acc)}, "val/acc"


def _collapse(rng: np.random.Generator, noise: float, drop: float, recovery: str) -> Series:
    epochs = int(rng.integers(60, 150))
    acc = _accuracy(rng, epochs, 0.0, tau=rng.uniform(0.05, 0.15) * epochs)
    at = int(rng.uniform(0.15, 0.5) * epochs)
    lost = drop * (acc[at] - acc[0])
    after = np.arange(epochs - at, dtype=float)
    tau = {"none": math.inf, "slow": 0.3 * epochs, "quick": 4.0}[recovery]
    acc[at:] -= lost * np.exp(-after / tau)
    acc += noise * (acc.max() - acc[0]) * rng.standard_normal(epochs)
    return {"val/acc": (_steps(epochs), acc)}


def _schedule_mismatch(rng: np.random.Generator, variant: str) -> tuple[Series, dict]:
    n = int(rng.integers(800, 1600))
    warmup = int(0.05 * n)
    steps = _steps(n)
    config = _schedule_config("cosine", n, warmup_steps=warmup)
    if variant == "never_decays":
        lr = _lr_schedule("constant", n, warmup=warmup)
    elif variant.startswith("too_long"):  # the scheduler was built for factor x more steps
        factor = float(variant.split("x")[1])
        lr = _lr_schedule("cosine", int(factor * n), warmup=warmup)[:n]
    elif variant.startswith("too_short"):  # periodic cosine with a period that is too short
        period = float(variant.split("x")[1]) * n
        lr = 1e-3 * 0.5 * (1 + np.cos(np.pi * np.arange(n) / period))
    elif variant == "wsd_no_cooldown":
        config = _schedule_config("wsd", n, warmup_steps=warmup, decay_fraction=0.2)
        lr = _lr_schedule("constant", n, warmup=warmup)
    elif variant == "step_no_drops":
        config = _schedule_config("step", n, milestones=[n // 2, 3 * n // 4], gamma=0.1)
        lr = _lr_schedule("constant", n)
    elif variant == "linear_as_cosine_too_long":
        config = _schedule_config("linear", n, warmup_steps=warmup)
        lr = _lr_schedule("linear", 3 * n, warmup=warmup)[:n]
    elif variant == "epochs_cosine_too_long":
        epochs = 100
        config = {"optim": {"lr": 0.1, "scheduler": "cosine"}, "epochs": epochs}
        lr = 0.1 * 0.5 * (1 + np.cos(np.pi * np.arange(epochs) / (2 * epochs)))
        return {"lr": (_steps(epochs), lr)}, config
    else:  # 'decay_constant': an exponential decay is configured, the lr stays flat
        config = {"optim": {"lr": 1e-3, "scheduler": "exponential", "gamma": 0.99}, "epochs": 50}
        lr = _lr_schedule("constant", n)
    return {"lr": (steps, lr), "train/loss": (steps, _train_loss(rng, n, 0.03))}, config


def _plateau(rng: np.random.Generator, noise: float, stall: float, metric: str) -> Series:
    epochs = int(rng.integers(60, 150))
    stop = int(stall * epochs)
    steps = _steps(epochs, 100)
    if metric == "val/acc":
        acc = _accuracy(rng, epochs, 0.0, tau=max(stop, 1) / 3)
        acc[stop:] = acc[stop] if stop else acc[0]
        values = acc + noise * 0.5 * rng.standard_normal(epochs)
    else:
        loss = _decay(epochs, 2.3, 0.6, max(stop, 1) / 3)
        loss[stop:] = loss[stop]
        values = loss + noise * 1.7 * rng.standard_normal(epochs)
    return {metric: (steps, values)}


def _overfitting(rng: np.random.Generator, noise: float, worsening: float, metric: str) -> Series:
    epochs = int(rng.integers(80, 160))
    turn = int(rng.uniform(0.3, 0.5) * epochs)
    steps = _steps(epochs, 100)
    t = np.arange(epochs, dtype=float)
    start, best = (2.3, rng.uniform(0.4, 0.9)) if metric == "val/loss" else (0.1, rng.uniform(0.6, 0.9))
    gain = start - best
    curve = best + gain * np.exp(-t / (turn / 4))
    curve[turn:] += worsening * gain * (t[turn:] - turn) / (epochs - turn)  # steadily worse
    curve += noise * abs(gain) * rng.standard_normal(epochs)
    train = best * np.exp(-t / (0.3 * epochs)) * 0.9 if metric == "val/loss" else np.minimum(
        1.0, start + (1.0 - start) * (1 - np.exp(-t / (0.2 * epochs))))
    twin = "train/loss" if metric == "val/loss" else "train/acc"
    return {metric: (steps, curve), twin: (steps, train)}


def _representation_collapse(
    rng: np.random.Generator, noise: float, level: float, with_width: bool
) -> tuple[Series, dict]:
    evals, dim = int(rng.integers(30, 100)), int(rng.choice([64, 128, 256]))
    rank = _decay(evals, 0.7 * dim, 0.3 * dim, 0.2 * evals)
    at = int(rng.uniform(0.3, 0.7) * evals)
    rank[at:] = level * dim
    rank *= 1 + noise * rng.standard_normal(evals)
    config = {"model": {"embed_dim": dim}} if with_width else {}
    return {"test/eff_rank": (_steps(evals, 500), rank)}, config


def _stream_collapse(rng: np.random.Generator, noise: float, level: float) -> Series:
    n = int(rng.integers(150, 400))
    t = np.arange(n, dtype=float)
    centre = rng.uniform(0.3, 0.6) * n
    similarity = 0.1 + (level - 0.1) / (1 + np.exp(-(t - centre) / (0.05 * n)))
    similarity += (0.5 * noise + 0.01) * rng.standard_normal(n)
    return {"mhc/stream_similarity": (_steps(n, 10), similarity)}


# --- the set --------------------------------------------------------------------------------------

def labelled_curves(seed: int = 0, repeats: int = 2) -> list[LabelledCurve]:
    """The labelled set: every pathology and healthy family × severities × noise levels × `repeats`."""
    rng = np.random.default_rng(seed)
    curves: list[LabelledCurve] = []

    def add(name: str, label: str | None, metric: str | None, series: Series, config: dict | None = None) -> None:
        curves.append(LabelledCurve(name, label, metric, series, config or {}))

    for r in range(repeats):
        for noise in NOISE_LEVELS:
            tag = f"noise{noise}/seed{r}"
            for factor in (1.5, 2.0, 4.0, 10.0):
                for ramp in (False, True):
                    kind = "ramp" if ramp else "jump"
                    add(f"divergence/loss_{kind}/x{factor}/{tag}", "divergence", "train/loss",
                        _loss_divergence(rng, noise, factor, ramp))
            for factor in (1.5, 2.0, 4.0):
                add(f"divergence/val_loss_epoch12/x{factor}/{tag}", "divergence", "val/loss",
                    _val_divergence(rng, noise, factor))
            for factor in (15.0, 30.0, 135.0):
                add(f"divergence/grad_norm/x{factor}/{tag}", "divergence", "grad_norm",
                    _grad_explosion(rng, noise, factor, stays=True))
                add(f"grad_spike/x{factor}/{tag}", "grad_spike", "grad_norm",
                    _grad_explosion(rng, noise, factor, stays=False))
            for variant in ("loss", "grad_norm", "eval"):
                series, metric = _nan(rng, noise, variant)
                add(f"nan/{variant}/{tag}", "nan", metric, series)
            for drop in (0.35, 0.5, 0.8):
                for recovery in ("none", "slow", "quick"):
                    add(f"collapse/drop{drop}/recovery_{recovery}/{tag}", "collapse", "val/acc",
                        _collapse(rng, noise, drop, recovery))
            for stall in (0.0, 0.1, 0.2, 0.3):
                for metric in ("val/acc", "val/loss"):
                    add(f"plateau/{metric}/after{stall}/{tag}", "plateau", metric, _plateau(rng, noise, stall, metric))
            for worsening in (0.1, 0.25, 0.5):
                for metric in ("val/loss", "val/acc"):
                    add(f"overfitting/{metric}/worse{worsening}/{tag}", "overfitting", metric,
                        _overfitting(rng, noise, worsening, metric))
            for level in (0.08, 0.05, 0.02):
                for with_width in (True, False):
                    series, config = _representation_collapse(rng, noise, level, with_width)
                    add(f"representation_collapse/{level}/width_{with_width}/{tag}", "representation_collapse",
                        "test/eff_rank", series, config)
            for level in (0.5, 0.7, 0.95):
                add(f"stream_collapse/{level}/{tag}", "stream_collapse", "mhc/stream_similarity",
                    _stream_collapse(rng, noise, level))

            for variant in ("cosine", "wsd", "step", "constant", "linear"):
                for copy in range(2):
                    series, config = _healthy_training(rng, noise, variant)
                    add(f"healthy/training_{variant}/{copy}/{tag}", None, None, series, config)
                series, config = _healthy_evaluation(rng, noise, "step" if variant == "step" else "smooth")
                add(f"healthy/evaluation_{variant}/{tag}", None, None, series, config)
            for variant in ("nanogpt", "epochs", "wsd_table"):
                series, config = _healthy_other_configs(rng, noise, variant)
                add(f"healthy/config_{variant}/{tag}", None, None, series, config)
            for with_width in (True, False):
                for copy in range(2):
                    series, config = _healthy_representation(rng, noise, with_width)
                    add(f"healthy/eff_rank/width_{with_width}/{copy}/{tag}", None, None, series, config)
            for variant in ("falling", "low"):
                for copy in range(2):
                    series, config = _healthy_streams(rng, noise, variant)
                    add(f"healthy/streams_{variant}/{copy}/{tag}", None, None, series, config)
        for variant in ("never_decays", "too_longx2", "too_longx3", "too_longx10", "too_shortx0.5",
                        "too_shortx0.3", "wsd_no_cooldown", "step_no_drops", "linear_as_cosine_too_long",
                        "epochs_cosine_too_long", "decay_constant"):
            series, config = _schedule_mismatch(rng, variant)
            add(f"schedule_mismatch/{variant}/seed{r}", "schedule_mismatch", "lr", series, config)
    return curves


@dataclass(frozen=True)
class DetectorScore:
    """Recall per labelled kind and the false-positive rate on healthy curves."""

    found: dict[str, int]  # kind -> labelled curves where it was raised on the labelled metric
    labelled: dict[str, int]  # kind -> labelled curves
    healthy: int  # healthy curves
    false_alarms: tuple[tuple[str, tuple[Alert, ...]], ...]  # healthy curves with any alert
    misses: tuple[str, ...]  # pathological curves whose label was not raised

    @property
    def recall(self) -> float:
        return sum(self.found.values()) / max(sum(self.labelled.values()), 1)

    @property
    def false_positive_rate(self) -> float:
        return len(self.false_alarms) / max(self.healthy, 1)

    def kind_recall(self, kind: str) -> float:
        return self.found.get(kind, 0) / max(self.labelled.get(kind, 0), 1)


def score_detectors(
    curves: Sequence[LabelledCurve],
    detect: Callable[[Series, dict], list[Alert]] | None = None,
) -> DetectorScore:
    """Run `detect` (default: ``detect_all``) on every curve and count hits, misses and false alarms."""
    if detect is None:
        from labfolio.analysis.monitor import detect_all

        detect = detect_all
    found: dict[str, int] = {}
    labelled: dict[str, int] = {}
    false_alarms, misses = [], []
    healthy = 0
    for curve in curves:
        alerts = detect(curve.series, curve.config)
        if curve.label is None:
            healthy += 1
            if alerts:
                false_alarms.append((curve.name, tuple(alerts)))
            continue
        labelled[curve.label] = labelled.get(curve.label, 0) + 1
        if any(a.kind == curve.label and a.metric == curve.metric for a in alerts):
            found[curve.label] = found.get(curve.label, 0) + 1
        else:
            misses.append(curve.name)
    return DetectorScore(found, labelled, healthy, tuple(false_alarms), tuple(misses))


def format_score(score: DetectorScore) -> str:
    """A fixed-width table: recall per kind, overall recall and false-positive rate."""
    lines = [f"{'kind':<26}{'found':>7}{'of':>5}{'recall':>9}"]
    for kind in sorted(score.labelled):
        lines.append(f"{kind:<26}{score.found.get(kind, 0):>7}{score.labelled[kind]:>5}"
                     f"{score.kind_recall(kind):>9.1%}")
    total_found, total = sum(score.found.values()), sum(score.labelled.values())
    lines.append(f"{'all pathologies':<26}{total_found:>7}{total:>5}{score.recall:>9.1%}")
    lines.append(f"false positives on healthy curves: {len(score.false_alarms)} of {score.healthy} "
                 f"({score.false_positive_rate:.1%})")
    return "\n".join(lines)
