"""Chart data: metric series read straight from the columnar chunks and downsampled for plotly.

One query reads one metric of many runs (the compare overlay), touching only the columns the
chosen x axis needs and, when zoomed on steps, only the chunks that overlap the view.
"""

from __future__ import annotations

import base64
import math
import threading
import warnings
from collections import OrderedDict

import numpy as np
from sqlalchemy import select

from ..errors import ConfigError
from ..store import schema as t
from ..store.envelope import BLOCK
from .downsample import DEFAULT_POINTS, downsample

__all__ = ["X_AXES", "read_series", "series_payload", "variant_bands", "run_pks"]

X_AXES = ("step", "time", "epoch")


def run_pks(conn, run_ids: list[str]) -> dict[str, int]:
    return {r.run_id: r.pk for r in conn.execute(
        select(t.runs.c.run_id, t.runs.c.pk).where(t.runs.c.run_id.in_(run_ids)))}


def _key_id(conn, key: str) -> int | None:
    return conn.execute(select(t.metric_keys.c.id).where(t.metric_keys.c.key == key)).scalar()


def read_series(store, run_ids: list[str], key: str, *, with_times: bool = False,
                step_range: tuple[float | None, float | None] | None = None,
                envelope: bool = False) -> dict[str, tuple]:
    """run id -> (steps, values, times or None) of ``key``, in step order, for all runs in one query.

    ``envelope=True`` reads each chunk's envelope (its first, last, per-block min/max and first
    non-finite points; see ``store/envelope.py``) instead of every point: what a chart whose
    buckets are at least a block wide needs, at ~1/15 of the bytes.
    """
    table = t.metric_envelopes if envelope else t.metric_chunks
    cols = [table.c.run_pk, table.c.steps, table.c["values"]]
    if with_times:
        cols.append(table.c.times)
    out: dict[str, tuple] = {}
    with store.engine.connect() as conn:
        key_id = _key_id(conn, key)
        pks = run_pks(conn, run_ids)
        if key_id is None or not pks:
            return out
        query = (select(*cols).where(table.c.key_id == key_id, table.c.run_pk.in_(list(pks.values())))
                 .order_by(table.c.run_pk, table.c.first_seq))
        if step_range is not None:
            lo, hi = step_range
            if lo is not None:
                query = query.where(table.c.last_step >= int(math.floor(lo)))
            if hi is not None:
                query = query.where(table.c.first_step <= int(math.ceil(hi)))
        parts: dict[int, list] = {}
        for row in conn.execute(query):
            parts.setdefault(row[0], []).append(row[1:])
    by_pk = {pk: run_id for run_id, pk in pks.items()}
    for pk, chunks in parts.items():
        # One join and one frombuffer per column: no per-chunk arrays to concatenate.
        steps = np.frombuffer(b"".join(c[0] for c in chunks), dtype="<i8")
        values = np.frombuffer(b"".join(c[1] for c in chunks), dtype="<f8")
        times = np.frombuffer(b"".join(c[2] for c in chunks), dtype="<f8") if with_times else None
        if len(steps) > 1 and not np.all(steps[1:] >= steps[:-1]):
            order = np.argsort(steps, kind="stable")
            steps, values = steps[order], values[order]
            times = times[order] if times is not None else None
        out[by_pk[pk]] = (steps, values, times)
    return out


_EPOCH_KEYS = ("epoch", "train/epoch", "trainer/epoch")


def _epoch_axes(store, run_ids: list[str], steps_by_run: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Epoch of each step, interpolated from a logged 'epoch' series (runs without one are left out)."""
    out: dict[str, np.ndarray] = {}
    for name in _EPOCH_KEYS:
        wanted = [rid for rid in run_ids if rid not in out]
        if not wanted:
            break
        for run_id, (epoch_steps, epochs, _) in read_series(store, wanted, name).items():
            if len(epoch_steps):
                out[run_id] = np.interp(steps_by_run[run_id], epoch_steps, epochs)
    return out


def _clean(values: np.ndarray) -> list:
    # JSON has no NaN: plotly draws None as a gap, which is what a NaN in training is.
    values = np.asarray(values, dtype=np.float64)
    finite = np.isfinite(values)
    if finite.all():
        return values.tolist()
    return np.where(finite, values, None).tolist()


def _b64(values: np.ndarray) -> str:
    """Little-endian float64 as base64: a tenth of the JSON number text to write and to parse.
    NaN stays NaN, which plotly draws as a gap."""
    return base64.b64encode(np.ascontiguousarray(values, dtype="<f8").tobytes()).decode("ascii")


class _SeriesCache:
    """Downsampled series by (run, key, axis, view, budget, point count). A run that logs more
    points has a new count, so live runs are never served stale; finished runs are served from
    memory on every reload and poll."""

    def __init__(self, size: int = 2048):
        self.size = size
        self._items: "OrderedDict[tuple, tuple]" = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key):
        with self._lock:
            found = self._items.get(key)
            if found is not None:
                self._items.move_to_end(key)
            return found

    def put(self, key, value) -> None:
        with self._lock:
            self._items[key] = value
            self._items.move_to_end(key)
            while len(self._items) > self.size:
                self._items.popitem(last=False)


_CACHE = _SeriesCache()


def _point_counts(store, run_ids: list[str], key: str) -> tuple[dict[str, tuple[int, int, int]], dict[str, tuple]]:
    """(run id -> (run pk, key id, points of ``key``), what identifies a cached series;
    run id -> the run's (first_step, last_step, first_time, last_time), to size a zoomed view)."""
    with store.engine.connect() as conn:
        key_id = _key_id(conn, key)
        if key_id is None:
            return {}, {}
        rows = conn.execute(select(t.runs.c.run_id, t.runs.c.pk, t.summaries.c.count, t.runs.c.first_step,
                                   t.runs.c.last_step, t.runs.c.first_time, t.runs.c.last_time)
                            .join(t.summaries, t.summaries.c.run_pk == t.runs.c.pk)
                            .where(t.summaries.c.key_id == key_id, t.runs.c.run_id.in_(run_ids))).all()
    return ({r.run_id: (r.pk, key_id, int(r.count)) for r in rows},
            {r.run_id: (r.first_step, r.last_step, r.first_time, r.last_time) for r in rows})


def _points_in_view(count: int, span: tuple, x: str, view) -> float:
    """About how many of a run's ``count`` points fall inside ``view`` (an estimate from its span:
    it only decides whether envelopes are fine enough, never what is drawn)."""
    if view is None:
        return float(count)
    if x == "epoch":
        return 0.0  # no cheap estimate in epochs: read every point
    first, last = (span[0], span[1]) if x == "step" else (0.0, (span[3] or 0.0) - (span[2] or 0.0))
    if first is None or last is None or last <= first:
        return float(count)
    lo = first if view[0] is None else max(first, view[0])
    hi = last if view[1] is None else min(last, view[1])
    return count * max(0.0, hi - lo) / (last - first)


def series_payload(store, run_ids: list[str], key: str, *, x: str = "step", x_min: float | None = None,
                   x_max: float | None = None, points: int = DEFAULT_POINTS, encoding: str = "list",
                   envelopes: bool = True) -> dict:
    """``{"key", "x", "series": [{"run_id", "x", "y", "total", "last_step"}]}`` for plotly.

    ``envelopes=False`` reads every point even where chunk envelopes would give the same buckets
    (to compare the two reads; the routes never turn it off).

    ``encoding="b64"`` sends x and y as base64 little-endian float64 (what the pages ask for);
    ``"list"`` sends JSON numbers with null for NaN/Inf.
    """
    if x not in X_AXES:
        raise ConfigError(f"x must be one of {', '.join(X_AXES)}, not {x!r}")
    if encoding not in ("list", "b64"):
        raise ConfigError(f"encoding must be list or b64, not {encoding!r}")
    points = max(10, min(int(points), 20_000))
    step_range = (x_min, x_max) if x == "step" and (x_min is not None or x_max is not None) else None
    view = step_range if x == "step" else ((x_min, x_max) if x_min is not None or x_max is not None else None)
    identity, spans = _point_counts(store, run_ids, key)
    # Envelopes hold every block's min and max, so buckets at least a block wide come out exactly
    # as from the raw points; narrower buckets (short series, deep zooms) read every point.
    envelope_from = BLOCK * ((points - 2) // 2) if envelopes else math.inf
    where = store.location.url
    results: dict[str, tuple] = {}
    missing = []
    for run_id in run_ids:
        if run_id not in identity:
            continue
        cache_key = (where, *identity[run_id], x, view, points, envelopes)
        found = _CACHE.get(cache_key)
        if found is None:
            missing.append(run_id)
        else:
            results[run_id] = found
    coarse = [rid for rid in missing if _points_in_view(identity[rid][2], spans[rid], x, view) >= envelope_from]
    fine = [rid for rid in missing if rid not in coarse]
    found_series: dict[str, tuple] = {}
    for ids, envelope in ((coarse, True), (fine, False)):
        if ids:
            found_series.update(read_series(store, ids, key, with_times=x == "time", step_range=step_range,
                                            envelope=envelope))
    epochs = _epoch_axes(store, list(found_series), {rid: s[0] for rid, s in found_series.items()}) \
        if x == "epoch" else {}
    for run_id in missing:
        if run_id not in found_series:
            continue
        steps, values, times = found_series[run_id]
        if x == "time":
            axis = times - times[0] if len(times) else times
        elif x == "epoch":
            axis = epochs.get(run_id)
            if axis is None:
                axis = steps.astype(np.float64)
        else:
            axis = steps
        xs, ys = downsample(axis, values, points, view)
        # The total and last step of a zoomed read are those of the view: the run's own come
        # from the point count, which is what the cache key and the live poll compare.
        entry = (xs, ys, identity[run_id][2], int(steps[-1]) if len(steps) else None)
        results[run_id] = entry
        _CACHE.put((where, *identity[run_id], x, view, points, envelopes), entry)
    series = []
    for run_id in run_ids:
        if run_id not in results:
            continue
        xs, ys, total, last_step = results[run_id]
        if encoding == "b64":
            xy = {"x": _b64(xs), "y": _b64(ys), "n": int(len(xs))}
        else:
            xy = {"x": xs.tolist(), "y": _clean(ys)}
        series.append({"run_id": run_id, **xy, "total": total, "last_step": last_step})
    return {"key": key, "x": x, "points": points, "encoding": encoding, "series": series}


def variant_bands(store, groups: dict[str, list[str]], key: str, buckets: int = 400) -> dict:
    """Per variant: the mean over seeds and a mean ± std band, on shared step buckets.

    Seeds log on different step grids; averaging inside common step buckets lines them up
    without interpolating values that were never logged.
    """
    all_ids = [rid for ids in groups.values() for rid in ids]
    found = read_series(store, all_ids, key)
    if not found:
        return {"key": key, "variants": []}
    lo = min(int(s[0][0]) for s in found.values() if len(s[0]))
    hi = max(int(s[0][-1]) for s in found.values() if len(s[0]))
    edges = np.linspace(lo, hi + 1, max(2, min(buckets, hi - lo + 2)))
    centers = (edges[:-1] + edges[1:]) / 2
    out = []
    for variant, ids in groups.items():
        per_run = []
        for rid in ids:
            if rid not in found:
                continue
            steps, values, _ = found[rid]
            finite = np.isfinite(values)
            which = np.clip(np.searchsorted(edges, steps[finite], side="right") - 1, 0, len(centers) - 1)
            sums = np.bincount(which, weights=values[finite], minlength=len(centers))
            counts = np.bincount(which, minlength=len(centers))
            with np.errstate(invalid="ignore", divide="ignore"):
                per_run.append(np.where(counts > 0, sums / np.maximum(counts, 1), np.nan))
        if not per_run:
            continue
        stack = np.vstack(per_run)
        with np.errstate(invalid="ignore"), warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN buckets are expected
            mean = np.nanmean(stack, axis=0)
            std = np.nanstd(stack, axis=0, ddof=1) if len(per_run) > 1 else np.zeros_like(mean)
            present = np.sum(np.isfinite(stack), axis=0)
        keep = present > 0
        std = np.where(present > 1, std, 0.0)
        out.append({"variant": variant, "n": len(per_run), "x": centers[keep].tolist(),
                    "mean": _clean(mean[keep]), "lower": _clean((mean - std)[keep]),
                    "upper": _clean((mean + std)[keep])})
    return {"key": key, "variants": out}
