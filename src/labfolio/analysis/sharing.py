"""How fast runs that share a device go together: the steps per second they make in all.

Small models leave a GPU mostly idle, so several runs may share it (``labfolio run
--runs-per-gpu``). Whether that pays is a question of the steps they make together against one
run alone, and each run's own steps/s cannot answer it: runs start and end at different times,
and a run speeds up when the others end. This module finds the stretch of time in which the most
runs were making progress at once and measures each run's rate inside it, from (time, step)
points of each run's progress (the runner samples them from the store while the runs train).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

__all__ = ["SharedThroughput", "shared_throughput"]


@dataclass(frozen=True)
class SharedThroughput:
    """The runs that were all making progress from `start` to `end`, and each one's steps/s then."""

    start: float
    end: float
    steps_per_s: dict[str, float]  # run id -> its steps per second inside the window

    @property
    def runs(self) -> int:
        return len(self.steps_per_s)

    @property
    def duration_s(self) -> float:
        return self.end - self.start

    @property
    def total_steps_per_s(self) -> float:
        return sum(self.steps_per_s.values())


def _step_at(points: Sequence[tuple[float, float]], when: float) -> float:
    """The step at time `when`, linear between the two points around it (points sorted by time)."""
    for (t0, s0), (t1, s1) in zip(points, points[1:]):
        if t0 <= when <= t1:
            return s0 if t1 == t0 else s0 + (s1 - s0) * (when - t0) / (t1 - t0)
    return points[0][1] if when < points[0][0] else points[-1][1]


def shared_throughput(
    progress: Mapping[str, Sequence[tuple[float, float]]], min_window_s: float = 1.0
) -> SharedThroughput | None:
    """The longest stretch in which the most runs (two or more) were progressing at once.

    progress: run id -> (time, step) points of that run's progress, in any order; a run is
    progressing from its first point to its last. Among the stretches with the largest number of
    runs in progress, the longest one is measured; each run's rate there is its step difference
    across the stretch (linear between points) over its length. None when no two runs overlap for
    at least `min_window_s` seconds.
    """
    spans: dict[str, list[tuple[float, float]]] = {}
    for run_id, points in progress.items():
        ordered = sorted((float(t), float(s)) for t, s in points)
        if len(ordered) >= 2 and ordered[-1][0] > ordered[0][0]:
            spans[run_id] = ordered
    bounds = sorted({t for points in spans.values() for t in (points[0][0], points[-1][0])})
    best: tuple[int, float, float, float, tuple[str, ...]] | None = None  # (count, length, start, end, runs)
    segment_start, segment_runs = None, ()
    for left, right in zip(bounds, bounds[1:]):
        runs = tuple(sorted(r for r, points in spans.items() if points[0][0] <= left and points[-1][0] >= right))
        if runs != segment_runs or segment_start is None:
            segment_start, segment_runs = left, runs
        # consecutive segments with the same runs are one stretch
        length = right - segment_start
        if len(runs) >= 2 and length >= min_window_s:
            candidate = (len(runs), length, segment_start, right, runs)
            if best is None or candidate[:2] > best[:2]:
                best = candidate
    if best is None:
        return None
    _count, length, start, end, runs = best
    rates = {run: (_step_at(spans[run], end) - _step_at(spans[run], start)) / length for run in runs}
    return SharedThroughput(start=start, end=end, steps_per_s=rates)
