"""Server-side downsampling of metric series for charts: min/max per bucket, plus the ends.

A browser cannot draw 100k points per curve for 100 curves, and naive striding (or the random
sampling some trackers use) drops exactly the spikes a researcher is looking for. Each bucket
keeps its smallest and its largest value, in the order they occurred, so the drawn envelope is the
true one; the first and last points are always kept so the curve ends where the run is now.
Zooming asks again with the visible x range and gets fresh buckets inside it.
"""

from __future__ import annotations

import numpy as np

__all__ = ["downsample", "DEFAULT_POINTS"]

DEFAULT_POINTS = 2000  # points per series sent to the browser (about two per pixel column)


def downsample(x: np.ndarray, y: np.ndarray, max_points: int = DEFAULT_POINTS,
               x_range: tuple[float | None, float | None] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(x, y) cut to ``x_range`` and reduced to at most ``max_points`` points.

    ``x`` must be sorted ascending. NaN/Inf values are kept where they are (a NaN spike shows as a
    gap, which is the truth) and never chosen as a bucket's min or max over a finite value.
    """
    x = np.asarray(x)
    y = np.asarray(y, dtype=np.float64)
    if x_range is not None:
        lo, hi = x_range
        start = 0 if lo is None else int(np.searchsorted(x, lo, side="left"))
        stop = len(x) if hi is None else int(np.searchsorted(x, hi, side="right"))
        # One point beyond each edge keeps the line running to the border of a zoomed view.
        start, stop = max(0, start - 1), min(len(x), stop + 1)
        x, y = x[start:stop], y[start:stop]
    n = len(x)
    max_points = max(4, int(max_points))
    if n <= max_points:
        return x, y
    buckets = (max_points - 2) // 2
    interior = n - 2
    width = -(-interior // buckets)  # ceil: equal buckets, so one reshape does the whole series
    buckets = -(-interior // width)
    pad = buckets * width - interior
    inner = y[1:-1]
    finite = np.isfinite(inner)
    if finite.all():  # the common case: no copies
        lo_vals = hi_vals = inner
    else:
        lo_vals = np.where(finite, inner, np.inf)
        hi_vals = np.where(finite, inner, -np.inf)
    if pad:
        lo_vals = np.concatenate([lo_vals, np.full(pad, np.inf)])
        hi_vals = np.concatenate([hi_vals, np.full(pad, -np.inf)])
    base = np.arange(buckets) * width
    # argmin/argmax return the first index attaining it; an all-NaN bucket gives its first point,
    # so the gap stays visible.
    first_min = base + np.argmin(lo_vals.reshape(buckets, width), axis=1)
    first_max = base + np.argmax(hi_vals.reshape(buckets, width), axis=1)
    first_min = np.minimum(first_min, interior - 1) + 1
    first_max = np.minimum(first_max, interior - 1) + 1
    # Within a bucket, min and max go out in the order they occurred; buckets are already in
    # order, so interleaving (earlier, later) pairs keeps every index sorted without a sort.
    pairs = np.empty(2 * buckets, dtype=np.int64)
    pairs[0::2] = np.minimum(first_min, first_max)
    pairs[1::2] = np.maximum(first_min, first_max)
    distinct = np.ones(len(pairs), dtype=bool)
    distinct[1::2] = pairs[1::2] != pairs[0::2]
    keep = np.concatenate([[0], pairs[distinct], [n - 1]])
    return x[keep], y[keep]
