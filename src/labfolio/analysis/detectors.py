"""Pathology detectors: incremental state machines over one metric series (or a train/val pair).

Each detector is fed batches with ``update(steps, values) -> new alerts`` and closed with
``finish() -> alerts``. The same code runs live (batches from the run's background writer) and
post hoc (``detect_all`` replays whole series), so both give the same alerts. Every detector
holds bounded state and does O(1) amortised work per point: running statistics are refreshed
every few points from fixed-size windows, never by re-scanning the history. σ below is the
robust point-to-point noise of the recent points (``_online.robust_noise``).

What each one calls a pathology (thresholds live in ``DetectorOptions``); divergence and grad
spikes are in ``labfolio.analysis.divergence``:

- **nan**: the first NaN/Inf of a metric (critical for losses, grad norm and lr).
- **collapse** (evaluation accuracy-like metrics, from the 11th evaluation on): after rising by
  at least 5 σ, a point below the best 3-point mean of the recent window (the last 5% of points,
  10 to 100) by ``max(25% of the rise, 4 σ)``, confirmed over the next few points (4, or 2% of
  the points seen): 3/4 of them stay below half that drop and their mean below 3/4 of it. A
  later **recovery** (regaining 90% of the drop) is reported as info.
- **plateau** (evaluation metrics): a 5-point mean that has not improved by
  ``max(1 σ, 1.5% of the progress so far)`` for ≥ 20 evaluations, the last improvement sitting
  in the first half of the run so far (a run that converged late is not on a plateau).
- **overfitting** (train/val pairs): means over w = n/10 evaluations: the validation metric
  worsened from its best mean by ``max(3.5 σ·√(2/w), 5% of its total improvement)``, steadily
  (Kendall τ ≥ 0.3 after the best), while the training metric did not, so the gap grew.
- **representation_collapse**: effective rank below 10% of the width (or, without a width, 15% of
  its own peak) on two consecutive evaluations.
- **stream_collapse** (mHC): stream similarity (5-point mean) above 0.4 and ≥ 0.15 above its
  lowest point, on three consecutive points.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from labfolio.analysis._online import RingBuffer, robust_noise
from labfolio.analysis.alerts import Alert, AlertKind, Severity, format_number as num, format_step

__all__ = [
    "DetectorOptions",
    "Detector",
    "Noise",
    "finite_points",
    "NanDetector",
    "CollapseDetector",
    "PlateauDetector",
    "OverfittingDetector",
    "RepresentationCollapseDetector",
    "StreamCollapseDetector",
]


@dataclass(frozen=True)
class DetectorOptions:
    """Thresholds of the detectors (defaults are what the module doc describes)."""

    refresh_every: int = 8  # recompute running medians/noise every this many points
    # divergence of a loss
    loss_window: int = 64  # points in the running median (and noise estimate) of a loss
    loss_min_history: int = 10  # points needed before an evaluation loss can diverge
    step_loss_min_history: int = 50  # ... a per-step (training) loss, whose first steps are wild
    loss_sigmas: float = 6.0  # jump needed, in robust noise σ
    loss_relative_jump: float = 0.2  # jump needed, as a fraction of the running median
    stay_min_points: int = 5  # "stays up" is judged over P points: at least this many
    step_stay_min_points: int = 20  # ... for a per-step (training) loss
    step_stay_history_fraction: float = 0.5  # ... which also waits longer relative to its history
    stay_history_fraction: float = 0.2  # P as a fraction of the points seen before the jump
    stay_max_points: int = 100  # and at most this many
    stay_fraction: float = 0.8  # share of the P points (and of their last quarter) that stay up
    # grad-norm explosion
    grad_window: int = 64  # points in the grad-norm running median
    grad_min_history: int = 10  # points needed before a spike can be called
    grad_spike_factor: float = 10.0  # a spike: above this multiple of the running median
    grad_stay_factor: float = 3.0  # divergence: staying above this multiple ...
    grad_stay_fraction: float = 0.5  # ... for this share of the next P points
    # collapse of an accuracy-like metric
    collapse_min_points: int = 10  # evaluations needed before a drop can be judged
    collapse_rise_sigmas: float = 5.0  # the metric must first rise by this many σ
    collapse_drop_fraction: float = 0.25  # drop needed, as a fraction of the rise
    collapse_sigmas: float = 4.0  # drop needed (single point and window mean), in σ
    collapse_min_window: int = 10  # "sharp": the drop is from the max of the last W points
    collapse_max_window: int = 100  # W = 5% of the points seen, clipped to these bounds
    collapse_confirm: int = 4  # the drop point and the next 3: 3 must stay down, their mean too
    collapse_confirm_fraction: float = 0.02  # on long series: 2% of the points seen (at most 50)
    recovery_fraction: float = 0.9  # recovered: regained this share of the drop
    # plateau
    plateau_patience: int = 20  # evaluations without improvement
    plateau_stalled_fraction: float = 0.5  # last improvement within this share of the run so far
    plateau_smooth: int = 5  # improvement is judged on a mean of this many points
    plateau_min_improvement: float = 1.0  # ... and must exceed this many σ of one point
    plateau_min_progress: float = 0.015  # ... and this share of the improvement made so far
    # overfitting
    overfit_min_after: int = 5  # evaluations after the best needed to call a trend
    overfit_sigmas: float = 3.5  # worsening needed, in σ of a mean of the validation metric
    overfit_fraction_of_gain: float = 0.05  # worsening needed, as a share of its total gain
    overfit_min_tau: float = 0.3  # Kendall τ of the validation metric after its best
    # representation collapse
    eff_rank_fraction: float = 0.1  # of the width
    eff_rank_peak_fraction: float = 0.15  # of its own peak, when no width is known
    # stream collapse
    stream_high: float = 0.4  # similarity above this is high (the mHC rule's bad value)
    stream_rise: float = 0.15  # and this far above its lowest point is rising
    stream_confirm: int = 3  # consecutive points


class Detector:
    """Base: one metric key, alerts reported once, ``done`` once nothing more can be reported."""

    def __init__(self, key: str, options: DetectorOptions) -> None:
        self.key = key
        self.options = options
        self.done = False

    def update(self, steps: np.ndarray, values: np.ndarray) -> list[Alert]:
        raise NotImplementedError

    def finish(self, complete: bool = True) -> list[Alert]:
        """Alerts that need the end of the series. `complete` is False when the run stopped early
        (killed, crashed) or is still going: what needs the whole run cannot be judged then."""
        return []


class Noise:
    """Robust noise of the last `size` points, recomputed every `refresh` points."""

    def __init__(self, refresh: int, size: int = 32) -> None:
        self._ring = RingBuffer(size)
        self._refresh = refresh
        self._at = -refresh
        self._sigma = math.nan

    def append(self, step: float, value: float) -> None:
        self._ring.append(step, value)

    @property
    def sigma(self) -> float:
        if self._ring.count - self._at >= self._refresh:
            self._sigma = robust_noise(self._ring.values())
            self._at = self._ring.count
        return self._sigma


def finite_points(steps: np.ndarray, values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The points whose value is finite (NaN/Inf are the nan detector's business)."""
    keep = np.isfinite(values)
    return (steps, values) if keep.all() else (steps[keep], values[keep])


class NanDetector(Detector):
    """The first NaN/Inf in a metric."""

    def __init__(self, key: str, options: DetectorOptions, critical: bool) -> None:
        super().__init__(key, options)
        self.severity = Severity.CRITICAL if critical else Severity.WARNING
        self._last_finite: tuple[float, float] | None = None

    def update(self, steps: np.ndarray, values: np.ndarray) -> list[Alert]:
        if self.done or values.size == 0:
            return []
        bad = ~np.isfinite(values)
        if not bad.any():
            self._last_finite = (float(steps[-1]), float(values[-1]))
            return []
        first = int(np.argmax(bad))
        if first > 0:
            self._last_finite = (float(steps[first - 1]), float(values[first - 1]))
        self.done = True
        value, step = float(values[first]), float(steps[first])
        before = (f"last finite value {num(self._last_finite[1])} at step {format_step(self._last_finite[0])}"
                  if self._last_finite else "no finite value before it")
        return [Alert(AlertKind.NAN, self.key, step, self.severity,
                      f"{self.key} is {num(value)} at step {format_step(step)} ({before})", value)]


class CollapseDetector(Detector):
    """An accuracy-like metric that rose, then dropped sharply; reports a later recovery too."""

    def __init__(self, key: str, options: DetectorOptions) -> None:
        super().__init__(key, options)
        self._recent = RingBuffer(options.collapse_max_window)
        self._noise = Noise(options.refresh_every)
        self._low = math.inf
        self._seen = 0
        self._candidate: dict | None = None
        self._collapsed: dict | None = None

    def update(self, steps: np.ndarray, values: np.ndarray) -> list[Alert]:
        if self.done:
            return []
        alerts: list[Alert] = []
        steps, values = finite_points(steps, values)
        for step, x in zip(steps.tolist(), values.tolist()):
            if self._collapsed is not None:
                alerts.extend(self._track_recovery(step, x))
                if self.done:
                    break
                continue
            if self._candidate is not None:
                alerts.extend(self._confirm(step, x))
            elif self._seen >= self.options.collapse_min_points:
                self._watch(step, x)
            self._recent.append(step, x)
            self._noise.append(step, x)
            self._low = min(self._low, x)
            self._seen += 1
        return alerts

    def _watch(self, step: float, x: float) -> None:
        o = self.options
        width = int(min(max(self._seen // 20, o.collapse_min_window), o.collapse_max_window))
        recent = self._recent.values()[-width:]
        # the peak is the best 3-point mean: a single lucky evaluation is not the level it fell from
        means = np.convolve(recent, np.ones(3) / 3, mode="valid")
        peak_index = int(np.argmax(means)) + 1
        peak = float(means[peak_index - 1])
        rise = peak - self._low
        sigma = self._noise.sigma
        if not math.isfinite(sigma) or rise <= 0 or rise < o.collapse_rise_sigmas * sigma:
            return
        drop_needed = max(o.collapse_drop_fraction * rise, o.collapse_sigmas * sigma)
        if x < peak - drop_needed:
            peak_step = float(self._recent.steps()[-width:][peak_index])
            self._candidate = {"peak": peak, "peak_step": peak_step, "step": step, "value": x,
                               "needed": drop_needed, "low": self._low, "flags": [True], "values": [x],
                               "trough": x, "confirm": int(min(max(math.ceil(o.collapse_confirm_fraction * self._seen),
                                                                   o.collapse_confirm), 50))}

    def _confirm(self, step: float, x: float) -> list[Alert]:
        c = self._candidate
        assert c is not None, "_confirm needs a candidate"
        c["flags"].append(x < c["peak"] - c["needed"] / 2)
        c["values"].append(x)
        c["trough"] = min(c["trough"], x)
        if len(c["flags"]) < c["confirm"]:
            return []
        self._candidate = None
        # the mean of the window carries the evidence: one noisy low point cannot make a collapse
        if sum(c["flags"]) < 0.75 * c["confirm"] or np.mean(c["values"]) >= c["peak"] - 0.75 * c["needed"]:
            return []
        self._collapsed = c
        drop = c["peak"] - c["trough"]
        share = 100 * drop / (c["peak"] - c["low"])
        message = (f"{self.key} collapsed at step {format_step(c['step'])}: {num(c['value'])} after "
                   f"{num(c['peak'])} (best 3-point mean, around step {format_step(c['peak_step'])}); it fell "
                   f"to {num(c['trough'])} (drop {num(drop)}, {share:.0f}% of its rise from {num(c['low'])}) "
                   f"and had not recovered by step {format_step(step)} ({num(x)})")
        return [Alert(AlertKind.COLLAPSE, self.key, c["step"], Severity.WARNING, message, c["value"])]

    def _track_recovery(self, step: float, x: float) -> list[Alert]:
        c = self._collapsed
        assert c is not None, "_track_recovery needs a collapse"
        c["trough"] = min(c["trough"], x)
        if x < c["trough"] + self.options.recovery_fraction * (c["peak"] - c["trough"]):
            return []
        self.done = True
        message = (f"{self.key} recovered from its collapse at step {format_step(c['step'])}: "
                   f"{num(x)} at step {format_step(step)} (peak {num(c['peak'])}, trough {num(c['trough'])})")
        return [Alert(AlertKind.RECOVERY, self.key, step, Severity.INFO, message, x)]


class PlateauDetector(Detector):
    """No improvement over many evaluations, stalled for at least half of the run so far."""

    def __init__(self, key: str, options: DetectorOptions, direction: str) -> None:
        super().__init__(key, options)
        self._sign = 1.0 if direction == "lower" else -1.0  # work on "lower is better" values
        self._smooth = RingBuffer(options.plateau_smooth)
        self._noise = Noise(options.refresh_every)
        self._seen = 0
        self._best = math.inf
        self._first = math.nan
        self._best_index = 0
        self._best_step = math.nan

    def update(self, steps: np.ndarray, values: np.ndarray) -> list[Alert]:
        if self.done:
            return []
        o = self.options
        steps, values = finite_points(steps, values)
        for step, x in zip(steps.tolist(), values.tolist()):
            self._smooth.append(step, self._sign * x)
            self._noise.append(step, x)
            smoothed = float(np.mean(self._smooth.values()))
            sigma = self._noise.sigma
            if self._seen == 0:
                self._first = smoothed
            # an improvement must beat the noise of one point and a small share of the progress
            # made so far; otherwise the lag of the mean at the knee of a curve, plus noise, keeps
            # setting tiny new records on a flat stretch
            gained = self._first - self._best if math.isfinite(self._best) else 0.0
            min_delta = max(o.plateau_min_improvement * sigma if math.isfinite(sigma) else 0.0,
                            o.plateau_min_progress * max(gained, 0.0))
            if smoothed < self._best - min_delta:
                self._best, self._best_index, self._best_step = smoothed, self._seen, step
            self._seen += 1
            stalled = self._seen - 1 - self._best_index
            if stalled >= o.plateau_patience and self._best_index <= o.plateau_stalled_fraction * self._seen:
                self.done = True
                best = self._sign * self._best
                share = 100 * self._best_index / self._seen
                message = (f"{self.key} has not improved for {stalled} evaluations: best "
                           f"{num(best)} ({o.plateau_smooth}-point mean) at step {format_step(self._best_step)}, "
                           f"now {num(x)} at step {format_step(step)}; the last improvement came "
                           f"{share:.0f}% into the run so far")
                return [Alert(AlertKind.PLATEAU, self.key, self._best_step, Severity.INFO, message, best)]
        return []


class OverfittingDetector(Detector):
    """Validation worsening while training improves: the train/val gap grows."""

    _capacity = 512  # paired evaluations kept; halved (every other one) when full

    def __init__(self, val_key: str, train_keys: tuple[str, ...], options: DetectorOptions, direction: str) -> None:
        super().__init__(val_key, options)
        self.train_keys = train_keys  # names the training metric may be logged under, in preference
        self.train_key: str | None = None
        self._sign = 1.0 if direction == "lower" else -1.0
        self._train = RingBuffer(256)
        self._pending: list[tuple[float, float]] = []
        self._pairs: list[tuple[float, float, float]] = []  # (step, val, train), "lower is better"
        self._first_train: tuple[float, float] | None = None  # the first training point ever seen
        self._since_check = 0

    def update_train(self, key: str, steps: np.ndarray, values: np.ndarray) -> list[Alert]:
        if self.done:
            return []
        if self.train_key is None:
            self.train_key = key
        if key != self.train_key:
            return []
        steps, values = finite_points(steps, values)
        if steps.size and self._first_train is None:
            self._first_train = (float(steps[0]), float(values[0]))
        alerts: list[Alert] = []
        # Pair each waiting evaluation the moment the training stream passes its step, so it
        # gets exactly the training points logged up to it, whatever the batch boundaries.
        i = 0
        while self._pending and i < steps.size and not self.done:
            step = self._pending[0][0]
            passed = i + int(np.searchsorted(steps[i:], step, side="right"))
            if passed >= steps.size:
                break
            self._train.extend(steps[i:passed], values[i:passed])
            i = passed
            alerts.extend(self._pair(*self._pending.pop(0)))
        self._train.extend(steps[i:], values[i:])
        return alerts

    def update(self, steps: np.ndarray, values: np.ndarray) -> list[Alert]:
        if self.done:
            return []
        steps, values = finite_points(steps, values)
        alerts: list[Alert] = []
        for step, value in zip(steps.tolist(), values.tolist()):
            if self.done:
                break
            if self._train.count and self._train.last_step >= step and not self._pending:
                alerts.extend(self._pair(step, value))  # training already logged past this step
            else:
                self._pending.append((step, value))  # wait for the training stream to pass it
                if len(self._pending) > 1024:  # training stopped logging: pair with what there is
                    alerts.extend(self._pair(*self._pending.pop(0)))
        return alerts

    def finish(self, complete: bool = True) -> list[Alert]:
        alerts: list[Alert] = []
        while self._pending and not self.done:
            alerts.extend(self._pair(*self._pending.pop(0)))
        return alerts

    def _pair(self, step: float, value: float) -> list[Alert]:
        train_steps, train_values = self._train.steps(), self._train.values()
        before = train_values[train_steps <= step][-8:]
        if before.size == 0 and self._first_train is not None and step < self._first_train[0]:
            before = np.array([self._first_train[1]])  # evaluated before training logged anything
        elif before.size == 0:
            # its training points were pushed out of the window (they came in one late batch):
            # the earliest ones kept are the nearest there are
            before = train_values[:8]
        if before.size == 0:
            return []
        self._pairs.append((step, self._sign * value, self._sign * float(np.median(before))))
        if len(self._pairs) > self._capacity:
            self._pairs = self._pairs[::2]
        self._since_check += 1
        # checking costs O(pairs); doing it every 1/32 of the pairs keeps it O(1) per point
        if self._since_check >= max(1, len(self._pairs) // 32):
            self._since_check = 0
            return self._check()
        return []

    def _check(self) -> list[Alert]:
        o = self.options
        pairs = np.asarray(self._pairs)
        n = pairs.shape[0]
        if n < 2 * o.overfit_min_after:
            return []
        steps, val, train = pairs[:, 0], pairs[:, 1], pairs[:, 2]
        # Means over w evaluations: their noise is σ/√w, so a mild, steady worsening shows even
        # when single evaluations are noisy.
        w = max(3, n // 10)
        val_means, train_means = _rolling_mean(val, w), _rolling_mean(train, w)
        best = int(np.argmin(val_means))
        after = n - (best + w)
        if after < max(o.overfit_min_after, 0.15 * n):
            return []
        sigma = robust_noise(val)
        noise = o.overfit_sigmas * sigma * math.sqrt(2 / w) if math.isfinite(sigma) else 0.0
        gain = val_means[0] - val_means[best]
        needed = max(noise, o.overfit_fraction_of_gain * gain)
        worse = val_means[-1] - val_means[best]
        if gain <= 0 or worse <= 0 or worse < needed:
            return []
        from scipy.stats import kendalltau  # imported here: it is slow to import and rarely needed

        tau = kendalltau(np.arange(val_means.size - best), val_means[best:]).statistic
        if not tau >= o.overfit_min_tau:
            return []
        if train_means[-1] > train_means[best] + needed / 2:
            return []  # training got worse too: that is not overfitting
        gap_then, gap_now = val_means[best] - train_means[best], val_means[-1] - train_means[-1]
        if gap_now - gap_then < needed / 2:
            return []
        self.done = True
        s = self._sign
        best_step = float(steps[best + w // 2])
        message = (f"{self.key} got worse from its best {num(s * val_means[best])} around step "
                   f"{format_step(best_step)} to {num(s * val_means[-1])} by step {format_step(steps[-1])} "
                   f"({w}-evaluation means; Kendall τ {tau:.2f}) while {self.train_key} went "
                   f"{num(s * train_means[best])} -> {num(s * train_means[-1])}; the gap grew "
                   f"{num(gap_then)} -> {num(gap_now)}")
        return [Alert(AlertKind.OVERFITTING, self.key, best_step, Severity.INFO, message, float(s * val_means[-1]))]


def _rolling_mean(values: np.ndarray, width: int) -> np.ndarray:
    """Mean of each run of `width` consecutive values (len - width + 1 of them)."""
    cumulative = np.concatenate([[0.0], np.cumsum(values)])
    return (cumulative[width:] - cumulative[:-width]) / width


class RepresentationCollapseDetector(Detector):
    """Effective rank below a fraction of the width (or of its own peak) twice in a row."""

    def __init__(self, key: str, options: DetectorOptions, dim: float | None) -> None:
        super().__init__(key, options)
        self.dim = dim
        self._peak = -math.inf
        self._below: tuple[float, float] | None = None  # first point of the current run below

    def update(self, steps: np.ndarray, values: np.ndarray) -> list[Alert]:
        if self.done:
            return []
        o = self.options
        steps, values = finite_points(steps, values)
        for step, x in zip(steps.tolist(), values.tolist()):
            if self.dim:
                limit, reference = o.eff_rank_fraction * self.dim, f"the width {num(self.dim)}"
                fraction = o.eff_rank_fraction
            else:
                limit, reference = o.eff_rank_peak_fraction * self._peak, f"its peak {num(self._peak)}"
                fraction = o.eff_rank_peak_fraction
            self._peak = max(self._peak, x)
            if not x < limit:
                self._below = None
                continue
            if self._below is None:
                self._below = (step, x)
                continue
            self.done = True
            share = 100 * x / (limit / fraction)
            first_step, first_value = self._below
            message = (f"{self.key} = {num(x)} at step {format_step(step)} is {share:.1f}% of {reference} "
                       f"(below {fraction:.0%} since step {format_step(first_step)}, where it was "
                       f"{num(first_value)}): the representation uses few directions")
            return [Alert(AlertKind.REPRESENTATION_COLLAPSE, self.key, first_step, Severity.WARNING, message, x)]
        return []


class StreamCollapseDetector(Detector):
    """mHC stream similarity that is high and rising."""

    def __init__(self, key: str, options: DetectorOptions) -> None:
        super().__init__(key, options)
        self._smooth = RingBuffer(5)
        self._low = math.inf
        self._low_step = math.nan
        self._streak: list[tuple[float, float]] = []

    def update(self, steps: np.ndarray, values: np.ndarray) -> list[Alert]:
        if self.done:
            return []
        o = self.options
        steps, values = finite_points(steps, values)
        for step, x in zip(steps.tolist(), values.tolist()):
            self._smooth.append(step, x)
            smoothed = float(np.mean(self._smooth.values()))
            if len(self._smooth) == self._smooth.size and smoothed < self._low:
                self._low, self._low_step = smoothed, step
            if smoothed > o.stream_high and smoothed - self._low >= o.stream_rise:
                self._streak.append((step, smoothed))
            else:
                self._streak = []
            if len(self._streak) >= o.stream_confirm:
                self.done = True
                first_step, first = self._streak[0]
                message = (f"{self.key} rose from {num(self._low)} (step {format_step(self._low_step)}) "
                           f"to {num(smoothed)} at step {format_step(step)}, above {num(o.stream_high)} "
                           f"since step {format_step(first_step)} (5-point mean): the mHC streams are "
                           "becoming copies of each other")
                return [Alert(AlertKind.STREAM_COLLAPSE, self.key, first_step, Severity.WARNING, message, smoothed)]
        return []
