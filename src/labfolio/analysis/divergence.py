"""Divergence: a loss that jumps and stays up, a grad norm that explodes.

Both detectors scan for a jump above a running reference (vectorised over each batch), then follow
the jump for P points to see whether it stays up:

- **loss**: a point above its recent level (the lower of the median of the last 64 points and the
  lowest of the last 5, which keeps up with a loss still falling fast) by
  ``max(6 σ, 20% of that level)``; a **divergence** when ≥ 80% of the P points, and of their last
  quarter, stay above the unbiased level (median) plus half that margin. P is 20% of the points
  seen so far (5 to 100) for evaluation losses; training losses, whose first steps hold warmup
  bumps and catapults, wait for 50 points of history and use 50% (20 to 100).
- **grad norm**: a point above 10x the median of the last 64 points is reported at once as a
  **grad_spike** (the study saw about 947 after values under 7); a **divergence** when ≥ 50% of
  the next P points stay above 3x that median.

For a loss, a verdict is postponed (P doubles, up to 400) while the followed points are still
climbing or already on their way back down, so a catapult or a long spike that recovers is not
called a divergence, and a ramp is judged once it has levelled off. A grad norm that comes down
from its spike but stays above 3x its old median has still diverged.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from labfolio.analysis._online import RingBuffer, fast_median, robust_noise
from labfolio.analysis.alerts import Alert, AlertKind, Severity, format_number as num, format_step
from labfolio.analysis.detectors import Detector, DetectorOptions, finite_points

__all__ = ["LossDivergenceDetector", "GradNormDetector"]


@dataclass
class _Candidate:
    """A suspicious point being followed to see whether the metric stays there."""

    step: float
    value: float
    reference: float  # running reference frozen at the jump
    margin: float  # how far above the reference counted as a jump
    stay_level: float  # staying above this counts as "stayed up"
    sigma: float
    need: int  # points to follow (the jump included)
    flags: list[bool] = field(default_factory=list)  # stayed up?
    steps: list[float] = field(default_factory=list)
    values: list[float] = field(default_factory=list)


def _settling(candidate: _Candidate) -> tuple[bool, bool]:
    """(coming_down, still_rising) for the followed points, from means over quarters of them.

    Coming down: the last quarter's excess over the reference is under 3/4 of the highest
    quarter's (a catapult or a long spike on its way back). Still rising: the last quarter is
    within 10% of the highest and 25% above the first (the event is still developing).
    """
    excess = np.asarray(candidate.values) - candidate.reference
    quarter = max(1, excess.size // 4)
    cumulative = np.concatenate([[0.0], np.cumsum(excess)])
    means = (cumulative[quarter:] - cumulative[:-quarter]) / quarter
    top, first, last = float(means.max()), float(means[0]), float(means[-1])
    if top <= 0:
        return False, False
    return last < 0.75 * top, last >= 0.9 * top and last > 1.25 * first


class _JumpDetector(Detector):
    """Shared skeleton of the loss and grad-norm detectors: a vectorised scan for a jump above a
    running reference, then following the jump for P points to see whether it stays up."""

    window = 32
    min_history = 10

    def __init__(self, key: str, options: DetectorOptions) -> None:
        super().__init__(key, options)
        self._recent = RingBuffer(self.window)
        self._seen = 0
        self._stats_at = -math.inf
        self._reference = self._margin = self._sigma = self._stay_level = math.nan
        self._candidate: _Candidate | None = None

    # subclasses define: _threshold() -> (reference, margin, sigma); _stays(values, c) -> bool array;
    # _on_jump(c) -> alerts; _decide(c, final) -> alerts or None (None: not a divergence)

    def _accept(self, steps: np.ndarray, values: np.ndarray) -> None:
        self._recent.extend(steps, values)
        self._seen += values.size

    def _period(self) -> int:
        """Points between refreshes: every 8 early on, every 1% of the history later (at most 32);
        late in a run the reference moves slowly, so this keeps the cost per point small."""
        every = self.options.refresh_every
        return min(max(every, self._seen // 100), 4 * every)

    def _stats(self) -> tuple[float, float, float]:
        if self._seen - self._stats_at >= self._period():
            self._reference, self._margin, self._sigma, self._stay_level = self._threshold(self._recent.values())
            self._stats_at = self._seen
        return self._reference, self._margin, self._sigma

    _stay_min: int | None = None  # overrides options.stay_min_points
    _stay_fraction_of_history: float | None = None  # overrides options.stay_history_fraction

    def _need(self) -> int:
        o = self.options
        least = self._stay_min if self._stay_min is not None else o.stay_min_points
        fraction = (self._stay_fraction_of_history if self._stay_fraction_of_history is not None
                    else o.stay_history_fraction)
        return int(min(max(math.ceil(fraction * self._seen), least), o.stay_max_points))

    def update(self, steps: np.ndarray, values: np.ndarray) -> list[Alert]:
        if self.done:
            return []
        steps, values = finite_points(steps, values)
        alerts: list[Alert] = []
        i, n = 0, values.size
        while i < n and not self.done:
            if self._candidate is not None:
                i = self._follow(steps, values, i, alerts)
                continue
            if self._seen < self.min_history:
                take = min(n - i, self.min_history - self._seen)
                self._accept(steps[i:i + take], values[i:i + take])
                i += take
                continue
            reference, margin, sigma = self._stats()
            take = min(n - i, max(1, int(self._period() - (self._seen - self._stats_at))))
            segment = values[i:i + take]
            over = np.flatnonzero(segment > reference + margin) if math.isfinite(margin) else []
            if len(over) == 0:
                self._accept(steps[i:i + take], segment)
                i += take
                continue
            j = int(over[0])
            self._accept(steps[i:i + j], segment[:j])
            candidate = _Candidate(float(steps[i + j]), float(segment[j]), reference, margin,
                                   self._stay_level, sigma, self._need())
            candidate.flags.append(True)
            candidate.steps.append(candidate.step)
            candidate.values.append(candidate.value)
            self._candidate = candidate
            alerts.extend(self._on_jump(candidate))
            i += j + 1
        return alerts

    def _follow(self, steps: np.ndarray, values: np.ndarray, i: int, alerts: list[Alert]) -> int:
        candidate = self._candidate
        assert candidate is not None, "_follow needs a candidate"
        take = min(values.size - i, candidate.need - len(candidate.flags))
        stays = self._stays(values[i:i + take], candidate)
        # stop at the very point that makes "stays up" impossible, so the verdict (and what the
        # history absorbs) never depends on where a batch happened to end
        allowed = (1 - self._stay_fraction()) * candidate.need
        misses = (len(candidate.flags) - sum(candidate.flags)) + np.cumsum(~stays)
        beyond = np.flatnonzero(misses > allowed)
        hopeless = beyond.size > 0
        if hopeless:
            take = int(beyond[0]) + 1
            stays = stays[:take]
        candidate.flags.extend(stays.tolist())
        candidate.steps.extend(steps[i:i + take].tolist())
        candidate.values.extend(values[i:i + take].tolist())
        complete = len(candidate.flags) >= candidate.need
        longest = 4 * self.options.stay_max_points
        if complete and not hopeless and candidate.need < longest and self._unsettled(candidate):
            # still high but on its way back (a catapult, a long spike), or still climbing: a
            # verdict now would be premature, so follow it for twice as long
            candidate.need = min(2 * candidate.need, longest)
            return i + take
        if complete or hopeless:
            decided = None if hopeless else self._decide(candidate, final=False)
            if decided is None:
                # it came back down: a spike, not a divergence; its points join the history
                self._accept(np.asarray(candidate.steps), np.asarray(candidate.values))
                self._candidate = None
            else:
                alerts.extend(decided)
                self.done = True
        return i + take

    def _stay_fraction(self) -> float:
        return self.options.stay_fraction

    def _unsettled(self, candidate: _Candidate) -> bool:
        """Whether a verdict on `candidate` would be premature (see _settling)."""
        return any(_settling(candidate))

    def _coming_down(self, candidate: _Candidate) -> bool:
        return _settling(candidate)[0]

    def finish(self, complete: bool = True) -> list[Alert]:
        candidate = self._candidate
        if self.done or candidate is None or len(candidate.flags) < 3 or self._coming_down(candidate):
            return []
        decided = self._decide(candidate, final=True)
        self.done = decided is not None
        return decided or []

    def _stayed_up(self, candidate: _Candidate) -> bool:
        flags = candidate.flags
        tail = flags[-max(1, math.ceil(len(flags) / 4)):]
        share = self._stay_fraction()
        return sum(flags) >= share * len(flags) and sum(tail) >= share * len(tail)

    def _stay_text(self, candidate: _Candidate, level: float, final: bool) -> str:
        followed = len(candidate.flags) - 1
        stayed = sum(candidate.flags[1:])
        end = " (the series ends there)" if final else ""
        return (f"stayed above {num(level)} for {stayed} of the next {followed} points, "
                f"to step {format_step(candidate.steps[-1])}{end}")


class LossDivergenceDetector(_JumpDetector):
    """A loss that jumps far above its running median and stays up.

    `per_step` losses (training losses, logged every step) get a longer start-up and a longer
    wait before "stays up" is judged: their first steps hold warmup bumps and catapults that
    evaluation losses, computed every few hundred steps, do not show.
    """

    def __init__(self, key: str, options: DetectorOptions, per_step: bool = False) -> None:
        self.window = options.loss_window
        self.min_history = options.step_loss_min_history if per_step else options.loss_min_history
        self._stay_min = options.step_stay_min_points if per_step else options.stay_min_points
        self._stay_fraction_of_history = (options.step_stay_history_fraction if per_step
                                          else options.stay_history_fraction)
        super().__init__(key, options)

    def _threshold(self, recent: np.ndarray) -> tuple[float, float, float, float]:
        o = self.options
        median = fast_median(recent)
        # The long median catches slow ramps; the lowest of the last 5 keeps up with a loss that
        # is still falling fast (early training), where a long median lags far above it. Being
        # a minimum it sits a little low, so "stayed up" is judged against an unbiased level.
        tail = sorted(recent[-5:].tolist())
        reference = min(median, tail[0])
        level = min(median, tail[len(tail) // 2])
        sigma = robust_noise(recent)
        margin = o.loss_relative_jump * abs(reference)
        if math.isfinite(sigma):
            margin = max(margin, o.loss_sigmas * sigma)
        margin = max(margin, 1e-12)
        return reference, margin, sigma, level + margin / 2

    def _stays(self, values: np.ndarray, candidate: _Candidate) -> np.ndarray:
        return values > candidate.stay_level

    def _on_jump(self, candidate: _Candidate) -> list[Alert]:
        return []

    def _decide(self, candidate: _Candidate, final: bool) -> list[Alert] | None:
        if not self._stayed_up(candidate):
            return None
        c = candidate
        jump = c.value - c.reference
        relative = f"+{100 * jump / abs(c.reference):.0f}%" if c.reference else f"+{num(jump)}"
        sigmas = f", {jump / c.sigma:.0f} robust σ" if c.sigma and math.isfinite(c.sigma) else ""
        message = (f"{self.key} diverged at step {format_step(c.step)}: {num(c.value)} vs its recent "
                   f"level {num(c.reference)} ({relative}{sigmas}); it "
                   + self._stay_text(c, c.stay_level, final))
        return [Alert(AlertKind.DIVERGENCE, self.key, c.step, Severity.CRITICAL, message, c.value)]


class GradNormDetector(_JumpDetector):
    """Grad norm far above its running median: a spike at once, a divergence if it stays up."""

    def __init__(self, key: str, options: DetectorOptions) -> None:
        self.window = options.grad_window
        self.min_history = options.grad_min_history
        super().__init__(key, options)
        self._spiked = False

    def _threshold(self, recent: np.ndarray) -> tuple[float, float, float, float]:
        reference = fast_median(recent)
        if reference <= 0:
            return reference, math.nan, math.nan, math.nan  # no scale to be relative to
        o = self.options
        return reference, (o.grad_spike_factor - 1) * reference, math.nan, o.grad_stay_factor * reference

    def _stays(self, values: np.ndarray, candidate: _Candidate) -> np.ndarray:
        return values > candidate.stay_level

    def _stay_fraction(self) -> float:
        return self.options.grad_stay_fraction

    # A grad norm that explodes and then settles at several times its old level has diverged:
    # "stays up" means staying above 3x the old median, however far it came down from the spike.
    def _unsettled(self, candidate: _Candidate) -> bool:
        return False

    def _coming_down(self, candidate: _Candidate) -> bool:
        return False

    def _on_jump(self, candidate: _Candidate) -> list[Alert]:
        if self._spiked:
            return []
        self._spiked = True
        recent_max = float(np.max(self._recent.values()))
        ratio = candidate.value / candidate.reference
        message = (f"{self.key} = {num(candidate.value)} at step {format_step(candidate.step)}: "
                   f"{ratio:.0f}x its running median {num(candidate.reference)} (the previous "
                   f"{len(self._recent)} values were all <= {num(recent_max)})")
        return [Alert(AlertKind.GRAD_SPIKE, self.key, candidate.step, Severity.WARNING, message, candidate.value)]

    def _decide(self, candidate: _Candidate, final: bool) -> list[Alert] | None:
        flags = candidate.flags
        if sum(flags) < self.options.grad_stay_fraction * len(flags):
            return None
        c = candidate
        peak = max(c.values)
        level = c.stay_level
        top = f", peak {num(peak)}" if peak > c.value else ""
        message = (f"{self.key} diverged at step {format_step(c.step)}: it jumped to {num(c.value)} "
                   f"({c.value / c.reference:.0f}x its running median {num(c.reference)}{top}) and "
                   + self._stay_text(c, level, final))
        return [Alert(AlertKind.DIVERGENCE, self.key, c.step, Severity.CRITICAL, message, c.value)]


