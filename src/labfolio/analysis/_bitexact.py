"""What numpy and scipy compute for seed statistics, bit for bit, without their per-call cost.

A notebook makes thousands of t quantiles, Welch tests and bootstraps on a handful of seeds
each, where the libraries' argument checking and dispatch cost more than the arithmetic. Each
function here does the same floating-point operations in the same order as the library call it
names (tests/analysis/test_stats_fast.py holds them to it bit for bit), so every number the
notebook prints is the library's.
"""

from __future__ import annotations

import functools
import math
import sys
from dataclasses import dataclass

import numpy as np

# used by labfolio.analysis.stats, which owns the public names
__all__ = ["_bootstrap_delta_ci", "_numpy_sum", "_t_quantile", "_welch_p_value"]

@functools.lru_cache(maxsize=1)
def _special():
    """The module holding scipy's t distribution functions (``stdtr``, ``stdtrit``).

    scipy.stats takes ~1 s to import and scipy.special ~0.3 s, so neither is imported with
    labfolio; only summaries and comparisons need the t distribution. Its functions are ufuncs of
    the compiled ``scipy.special._ufuncs``, the same objects scipy.special exports, and most of
    the 0.3 s is the package around them (its array-API layer imports and wraps much of numpy):
    a cold notebook write of 10,000 runs spends longer importing it than on every t quantile and
    Welch test it computes. So while scipy.special is not imported yet, only that module is
    loaded (see ``_ufuncs_alone``); where that fails, the whole package is imported as usual."""
    if "scipy.special" not in sys.modules:
        try:
            return _ufuncs_alone()
        except Exception:  # another scipy layout: the package is the sure way
            pass
    from scipy import special

    return special


def _ufuncs_alone():
    # Importing scipy.special._ufuncs would first run the package's __init__; an empty module
    # object stands in for the package while its extension modules load (they only need its
    # __path__ to find each other), and is removed again before anything else can import it: a
    # later `import scipy.special` runs the real __init__, which reuses the loaded extensions.
    # Only in a process without other threads, where no one else can see the stand-in.
    import importlib
    import importlib.util
    import threading

    if threading.active_count() > 1:
        raise ImportError("other threads could import scipy.special meanwhile")
    spec = importlib.util.find_spec("scipy.special")  # imports scipy itself (~5 ms), not scipy.special
    stand_in = importlib.util.module_from_spec(spec)
    sys.modules["scipy.special"] = stand_in
    try:
        ufuncs = importlib.import_module("scipy.special._ufuncs")
    finally:
        if sys.modules.get("scipy.special") is stand_in:
            del sys.modules["scipy.special"]
    if not all(callable(getattr(ufuncs, name, None)) for name in ("stdtr", "stdtrit")):
        raise ImportError("scipy.special._ufuncs has no stdtr/stdtrit")
    return ufuncs


@functools.lru_cache(maxsize=1024)
def _t_quantile(q: float, df: float) -> float:
    # scipy.stats.t.ppf(q, df) is stdtrit(df, q) behind ~0.1 ms of argument checking, and a
    # notebook asks for the same few (q, df) pairs thousands of times (seeds per variant repeat
    # across experiments); tests/analysis/test_stats_fast.py checks the two agree exactly
    return float(_special().stdtrit(df, q))


# numpy sums a contiguous run of at most this many values in one pairwise block (PW_BLOCKSIZE)
_PAIRWISE_BLOCK = 128


def _numpy_sum(values: list[float]) -> float:
    """``float(np.sum(values))`` bit for bit, in plain floats: numpy's pairwise summation (one
    running sum below 8 values, else 8 running sums, element i into sum i % 8, combined as
    ((0+1)+(2+3))+((4+5)+(6+7)), then the remainder in order), added to 0. A handful of seeds
    is summed ~10x faster this way than through an array."""
    n = len(values)
    if n > _PAIRWISE_BLOCK:
        return float(np.add.reduce(np.asarray(values, dtype=float)))
    if n < 8:
        total = 0.0
        for value in values:
            total += value
        return total
    sums = values[:8]
    end = n - n % 8
    for i in range(8, end, 8):
        for j in range(8):
            sums[j] += values[i + j]
    total = ((sums[0] + sums[1]) + (sums[2] + sums[3])) + ((sums[4] + sums[5]) + (sums[6] + sums[7]))
    for i in range(end, n):
        total += values[i]
    return 0.0 + total


def _welch_p_value(a: np.ndarray, b: np.ndarray) -> float:
    # scipy.stats.ttest_ind(b, a, equal_var=False).pvalue, the same operations in the same order
    # without its ~1 ms of array-API dispatch and NaN-policy wrapping per call (a notebook makes
    # thousands); tests/analysis/test_stats_fast.py holds it to scipy's result bit for bit. The
    # means and squared deviations are summed on plain floats in numpy's order (_numpy_sum): on a
    # handful of seeds each numpy call costs more than its arithmetic. From the variances on, the
    # arithmetic stays on numpy scalars, whose overflow and 0/0 give inf and NaN as scipy's do.
    values_b, values_a = b.tolist(), a.tolist()
    n1, n2 = len(values_b), len(values_a)
    assert n1 >= 2 and n2 >= 2, f"a Welch test needs 2 values on each side, got {n2} and {n1}"
    m1, m2 = _numpy_sum(values_b) / n1, _numpy_sum(values_a) / n2  # b.mean(), a.mean()
    squares_1 = _numpy_sum([(x - m1) * (x - m1) for x in values_b])  # ((b - m1) ** 2).sum()
    squares_2 = _numpy_sum([(x - m2) * (x - m2) for x in values_a])
    if squares_2 / (n2 - 1) == 0 and squares_1 / (n1 - 1) == 0:  # a.std(ddof=1) == 0 == b.std(ddof=1)
        # Deterministic on both sides: any difference is real, none is none.
        return 0.0 if m2 != m1 else 1.0
    v1 = np.float64(squares_1 / n1) * (np.float64(n1) / (n1 - 1))  # np.mean((b - m1) ** 2) * ...
    v2 = np.float64(squares_2 / n2) * (np.float64(n2) / (n2 - 1))
    m1, m2 = np.float64(m1), np.float64(m2)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore", under="ignore"):
        vn1 = v1 / n1
        vn2 = v2 / n2
        df = (vn1 + vn2) ** 2 / (vn1 ** 2 / (n1 - 1) + vn2 ** 2 / (n2 - 1))
        if np.isnan(df):
            df = np.float64(1.0)
        t = (m1 - m2) / np.sqrt(vn1 + vn2)
        p = float(2 * _special().stdtr(df, -np.abs(t)))
    return 1.0 if math.isnan(p) else p


@functools.lru_cache(maxsize=32)
def _bootstrap_indices(size_a: int, size_b: int, n_bootstrap: int, seed: int) -> tuple:
    """How each group is resampled: with a fixed seed the draws depend on the group sizes only,
    so they are drawn once per size pair instead of once per comparison (the same numbers). Each
    group's is a ``_PrefixSums`` below 8 values, else its index rows transposed to (group size,
    resamples) for ``_resample_means``."""
    rng = np.random.default_rng(seed)
    index_a = rng.integers(0, size_a, size=(n_bootstrap, size_a))
    index_b = rng.integers(0, size_b, size=(n_bootstrap, size_b))
    return _resampling(index_a), _resampling(index_b)


def _resampling(index: np.ndarray):
    if index.shape[1] < 8:
        return _PrefixSums.of(index)
    rows = np.ascontiguousarray(index.T)
    rows.flags.writeable = False  # shared between calls
    return rows


def _resample(values: np.ndarray, resampling) -> np.ndarray:
    """The mean of every resample of `values`, in resample order (see ``_bootstrap_indices``)."""
    if isinstance(resampling, _PrefixSums):
        return resampling.means(values)
    return _resample_means(values, resampling)


@dataclass(frozen=True)
class _PrefixSums:
    """``values[index].mean(axis=1)`` for fewer than 8 values per resample, bit for bit, summing
    each distinct prefix of the resamples once.

    numpy sums a short row from 0.0 in order, so a resample's sum is ((v[i0] + 0.0) + v[i1]) + ...,
    and every partial sum depends only on the indices drawn so far. The resamples of n values
    share prefixes (5 seeds: 5 of one index, 25 of two, ..., ~3,000 distinct rows of 10,000), so
    the sums of the k-index prefixes are each one addition to the sum of a (k-1)-index prefix:
    the same additions in the same order, on a few thousand values instead of n times 10,000.
    """

    first: np.ndarray  # the distinct first indices, in order
    steps: tuple[tuple[np.ndarray, np.ndarray], ...]  # per further index: (prefix it extends, index added)
    inverse: np.ndarray  # each resample's row among the distinct full prefixes
    size: int  # values per resample

    @classmethod
    def of(cls, index: np.ndarray) -> _PrefixSums:
        resamples, size = index.shape
        # prefixes as base-`size` numbers, first index most significant: np.unique orders them
        # as it orders the rows themselves, and a prefix's parent is its number // size
        codes = np.zeros(resamples, dtype=np.int64)
        distinct = []
        for column in range(size):
            codes = codes * size + index[:, column]
            found, inverse = np.unique(codes, return_inverse=True)
            distinct.append(found)
        steps = tuple((np.searchsorted(distinct[k - 1], distinct[k] // size), distinct[k] % size)
                      for k in range(1, size))
        arrays = [distinct[0], inverse, *(array for step in steps for array in step)]
        for array in arrays:
            array.flags.writeable = False  # shared between calls
        return cls(distinct[0], steps, inverse.reshape(-1), size)

    def means(self, values: np.ndarray) -> np.ndarray:
        total = values[self.first] + 0.0
        for parent, added in self.steps:
            total = total[parent] + values[added]
        total /= self.size
        return total[self.inverse]


def _resample_means(values: np.ndarray, index_t: np.ndarray) -> np.ndarray:
    """``values[index_t.T].mean(axis=1)``, bit for bit, about five times faster.

    numpy reduces each short row with its pairwise sum: from 0, one running sum below 8 values,
    else 8 running sums (element j into sum j % 8) combined as ((0+1)+(2+3))+((4+5)+(6+7)), then
    the remainder added in order. Done here a column at a time over all resamples at once, which
    is where the time goes for the 2-20 seeds of a variant."""
    n = index_t.shape[0]
    if n > _PAIRWISE_BLOCK:
        return values[np.ascontiguousarray(index_t.T)].mean(axis=1)
    drawn = values[index_t]
    if n < 8:
        total = drawn[0] + 0.0
        for j in range(1, n):
            total += drawn[j]
    else:
        sums = [drawn[j].copy() for j in range(8)]
        end = n - n % 8
        for i in range(8, end, 8):
            for j in range(8):
                sums[j] += drawn[i + j]
        total = ((sums[0] + sums[1]) + (sums[2] + sums[3])) + ((sums[4] + sums[5]) + (sums[6] + sums[7]))
        for i in range(end, n):
            total += drawn[i]
        total = total + 0.0
    total /= n
    return total


def _bootstrap_delta_ci(
    a: np.ndarray, b: np.ndarray, confidence: float, n_bootstrap: int, seed: int
) -> tuple[float, float]:
    """Percentile CI of mean(b) - mean(a), resampling each group independently."""
    resampling_a, resampling_b = _bootstrap_indices(a.size, b.size, n_bootstrap, seed)
    means_a = _resample(a, resampling_a)
    means_b = _resample(b, resampling_b)
    tail = (1 - confidence) / 2 * 100
    return _percentiles(means_b - means_a, tail, 100 - tail)


def _percentiles(values: np.ndarray, *percents: float) -> tuple[float, ...]:
    """``np.percentile(values, percents)`` (linear method) bit for bit, for finite `values`.

    Order statistics do not depend on how they are found: each percentile needs two neighbouring
    ones, and numpy's SIMD partition around a single position finds them several times faster
    than the multi-position partition np.percentile does (or a full sort). The interpolation
    below is numpy's ``_lerp``, operation for operation. `values` is reordered in place."""
    if not np.isfinite(values).all():
        return tuple(float(v) for v in np.percentile(values, list(percents)))
    last = values.size - 1
    found = []
    for percent in percents:
        virtual = last * (percent / 100)
        if virtual >= last:
            found.append(float(values.max()))
            continue
        below = math.floor(virtual)
        gamma = virtual - below
        low, high = _neighbouring_order_statistics(values, below)
        step = high - low
        found.append(high - step * (1 - gamma) if gamma >= 0.5 else low + step * gamma)
    return tuple(found)


def _neighbouring_order_statistics(values: np.ndarray, rank: int) -> tuple[float, float]:
    """The `rank`-th and the next smallest of `values` (0-based), found with one partition of
    `values` in place: around the one nearer the end its side of the partition is the shorter,
    and its neighbour is that side's extreme."""
    if rank + 1 <= values.size - 1 - rank:
        values.partition(rank + 1)
        return float(values[:rank + 1].max()), float(values[rank + 1])
    values.partition(rank)
    return float(values[rank]), float(values[rank + 1:].min())
