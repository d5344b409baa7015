"""Bounded-memory running state shared by the live rules and detectors.

Everything here costs O(1) amortised per appended point and holds a fixed amount of memory, so a
monitor fed for a week of training stays as cheap as on its first step.
"""

from __future__ import annotations

import math

import numpy as np

__all__ = ["RingBuffer", "Reservoir", "robust_noise", "fast_median", "as_series_arrays"]

def as_series_arrays(steps: object, values: object, key: str) -> tuple[np.ndarray, np.ndarray]:
    """(steps, values) as equal-length 1-D float arrays, with an error naming `key` otherwise."""
    from labfolio.analysis.errors import AnalysisInputError

    step_array = np.asarray(steps, dtype=float).reshape(-1)
    value_array = np.asarray(values, dtype=float).reshape(-1)
    if step_array.shape != value_array.shape:
        raise AnalysisInputError(
            f"series {key!r}: got {step_array.size} steps but {value_array.size} values; "
            "pass one step per value"
        )
    return step_array, value_array


class RingBuffer:
    """The last `size` (step, value) pairs, oldest first on read."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._steps = np.empty(size)
        self._values = np.empty(size)
        self.count = 0  # total ever appended

    def __len__(self) -> int:
        return min(self.count, self.size)

    def append(self, step: float, value: float) -> None:
        slot = self.count % self.size
        self._steps[slot] = step
        self._values[slot] = value
        self.count += 1

    def extend(self, steps: np.ndarray, values: np.ndarray) -> None:
        if values.size > self.size:
            # only the tail survives; skip the rest as if it had been written and overwritten
            self.count += values.size - self.size
            steps, values = steps[-self.size:], values[-self.size:]
        start = self.count % self.size
        first = min(values.size, self.size - start)
        self._steps[start:start + first] = steps[:first]
        self._values[start:start + first] = values[:first]
        rest = values.size - first
        if rest:
            self._steps[:rest] = steps[first:]
            self._values[:rest] = values[first:]
        self.count += values.size

    def _ordered(self, array: np.ndarray) -> np.ndarray:
        if self.count <= self.size:
            return array[: self.count].copy()
        start = self.count % self.size
        return np.concatenate([array[start:], array[:start]])

    def values(self) -> np.ndarray:
        return self._ordered(self._values)

    def steps(self) -> np.ndarray:
        return self._ordered(self._steps)

    @property
    def last_value(self) -> float:
        return float(self._values[(self.count - 1) % self.size]) if self.count else math.nan

    @property
    def last_step(self) -> float:
        return float(self._steps[(self.count - 1) % self.size]) if self.count else math.nan


class Reservoir:
    """An evenly thinned copy of a whole history: every `stride`-th value, the stride doubling
    whenever `capacity` is reached, so its median tracks the median of everything seen."""

    def __init__(self, capacity: int = 1024) -> None:
        self.capacity = capacity
        self._kept = np.empty(capacity + 1)
        self._size = 0
        self.stride = 1
        self.count = 0  # total values offered
        self._median = math.nan
        self._median_at = -1  # `count` when the cached median was computed

    def extend(self, values: np.ndarray) -> None:
        # Invariant: slot i holds the value offered at position i * stride (positions count from
        # the first value ever offered), so halving keeps exactly the multiples of 2 * stride.
        index = (-self.count) % self.stride
        while index < values.size:
            self._kept[self._size] = values[index]
            self._size += 1
            if self._size > self.capacity:
                half = self._kept[: self._size : 2].copy()
                self._size = half.size
                self._kept[: self._size] = half
                self.stride *= 2
            position = self.count + index
            index = (position // self.stride + 1) * self.stride - self.count
        self.count += values.size

    def values(self) -> np.ndarray:
        return self._kept[: self._size].copy()

    def median(self) -> float:
        """Median of the thinned history, recomputed only after it grew by 1/16 (or 16 values)."""
        stale = self.count - self._median_at >= max(16, self._median_at // 16)
        if self._size and (self._median_at < 0 or stale):
            kept = self._kept[: self._size]
            finite = kept[np.isfinite(kept)]
            self._median = fast_median(finite)
            self._median_at = self.count
        return self._median


# E[Z^2 | |Z| below its 80th percentile] for standard normal Z is 0.4377; this undoes the trimming.
_TRIMMED_RMS_TO_SIGMA = 1.0 / math.sqrt(0.4377)


def robust_noise(values: np.ndarray) -> float:
    """Point-to-point noise of a series as a standard deviation, robust to trends and outliers.

    Works on second differences: a trend, even a curving one such as a loss still falling fast,
    barely moves them, while independent noise of std σ gives them std σ·√6. The largest 20% of
    them (spikes, sharp bends) are dropped and the rest's RMS rescaled, which is far less noisy
    than a MAD on the few dozen points a detector holds.
    """
    if values.size < 4:
        return math.nan
    second = values[2:] - 2 * values[1:-1] + values[:-2]
    deviations = np.sort(np.abs(second - fast_median(second)))
    kept = deviations[: max(1, int(math.ceil(0.8 * deviations.size)))]
    return _TRIMMED_RMS_TO_SIGMA * math.sqrt(float(np.dot(kept, kept)) / kept.size) / math.sqrt(6)


def fast_median(values: np.ndarray) -> float:
    """Median of a small 1-D float array without NaNs (np.median's overhead dominates at this size)."""
    n = values.size
    if n == 0:
        return math.nan
    half = n // 2
    if n % 2:
        return float(np.partition(values, half)[half])
    part = np.partition(values, (half - 1, half))
    return 0.5 * float(part[half - 1] + part[half])
