"""Does the logged learning rate follow the schedule the config asks for?

A scheduler bug (an LR that never decays, or decays over the wrong number of steps) used to be
found days late. ``schedule_from_config`` reads what the config asks for; the
``ScheduleMismatchDetector`` compares it with the logged ``lr``.

Reading the config (nested keys are searched at the top level and under sections such as
``optim``, ``train`` or ``scheduler``):

- the schedule: ``schedule``/``scheduler``/``lr_schedule`` (a name, or a table with ``name``), or
  nanoGPT's ``decay_lr``; names constant, linear, cosine, cosine_warmup, wsd (also whd,
  warmup_stable_decay), step/multistep (with ``milestones`` or ``step_size`` and ``gamma``); other
  decaying names (exponential, polynomial, inverse_sqrt, onecycle, with restarts) only promise to
  decay;
- the length: ``total_steps``/``max_steps``/``steps``/``max_iters`` or ``epochs`` (with
  ``steps_per_epoch`` if known); ``warmup_steps``/``warmup_epochs``/``warmup_ratio``;
  ``decay_fraction``/``decay_steps`` for the WSD cooldown; ``min_lr``/``final_lr``/``eta_min``
  with ``lr``, or ``min_lr_ratio``.

A parameter the config does not give is not guessed: the expected LR becomes a band over its
plausible values (warmup 0–10%, cooldown 5–50%, floor 0–10% of the peak, any cooldown shape).

The check: the logged lr, divided by its running peak, must stay within 0.25 of the expected
band (also divided by its running peak, so warmup reads as 1). Three consecutive points outside
it, spanning at least 1% of the run, are a mismatch (live, points are judged 16 at a time).
Without a known length in steps the check waits for the end of the run and, if the config's
epochs turn out to be the logged steps, runs then; otherwise (and for decaying schedules of
unknown shape) it only checks that the lr decreased at all. No schedule in the config, no check.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from labfolio.analysis.alerts import Alert, AlertKind, Severity, format_number as num, format_step
from labfolio.analysis.detectors import Detector, DetectorOptions
from labfolio.analysis.diff import flatten_config

__all__ = ["ScheduleSpec", "schedule_from_config", "expected_lr_band", "ScheduleMismatchDetector"]

_SECTIONS = frozenset(
    "train training trainer optim optimizer opt optimization scheduler schedule lr_schedule "
    "lr_scheduler sched hparams hyperparameters config cfg args solver run".split()
)
_SCHEDULE_KEYS = ("schedule", "scheduler", "lr_schedule", "lr_scheduler", "sched", "lr_sched",
                  "schedule_name", "scheduler_name", "lr_schedule_name", "lr_scheduler_type")
_NAME_KEYS = ("name", "type", "kind")
_LR_KEYS = ("lr", "learning_rate", "base_lr", "peak_lr", "max_lr")
_TOTAL_STEP_KEYS = ("total_steps", "max_steps", "num_steps", "train_steps", "training_steps",
                    "max_iters", "num_iterations", "total_iters", "iters", "steps")
_EPOCH_KEYS = ("epochs", "num_epochs", "max_epochs", "n_epochs", "total_epochs")
_STEPS_PER_EPOCH_KEYS = ("steps_per_epoch", "iters_per_epoch", "batches_per_epoch")
_WARMUP_FRACTION_KEYS = ("warmup_ratio", "warmup_frac", "warmup_fraction", "warmup_pct", "warmup_proportion")
_WARMUP_STEP_KEYS = ("warmup_steps", "warmup_iters", "num_warmup_steps", "warmup_updates")
_WARMUP_EPOCH_KEYS = ("warmup_epochs", "warmup_epoch")
_COOLDOWN_FRACTION_KEYS = ("decay_fraction", "decay_frac", "cooldown_fraction", "cooldown_frac",
                           "decay_ratio", "cooldown_ratio")
_COOLDOWN_STEP_KEYS = ("decay_steps", "cooldown_steps", "cooldown_iters")
_COOLDOWN_EPOCH_KEYS = ("decay_epochs", "cooldown_epochs")
_SHAPE_KEYS = ("shape", "decay_shape", "cooldown_shape")
_MIN_LR_KEYS = ("min_lr", "lr_min", "final_lr", "eta_min", "end_lr", "min_learning_rate", "final_learning_rate")
_MIN_RATIO_KEYS = ("min_lr_ratio", "final_lr_ratio", "min_lr_frac", "final_lr_frac")
_DECAY_END_KEYS = ("lr_decay_iters", "lr_decay_steps")
_MILESTONE_KEYS = ("milestones", "lr_milestones", "lr_steps", "decay_milestones")
_STEP_SIZE_KEYS = ("step_size", "lr_step_size", "decay_every", "lr_decay_every")
_GAMMA_KEYS = ("gamma", "lr_gamma", "lr_decay_rate", "lr_decay_factor")

_UNKNOWN_WARMUP = (0.0, 0.01, 0.02, 0.05, 0.1)
_UNKNOWN_COOLDOWN = (0.05, 0.1, 0.2, 0.3, 0.5)
_UNKNOWN_FLOOR = (0.0, 0.1)
_SHAPES = ("linear", "cosine", "1-sqrt")


@dataclass(frozen=True)
class ScheduleSpec:
    """What a config says the LR should do, with unknown parameters as tuples of plausible values."""

    name: str  # as written in the config
    family: str  # constant | linear | cosine | wsd | step | decay (decays, shape unknown)
    total: float | None  # run length in `unit`; None when the config does not say
    unit: str | None  # 'steps' | 'epochs'
    warmup: tuple[float, ...] = _UNKNOWN_WARMUP  # warmup as a fraction of the run
    cooldown: tuple[float, ...] = _UNKNOWN_COOLDOWN  # WSD cooldown as a fraction of the run
    shapes: tuple[str, ...] = _SHAPES  # WSD cooldown shapes
    floor: tuple[float, ...] = _UNKNOWN_FLOOR  # final lr as a fraction of the peak
    decay_end: float = 1.0  # fraction of the run where the decay reaches its floor
    milestones: tuple[float, ...] | None = None  # step schedule: fractions of the run
    gamma: tuple[float, ...] = (0.1,)  # step schedule: factor per milestone

    @property
    def description(self) -> str:
        """'cosine schedule over 100 epochs' (for messages)."""
        length = f" over {num(self.total)} {self.unit}" if self.total else ""
        return f"'{self.name}' schedule{length}"


def _lookup(flat: Mapping[str, Any], aliases: tuple[str, ...]) -> tuple[str, Any] | None:
    """The shallowest leaf whose name is one of `aliases` and whose parents are all known sections."""
    best: tuple[int, str, Any] | None = None
    for key, value in flat.items():
        parts = key.lower().split(".")
        if parts[-1] in aliases and all(part in _SECTIONS for part in parts[:-1]):
            if best is None or len(parts) < best[0]:
                best = (len(parts), key, value)
    return (best[1], best[2]) if best else None


def _number(flat: Mapping[str, Any], aliases: tuple[str, ...]) -> float | None:
    found = _lookup(flat, aliases)
    if found is None or isinstance(found[1], bool):
        return None
    try:
        value = float(found[1])
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) else None


def _family(name: str) -> str | None:
    lowered = name.lower().replace("-", "_").replace(" ", "_")
    if lowered in ("constant", "const", "none", "fixed", "flat"):
        return "constant"
    if "plateau" in lowered:
        return None  # reduce-on-plateau may legitimately never reduce
    if any(t in lowered for t in ("restart", "onecycle", "one_cycle", "poly", "exp", "sqrt", "inverse")):
        return "decay"
    if any(t in lowered for t in ("wsd", "whd", "stable", "hold", "trapez")):
        return "wsd"
    if "cos" in lowered:
        return "cosine"
    if "linear" in lowered or lowered == "lin":
        return "linear"
    if "step" in lowered:
        return "step"
    if "decay" in lowered:
        return "decay"
    return None


def _schedule_name(flat: Mapping[str, Any]) -> str | None:
    found = _lookup(flat, _SCHEDULE_KEYS)
    if found is not None and isinstance(found[1], str):
        return found[1]
    for key, value in flat.items():
        parts = key.lower().split(".")
        if len(parts) >= 2 and parts[-1] in _NAME_KEYS and parts[-2] in _SCHEDULE_KEYS and isinstance(value, str):
            return value
    found = _lookup(flat, ("decay_lr",))
    if found is not None and isinstance(found[1], bool):
        return "cosine" if found[1] else "constant"  # nanoGPT: decay_lr=True is cosine with warmup
    found = _lookup(flat, ("lr_decay",))
    if found is not None and isinstance(found[1], bool):
        return "lr_decay" if found[1] else "constant"  # it promises a decay, not its shape
    if found is not None and isinstance(found[1], str):
        return found[1]
    return None


def schedule_from_config(config: Mapping[str, Any] | None, total_steps: float | None = None) -> ScheduleSpec | None:
    """The schedule `config` asks for, or None when it names none that can be checked.

    `total_steps` (the run's planned optimizer steps, if the caller knows them) overrides the
    config's length.
    """
    if not config:
        return None
    flat = flatten_config(config)
    name = _schedule_name(flat)
    if name is None:
        return None
    family = _family(name)
    if family is None:
        return None
    epochs = _number(flat, _EPOCH_KEYS)
    steps = total_steps if total_steps is not None else _number(flat, _TOTAL_STEP_KEYS)
    per_epoch = _number(flat, _STEPS_PER_EPOCH_KEYS)
    if steps is None and epochs and per_epoch:
        steps = epochs * per_epoch
    total, unit = (steps, "steps") if steps else (epochs, "epochs") if epochs else (None, None)

    def fraction(value: float | None, of_unit: str) -> float | None:
        if value is None:
            return None
        if of_unit == unit and total:
            return value / total
        if of_unit == "epochs" and epochs:
            return value / epochs
        if of_unit == "steps" and steps:
            return value / steps
        return None

    warmup = _number(flat, _WARMUP_FRACTION_KEYS)
    if warmup is not None and warmup > 1:
        warmup /= 100  # written as a percentage
    if warmup is None:
        warmup = fraction(_number(flat, _WARMUP_STEP_KEYS), "steps")
    if warmup is None:
        warmup = fraction(_number(flat, _WARMUP_EPOCH_KEYS), "epochs")
    if warmup is None:
        bare = _number(flat, ("warmup",))
        warmup = bare if bare is not None and bare < 1 else fraction(bare, unit or "steps")
    cooldown = _number(flat, _COOLDOWN_FRACTION_KEYS)
    if cooldown is None:
        cooldown = fraction(_number(flat, _COOLDOWN_STEP_KEYS), "steps")
    if cooldown is None:
        cooldown = fraction(_number(flat, _COOLDOWN_EPOCH_KEYS), "epochs")
    shape = _lookup(flat, _SHAPE_KEYS)
    shapes = (shape[1],) if shape and shape[1] in _SHAPES else _SHAPES
    floor = _number(flat, _MIN_RATIO_KEYS)
    peak, minimum = _number(flat, _LR_KEYS), _number(flat, _MIN_LR_KEYS)
    if floor is None and minimum is not None and peak:
        floor = minimum / peak
    decay_end = fraction(_number(flat, _DECAY_END_KEYS), "steps")
    milestones = None
    gamma = _number(flat, _GAMMA_KEYS)
    if family == "step":
        found = _lookup(flat, _MILESTONE_KEYS)
        raw = list(found[1]) if found and isinstance(found[1], (list, tuple)) else None
        size = _number(flat, _STEP_SIZE_KEYS)
        if raw is None and size and total:
            raw = list(np.arange(size, total, size))
        if raw:
            # milestones are written in epochs when the config has epochs and they fit in them
            base = epochs if epochs and max(raw) <= epochs else total
            milestones = tuple(float(m) / base for m in raw) if base else None
        if milestones is None:
            family = "decay"
    return ScheduleSpec(
        name=name, family=family, total=total, unit=unit,
        warmup=(min(max(warmup, 0.0), 0.9),) if warmup is not None else _UNKNOWN_WARMUP,
        cooldown=(min(max(cooldown, 1e-6), 1.0),) if cooldown is not None else _UNKNOWN_COOLDOWN,
        shapes=shapes,
        floor=(min(max(floor, 0.0), 1.0),) if floor is not None else _UNKNOWN_FLOOR,
        decay_end=min(max(decay_end, 1e-6), 1.0) if decay_end is not None else 1.0,
        milestones=milestones,
        gamma=(gamma,) if gamma is not None and 0 < gamma < 1 else (0.1, 0.2, 0.5),
    )


def _shape(name: str, q: np.ndarray) -> np.ndarray:
    """Share of the peak-to-floor gap left after fraction `q` of the decay."""
    if name == "linear":
        return 1 - q
    if name == "cosine":
        return 0.5 * (1 + np.cos(np.pi * q))
    return 1 - np.sqrt(q)


def _curve(spec: ScheduleSpec, p: np.ndarray, warmup: float, cooldown: float, shape: str,
           floor: float, gamma: float) -> np.ndarray:
    """Expected lr / running peak at progress `p` for one choice of the unknown parameters."""
    family = spec.family
    if family == "constant":
        return np.ones_like(p)
    if family == "step":
        passed = (p[:, None] >= np.asarray(spec.milestones)[None, :]).sum(axis=1)
        return gamma ** passed
    if family == "wsd":
        start = 1 - cooldown
        q = np.clip((p - start) / cooldown, 0, 1)
        return np.where(p < start, 1.0, floor + (1 - floor) * _shape(shape, q))
    q = np.clip((p - warmup) / max(spec.decay_end - warmup, 1e-9), 0, 1)
    value = floor + (1 - floor) * _shape("cosine" if family == "cosine" else "linear", q)
    return np.where(p < warmup, 1.0, value)


def expected_lr_band(spec: ScheduleSpec, progress: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Lowest and highest expected lr / running peak at each `progress` (fraction of the run).

    Only meaningful for families with a known shape (not 'decay').
    """
    progress = np.asarray(progress, dtype=float)
    grids = itertools.product(spec.warmup, spec.cooldown if spec.family == "wsd" else (1.0,),
                              spec.shapes if spec.family == "wsd" else ("-",), spec.floor, spec.gamma)
    curves = np.stack([_curve(spec, progress, *combo) for combo in grids])
    return curves.min(axis=0), curves.max(axis=0)


def _percent_band(low: float, high: float) -> str:
    return f"{low:.0%}" if abs(high - low) < 0.01 else f"{low:.0%}-{high:.0%}"


class ScheduleMismatchDetector(Detector):
    """The logged lr against the configured schedule (rules in the module doc)."""

    tolerance = 0.25  # allowed gap between lr/peak and the expected band
    min_points = 3  # consecutive points outside the band
    min_span = 0.01  # ... covering at least this share of the run
    _capacity = 2048  # lr points kept for checks that must wait for the end of the run
    _block = 16  # live points are judged 16 at a time

    def __init__(self, key: str, options: DetectorOptions, spec: ScheduleSpec) -> None:
        super().__init__(key, options)
        self.spec = spec
        self._peak = 0.0
        self._streak: list[tuple[float, float, float, float, float]] = []  # (step, p, r, lo, hi)
        self._kept_steps: list[float] = []
        self._kept_values: list[float] = []
        self._stride = 1
        self._offered = 0
        self._last: tuple[float, float] | None = None
        self._count = 0
        self._live = spec.unit == "steps" and spec.family != "decay"
        self._block_steps: list[float] = []
        self._block_values: list[float] = []

    def update(self, steps: np.ndarray, values: np.ndarray) -> list[Alert]:
        if self.done:
            return []
        keep = np.isfinite(values)
        steps, values = steps[keep], values[keep]
        if values.size == 0:
            return []
        self._count += values.size
        self._last = (float(steps[-1]), float(values[-1]))
        if not self._live:
            self._keep(steps, values)
            return []
        # the expected band costs the same for 1 point as for 16: judge in blocks
        self._block_steps.extend(steps.tolist())
        self._block_values.extend(values.tolist())
        if len(self._block_steps) < self._block:
            return []
        return self._flush_block()

    def _flush_block(self) -> list[Alert]:
        steps, values = np.asarray(self._block_steps), np.asarray(self._block_values)
        self._block_steps, self._block_values = [], []
        return self._check(steps, values) if values.size else []

    def _keep(self, steps: np.ndarray, values: np.ndarray) -> None:
        """Thinned copy of the lr history (every stride-th point) for the end-of-run check."""
        offset = (-self._offered) % self._stride
        self._kept_steps.extend(steps[offset::self._stride].tolist())
        self._kept_values.extend(values[offset::self._stride].tolist())
        self._offered += values.size
        while len(self._kept_steps) > self._capacity:
            self._kept_steps = self._kept_steps[::2]
            self._kept_values = self._kept_values[::2]
            self._stride *= 2

    def _check(self, steps: np.ndarray, values: np.ndarray) -> list[Alert]:
        spec = self.spec
        peaks = np.maximum.accumulate(np.concatenate([[self._peak], values]))[1:]
        self._peak = float(peaks[-1])
        progress = steps / spec.total
        low, high = expected_lr_band(spec, progress)
        with np.errstate(divide="ignore", invalid="ignore"):
            ratio = values / peaks
        usable = (peaks > 0) & (progress <= 1.0)
        off = usable & ((ratio > high + self.tolerance) | (ratio < low - self.tolerance))
        for i in range(values.size):
            if not usable[i]:
                continue  # beyond the schedule's end, or no peak yet: neither breaks nor extends
            if not off[i]:
                self._streak = []
                continue
            self._streak.append((float(steps[i]), float(progress[i]), float(ratio[i]), float(low[i]), float(high[i])))
            first, last = self._streak[0], self._streak[-1]
            if len(self._streak) >= self.min_points and last[1] - first[1] >= self.min_span:
                self.done = True
                return [self._alert(first, last, float(peaks[i]))]
        return []

    def _alert(self, first: tuple, last: tuple, peak: float) -> Alert:
        step, p, r, low, high = last
        spec = self.spec
        never = " (it has not decreased)" if r >= 0.99 and high < 0.99 else ""
        message = (f"{self.key} does not follow the configured {spec.description}: at step "
                   f"{format_step(step)} ({p:.0%} of the run) it is {r:.0%} of its peak {num(peak)}{never}, "
                   f"where the schedule gives {_percent_band(low, high)}; off since step {format_step(first[0])}")
        return Alert(AlertKind.SCHEDULE_MISMATCH, self.key, first[0], Severity.WARNING, message, r * peak)

    def finish(self, complete: bool = True) -> list[Alert]:
        if self.done or self._last is None:
            return []
        if self._live:
            alerts = self._flush_block()
            self.done = True
            return alerts
        self.done = True
        spec = self.spec
        steps, values = np.asarray(self._kept_steps), np.asarray(self._kept_values)
        if (spec.unit == "epochs" and spec.family != "decay"
                and steps.max() <= spec.total * 1.05 + 1):
            return self._check(steps, values)  # the logged steps were epochs after all
        # The run's length in logged steps is unknown: only a promise to decay can be checked, and
        # only over a whole run (a run killed in its first tenth has not decayed yet, rightly).
        if not complete:
            return []
        peak = float(np.max(values))
        step, last = self._last
        if spec.family == "constant" or self._count < 5 or peak <= 0 or last < 0.95 * peak:
            return []
        message = (f"{self.key} never decreased: {num(last)} at step {format_step(step)} is "
                   f"{last / peak:.0%} of its peak {num(peak)}, but the config asks for the decaying "
                   f"{spec.description}")
        return [Alert(AlertKind.SCHEDULE_MISMATCH, self.key, step, Severity.WARNING, message, last)]
