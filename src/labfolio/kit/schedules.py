"""Learning-rate schedules as pure functions of the step.

Every schedule is a small frozen dataclass: ``schedule(step) -> float``. Nothing is stateful, so the
value at a step never depends on which steps were asked before, a resumed run gets the same curve,
and the analysis side can recompute the expected LR from the config and compare it with the logged one.

Step convention (shared by all schedules, ``total_steps`` = number of optimizer steps):

- warmup covers steps ``0 .. warmup_steps-1`` and reaches the peak ``lr`` on step ``warmup_steps-1``
  (``lr * (step+1) / warmup_steps``), so step 0 never wastes an update at LR 0;
- the decay ends on the last step: ``schedule(total_steps - 1) == final_lr`` exactly, and any later
  step stays at ``final_lr``. A decaying schedule that never reaches its floor is the bug this module
  exists to rule out (a warmup-hold-decay schedule whose LR rose linearly and never decreased).

``make_schedule(name, **params)`` builds one from config names: constant, linear, cosine,
cosine_warmup, wsd.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
from dataclasses import dataclass
from typing import Any, Protocol

__all__ = [
    "Schedule",
    "Constant",
    "Linear",
    "Cosine",
    "CosineWarmup",
    "WarmupStableDecay",
    "DECAY_SHAPES",
    "SCHEDULES",
    "make_schedule",
    "schedule_param_names",
]

DECAY_SHAPES = ("linear", "cosine", "1-sqrt")


class Schedule(Protocol):
    """Anything that maps an optimizer step to a learning rate."""

    def __call__(self, step: int) -> float: ...


def _check_step(step: int) -> int:
    if isinstance(step, bool) or not hasattr(step, "__index__"):
        # numpy/torch integers are fine; floats are not (a fractional step is always a caller bug)
        raise TypeError(f"step must be an int, got {type(step).__name__} {step!r}")
    step = step.__index__()
    if step < 0:
        raise ValueError(f"step must be >= 0, got {step}")
    return step


def _check_lr(name: str, value: float) -> None:
    if not (isinstance(value, (int, float)) and math.isfinite(value) and value >= 0):
        raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")


def _check_steps(name: str, value: int, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}, got {value!r}")


def _check_floor(lr: float, final_lr: float) -> None:
    _check_lr("lr", lr)
    _check_lr("final_lr", final_lr)
    if final_lr > lr:
        raise ValueError(
            f"final_lr ({final_lr}) is above the peak lr ({lr}): the schedule would rise instead of "
            "decay; set final_lr <= lr"
        )


def _shape_factor(shape: str, progress: float) -> float:
    """Fraction of the (peak - floor) gap still left after `progress` in [0, 1] of the decay."""
    if shape == "linear":
        return 1.0 - progress
    if shape == "cosine":
        return 0.5 * (1.0 + math.cos(math.pi * progress))
    if shape == "1-sqrt":
        # Hägele et al. 2024: the cooldown shape that matched cosine in their experiments
        return 1.0 - math.sqrt(progress)
    raise ValueError(f"unknown decay shape {shape!r}; choose one of {', '.join(DECAY_SHAPES)}")


def _warmup_value(lr: float, warmup_steps: int, step: int) -> float:
    return lr * (step + 1) / warmup_steps


def _decay_value(lr: float, final_lr: float, shape: str, step: int, last_peak: int, end: int) -> float:
    """Decay from `lr` at step `last_peak` to `final_lr` at step `end` (inclusive)."""
    span = max(end - last_peak, 1)
    progress = min(max((step - last_peak) / span, 0.0), 1.0)
    if progress >= 1.0:
        return final_lr  # exact floor, no rounding residue from the shape function
    return final_lr + (lr - final_lr) * _shape_factor(shape, progress)


@dataclass(frozen=True)
class Constant:
    """The same LR on every step."""

    lr: float  # learning rate for every step

    def __post_init__(self) -> None:
        _check_lr("lr", self.lr)

    def __call__(self, step: int) -> float:
        _check_step(step)
        return float(self.lr)


@dataclass(frozen=True)
class Linear:
    """Optional linear warmup, then a straight line from `lr` down to `final_lr` on the last step."""

    lr: float  # peak learning rate
    total_steps: int  # optimizer steps in the run; the floor is reached on step total_steps - 1
    final_lr: float = 0.0  # floor the LR decays to and stays at
    warmup_steps: int = 0  # linear warmup steps before the decay (0 = start at the peak)

    def __post_init__(self) -> None:
        _check_floor(self.lr, self.final_lr)
        _check_steps("total_steps", self.total_steps, 1)
        _check_steps("warmup_steps", self.warmup_steps, 0)
        if self.warmup_steps >= self.total_steps:
            raise ValueError(
                f"warmup_steps ({self.warmup_steps}) must be < total_steps ({self.total_steps}) "
                "or the LR never decays"
            )

    def __call__(self, step: int) -> float:
        step = _check_step(step)
        if step < self.warmup_steps:
            return _warmup_value(self.lr, self.warmup_steps, step)
        last_peak = max(self.warmup_steps - 1, 0)
        return _decay_value(self.lr, self.final_lr, "linear", step, last_peak, self.total_steps - 1)


@dataclass(frozen=True)
class Cosine:
    """Half-cosine from `lr` on step 0 down to `final_lr` on the last step."""

    lr: float  # peak learning rate (step 0)
    total_steps: int  # optimizer steps in the run; the floor is reached on step total_steps - 1
    final_lr: float = 0.0  # floor the LR decays to and stays at

    def __post_init__(self) -> None:
        _check_floor(self.lr, self.final_lr)
        _check_steps("total_steps", self.total_steps, 1)

    def __call__(self, step: int) -> float:
        step = _check_step(step)
        return _decay_value(self.lr, self.final_lr, "cosine", step, 0, self.total_steps - 1)


@dataclass(frozen=True)
class CosineWarmup:
    """Linear warmup to `lr`, then a half-cosine down to `final_lr` on the last step."""

    lr: float  # peak learning rate, reached on step warmup_steps - 1
    total_steps: int  # optimizer steps in the run; the floor is reached on step total_steps - 1
    warmup_steps: int  # linear warmup steps (>= 1; use "cosine" for no warmup)
    final_lr: float = 0.0  # floor the LR decays to and stays at

    def __post_init__(self) -> None:
        _check_floor(self.lr, self.final_lr)
        _check_steps("total_steps", self.total_steps, 1)
        _check_steps("warmup_steps", self.warmup_steps, 1)
        if self.warmup_steps >= self.total_steps:
            raise ValueError(
                f"warmup_steps ({self.warmup_steps}) must be < total_steps ({self.total_steps}) "
                "or the LR never decays"
            )

    def __call__(self, step: int) -> float:
        step = _check_step(step)
        if step < self.warmup_steps:
            return _warmup_value(self.lr, self.warmup_steps, step)
        return _decay_value(
            self.lr, self.final_lr, "cosine", step, self.warmup_steps - 1, self.total_steps - 1
        )


@dataclass(frozen=True)
class WarmupStableDecay:
    """Warmup, hold at the peak, then a cooldown over the last `decay_steps` steps (WSD).

    The decay window is the last ``decay_steps`` optimizer steps, each strictly below the peak; the
    last one sits exactly on ``final_lr``. ``decay_steps`` defaults to ``decay_fraction`` of the run
    (Hägele et al. 2024 found ~20% of the run with a 1-sqrt cooldown to match cosine).
    """

    lr: float  # peak learning rate held between warmup and cooldown
    total_steps: int  # optimizer steps in the run; the floor is reached on step total_steps - 1
    warmup_steps: int = 0  # linear warmup steps (0 = start at the peak)
    decay_fraction: float = 0.2  # cooldown length as a fraction of total_steps (if decay_steps unset)
    decay_steps: int | None = None  # cooldown length in steps; overrides decay_fraction when set
    final_lr: float = 0.0  # floor the cooldown ends on
    shape: str = "1-sqrt"  # cooldown shape: linear | cosine | 1-sqrt

    def __post_init__(self) -> None:
        _check_floor(self.lr, self.final_lr)
        _check_steps("total_steps", self.total_steps, 1)
        _check_steps("warmup_steps", self.warmup_steps, 0)
        if self.shape not in DECAY_SHAPES:
            hint = difflib.get_close_matches(str(self.shape), DECAY_SHAPES, n=1)
            raise ValueError(
                f"unknown decay shape {self.shape!r}"
                + (f" (did you mean {hint[0]!r}?)" if hint else "")
                + f"; choose one of {', '.join(DECAY_SHAPES)}"
            )
        if self.decay_steps is None:
            if not (isinstance(self.decay_fraction, (int, float)) and 0 < self.decay_fraction <= 1):
                raise ValueError(f"decay_fraction must be in (0, 1], got {self.decay_fraction!r}")
        else:
            _check_steps("decay_steps", self.decay_steps, 1)
        decay = self.resolved_decay_steps
        if self.warmup_steps + decay > self.total_steps:
            raise ValueError(
                f"warmup_steps ({self.warmup_steps}) + decay_steps ({decay}) exceed total_steps "
                f"({self.total_steps}); shorten the warmup or the cooldown"
            )

    @property
    def resolved_decay_steps(self) -> int:
        """Cooldown length in steps (at least 1, so the schedule always ends on its floor)."""
        if self.decay_steps is not None:
            return self.decay_steps
        return max(1, round(self.decay_fraction * self.total_steps))

    @property
    def decay_start(self) -> int:
        """First step of the cooldown."""
        return self.total_steps - self.resolved_decay_steps

    def __call__(self, step: int) -> float:
        step = _check_step(step)
        if step < self.warmup_steps:
            return _warmup_value(self.lr, self.warmup_steps, step)
        if step < self.decay_start:
            return float(self.lr)
        return _decay_value(
            self.lr, self.final_lr, self.shape, step, self.decay_start - 1, self.total_steps - 1
        )


SCHEDULES: dict[str, type] = {
    "constant": Constant,
    "linear": Linear,
    "cosine": Cosine,
    "cosine_warmup": CosineWarmup,
    "wsd": WarmupStableDecay,
}


def schedule_param_names(name: str) -> tuple[str, ...]:
    """The parameter names the schedule `name` accepts (for filtering a wider config)."""
    return tuple(f.name for f in dataclasses.fields(_schedule_class(name)))


def _schedule_class(name: str) -> type:
    if name in SCHEDULES:
        return SCHEDULES[name]
    hint = difflib.get_close_matches(str(name), SCHEDULES, n=1)
    raise ValueError(
        f"unknown LR schedule {name!r}"
        + (f" (did you mean {hint[0]!r}?)" if hint else "")
        + f"; choose one of {', '.join(SCHEDULES)}"
    )


def make_schedule(name: str, **params: Any) -> Schedule:
    """Build the schedule called `name` from keyword parameters, rejecting unknown ones.

    >>> make_schedule("wsd", lr=1e-3, total_steps=1000, warmup_steps=100, shape="1-sqrt")(999)
    0.0
    """
    cls = _schedule_class(name)
    fields = dataclasses.fields(cls)
    accepted = [f.name for f in fields]
    for key in params:
        if key not in accepted:
            hint = difflib.get_close_matches(key, accepted, n=1)
            raise ValueError(
                f"schedule {name!r} has no parameter {key!r}"
                + (f" (did you mean {hint[0]!r}?)" if hint else "")
                + f"; it accepts {', '.join(accepted)}"
            )
    required = [
        f.name
        for f in fields
        if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
    ]
    missing = [key for key in required if key not in params]
    if missing:
        raise ValueError(f"schedule {name!r} needs {', '.join(missing)}")
    return cls(**params)
